"""The RFC 8935 push endpoint over real HTTP, with the real broker behind it."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx

from caep.codec import sign_set
from caep.evaluation import partition_key
from caep.keys import generate_jwk, private_key
from caep.subjects import parse_subject, subject_key
from streams.broker import EmbeddedBroker
from tests.conftest import Idp, collect, observe
from tests.edge_support import (
    PUSH_TOKEN,
    bearer,
    edge_settings,
    running_edge,
    topic_size,
    write_edge_file,
)

SET_TYPE = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"


def push(url: str, body: str | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {**SET_TYPE, **bearer(PUSH_TOKEN), **(headers or {})}
    return httpx.post(f"{url}/ssf/push", content=body, headers=sent, timeout=30)


def records(bootstrap: str, topic: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    return collect(bootstrap, topic, lambda r: len(r) >= count, timeout=timeout)


def test_accepted_only_once_written_keyed_by_subject_and_duplicates_written_once(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    subject = {"format": "complex", "user": {"format": "email", "email": "ann@example.com"},
               "tenant": {"format": "opaque", "id": "acme"}}
    claims = idp.claims(subject, CREDENTIAL_CHANGE,
                        {"credential_type": "password", "change_type": "update"})
    token = idp.sign(claims)
    with running_edge(settings) as edge:
        first = push(edge.url, token)
        again = push(edge.url, token)
    assert first.status_code == 202 and first.content == b""
    assert again.status_code == 202 and again.content == b""
    written = records(bootstrap, settings.topic_security_events, 1)
    assert [r["value"] for r in written] == [token]
    expected_key = partition_key("acme", subject_key(parse_subject(subject)))
    assert written[0]["key"] == expected_key
    # the duplicate was acknowledged without a second write (202 means written, so the
    # topic's end offsets already tell)
    assert topic_size(bootstrap, settings.topic_security_events) == 1


def test_the_push_producer_is_acks_all_and_idempotent_on_a_cluster(
    idp: Idp, tmp_path: Path
) -> None:
    """Issue 7's durability terms, as configured: the push endpoint's producer (and the
    stream store's) waits for every in-sync replica (acks=all) and is idempotent on an
    external cluster unless CAEP_PRODUCER_IDEMPOTENCE says otherwise; on the embedded Tansu,
    which refuses InitProducerId, it is not."""
    from streams.edge import Edge

    settings = edge_settings("127.0.0.1:9", idp.trust_file, tmp_path, producer_idempotence=None)
    cluster = Edge(settings, "127.0.0.1:9", embedded=False)
    assert cluster.sink._options["acks"] == "all"
    assert cluster.sink._options["enable_idempotence"] is True
    assert cluster.store.idempotence is True
    embedded = Edge(settings, "127.0.0.1:9", embedded=True)
    assert embedded.sink._options["acks"] == "all"
    assert embedded.sink._options["enable_idempotence"] is False


def test_the_caep_interop_use_cases_are_accepted_by_push(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """The use cases issue 7 names (CAEP interoperability profile: session-revoked,
    credential-change; and device-compliance-change, which the OpenID conformance suite's
    CAEP interop plan adds): each CAEP 1.0 example, as our trusted IdP's SET (the example's
    subject and event; our issuer, audience, jti), is accepted and written once."""
    import json

    examples = Path(__file__).parent / "spec_examples"
    names = ["caep-3.1-session-revoked-example-user-sub.json",
             "caep-3.3-credential-change-example-fido2.json",
             "caep-3.5-device-compliance-change-examples-out-of-compliance.json"]
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    tokens = []
    for name in names:
        example = json.loads((examples / name).read_text(encoding="utf-8"))
        ((event_type, event),) = example["events"].items()
        tokens.append(idp.sign(idp.claims(example["sub_id"], event_type, event,
                                          txn=example["txn"])))
    with running_edge(settings) as edge:
        answers = [push(edge.url, token) for token in tokens]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    written = records(bootstrap, settings.topic_security_events, 3)
    assert sorted(r["value"] for r in written) == sorted(tokens)


def test_refusals_carry_rfc8935_codes_and_write_nothing(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    subject = {"format": "email", "email": "bo@example.com"}
    stranger = generate_jwk("RS256", kid=idp.jwk["kid"])
    forged = sign_set(idp.claims(subject), private_key(stranger), kid=idp.jwk["kid"])
    cases: list[tuple[dict[str, str], str | bytes, int, str | None]] = [
        ({"Authorization": ""}, idp.sign(idp.claims(subject)), 401, "authentication_failed"),
        (bearer("not-the-token"), idp.sign(idp.claims(subject)), 401, "authentication_failed"),
        ({"Content-Type": "application/json"}, idp.sign(idp.claims(subject)), 400,
         "invalid_request"),
        ({}, "not.a.set", 400, "invalid_request"),
        ({}, forged, 400, "invalid_key"),
        ({}, idp.sign(idp.claims(subject, iss="https://other-idp.example")), 400,
         "invalid_issuer"),
        ({}, idp.sign(idp.claims(subject, aud="https://elsewhere.example")), 400,
         "invalid_audience"),
        ({}, idp.sign(idp.claims(subject, events={CREDENTIAL_CHANGE: {}})), 400,
         "invalid_request"),
        ({}, b"x" * (settings.max_set_bytes + 1), 413, "invalid_request"),
    ]
    with running_edge(settings) as edge:
        for headers, body, status, err in cases:
            answer = push(edge.url, body, headers)
            assert answer.status_code == status, (headers, answer.text)
            assert answer.headers["content-type"] == "application/json"
            document = answer.json()
            assert set(document) == {"err", "description"}, document
            assert document["err"] == err, (headers, document)
            if status == 401:
                assert answer.headers["www-authenticate"].startswith("Bearer")
    assert topic_size(bootstrap, settings.topic_security_events) == 0


def test_a_transmitter_may_send_only_its_own_issuers(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_config_file=write_edge_file(
                                 tmp_path, issuers=["https://someone-else.example"]))
    with running_edge(settings) as edge:
        answer = push(edge.url, idp.sign(idp.claims({"format": "email",
                                                     "email": "cy@example.com"})))
    assert answer.status_code == 400
    assert answer.json()["err"] == "access_denied"


def test_broker_gone_answers_503_or_429_never_202(idp: Idp, tmp_path: Path) -> None:
    """Bounded: records handed to the producer and not yet settled are counted, so once
    `max_in_flight` of them are pending the endpoint refuses at once with 429 instead of
    buffering more. Those answered 503 the producer gives up too, and while the broker stays
    away a later push is refused at once (503) without being handed to the producer."""
    broker = EmbeddedBroker().start()
    try:
        settings = edge_settings(broker.bootstrap, idp.trust_file, tmp_path,
                                 edge_max_in_flight=2, edge_produce_timeout_seconds=2.0,
                                 edge_retry_after_seconds=7)
        with running_edge(settings) as edge:
            sink = edge.edge.sink
            warm = push(edge.url, idp.sign(idp.claims({"format": "email",
                                                       "email": "warm@example.com"})))
            assert warm.status_code == 202
            broker.stop(timeout=0.2)  # Tansu lingers ~5 s on SIGTERM with clients connected
            tokens = [idp.sign(idp.claims({"format": "email", "email": f"u{i}@example.com"}))
                      for i in range(2)]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(push, edge.url, t) for t in tokens]
                observe(lambda: sink.in_flight == 2, 5, "both records handed to the producer")
                saturated = push(edge.url, idp.sign(idp.claims({"format": "email",
                                                                "email": "late@example.com"})))
                unavailable = [w.result() for w in waiting]
            assert saturated.status_code == 429
            assert saturated.headers["retry-after"] == "7"
            assert [a.status_code for a in unavailable] == [503, 503]
            assert all(a.headers["retry-after"] == "7" for a in unavailable)
            observe(lambda: sink.in_flight == 0, 5, "the producer gives up what was refused")
            sent = time.monotonic()
            again = push(edge.url, tokens[0])
            assert again.status_code == 503 and again.headers["retry-after"] == "7"
            assert time.monotonic() - sent < settings.edge_produce_timeout_seconds
            assert sink.in_flight == 0
    finally:
        broker.stop()
