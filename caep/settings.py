"""The one configuration object. Every setting is an env var `CAEP_<NAME>`; CLI flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Engine settings. Field docs double as the README configuration table."""

    model_config = SettingsConfigDict(env_prefix="CAEP_", extra="ignore", frozen=True)

    bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port[,host:port]). Unset: start the embedded "
        "Tansu broker.",
    )
    trust_file: Path | None = Field(
        default=None, description="TOML file listing the accepted SET issuers and their keys."
    )
    app_id: str = Field(
        default="caep-engine",
        description="Faust application id: the consumer group and the prefix of state topics.",
    )
    topic_security_events: str = Field(
        default="caep.security-events", description="Compact SETs in (the JWS string as value)."
    )
    topic_decisions: str = Field(
        default="caep.decisions", description="Decisions out, JSON, keyed by subject."
    )
    topic_dead_letter: str = Field(
        default="caep.dead-letter",
        description="Rejected input with its RFC 8935 error code, JSON.",
    )
    topic_session_activity: str = Field(
        default="caep.session-activity",
        description="Session activity reported by relying services, JSON (schemas/).",
    )
    topic_flags: str = Field(
        default="caep.flags",
        description="Current flags of each session, JSON, keyed by session id (compacted).",
    )
    topic_engine_input: str = Field(
        default="caep.engine-input",
        description="Internal: evaluation inputs re-keyed by tenant and subject.",
    )
    topic_device_index: str = Field(
        default="caep.device-index",
        description="Internal: which subjects use which device, and device-only events.",
    )
    policy_file: Path | None = Field(
        default=None,
        description="Policy TOML file (see caep/default_policy.toml). Unset: the default policy.",
    )
    tick_interval_seconds: float = Field(
        default=1.0, gt=0,
        description="How often a worker checks session expiries and elevation deadlines.",
    )
    table_store: Literal["memory://", "rocksdb://"] = Field(
        default="memory://",
        description="Where workers keep table state locally: memory, or RocksDB (extra "
        "`caep-engine[rocksdb]`), which survives restarts without replaying the changelog.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Directory for local table state (RocksDB). Unset: a directory per app id "
        "under the system temp directory.",
    )
    topic_partitions: int = Field(
        default=4, ge=1, description="Partitions of the topics the engine creates."
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of the topics the engine creates."
    )
    producer_idempotence: bool | None = Field(
        default=None,
        description="Idempotent producer. Unset: on for an external cluster, off for the embedded "
        "broker (Tansu does not implement InitProducerId).",
    )
    group_session_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Consumer-group session timeout: how long a crashed worker keeps its "
        "partitions before the group moves them. Tansu delays every join by half of it.",
    )
    group_leave_on_stop: bool | None = Field(
        default=None,
        description="Workers leave the consumer group when they stop, so the group moves their "
        "partitions at once. Unset: on for an external cluster, off for the embedded broker, "
        "where leaving during a rebalance can leave the group with no leader (Tansu 0.6.0; "
        "README, Known limits) and a stopped worker's partitions move after the session "
        "timeout instead.",
    )
    group_rebalance_timeout_seconds: float = Field(
        default=6.0,
        gt=0,
        description="How long a rebalance waits for members to rejoin.",
    )
    group_heartbeat_interval_seconds: float = Field(
        default=1.0, gt=0, description="Consumer-group heartbeat interval."
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        description="Longest a consumer fetch waits for data. Kafka answers as soon as data "
        "arrives; Tansu always waits this long, so it bounds latency there.",
    )
    batch_max_records: int = Field(
        default=500, ge=1,
        description="Worker: records an agent takes at once; their effects go out together and "
        "are acknowledged by the broker before the records are.",
    )
    batch_max_wait_ms: int = Field(
        default=5, ge=1,
        description="Worker: longest an agent waits to fill a batch before it processes what "
        "it has (latency added when the input is quiet).",
    )
    producer_linger_ms: int = Field(
        default=0, ge=0,
        description="Worker: how long the producer waits to fill a request before sending.",
    )
    iat_skew_seconds: int = Field(
        default=300,
        ge=0,
        description="How far in the future a SET's `iat` may lie before it is rejected.",
    )
    replay_window_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long the engine remembers each (`iss`, `jti`) it took in, so a "
        "redelivered SET applies once. Each SET remembered holds about 320 bytes of worker "
        "memory: a day at 10 SETs/s is about 280 MB over all workers.",
    )
    max_set_bytes: int = Field(
        default=65536, ge=1024, description="Largest SET accepted, in bytes."
    )
    log_level: str = Field(
        default="warning",
        description="Worker log level; `info` adds a line per decision and per batch of input "
        "records (topic, partition, offsets).")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Worker log lines: `text` for people, `json` (one object per line, with "
        "`decision_id`, `jti` and `subject_key` fields on decisions) for log pipelines.",
    )
    web_port: int = Field(
        default=6066, ge=0, le=65535,
        description="Worker web server: the dashboard at `/dashboard` and Prometheus metrics at "
        "`/metrics`. 0 picks a free port (the worker prints it).",
    )
    web_bind: str = Field(
        default="127.0.0.1",
        description="Address the worker web server listens on (`0.0.0.0` in a container).",
    )
    client_tenants: str | None = Field(
        default=None,
        description="Relying services (caep.client): the tenants whose decisions and flags the "
        "service sees, comma-separated; other tenants' records are counted and ignored.",
    )
    client_group_id: str | None = Field(
        default=None,
        description="Relying services: the subscriber's consumer group. Unset: one of its own "
        "per process (each process reads every partition, so none may share a group).",
    )
    client_stale_after_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Relying services: the subscriber reports STALE after this long without "
        "an answer from the broker, or behind the topics.",
    )
    client_max_session_lifetime_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Relying services: the longest one of the service's sessions can live; "
        "the view keeps every revocation that long (plus 60 s of clock skew) after its "
        "decision. Unset: the policy's absolute lifetime, also the least it may be.",
    )

    def idempotence_for(self, embedded: bool) -> bool:
        return _set_or_cluster(self.producer_idempotence, embedded)

    def leave_group_for(self, embedded: bool) -> bool:
        return _set_or_cluster(self.group_leave_on_stop, embedded)

    # ---- Shared Signals Framework edge (`caep edge`, streams/edge*.py) -------------------------
    edge_host: str = Field(default="127.0.0.1", description="Edge: the address it listens on.")
    edge_port: int = Field(default=8088, ge=0, le=65535,
                           description="Edge: the HTTP port (`--port`).")
    edge_issuer: str | None = Field(
        default=None,
        description="Edge: the `iss` of the SETs it transmits and the base of its endpoint URLs. "
        "Unset: `https://HOST:PORT` with TLS (below), else `http://HOST:PORT` (for a TLS proxy in "
        "front, set its https URL here).",
    )
    edge_tls_cert_file: Path | None = Field(
        default=None,
        description="Edge: PEM certificate chain; with `CAEP_EDGE_TLS_KEY_FILE` the edge serves "
        "HTTPS itself (the CAEP interoperability profile requires TLS endpoints). Unset: plain "
        "HTTP.",
    )
    edge_tls_key_file: Path | None = Field(
        default=None, description="Edge: PEM private key of `CAEP_EDGE_TLS_CERT_FILE`.")
    edge_config_file: Path | None = Field(
        default=None,
        description="Edge: TOML file with the bearer-token hashes of transmitters (push) and "
        "receivers (stream management), see caep/ssf/auth.py. Unset: nobody is authorized.",
    )
    edge_key_file: Path | None = Field(
        default=None,
        description="Edge: private signing keys (a JWKS; the first key signs, all are published). "
        "Created with a fresh RS256 key when missing; RS256 RSA keys of at least 2048 bits only "
        "(CAEP interoperability profile). Unset: `edge-keys.json` under the data directory.",
    )
    topic_ssf_streams: str = Field(
        default="caep.ssf-streams",
        description="Edge: stream configurations, JSON keyed by stream id (compacted).",
    )
    edge_max_in_flight: int = Field(
        default=256, ge=1,
        description="Edge: pushed SETs handed to the producer and not yet acknowledged; beyond "
        "it the push endpoint answers 429.",
    )
    edge_produce_timeout_seconds: float = Field(
        default=5.0, gt=0,
        description="Edge: longest a push waits for the broker's acknowledgement before "
        "answering 503.",
    )
    edge_linger_ms: int = Field(
        default=5, ge=0,
        description="Edge: how long the producer gathers pushed SETs into one request before "
        "sending (Kafka's own default since 4.0): fewer, larger batches for the broker, at "
        "most this much added to a push's answer.",
    )
    edge_retry_after_seconds: int = Field(
        default=5, ge=1, description="Edge: the `Retry-After` of 429 and 503 answers."
    )
    edge_push_max_attempts: int = Field(
        default=8, ge=1,
        description="Edge: attempts to push one SET to a receiver before it is given up.",
    )
    edge_push_backoff_seconds: float = Field(
        default=0.5, gt=0,
        description="Edge: first retry delay of a failed push; doubles up to 60 s.",
    )
    edge_poll_max_wait_seconds: float = Field(
        default=20.0, ge=0,
        description="Edge: longest a poll without `returnImmediately` waits for a SET.",
    )
    edge_poll_redeliver_seconds: float = Field(
        default=30.0, gt=0,
        description="Edge: a polled SET not acknowledged for this long is offered again.",
    )
    edge_max_held_events: int = Field(
        default=10000, ge=1,
        description="Edge: SETs held per stream (paused, or waiting to be polled); the oldest "
        "are dropped beyond it.",
    )


def _set_or_cluster(value: bool | None, embedded: bool) -> bool:
    """A switch Tansu cannot take: as set, else on for an external cluster only."""
    return (not embedded) if value is None else value
