"""compose/ is checked without a docker engine: the file against the Compose Specification
schema, and against the code what no schema can know (settings, topics, replication, groups)."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from caep.settings import Settings
from caep.ssf.auth import EdgeClients
from caep.trust import TrustStore
from streams.topics import compacted_topics, engine_topics

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "compose"
CONFIG = COMPOSE / "config"
MOUNTED_CONFIG = "/etc/caep"  # where compose.yaml mounts compose/config
SETTING_NAMES = {f"CAEP_{name.upper()}" for name in Settings.model_fields}
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def read_env_file(path: Path) -> dict[str, str]:
    """The compose env_file format as used here: KEY=VALUE lines, # comments."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text("utf-8"))
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """What a container gets: its env files, then its `environment` (which wins)."""
    files = service.get("env_file", [])
    env: dict[str, str] = {}
    for name in [files] if isinstance(files, str) else files:
        env.update(read_env_file(COMPOSE / name))
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def engine_services(services: dict[str, Any]) -> dict[str, Any]:
    """Services running the caep-engine image (the rest are Kafka's)."""
    return {name: s for name, s in services.items() if "build" in s}


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((Path(__file__).parent / "vendor" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(compose)]
    assert errors == []
    # ... and the schema does catch mistakes: a misspelt key, a wrong depends_on condition.
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depend_on"] = broken["services"]["worker"].pop("depends_on")
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "service_done"
    assert not validator.is_valid(broken)


def test_every_caep_variable_is_a_setting_and_parses(
        services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in services.items():
        unknown = {k for k in service_env(service) if k.startswith("CAEP_")} - SETTING_NAMES
        assert not unknown, f"{name}: {sorted(unknown)} are not fields of caep.settings.Settings"
    for name, service in engine_services(services).items():
        env = service_env(service)
        others = {k for k in env if not k.startswith("CAEP_")}
        # Only the example service has settings of its own, and they say so by their prefix.
        assert all(k.startswith("EXAMPLE_") for k in others) and (not others or name == "example")
        for key in SETTING_NAMES:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Settings()  # raises if a value is invalid for its setting


def _created_topics(env: dict[str, str], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Runs create-topics.sh with a stand-in for kafka-topics.sh that records its arguments."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run create-topics.sh")
    log = tmp_path / "calls"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(COMPOSE / "create-topics.sh")], check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", **env,
                                             "KAFKA_TOPICS": str(fake)})
    topics = {}
    for line in log.read_text().splitlines():
        args = line.split()
        assert "--create" in args and "--if-not-exists" in args
        value = {flag: args[args.index(flag) + 1] for flag in
                 ("--topic", "--partitions", "--replication-factor", "--bootstrap-server")}
        configs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--config")
        topics[value["--topic"]] = {**value, **configs}
    return topics


def _table_names() -> list[str]:
    """The faust tables of streams/app.py; each has a changelog `<app id>-<name>-changelog`."""
    names = re.findall(r'app\.Table\(\s*"([^"]+)"', (ROOT / "streams" / "app.py").read_text())
    assert names, "no tables found in streams/app.py"
    return names


def test_topic_service_creates_every_topic_the_engine_uses(
        services: dict[str, Any], tmp_path: Path) -> None:
    env = service_env(services["topics"])
    settings = Settings(**{k.removeprefix("CAEP_").lower(): v for k, v in env.items()
                           if k.startswith("CAEP_")})
    topics = _created_topics(env, tmp_path)
    changelogs = {f"{settings.app_id}-{table}-changelog" for table in _table_names()}
    setting_topics = {getattr(settings, name) for name in Settings.model_fields
                      if name.startswith("topic_") and isinstance(getattr(settings, name), str)}
    assert set(engine_topics(settings)) <= setting_topics
    leader = f"{settings.app_id}-__assignor-__leader"
    assert topics.keys() == setting_topics | changelogs | {leader}
    compact = compacted_topics(settings) | {settings.topic_ssf_streams} | changelogs
    assert settings.topic_flags in compact
    for name, topic in topics.items():
        assert topic["cleanup.policy"] == ("compact" if name in compact else "delete"), name
        assert topic["--replication-factor"] == "3", name
        assert topic["min.insync.replicas"] == "2", name
        assert topic["--bootstrap-server"] == settings.bootstrap
        # Tables are co-partitioned with engine-input: every partition count must be the same.
        expected = "1" if name == leader else str(settings.topic_partitions)
        assert topic["--partitions"] == expected, name
    assert settings.topic_partitions == 12 and settings.topic_replication_factor == 3


def test_topic_names_follow_the_settings(services: dict[str, Any], tmp_path: Path) -> None:
    env = {**service_env(services["topics"]), "CAEP_TOPIC_FLAGS": "acme.flags",
           "CAEP_APP_ID": "acme-engine"}
    topics = _created_topics(env, tmp_path)
    assert topics["acme.flags"]["cleanup.policy"] == "compact"
    assert "caep.flags" not in topics
    assert "acme-engine-subjects-changelog" in topics


def test_brokers_form_one_kraft_quorum_replicating_three_ways(services: dict[str, Any]) -> None:
    brokers = {name: s for name, s in services.items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    voters = set()
    node_ids = {}
    for broker in brokers.values():
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        node_ids[str(env["KAFKA_NODE_ID"])] = broker["hostname"]
        assert f"//{broker['hostname']}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert "healthcheck" in broker
    [quorum] = voters  # every node lists the same voters: each node at its own host
    assert dict(v.split("@")[0:2] for v in quorum.split(",")) == {
        node: f"{host}:9093" for node, host in node_ids.items()}
    bootstrap = read_env_file(COMPOSE / "caep.env")["CAEP_BOOTSTRAP"].split(",")
    assert sorted(bootstrap) == sorted(f"{host}:19092" for host in node_ids.values())


def test_depends_on_targets_exist_with_conditions_they_can_meet(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on missing service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not one-shot"
    for name in engine_services(services):
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"), f"{name} may start before its topics exist"
        assert "healthcheck" in services[name]


def test_workers_form_one_consumer_group_with_private_state(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["caep", "worker"]
    assert worker["deploy"]["replicas"] >= 2
    env = service_env(worker)
    assert "CAEP_APP_ID" not in (worker.get("environment") or {}), "one app id for all replicas"
    assert env["CAEP_APP_ID"] == service_env(services["topics"])["CAEP_APP_ID"]
    assert env["CAEP_TABLE_STORE"] == "rocksdb://"
    # RocksDB directories cannot be shared: the data dir is an anonymous (per-container) volume.
    [data] = [v for v in worker["volumes"]
              if isinstance(v, dict) and v["target"] == env["CAEP_DATA_DIR"]]
    assert data["type"] == "volume" and "source" not in data
    # Its health is its own web server answering, reachable from outside the container.
    assert env["CAEP_WEB_BIND"] == "0.0.0.0"
    assert f"http://127.0.0.1:{env['CAEP_WEB_PORT']}/metrics" in " ".join(
        worker["healthcheck"]["test"])
    assert services["edge"]["command"] == ["caep", "edge"]
    assert services["edge"]["deploy"]["replicas"] == 1  # one process owns the stream store


def test_config_directory_loads_and_holds_only_public_keys(services: dict[str, Any]) -> None:
    store = TrustStore.from_file(CONFIG / "trust.toml")
    assert store is not None
    EdgeClients.from_file(CONFIG / "edge.toml")
    for path in CONFIG.rglob("*.json"):
        for key in json.loads(path.read_text()).get("keys", []):
            assert not PRIVATE_JWK_MEMBERS & key.keys(), f"private key material in {path}"
    # Every file a service is pointed at is in compose/config.
    for name, service in engine_services(services).items():
        assert f"./config:{MOUNTED_CONFIG}:ro" in service["volumes"], name
        for key, value in service_env(service).items():
            if value.startswith(MOUNTED_CONFIG + "/"):
                assert (CONFIG / value.removeprefix(MOUNTED_CONFIG + "/")).is_file(), (name, key)
    trust = tomllib.loads((CONFIG / "trust.toml").read_text())
    tenants = {issuer.get("tenant", issuer["iss"]) for issuer in trust["issuer"]}
    assert set(service_env(services["example"])["CAEP_CLIENT_TENANTS"].split(",")) <= tenants


def test_image_installs_the_extras_the_services_need(services: dict[str, Any]) -> None:
    build = services["worker"]["build"]
    dockerfile = (COMPOSE / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == COMPOSE / "Dockerfile"
    text = dockerfile.read_text()
    [extras] = re.findall(r'pip install "\.\[([a-z,]+)\]"', text)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras.split(",")) <= declared.keys()
    # CAEP_TABLE_STORE=rocksdb://, `caep edge`, python -m examples.relying_service
    assert {"rocksdb", "edge", "examples"} <= set(extras.split(","))
    assert re.search(r"^COPY examples examples$", text, re.MULTILINE)
