"""Every HTTP example of SSF 1.0 §7-§8 (tests/spec_examples/http/ssf-*.json, extracted from
openid/sharedsignals) and every figure of RFC 8935 (push, figures 1-5 and the error codes of
Table 1) and RFC 8936 (poll, figures 1-8), as published (rfc8935-*.json, rfc8936-*.json,
named by section and figure), replayed against a running edge: RFC 8935 against its push
receiver (`POST /ssf/push`), RFC 8936 against its transmitter's poll endpoint. The example
stream id and bearer token are replaced by real ones (the example token itself is checked to
be refused); answers must have the example's status and members. Where an example cannot be
sent as printed, the test says what stands in for it and why (the SETs of the figures are
signed by nobody we trust; the RFC 8936 figures acknowledge the `jti`s of Figure 6, replaced
by those of the SETs the edge actually handed out)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from caep.codec import sign_set
from caep.errors import ErrorCode
from caep.keys import generate_jwk, private_key
from caep.settings import Settings
from caep.ssf.auth import token_hash
from caep.ssf.models import POLL
from tests.conftest import Idp, until
from tests.edge_support import (
    PUSH_TOKEN,
    RP2_TOKEN,
    RP_AUDIENCE,
    RP_TOKEN,
    RecordingReceiver,
    RunningEdge,
    bearer,
    edge_settings,
    running_edge,
    topic_size,
    write_edge_file,
)

HTTP = Path(__file__).parent / "spec_examples" / "http"
SETS = Path(__file__).parent / "spec_examples"
EXAMPLE_ID = "f67e39a0a4d34d56b3aa1bc4cff0069f"
EXAMPLE_ENDPOINT = "https://receiver.example.com/events"
# the issuer RFC 8935 Figure 5 names; a second transmitter of the edge file may send only its
# SETs (and the edge's trust file does not know it)
FIGURE5_ISSUER = "https://iss.example.com/"
FIGURE5_TOKEN = "push-token-of-iss-example"
LONG_POLL = 1.0  # edge_poll_max_wait_seconds of the edge under test

RFC8935 = {  # file of each figure (and table) of RFC 8935, by section
    "Figure 1": "rfc8935-2.1-figure1-set-transmission-request.json",
    "Figure 2": "rfc8935-2.2-figure2-successful-delivery-response.json",
    "Figure 3": "rfc8935-2.3-figure3-error-response-invalid-key.json",
    "Figure 4": "rfc8935-2.3-figure4-error-response-authentication-failed.json",
    "Figure 5": "rfc8935-2.3-figure5-error-response-access-denied.json",
    "Table 1": "rfc8935-2.4-table1-set-error-codes.json",
}
RFC8936 = {
    "Figure 1": "rfc8936-2.4.1-figure1-initial-poll-request.json",
    "Figure 2": "rfc8936-2.4.1-figure2-default-poll-request.json",
    "Figure 3": "rfc8936-2.4.2-figure3-acknowledge-only-request.json",
    "Figure 4": "rfc8936-2.4.3-figure4-poll-with-ack-no-errors.json",
    "Figure 5": "rfc8936-2.4.4-figure5-poll-ack-with-error.json",
    "Figure 6": "rfc8936-2.5-figure6-poll-response.json",
    "Figure 7": "rfc8936-2.5-figure7-no-sets-poll-response.json",
    "Figure 8": "rfc8936-2.5.1-figure8-poll-error-response.json",
}


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((HTTP / name).read_text(encoding="utf-8"))
    return loaded


def substituted(value: Any, **names: str) -> Any:
    text = json.dumps(value)
    for old, new in names.items():
        text = text.replace(old, new)
    return json.loads(text)


@pytest.fixture(scope="module")
def world(bootstrap: str, idp: Idp, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningEdge, RecordingReceiver, Settings]]:
    directory = tmp_path_factory.mktemp("spec")
    edge_file = write_edge_file(directory)
    with edge_file.open("a", encoding="utf-8") as file:
        file.write("\n[[transmitter]]\n"
                   'name = "iss-example"\n'
                   f'token_sha256 = "{token_hash(FIGURE5_TOKEN)}"\n'
                   f'issuers = ["{FIGURE5_ISSUER}"]\n')
    settings = edge_settings(bootstrap, idp.trust_file, directory, edge_config_file=edge_file,
                             edge_poll_max_wait_seconds=LONG_POLL)
    receiver = RecordingReceiver()
    with receiver.running(), running_edge(settings) as edge:
        yield edge, receiver, settings


def replay(edge: RunningEdge, name: str, token: str = RP_TOKEN,
           **names: str) -> httpx.Response:
    request = example(name)
    target = substituted(request["target"], **{EXAMPLE_ID: names.get("stream_id", "")})
    body = request.get("body")
    if body is not None:
        body = substituted(body, **{EXAMPLE_ID: names.get("stream_id", ""),
                                    EXAMPLE_ENDPOINT: names.get("endpoint", EXAMPLE_ENDPOINT)})
    example_token = request["headers"].get("Authorization")
    if example_token:
        refused = httpx.request(request["method"], f"{edge.url}{target}", json=body,
                                headers={"Authorization": example_token}, timeout=10)
        assert refused.status_code == 401, name  # the example's own token is nobody's
    return httpx.request(request["method"], f"{edge.url}{target}", json=body,
                         headers=bearer(token), timeout=10)


def test_every_ssf_http_example_is_on_file() -> None:
    names = sorted(p.name for p in HTTP.glob("ssf-*.json"))
    assert len(names) == 29
    requests = [n for n in names if "method" in example(n)]
    responses = [n for n in names if "status" in example(n)]
    assert len(requests) + len(responses) == 29


def test_discovery_examples(world: tuple[RunningEdge, RecordingReceiver, Settings]) -> None:
    edge, _, _ = world
    answer = httpx.get(f"{edge.url}{example('ssf-7.2.1-figdiscoveryrequest.json')['target']}")
    expected = example("ssf-7.2.3-figdiscoveryresponse.json")
    assert answer.status_code == expected["status"]
    assert answer.headers["content-type"] == expected["headers"]["Content-Type"]
    # every member of the example but critical_subject_members (we require none: SSF §7.2.2
    # says to omit empty claims)
    assert set(answer.json()) == set(expected["body"]) - {"critical_subject_members"}
    for name in ("ssf-7.2.1-figdiscoveryrequestpath.json",
                 "ssf-7.2.2-figolddiscoveryrequest.json"):
        # our issuer has no path, and new services SHOULD NOT serve /risc-configuration
        assert httpx.get(f"{edge.url}{example(name)['target']}").status_code == 404


def test_discovery_example_with_a_path(bootstrap: str, idp: Idp, tmp_path: Path) -> None:
    """SSF §7.2 Figure "Transmitter Configuration Request (with path)": an edge whose issuer
    is `.../issuer1` answers that request with its metadata, and the endpoints the metadata
    names (under the issuer's path) work: our own stream client discovers it, creates a
    stream and polls it there."""
    from streams.broker import free_port
    from streams.edge_clients import StreamClient

    port = free_port()
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path, edge_port=port,
                             edge_issuer=f"http://127.0.0.1:{port}/issuer1/")
    request = example("ssf-7.2.1-figdiscoveryrequestpath.json")
    with running_edge(settings) as edge:
        issuer = f"{edge.url}/issuer1"
        answer = httpx.get(f"{edge.url}{request['target']}", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        meta = answer.json()
        assert meta["issuer"] == issuer
        assert all(meta[name].startswith(f"{issuer}/ssf/") for name in (
            "jwks_uri", "configuration_endpoint", "status_endpoint", "verification_endpoint"))
        assert httpx.get(meta["jwks_uri"], timeout=10).json() == edge.edge.keys.jwks()

        async def scenario() -> dict[str, Any]:
            client = StreamClient(issuer, token=RP_TOKEN)
            assert (await client.discover()).issuer == issuer
            created = await client.create_stream()
            await client.aclose()
            return created

        created = asyncio.run(scenario())
        assert created["iss"] == issuer
        assert created["delivery"]["endpoint_url"].startswith(f"{issuer}/ssf/poll/")
        polled = httpx.post(created["delivery"]["endpoint_url"], headers=bearer(RP_TOKEN),
                            json={"returnImmediately": True}, timeout=10)
        assert polled.status_code == 200 and polled.json()["sets"] == {}


def test_stream_configuration_examples(
    world: tuple[RunningEdge, RecordingReceiver, Settings]
) -> None:
    edge, receiver, _ = world
    created = replay(edge, "ssf-8.1.1.1-figcreatestreamreq.json", endpoint=receiver.url)
    expected = example("ssf-8.1.1.1-figcreatestreamresp.json")
    assert created.status_code == expected["status"]
    body = created.json()
    assert set(body) == set(expected["body"])
    sid = body["stream_id"]
    request_body = example("ssf-8.1.1.1-figcreatestreamreq.json")["body"]
    assert body["events_requested"] == request_body["events_requested"]
    assert body["events_delivered"] == []  # urn:example types: none is supported here
    assert body["description"] == request_body["description"]

    read = replay(edge, "ssf-8.1.1.2-figreadconfigreq.json", stream_id=sid)
    expected = example("ssf-8.1.1.2-figreadconfigresp.json")
    assert read.status_code == expected["status"] and read.json() == body
    assert read.headers["cache-control"] == expected["headers"]["Cache-Control"]

    listed = replay(edge, "ssf-8.1.1.2-figreadconfigreqnostreamid.json")
    one = example("ssf-8.1.1.2-figreadconfigrespnostreamidonestream.json")
    assert listed.status_code == one["status"] and len(listed.json()) == len(one["body"]) == 1
    other = replay(edge, "ssf-8.1.1.1-figcreatestreamreq.json", endpoint=receiver.url).json()
    many = example("ssf-8.1.1.2-figreadconfigrespnostreamidmanystreams.json")
    listed = replay(edge, "ssf-8.1.1.2-figreadconfigreqnostreamid.json").json()
    assert all(set(s) - {"description"} == set(many["body"][0]) for s in listed)
    assert len(listed) == 2
    none = example("ssf-8.1.1.2-figreadconfigrespnostreamidnostreams.json")
    assert replay(edge, "ssf-8.1.1.2-figreadconfigreqnostreamid.json", RP2_TOKEN
                  ).json() == none["body"] == []

    updated = replay(edge, "ssf-8.1.1.3-figupdateconfigreq.json", stream_id=sid)
    expected = example("ssf-8.1.1.3-figupdateconfigresp.json")
    assert updated.status_code == expected["status"]
    assert set(updated.json()) == set(expected["body"])
    assert updated.json()["description"] == expected["body"]["description"]

    replaced = replay(edge, "ssf-8.1.1.4-figreplaceconfigreq.json", stream_id=sid,
                      endpoint=receiver.url)
    expected = example("ssf-8.1.1.4-figreplaceconfigresp.json")
    assert replaced.status_code == expected["status"]
    assert set(replaced.json()) == set(expected["body"])
    assert replaced.json()["description"] == "Stream for Receiver C"

    for stream_id in (sid, other["stream_id"]):
        deleted = replay(edge, "ssf-8.1.1.5-figdeletestreamreq.json", stream_id=stream_id)
        expected = example("ssf-8.1.1.5-figdeletestreamresp.json")
        assert deleted.status_code == expected["status"] and deleted.content == b""
        assert deleted.headers["cache-control"] == expected["headers"]["Cache-Control"]


def test_status_subject_and_verification_examples(
    world: tuple[RunningEdge, RecordingReceiver, Settings]
) -> None:
    edge, receiver, _ = world
    sid = replay(edge, "ssf-8.1.1.1-figcreatestreamreq.json", endpoint=receiver.url
                 ).json()["stream_id"]
    paused = replay(edge, "ssf-8.1.2.2-figupdatestatusreq.json", stream_id=sid)
    assert paused.status_code == 200
    assert paused.json() == {"stream_id": sid, "status": "paused"}
    with_reason = replay(edge, "ssf-8.1.2.2-figupdatestatuswithreasonreq.json", stream_id=sid)
    expected = example("ssf-8.1.2.2-figupdatestatusresp.json")
    assert with_reason.status_code == expected["status"]
    assert with_reason.json() == substituted(expected["body"], **{EXAMPLE_ID: sid})
    status = replay(edge, "ssf-8.1.2.1-figstatusreq.json", stream_id=sid)
    expected = example("ssf-8.1.2.1-figstatusresp.json")
    assert status.status_code == expected["status"]
    assert set(status.json()) == set(expected["body"])
    assert status.json()["status"] == "paused"

    added = replay(edge, "ssf-8.1.3.2-figaddreq.json", stream_id=sid)
    expected = example("ssf-8.1.3.2-figaddresp.json")
    assert added.status_code == expected["status"] and added.content == b""
    assert added.headers["cache-control"] == expected["headers"]["Cache-Control"]
    removed = replay(edge, "ssf-8.1.3.3-figremovereq.json", stream_id=sid)
    assert removed.status_code == example("ssf-8.1.3.3-figremoveresp.json")["status"]

    httpx.post(f"{edge.url}/ssf/status", headers=bearer(RP_TOKEN), timeout=10,
               json={"stream_id": sid, "status": "enabled"})
    verify = replay(edge, "ssf-8.1.4.2-figverifyreq.json", stream_id=sid)
    assert verify.status_code == example("ssf-8.1.4.2-figverifyresp.json")["status"]
    state = example("ssf-8.1.4.2-figverifyreq.json")["body"]["state"]

    def mine() -> list[dict[str, Any]]:
        return [c for c in (jwt.decode(t, options={"verify_signature": False})
                            for t in receiver.received) if c["sub_id"].get("id") == sid]

    asyncio.run(until(lambda: len(mine()) >= 3, 10, "stream-updated x2 and verification"))
    updated, enabled, verification = mine()[:3]
    figure_updated = json.loads((SETS / "ssf-8.1.5-figstreamupdatedset.json").read_text())
    figure_verify = json.loads((SETS / "ssf-8.1.4.2-figverifyset.json").read_text())
    assert set(updated) - {"txn"} == set(figure_updated)
    (kind, payload), = updated["events"].items()
    (figure_kind, figure_payload), = figure_updated["events"].items()
    assert kind == figure_kind and payload == {"status": "paused"}  # the first pause: no reason
    assert set(payload) <= set(figure_payload)
    assert enabled["events"][next(iter(enabled["events"]))]["status"] == "enabled"
    assert set(verification) == set(figure_verify)
    assert verification["events"] == figure_verify["events"]  # the state is echoed
    assert verification["sub_id"] == {"format": "opaque", "id": sid}
    assert state in json.dumps(verification)



def test_every_rfc8935_and_rfc8936_figure_is_on_file() -> None:
    """RFC 8935 has Figures 1-5 and Table 1, RFC 8936 Figures 1-8, and no other: each has its
    file, named by its section and number, with the RFC's caption; no other file claims to be
    of either RFC."""
    for rfc, files, figures in (("rfc8935", RFC8935, 5), ("rfc8936", RFC8936, 8)):
        assert sorted(p.name for p in HTTP.glob(f"{rfc}-*.json")) == sorted(files.values())
        assert [label for label in files if label.startswith("Figure")] == [
            f"Figure {n}" for n in range(1, figures + 1)]
        for label, name in files.items():
            kind, number = label.lower().split()
            assert re.fullmatch(rf"{rfc}-[0-9.]+-{kind}{number}-[a-z0-9-]+\.json", name), name
            content = example(name)
            assert content["caption"].startswith(f"{label}: "), name
            assert kind == "table" or ("method" in content) != ("status" in content), name
    assert [n for n in RFC8935.values() if "method" in example(n)] == [RFC8935["Figure 1"]]
    assert [n for n in RFC8936.values() if "method" in example(n)] == [
        RFC8936[f"Figure {n}"] for n in range(1, 6)]


def error_answer(answer: httpx.Response, figure: dict[str, Any]) -> str:
    """An RFC 8935 §2.3 error answer with the figure's headers and members; its `err`."""
    assert answer.headers["content-type"] == figure["headers"]["Content-Type"]
    assert answer.headers["content-language"] == figure["headers"]["Content-Language"]
    document = answer.json()
    assert set(document) == set(figure["body"]), document
    assert isinstance(document["description"], str) and document["description"]
    return str(document["err"])


def test_rfc8935_push_examples(world: tuple[RunningEdge, RecordingReceiver, Settings],
                               idp: Idp) -> None:
    """Figure 1's request, as printed and then with stand-ins for its SET, draws each error
    figure (3, 4, 5) and every code of Table 1 from the push endpoint, then Figure 2."""
    edge, _, settings = world
    figure1, figure2, figure3, figure4, figure5 = (example(RFC8935[f"Figure {n}"])
                                                   for n in range(1, 6))
    # Figure 1's headers and body as printed, sent to the edge's push endpoint instead of
    # its target (`/Events` of notify.rp.example.com)
    headers = {k: v for k, v in figure1["headers"].items() if k != "Host"}
    codes: set[str] = set()

    def push(body: str, token: str | None = PUSH_TOKEN) -> httpx.Response:
        sent = headers if token is None else {**headers, **bearer(token)}
        return httpx.post(f"{edge.url}/ssf/push", content=body, headers=sent, timeout=10)

    def refused(answer: httpx.Response, figure: dict[str, Any]) -> str:
        assert answer.status_code == figure["status"], answer.text
        codes.add(error_answer(answer, figure))
        return str(answer.json()["err"])

    # Figure 1 carries no credentials: the edge answers with Figure 4's error (its headers and
    # members, `authentication_failed`), but as 401 with a Bearer challenge, not Figure 4's
    # 400: which transmitter is calling is HTTP authentication (RFC 8935 §3, RFC 7235 §3.1,
    # RFC 6750 §3), an error RFC 8935 §2.3 answers "with the applicable HTTP Status Code";
    # 400 is for the SET itself (README, Push endpoint). Likewise for a token that is not ours.
    for token in (None, "an-expired-or-unknown-token"):
        answer = push(figure1["body_text"], token)
        assert answer.status_code == 401 and figure4["status"] == 400
        assert answer.headers["www-authenticate"].startswith("Bearer")
        codes.add(error_answer(answer, figure4))
        assert answer.json()["err"] == figure4["body"]["err"]

    # With our transmitter's token, the figure's own SET is refused, 400 in the shape of
    # Figure 3: it is HS256, a shared-secret algorithm never accepted for SETs (and of
    # https://idp.example.com/, an issuer the edge does not trust)
    assert refused(push(figure1["body_text"]), figure3) == "invalid_key"
    # and cut short (no signature part), it cannot be parsed as a SET (Table 1)
    cut = figure1["body_text"].rsplit(".", 1)[0]
    assert refused(push(cut), figure3) == "invalid_request"

    subject = {"format": "email", "email": "figure@example.com"}
    # Figure 3: a key the edge does not know, with the figure's key ID
    stranger = generate_jwk("RS256", kid="12345")
    unknown_key = sign_set(idp.claims(subject), private_key(stranger), kid="12345")
    assert refused(push(unknown_key), figure3) == figure3["body"]["err"]
    # Figure 5 (its body): a SET of the issuer the figure names, unknown to the edge
    assert refused(push(idp.sign(idp.claims(subject, iss=FIGURE5_ISSUER))),
                   figure5) == figure5["body"]["err"]
    # Figure 5 (its caption, access_denied): a transmitter that may send only the SETs of
    # Figure 5's issuer sends one of another (trusted) issuer
    assert refused(push(idp.sign(idp.claims(subject)), FIGURE5_TOKEN), figure5) == "access_denied"
    # the one code of Table 1 no figure shows
    assert refused(push(idp.sign(idp.claims(subject, aud="https://elsewhere.example"))),
                   figure3) == "invalid_audience"
    table = example(RFC8935["Table 1"])["table"]
    assert [row["error_code"] for row in table] == [code.value for code in ErrorCode]
    assert codes == {row["error_code"] for row in table}  # every code, from the push endpoint
    assert topic_size(settings.bootstrap or "", settings.topic_security_events) == 0

    # Figure 2: Figure 1's request (its headers, our token) with, in place of the figure's
    # SET, one our trusted IdP signed with the figure's event (RISC account-disabled, reason
    # hijacking) about the figure's subject (iss_sub, in `sub_id` as RISC 1.0 carries it)
    claims = jwt.decode(figure1["body_text"], options={"verify_signature": False})
    (event_type, event), = claims["events"].items()
    legacy = event.pop("subject")
    stand_in = idp.sign(idp.claims({"format": "iss_sub", "iss": legacy["iss"],
                                    "sub": legacy["sub"]}, event_type, event))
    for _ in range(2):  # RFC 8935 §2: a SET sent again is answered as the first time
        accepted = push(stand_in)
        assert accepted.status_code == figure2["status"], accepted.text
        assert accepted.content == b""  # §2.2: the body MUST be empty
    assert topic_size(settings.bootstrap or "", settings.topic_security_events) == 1


def b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_rfc8936_poll_examples(world: tuple[RunningEdge, RecordingReceiver, Settings]) -> None:
    """Each request figure is sent to a poll stream of the edge, in the RFC's order: poll
    (Figures 1, 2), receive SETs (Figure 6), acknowledge them (Figures 3, 4, 5), receive none
    (Figure 7), and a broken request (Figure 8). The `jti`s the acknowledging figures name are
    those of Figure 6; each is replaced by the `jti` of the SET the edge handed out in its
    place (in order), and the figures' requests get our receiver's bearer token."""
    edge, _, _ = world
    figure6, figure7, figure8 = (example(RFC8936[f"Figure {n}"]) for n in (6, 7, 8))
    created = httpx.post(f"{edge.url}/ssf/stream", headers=bearer(RP_TOKEN), json={},
                         timeout=10).json()
    sid, url = created["stream_id"], created["delivery"]["endpoint_url"]
    assert created["delivery"]["method"] == POLL
    keys = jwt.PyJWKSet.from_dict(httpx.get(f"{edge.url}/ssf/jwks.json", timeout=10).json())

    def send(figure: int, jtis: dict[str, str] | None = None,
             token: str | None = RP_TOKEN) -> httpx.Response:
        request = example(RFC8936[f"Figure {figure}"])
        headers = {k: v for k, v in request["headers"].items() if k != "Host"}
        if token is not None:
            headers.update(bearer(token))
        body = json.dumps(substituted(request["body"], **(jtis or {})))
        return httpx.post(url, content=body, headers=headers, timeout=10)

    def queue_sets(count: int) -> None:
        for n in range(count):  # verification SETs (SSF §8.1.4): queued as the request returns
            assert httpx.post(f"{edge.url}/ssf/verify", headers=bearer(RP_TOKEN), timeout=10,
                              json={"stream_id": sid, "state": f"s{n}"}).status_code == 204

    def no_sets(answer: httpx.Response, more: bool = False) -> None:
        assert answer.status_code == figure7["status"], answer.text
        assert answer.headers["content-type"] == figure7["headers"]["Content-Type"]
        body = answer.json()
        assert set(figure7["body"]) <= set(body) <= {"sets", "moreAvailable"}
        assert body["sets"] == figure7["body"]["sets"] == {}
        assert body.get("moreAvailable", False) is more  # §2.3: omitted means false

    def handed_out(answer: httpx.Response) -> dict[str, str]:
        """A Figure 6 answer: its SETs are the edge's, each under its own `jti`; returns the
        figure's `jti`s mapped to those handed out in their place."""
        assert answer.status_code == figure6["status"], answer.text
        assert answer.headers["content-type"] == figure6["headers"]["Content-Type"]
        body = answer.json()
        assert set(figure6["body"]) <= set(body) <= {"sets", "moreAvailable"}
        assert len(body["sets"]) == len(figure6["body"]["sets"]) == 2
        for jti, token in body["sets"].items():
            header = jwt.get_unverified_header(token)
            assert header["typ"] == "secevent+jwt"
            claims = jwt.decode(token, keys[header["kid"]].key, algorithms=[header["alg"]],
                                audience=RP_AUDIENCE)
            assert claims["jti"] == jti and claims["sub_id"] == {"format": "opaque", "id": sid}
        return dict(zip(figure6["body"]["sets"], body["sets"], strict=True))

    def settled(jtis: dict[str, str]) -> bool:
        queue = edge.edge.delivery.polls[sid]
        return not set(jtis.values()) & {*queue.waiting, *queue.outstanding}

    # the figure's SETs are unsecured JWTs ({"alg":"none"}, kept as printed), each under its
    # own jti
    for jti, token in figure6["body"]["sets"].items():
        header, payload, signature = token.split(".")
        assert b64url_json(header) == {"alg": "none"} and signature == ""
        assert b64url_json(payload)["jti"] == jti

    # as printed, with no credentials, the poll endpoint refuses (RFC 8936 §3: a challenge)
    anonymous = send(1, token=None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    started = time.monotonic()
    no_sets(send(1))  # Figure 1, nothing queued: Figure 7 at once (returnImmediately)
    assert time.monotonic() - started < LONG_POLL
    started = time.monotonic()
    no_sets(send(2))  # Figure 2, nothing queued: a long poll, then Figure 7
    assert LONG_POLL <= time.monotonic() - started < LONG_POLL + 9

    queue_sets(2)
    first = handed_out(send(1))  # Figure 1 -> Figure 6
    queue_sets(1)
    # Figure 3: acknowledges Figure 6's SETs; maxEvents 0 hands out nothing, though one waits
    no_sets(send(3, first), more=True)
    assert settled(first)

    queue_sets(1)
    second = handed_out(send(2))  # Figure 2 with SETs waiting -> Figure 6 at once
    started = time.monotonic()
    no_sets(send(4, second))  # Figure 4: acknowledged, then a long poll that ends empty
    assert LONG_POLL <= time.monotonic() - started < LONG_POLL + 9
    assert settled(second)

    queue_sets(2)
    third = handed_out(send(1))
    no_sets(send(5, third))  # Figure 5: one acknowledged, one reported with its error
    assert settled(third)
    figure5 = example(RFC8936["Figure 5"])["body"]
    ((errored, err),) = figure5["setErrs"].items()
    rejected = edge.edge.delivery.polls[sid].rejected
    assert rejected[third[errored]] == (err["err"], err["description"])
    assert figure5["ack"] == [jti for jti in third if jti != errored]
    assert third[figure5["ack"][0]] not in rejected

    # Figure 8: an invalid poll request (the body is undefined and ignored, §2.5.1)
    for invalid in (b"{\"maxEvents\": -1}", b"{\"returnImmediately\": \"yes\"}",
                    b"{\"ack\": \"4d3559ec67504aaba65d40b0363faad8\"}", b"not json"):
        answer = httpx.post(url, content=invalid, timeout=10, headers={
            "Content-Type": "application/json", **bearer(RP_TOKEN)})
        assert answer.status_code == figure8["status"], invalid
