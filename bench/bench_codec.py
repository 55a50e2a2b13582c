"""SET codec benchmark: the engine's verifier against pyjwt (baseline) and bare `cryptography`.

Why: verifying a SET is the engine's per-event hot path, and its goals are relative, so they hold
on any machine: at least 2x what a user would write with pyjwt, and at least 0.60 of the pure
public-key cost. All contenders verify the same pre-generated tokens, interleaved chunk by chunk
in a rotating order so the machine's noise hits them alike; each rate is the median of several
rounds and each ratio the median of the per-round ratios.

    python -m bench.bench_codec [--quick] [--json PATH] [--profile]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import json
import pstats
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import caep.codec
from bench import results
from caep.codec import SetVerifier, sign_set
from caep.keys import generate_jwk, jwks_of, private_key, public_jwk
from caep.trust import IssuerConfig, TrustStore

ISS = "https://idp.example.com"
AUD = "https://rp.example.com/caep"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SET_TYPE = "secevent+jwt"
ALGORITHMS = ("RS256", "ES256")
CONTENDERS = ("ceiling", "batch", "engine", "typed", "baseline")
BATCH = 100
LABELS = {
    "ceiling": "ceiling  (bare cryptography verify)",
    "batch": f"batch    (verify_envelopes, {BATCH} a call: worker)",
    "engine": "engine   (every SET check: verify_envelope)",
    "typed": "typed    (+ events, subjects typed: verify)",
    "baseline": "baseline (pyjwt get_unverified_header+decode)",
    "sign_set": "sign_set (caep.codec.sign_set)",
    "sign_ceiling": "ceiling  (bare cryptography sign)",
}
JSON_LABELS = {
    "codec": "codec _parse_json_object (as shipped)",
    "pairs_hook": "json.loads + object_pairs_hook (stdlib)",
    "json": "json.loads, no detection",
    "orjson": "orjson.loads, no detection",
}
GOAL_VS_BASELINE = 2.0
GOAL_VS_CEILING = 0.60

Op = Callable[[Any], object]


@dataclass(frozen=True)
class Mode:
    """How much to measure: the full run, or the quick one that just proves the bench works."""

    tokens: int
    rounds: int
    chunks: int
    signs: int


FULL = Mode(tokens=2000, rounds=5, chunks=10, signs=200)
QUICK = Mode(tokens=150, rounds=1, chunks=3, signs=30)


@dataclass(frozen=True)
class Contender:
    """One thing being timed: an operation and its own pre-built inputs, one per token."""

    name: str
    op: Op
    items: Sequence[Any]
    batched: bool = False  # each item is a list of tokens, verified in one call


@dataclass(frozen=True)
class Corpus:
    """One algorithm's key pair and its pre-signed tokens."""

    alg: str
    kid: str
    jwk: dict[str, Any]
    private_key: Any
    public_key: Any
    claims: list[dict[str, Any]]
    tokens: list[str]


# ---------------------------------------------------------------------------------- the tokens

_USERS = ("jane.smith", "omar.haddad", "li.wei", "ana.souza", "kwame.mensah", "sofia.rossi",
          "arjun.patel", "maria.garcia", "yuki.tanaka", "lena.schmidt")
_CREDENTIALS = ("fido2-roaming", "fido2-platform", "password", "app", "phone-voice", "x509")


def make_claims(rng: random.Random, index: int, now: int) -> dict[str, Any]:
    """A realistic CAEP SET: session-revoked or credential-change with a complex `sub_id`.

    Optional members vary from token to token, so the claims span about 500-700 bytes of JSON.
    """
    user = {"format": "iss_sub", "iss": ISS, "sub": f"{rng.choice(_USERS)}.{index}@example.com"}
    tenant = {"format": "opaque", "id": str(rng.randrange(10**8, 10**9))}
    issued = now - rng.randrange(5, 600)
    event: dict[str, Any] = {"event_timestamp": issued - rng.randrange(0, 60)}
    sub_id: dict[str, Any] = {"format": "complex", "user": user}
    if index % 2 == 0:
        event_type = CAEP + "session-revoked"
        if rng.random() < 0.4:
            sub_id["device"] = {"format": "opaque",
                                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        sub_id["session"] = {"format": "opaque", "id": f"sess-{rng.getrandbits(64):016x}"}
        event["initiating_entity"] = rng.choice(("policy", "admin", "system"))
        if rng.random() < 0.7:
            event["reason_admin"] = {"en": f"Policy Violation: {rng.getrandbits(32):08X}"}
        if rng.random() < 0.4:
            event["reason_user"] = {"it": "Questo dispositivo non è più conforme."}
    else:
        event_type = CAEP + "credential-change"
        if rng.random() < 0.5:
            sub_id["user"] = {"format": "email", "email": user["sub"]}
        sub_id["application"] = {"format": "uri",
                                 "uri": f"https://app{rng.randrange(100)}.example.com/"}
        credential = rng.choice(_CREDENTIALS)
        event["credential_type"] = credential
        event["change_type"] = rng.choice(("create", "revoke", "update", "delete"))
        if credential.startswith("fido2"):
            event["fido2_aaguid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if rng.random() < 0.5:
            event["friendly_name"] = f"{user['sub'].split('.')[0].title()}'s security key"
        event["initiating_entity"] = "user"
        if rng.random() < 0.5:
            event["reason_admin"] = {"en": "User self-enrollment"}
    sub_id["tenant"] = tenant
    claims = {"iss": ISS, "jti": f"{rng.getrandbits(128):032x}", "iat": issued, "aud": AUD}
    if rng.random() < 0.2:
        claims["txn"] = str(rng.randrange(10**6, 10**7))
    return claims | {"sub_id": sub_id, "events": {event_type: event}}


def make_corpus(alg: str, count: int, seed: int) -> Corpus:
    """`count` distinct valid SETs signed with a fresh key; the same claims for every contender."""
    kid = f"bench-{alg.lower()}"
    jwk = generate_jwk(alg, kid=kid)
    signer = private_key(jwk)
    rng = random.Random(seed)
    now = int(time.time())
    claims = [make_claims(rng, i, now) for i in range(count)]
    tokens = [sign_set(c, signer, alg=alg, kid=kid) for c in claims]
    return Corpus(alg, kid, jwk, signer, jwt.PyJWK(public_jwk(jwk)).key, claims, tokens)


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# ----------------------------------------------------------------------------- the contenders

def engine_verifier(corpora: Sequence[Corpus]) -> SetVerifier:
    """The engine as deployed: one verifier, both algorithms allowed, every check on.

    `verify_envelope` is the codec's every SET-level check (what `jwt.decode` is compared
    with); `verify` adds typing each event and subject by its pydantic model.
    """
    config = IssuerConfig(iss=ISS, audience=AUD, jwks_file=Path("-"),
                          algorithms=["RS256", "ES256"])
    trust = TrustStore.from_jwks(config, jwks_of(*[corpus.jwk for corpus in corpora]))
    return SetVerifier(trust)


def baseline_op(corpus: Corpus) -> Op:
    """What a user would write with pyjwt: a prepared key, the typ check, the usual options."""
    key, alg = corpus.public_key, corpus.alg

    def verify(token: str) -> dict[str, Any]:
        if jwt.get_unverified_header(token)["typ"] != SET_TYPE:
            raise jwt.InvalidTokenError("not a SET")
        return jwt.decode(token, key, algorithms=[alg], audience=AUD, issuer=ISS,
                          options={"require": ["iat", "jti"]})

    return verify


def ceiling_contender(corpus: Corpus) -> Contender:
    """The pure public-key cost: signing input and signature split and decoded beforehand."""
    items: list[tuple[bytes, bytes]] = []
    for token in corpus.tokens:
        header, payload, signature = token.split(".")
        raw = _b64url(signature)
        if corpus.alg == "ES256":
            half = len(raw) // 2
            raw = encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))
        items.append((f"{header}.{payload}".encode("ascii"), raw))
    key = corpus.public_key
    op: Op
    if isinstance(key, rsa.RSAPublicKey):
        rsa_verify, pkcs1, sha256 = key.verify, padding.PKCS1v15(), hashes.SHA256()

        def op(item: tuple[bytes, bytes]) -> None:
            rsa_verify(item[1], item[0], pkcs1, sha256)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        ec_verify, ecdsa = key.verify, ec.ECDSA(hashes.SHA256())

        def op(item: tuple[bytes, bytes]) -> None:
            ec_verify(item[1], item[0], ecdsa)
    else:
        raise TypeError(f"no ceiling for {type(key).__name__}")
    message, signed = items[0]
    try:  # prove the ceiling is a real check, not a no-op
        op((message + b"x", signed))
    except InvalidSignature:
        pass
    else:
        raise AssertionError(f"{corpus.alg} ceiling accepted a tampered message")
    return Contender("ceiling", op, items)


def signing_contenders(corpus: Corpus, count: int) -> list[Contender]:
    """sign_set against the bare private-key operation on the same claims / signing inputs."""
    alg, kid, signer = corpus.alg, corpus.kid, corpus.private_key
    inputs = [t.rsplit(".", 1)[0].encode("ascii") for t in corpus.tokens[:count]]

    def engine(claims: dict[str, Any]) -> str:
        return sign_set(claims, signer, alg=alg, kid=kid)

    bare: Op
    if isinstance(signer, rsa.RSAPrivateKey):
        rsa_sign, pkcs1, sha256 = signer.sign, padding.PKCS1v15(), hashes.SHA256()

        def bare(message: bytes) -> bytes:
            return rsa_sign(message, pkcs1, sha256)
    elif isinstance(signer, ec.EllipticCurvePrivateKey):
        ec_sign, ecdsa = signer.sign, ec.ECDSA(hashes.SHA256())

        def bare(message: bytes) -> bytes:
            return ec_sign(message, ecdsa)
    else:
        raise TypeError(f"no signing ceiling for {type(signer).__name__}")

    return [Contender(f"{alg}/sign_set", engine, corpus.claims[:count]),
            Contender(f"{alg}/sign_ceiling", bare, inputs)]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The stdlib way to refuse duplicate members (what the codec did first), as a reference."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate JSON member")
    return result


def _codec_parser() -> Callable[[bytes, str], object] | None:
    """The codec's own JSON-object parser, if it still has one with the usual signature."""
    parse: Callable[[bytes, str], object] | None = getattr(caep.codec, "_parse_json_object", None)
    if parse is None:
        return None
    try:
        parse(b'{"a":1}', "probe")
    except TypeError:
        return None
    return parse


def json_contenders(corpora: Sequence[Corpus]) -> list[Contender]:
    """Header+payload parsing with duplicate-key detection (the codec's, the stdlib way), and
    without (json.loads, orjson.loads), on the same decoded bytes."""
    items = [(_b64url(t.split(".")[0]), _b64url(t.split(".")[1]))
             for corpus in corpora for t in corpus.tokens]
    loads = json.loads
    fast = orjson.loads
    contenders: list[Contender] = []
    parse = _codec_parser()
    if parse is not None:
        codec_parse = parse

        def codec(item: tuple[bytes, bytes]) -> None:
            codec_parse(item[0], "JOSE header")
            codec_parse(item[1], "SET payload")

        contenders.append(Contender("codec", codec, items))

    def hook(item: tuple[bytes, bytes]) -> None:
        loads(item[0], object_pairs_hook=_unique_keys)
        loads(item[1], object_pairs_hook=_unique_keys)

    def plain(item: tuple[bytes, bytes]) -> None:
        loads(item[0])
        loads(item[1])

    def orjson_only(item: tuple[bytes, bytes]) -> None:
        fast(item[0])
        fast(item[1])

    return [*contenders, Contender("pairs_hook", hook, items), Contender("json", plain, items),
            Contender("orjson", orjson_only, items)]


# ----------------------------------------------------------------------------------- measuring

def _split(items: Sequence[Any], chunks: int) -> list[list[Any]]:
    size = -(-len(items) // chunks)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def run_all_items(contenders: Sequence[Contender]) -> None:
    """Every contender on every input once, untimed: proves each accepts all, and warms up."""
    for contender in contenders:
        op = contender.op
        for item in contender.items:
            op(item)


def measure(contenders: Sequence[Contender], rounds: int, chunks: int) -> dict[str, list[float]]:
    """Ops/s per round for each contender, interleaved chunk by chunk in a rotating order."""
    split = {c.name: _split(c.items, chunks) for c in contenders}
    count = min(len(parts) for parts in split.values())
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    perf = time.process_time  # CPU time: rates per core, not diluted by other processes
    order = list(contenders)
    for round_index in range(rounds):
        gc.collect()
        gc.freeze()  # the corpora stay alive all run: no full collection re-scans them
        spent = dict.fromkeys(rates, 0.0)
        done = dict.fromkeys(rates, 0)
        for chunk_index in range(count):
            shift = (round_index + chunk_index) % len(order)
            for contender in order[shift:] + order[:shift]:
                op, chunk = contender.op, split[contender.name][chunk_index]
                start = perf()
                for item in chunk:
                    op(item)
                spent[contender.name] += perf() - start
                done[contender.name] += (sum(map(len, chunk)) if contender.batched
                                         else len(chunk))
        for name in rates:
            rates[name].append(done[name] / spent[name])
    return rates


def _summary(samples: list[float]) -> dict[str, Any]:
    median = statistics.median(samples)
    spread = (max(samples) - min(samples)) / median if median else 0.0
    return {"median": median, "spread": spread, "rounds": samples}


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def profile_engine(verify: Op, corpora: Sequence[Corpus], top: int = 15) -> str:
    """Where the engine's verify time goes, by own time (cProfile inflates Python-level calls)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for corpus in corpora:
        for token in corpus.tokens:
            verify(token)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in entries.values())
    signature = sum(row[2] for (_, _, name), row in entries.items()
                    if "verify" in name and "objects>" in name)
    title = (f"profile: engine verify over {sum(len(c.tokens) for c in corpora)} tokens "
             f"({', '.join(c.alg for c in corpora)}), cProfile own time; "
             f"signature primitive {signature / total:.0%}, everything else "
             f"{1 - signature / total:.0%}")
    return "\n".join(results.profile_lines(stats, title, top))


# ------------------------------------------------------------------------------------ the run

def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, merge the figures into the results file; always exit 0."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_codec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round (< 10 s)")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH",
                        help="results file to merge the figures into (default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the engine's verify time goes (cProfile)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    began = time.perf_counter()

    corpora = [make_corpus(alg, mode.tokens, seed=index)
               for index, alg in enumerate(ALGORITHMS)]
    sizes = [len(_b64url(t.split(".")[1])) for corpus in corpora for t in corpus.tokens]
    verifier = engine_verifier(corpora)
    engine: Op = verifier.verify_envelope

    def batch_op(tokens: list[bytes]) -> None:
        for outcome in verifier.verify_envelopes(tokens):
            if isinstance(outcome, Exception):
                raise outcome
    verify_contenders: list[Contender] = []
    for corpus in corpora:
        ceiling = ceiling_contender(corpus)
        # As the engine receives them (Kafka record values, HTTP bodies): bytes, for everyone.
        tokens = [token.encode("ascii") for token in corpus.tokens]
        batches = [tokens[i:i + BATCH] for i in range(0, len(tokens), BATCH)]
        verify_contenders += [
            Contender(f"{corpus.alg}/ceiling", ceiling.op, ceiling.items),
            Contender(f"{corpus.alg}/batch", batch_op, batches, batched=True),
            Contender(f"{corpus.alg}/engine", engine, tokens),
            Contender(f"{corpus.alg}/typed", verifier.verify, tokens),
            Contender(f"{corpus.alg}/baseline", baseline_op(corpus), tokens),
        ]
    first = corpora[0]
    if verifier.verify_envelope(first.tokens[0])[1] != first.claims[0]:
        raise AssertionError("the engine returned other claims than were signed")
    if verifier.verify(first.tokens[0]).claims != first.claims[0]:
        raise AssertionError("the typed engine returned other claims than were signed")
    parse_contenders = json_contenders(corpora)
    sign_contenders = [c for corpus in corpora for c in signing_contenders(corpus, mode.signs)]

    run_all_items(verify_contenders + parse_contenders)
    run_all_items([Contender(c.name, c.op, c.items[:10]) for c in sign_contenders])
    verify_rates = measure(verify_contenders, mode.rounds, mode.chunks)
    parse_rates = measure(parse_contenders, mode.rounds, mode.chunks)
    sign_rates = measure(sign_contenders, mode.rounds, min(mode.chunks, mode.signs))

    details: dict[str, Any] = {
        "tokens_per_alg": mode.tokens, "rounds": mode.rounds, "chunks": mode.chunks,
        "claims_bytes": {"min": min(sizes), "mean": statistics.mean(sizes), "max": max(sizes)},
        "token_chars": {c.alg: statistics.mean(len(t) for t in c.tokens) for c in corpora},
        "verify": {}, "ratios": {}, "signing": {}, "json": {},
    }
    figures: list[results.Figure] = []
    checks: list[results.Check] = []
    for alg in ALGORITHMS:
        per = {name: _summary(verify_rates[f"{alg}/{name}"]) for name in CONTENDERS}
        details["verify"][alg] = per
        figures += [{"name": f"{alg} verify {name}", "value": per[name]["median"],
                     "unit": "verif/s"} for name in CONTENDERS]
        ratios = {
            "batch/baseline": _ratio(verify_rates[f"{alg}/batch"],
                                     verify_rates[f"{alg}/baseline"]),
            "batch/ceiling": _ratio(verify_rates[f"{alg}/batch"],
                                    verify_rates[f"{alg}/ceiling"]),
            "engine/baseline": _ratio(verify_rates[f"{alg}/engine"],
                                      verify_rates[f"{alg}/baseline"]),
            "engine/ceiling": _ratio(verify_rates[f"{alg}/engine"],
                                     verify_rates[f"{alg}/ceiling"]),
            "baseline/ceiling": _ratio(verify_rates[f"{alg}/baseline"],
                                       verify_rates[f"{alg}/ceiling"]),
            "typed/baseline": _ratio(verify_rates[f"{alg}/typed"],
                                     verify_rates[f"{alg}/baseline"]),
            "typed/ceiling": _ratio(verify_rates[f"{alg}/typed"],
                                    verify_rates[f"{alg}/ceiling"]),
        }
        details["ratios"][alg] = ratios
        checks += [results.check(f"{alg} batch/baseline", ratios["batch/baseline"],
                                 GOAL_VS_BASELINE),
                   results.check(f"{alg} batch/ceiling", ratios["batch/ceiling"],
                                 GOAL_VS_CEILING)]
        figures += [{"name": f"{alg} {name} (one SET a call)", "value": ratios[name],
                     "unit": "x"} for name in ("engine/baseline", "engine/ceiling")]
        signing: dict[str, Any] = {name: _summary(sign_rates[f"{alg}/{name}"])
                   for name in ("sign_set", "sign_ceiling")}
        signing["sign_set/ceiling"] = _ratio(sign_rates[f"{alg}/sign_set"],
                                             sign_rates[f"{alg}/sign_ceiling"])
        details["signing"][alg] = signing
        figures += [{"name": f"{alg} {name}", "value": signing[name]["median"],
                     "unit": "signs/s"} for name in ("sign_set", "sign_ceiling")]

    engine_us = {alg: 1e6 / details["verify"][alg]["engine"]["median"] for alg in ALGORITHMS}
    for name, rates in parse_rates.items():
        overhead = statistics.median(1e6 / r - 1e6 / o
                                     for r, o in zip(rates, parse_rates["orjson"], strict=True))
        details["json"][name] = {
            "us_per_token": 1e6 / statistics.median(rates),
            "over_orjson_us": overhead,
            "share_of_engine_verify": {alg: overhead / engine_us[alg] for alg in ALGORITHMS},
        }
        figures.append({"name": f"header+payload parse {name}",
                        "value": details["json"][name]["us_per_token"], "unit": "us/token"})

    print(_table(details, time.perf_counter() - began, quick=args.quick))
    if args.profile:
        print()
        print(profile_engine(engine, corpora))
    results.record("codec", figures=figures, checks=checks, details=details, quick=args.quick,
                   path=args.json)
    print(f"\nfigures merged into {args.json} under 'codec'")
    return 0


def _table(details: dict[str, Any], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    size = details["claims_bytes"]
    lines = [
        f"SET codec benchmark{' (--quick)' if quick else ''}: {details['tokens_per_alg']:,} "
        f"distinct SETs per alg, claims {size['min']}-{size['max']} B (mean {size['mean']:.0f}),"
        f" {details['rounds']} round(s) x {details['chunks']} interleaved chunks, median",
        f"{machine['implementation']} {machine['python']}, {machine['cpu_count']} CPUs; rates are"
        f" per core (CPU time of 1 process, 1 thread); run took {seconds:.1f} s;"
        " spread = (max - min) / median over the rounds",
        "",
        f"{'alg':<6} {'contender':<48} {'rate/s':>10} {'us/op':>8} {'spread':>7}",
    ]
    for alg in ALGORITHMS:
        rows = [(LABELS[name], details["verify"][alg][name]) for name in CONTENDERS]
        rows += [(LABELS[name], details["signing"][alg][name])
                 for name in ("sign_set", "sign_ceiling")]
        for label, summary in rows:
            spread = f"{summary['spread']:.1%}" if len(summary["rounds"]) > 1 else "-"
            lines.append(f"{alg:<6} {label:<48} {summary['median']:>10,.0f} "
                         f"{1e6 / summary['median']:>8.1f} {spread:>7}")
    lines += ["", "ratios (median of per-round ratios)"]
    for alg in ALGORITHMS:
        ratios = details["ratios"][alg]
        for name, goal in (("batch/baseline", GOAL_VS_BASELINE),
                           ("batch/ceiling", GOAL_VS_CEILING)):
            verdict = "PASS" if ratios[name] >= goal else "MISS"
            lines.append(f"{alg:<6} {name:<18} {ratios[name]:>6.2f}x   goal >= {goal:.2f}x  "
                         f"{verdict}")
        for name in ("engine/baseline", "engine/ceiling", "typed/baseline", "typed/ceiling",
                     "baseline/ceiling"):
            lines.append(f"{alg:<6} {name:<18} {ratios[name]:>6.2f}x   (context)")
        lines.append(f"{alg:<6} {'sign_set/ceiling':<18} "
                     f"{details['signing'][alg]['sign_set/ceiling']:>6.2f}x   (context)")
    lines += ["", "duplicate-JSON-key detection cost, header+payload per token (same bytes; "
                  "'over orjson' = cost of detecting duplicates, orjson alone keeps the last):"]
    for name, label in JSON_LABELS.items():
        figure = details["json"].get(name)
        if figure is None:
            continue
        shares = " / ".join(f"{share:.0%}" for share in figure["share_of_engine_verify"].values())
        extra = (f"  +{figure['over_orjson_us']:5.1f} us over orjson = {shares} of "
                 f"{' / '.join(ALGORITHMS)} engine verify" if name != "orjson" else "")
        lines.append(f"  {label:<42} {figure['us_per_token']:6.1f} us{extra}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
