"""The `caep` command. Every failure the user can cause is one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from caep.errors import CaepError, ConfigError, SetError
from caep.settings import Settings
from streams.broker import EmbeddedBroker

EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Settings:
    """Env (`CAEP_*`) first, then whichever flags were given."""
    overrides: dict[str, Any] = {}
    for flag, field in (("bootstrap", "bootstrap"), ("trust", "trust_file"),
                        ("app_id", "app_id"), ("log_level", "log_level")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def _read_input(source: str | None) -> str:
    if source is None or source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None


def _read_json_file(path: str, what: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not JSON: {exc}") from None


@contextlib.contextmanager
def _bootstrap_or_embedded(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The configured cluster, or an embedded broker for the duration of the block."""
    if settings.bootstrap:
        yield settings.bootstrap, False
        return
    with EmbeddedBroker() as broker:
        print(f"bootstrap={broker.bootstrap}", flush=True)
        yield broker.bootstrap, True


class _StopSignals:
    """SIGINT/SIGTERM recorded from before the bootstrap line is printed.

    Installed first, so a caller that signals as soon as it reads the line never meets
    Python's default SIGINT (a KeyboardInterrupt, exit 130) instead of a clean stop.
    """

    def __init__(self) -> None:
        self._stopped = threading.Event()
        signal.signal(signal.SIGTERM, self._record)
        signal.signal(signal.SIGINT, self._record)

    def _record(self, _signum: int, _frame: Any) -> None:
        self._stopped.set()

    def wait(self) -> None:
        """Blocks until a signal; unlike pause(), one that came before the call is not missed."""
        self._stopped.wait()


def cmd_broker(args: argparse.Namespace) -> int:
    stop = _StopSignals()
    with EmbeddedBroker(port=args.port) as broker:
        print(f"bootstrap={broker.bootstrap}", flush=True)
        stop.wait()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    settings = _settings(args)
    if settings.trust_file is None:
        raise ConfigError("no trust file: pass --trust FILE or set CAEP_TRUST_FILE")
    with _bootstrap_or_embedded(settings) as (bootstrap, embedded):
        run_worker(settings, bootstrap, embedded=embedded)
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    """The Shared Signals Framework edge (streams/edge.py): push receiver and transmitter."""
    try:
        from streams.edge import key_file, run_edge
        from streams.edge_keys import retire, rotate
    except ImportError as exc:
        raise ConfigError(f"the edge needs the extra `caep-engine[edge]` ({exc.name} is "
                          "missing)") from None

    overrides: dict[str, Any] = {field: value for field, value in (
        ("bootstrap", args.bootstrap), ("trust_file", args.trust), ("log_level", args.log_level),
        ("edge_port", args.port), ("edge_host", args.host),
        ("edge_config_file", args.config), ("edge_issuer", args.issuer)) if value is not None}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    if args.rotate_key or args.retire_old_keys:
        keys = rotate(key_file(settings)) if args.rotate_key else retire(key_file(settings))
        print("signing key: " + keys.current["kid"])
        print("published: " + " ".join(str(k["kid"]) for k in keys.keys))
        return 0
    if settings.trust_file is None:
        raise ConfigError("no trust file: pass --trust FILE or set CAEP_TRUST_FILE")
    with _bootstrap_or_embedded(settings) as (bootstrap, embedded):
        run_edge(settings, bootstrap, embedded=embedded)
    return 0


def cmd_set_sign(args: argparse.Namespace) -> int:
    from caep.codec import sign_set
    from caep.keys import private_key

    jwk = _read_json_file(args.key, "private JWK")
    if not isinstance(jwk, dict):
        raise ConfigError(f"{args.key} is not a JWK object")
    try:
        claims = orjson.loads(_read_input(args.claims))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"SET claims are not JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise ConfigError("SET claims must be a JSON object")
    if args.iss:
        claims["iss"] = args.iss
    if args.aud:
        claims["aud"] = args.aud
    if not args.unchecked:
        _check_claims_conform(claims)
    alg = args.alg or jwk.get("alg") or "RS256"
    try:
        key = private_key(jwk)
    except (ValueError, Exception) as exc:
        raise ConfigError(f"unusable private JWK {args.key}: {exc}") from None
    print(sign_set(claims, key, alg=alg, kid=args.kid or jwk.get("kid")))
    return 0


def _check_claims_conform(claims: dict[str, Any]) -> None:
    """Refuse to sign events or a subject the receiving side would reject."""
    from caep.events import parse_event
    from caep.subjects import parse_subject

    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise ConfigError("SET claims need a non-empty `events` object")
    try:
        if "sub_id" in claims:
            parse_subject(claims["sub_id"])
        for event_type, payload in events.items():
            parse_event(event_type, payload)
    except SetError as error:
        raise ConfigError(f"{error.description} (sign anyway with --unchecked)") from None


def cmd_set_verify(args: argparse.Namespace) -> int:
    from caep.codec import SetVerifier
    from caep.jwks import KeyRefresher
    from caep.subjects import subject_key
    from caep.trust import TrustStore

    settings = _settings(args)
    if settings.trust_file is None:
        raise ConfigError("no trust file: pass --trust FILE or set CAEP_TRUST_FILE")
    verifier = SetVerifier(TrustStore.from_file(settings.trust_file),
                           max_bytes=settings.max_set_bytes, iat_skew=settings.iat_skew_seconds)
    token = args.token if args.token not in (None, "-") else sys.stdin.read()
    try:
        verified = KeyRefresher().verify(verifier, token)
    except SetError as error:
        print(orjson.dumps(error.to_dict()).decode())
        return EXIT_USAGE
    events = [
        {"event_type": item.event_type, "recognized": item.recognized,
         "subject_key": subject_key(item.subject), "tenant": verified.tenant_for(item),
         "event": item.event.model_dump(mode="json", exclude_none=True)}
        for item in verified.items
    ]
    print(orjson.dumps({"header": verified.header, "claims": verified.claims,
                        "events": events}).decode())
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from caep.keys import generate_jwk, jwks_of

    jwk = generate_jwk(args.alg, args.kid)
    Path(args.private).write_bytes(orjson.dumps(jwk, option=orjson.OPT_INDENT_2))
    Path(args.private).chmod(0o600)
    Path(args.jwks).write_bytes(orjson.dumps(jwks_of(jwk), option=orjson.OPT_INDENT_2))
    print(f"private key: {args.private}\npublic JWKS: {args.jwks}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from streams.kafka_io import publish
    from streams.topics import ensure_topics

    settings = _settings(args)
    if not settings.bootstrap:
        raise ConfigError("no broker: pass --bootstrap HOST:PORT or set CAEP_BOOTSTRAP")
    topic = args.topic or settings.topic_security_events
    key = args.key.encode() if args.key is not None else None
    lines = [line.strip() for line in _read_input(args.input).splitlines()]
    records = [(key, line.encode()) for line in lines if line]

    async def run() -> int:
        await ensure_topics(settings.bootstrap or "", [topic], settings.topic_partitions)
        return await publish(settings.bootstrap or "", topic, records,
                             idempotence=settings.producer_idempotence or False)

    count = asyncio.run(run())
    print(f"published {count} record(s) to {topic}", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from streams.kafka_io import watch
    from streams.topics import ensure_topics

    settings = _settings(args)
    if not settings.bootstrap:
        raise ConfigError("no broker: pass --bootstrap HOST:PORT or set CAEP_BOOTSTRAP")
    topic = args.topic or settings.topic_decisions

    async def run() -> None:
        # A consumer that subscribes before its topic exists may never see it: create it first.
        await ensure_topics(settings.bootstrap or "", [topic], settings.topic_partitions)
        seen = 0
        async for record in watch(settings.bootstrap or "", topic,
                                  from_beginning=not args.from_end, idle_timeout=args.timeout):
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            sys.stdout.flush()
            seen += 1
            if args.count is not None and seen >= args.count:
                return

    asyncio.run(run())
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(_settings(args), duration=args.duration, rate=args.rate, users=args.users,
                    agents=args.agents, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caep", description="Continuous access evaluation engine (CAEP/RISC SETs on Kafka)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_common(p: argparse.ArgumentParser, trust: bool = False) -> argparse.ArgumentParser:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (env CAEP_BOOTSTRAP)")
        if trust:
            p.add_argument("--trust", help="trust file (env CAEP_TRUST_FILE)")
        return p

    p = sub.add_parser("broker", help="run the embedded Tansu broker on loopback")
    p.add_argument("--port", type=int, default=None, help="port (default: any free port)")
    p.set_defaults(func=cmd_broker)

    p = with_common(sub.add_parser("worker", help="run an engine worker"), trust=True)
    p.add_argument("--app-id", help="faust app id / consumer group (env CAEP_APP_ID)")
    p.add_argument("--log-level", help="log level (env CAEP_LOG_LEVEL)")
    p.set_defaults(func=cmd_worker)

    p = with_common(sub.add_parser(
        "edge", help="run the Shared Signals Framework edge (RFC 8935/8936, SSF 1.0)"),
        trust=True)
    p.add_argument("--port", type=int, help="HTTP port (env CAEP_EDGE_PORT)")
    p.add_argument("--host", help="listen address (env CAEP_EDGE_HOST)")
    p.add_argument("--config", help="edge file: bearer tokens (env CAEP_EDGE_CONFIG_FILE)")
    p.add_argument("--issuer", help="iss of transmitted SETs (env CAEP_EDGE_ISSUER)")
    p.add_argument("--log-level", help="log level (env CAEP_LOG_LEVEL)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--rotate-key", action="store_true",
                      help="put a fresh signing key first, keep publishing the old one, exit")
    keys.add_argument("--retire-old-keys", action="store_true",
                      help="stop publishing every key but the signing one, exit")
    p.set_defaults(func=cmd_edge)

    set_parser = sub.add_parser("set", help="sign or verify Security Event Tokens")
    set_sub = set_parser.add_subparsers(dest="set_command", required=True, metavar="ACTION")
    p = set_sub.add_parser("sign", help="sign SET claims (JSON) with a private JWK")
    p.add_argument("--key", required=True, help="private JWK file")
    p.add_argument("--alg", help="algorithm (default: the JWK's alg, else RS256)")
    p.add_argument("--kid", help="key id (default: the JWK's kid)")
    p.add_argument("--iss", help="set the iss claim")
    p.add_argument("--aud", help="set the aud claim")
    p.add_argument("--unchecked", action="store_true",
                   help="sign even if the events or subject do not conform (negative tests)")
    p.add_argument("claims", nargs="?", help="claims JSON file, or - for stdin (default)")
    p.set_defaults(func=cmd_set_sign)
    p = set_sub.add_parser("verify", help="verify a SET against the trust file")
    p.add_argument("--trust", help="trust file (env CAEP_TRUST_FILE)")
    p.add_argument("token", nargs="?", help="the compact SET, or - for stdin (default)")
    p.set_defaults(func=cmd_set_verify)

    keys_parser = sub.add_parser("keys", help="signing keys")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("generate", help="generate a private JWK and its public JWKS")
    p.add_argument("--alg", default="RS256", choices=["RS256", "PS256", "ES256", "EdDSA"])
    p.add_argument("--kid", default="key-1")
    p.add_argument("--private", required=True, help="where to write the private JWK")
    p.add_argument("--jwks", required=True, help="where to write the public JWKS")
    p.set_defaults(func=cmd_keys_generate)

    p = with_common(sub.add_parser("publish", help="write SETs or JSON lines to a topic"))
    p.add_argument("--topic", help="topic (default: the security-events topic)")
    p.add_argument("--key", help="record key for every record")
    p.add_argument("input", nargs="?", help="file with one record per line, - for stdin")
    p.set_defaults(func=cmd_publish)

    p = with_common(sub.add_parser("watch", help="print a topic's records as JSON lines"))
    p.add_argument("--topic", help="topic (default: the decisions topic)")
    p.add_argument("--from-end", action="store_true", help="only records written from now on")
    p.add_argument("--count", type=int, help="stop after N records")
    p.add_argument("--timeout", type=float, help="stop after S seconds without a record")
    p.set_defaults(func=cmd_watch)

    p = with_common(sub.add_parser("demo", help="run the end-to-end demo on the embedded broker"))
    p.add_argument("--duration", type=_positive, default=30.0, metavar="S",
                   help="how long the scenario runs, in seconds (default 30)")
    p.add_argument("--rate", type=_positive, default=100.0, metavar="N",
                   help="records published per second: activity and SETs (default 100)")
    p.add_argument("--users", type=int, default=300, help="simulated users (default 300)")
    p.add_argument("--agents", type=int, default=30,
                   help="AI agent sessions acting for users (default 30)")
    p.add_argument("--timeout", type=_positive, default=90.0, metavar="S",
                   help="give up on start-up after S seconds")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except CaepError as error:
        print(f"caep: error: {error.description}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
