"""Every HTTP example of SSF 1.0 §7-§8 (tests/spec_examples/http/ssf-*.json, extracted from
openid/sharedsignals) and the poll and push examples of the secevent drafts that became RFC
8936 and RFC 8935 (rfc893x-draft-*.json: draft-ietf-secevent-http-poll-00 / -push-00, the
texts at hand), replayed against a running edge. The example stream id and bearer token are
replaced by real ones (the example token itself is checked to be refused); answers must have
the example's status and members."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from caep.settings import Settings
from caep.ssf.models import PollResponse
from tests.conftest import Idp, until
from tests.edge_support import (
    PUSH_TOKEN,
    RP2_TOKEN,
    RP_TOKEN,
    RecordingReceiver,
    RunningEdge,
    bearer,
    edge_settings,
    running_edge,
)

HTTP = Path(__file__).parent / "spec_examples" / "http"
SETS = Path(__file__).parent / "spec_examples"
EXAMPLE_ID = "f67e39a0a4d34d56b3aa1bc4cff0069f"
EXAMPLE_ENDPOINT = "https://receiver.example.com/events"


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
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path_factory.mktemp("spec"),
                             edge_poll_max_wait_seconds=0.5)
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


def test_rfc8936_poll_examples(world: tuple[RunningEdge, RecordingReceiver, Settings]) -> None:
    edge, _, _ = world
    created = httpx.post(f"{edge.url}/ssf/stream", headers=bearer(RP_TOKEN), json={},
                         timeout=10).json()
    url = created["delivery"]["endpoint_url"]
    empty = example("rfc8936-draft-2.2.4-figure7-no-sets-response.json")
    for name in ("rfc8936-draft-2.2.3.1-figure1-initial-poll.json",
                 "rfc8936-draft-2.2.3.1-figure2-default-poll.json",
                 "rfc8936-draft-2.2.3.2-figure3-acknowledge-only.json",
                 "rfc8936-draft-2.2.3.3-figure4-poll-with-ack.json",
                 "rfc8936-draft-2.2.3.4-figure5-ack-with-error.json"):
        started = time.monotonic()
        answer = httpx.post(url, json=example(name)["body"], headers=bearer(RP_TOKEN),
                            timeout=10)
        assert answer.status_code == empty["status"], name
        assert answer.json()["sets"] == empty["body"]["sets"], name
        assert answer.json()["moreAvailable"] is False
        assert time.monotonic() - started < 5  # long polls end after edge_poll_max_wait
    figure6 = PollResponse.model_validate(
        example("rfc8936-draft-2.2.4-figure6-poll-response.json")["body"])
    assert set(figure6.sets) == {"4d3559ec67504aaba65d40b0363faad8",
                                 "3d0c3cf797584bd193bd0fb1bd4e7d30"}
    assert all(token.count(".") == 2 for token in figure6.sets.values())


def test_rfc8935_push_examples(world: tuple[RunningEdge, RecordingReceiver, Settings],
                               idp: Idp) -> None:
    edge, _, _ = world
    figure1 = example("rfc8935-draft-2.2-figure1-post-request.json")
    headers = dict(figure1["headers"])
    refused = httpx.post(f"{edge.url}/ssf/push", content=figure1["body_text"],
                         headers=headers, timeout=10)
    assert refused.status_code == 401  # the example's bearer token is not ours
    headers["Authorization"] = f"Bearer {PUSH_TOKEN}"
    answer = httpx.post(f"{edge.url}/ssf/push", content=figure1["body_text"],
                        headers=headers, timeout=10)
    figure3 = example("rfc8935-draft-2.2-figure3-error-response.json")
    assert answer.status_code == figure3["status"]
    assert set(answer.json()) == set(figure3["body"])
    # {"alg":"none"}: no `typ: secevent+jwt` (checked first), and alg none is never accepted
    assert answer.json()["err"] == "invalid_request"
    assert "typ" in answer.json()["description"]
    accepted = httpx.post(f"{edge.url}/ssf/push", headers=headers, timeout=10,
                          content=idp.sign(idp.claims({"format": "email",
                                                       "email": "fig2@example.com"})))
    figure2 = example("rfc8935-draft-2.2-figure2-accepted.json")
    assert accepted.status_code == figure2["status"] and accepted.content == b""
