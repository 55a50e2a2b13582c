"""The demo's simulated identity provider and relying service emit only valid records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from caep.activity import parse_activity
from caep.codec import SetVerifier
from caep.evaluation import activity_key, security_events
from caep.keys import generate_jwk, jwks_of, private_key
from caep.trust import IssuerConfig, TrustStore
from streams.demo_scenario import Scenario

ISSUER, AUDIENCE = "https://idp.demo.example", "https://rp.demo.example"


def test_every_record_is_valid_and_keyed_by_its_subject() -> None:
    jwk = generate_jwk("ES256", kid="demo")
    verifier = SetVerifier(TrustStore.from_jwks(
        IssuerConfig(iss=ISSUER, audience=AUDIENCE, jwks_file=Path("-"), algorithms=["ES256"],
                     tenant="demo"), jwks_of(jwk)))
    scenario = Scenario(users=50, agents=5, tenant="demo", issuer=ISSUER, audience=AUDIENCE,
                        signer=private_key(jwk), kid="demo")
    records = scenario.establish(1_800_000_000.0)
    assert sum(r.session is not None and r.session.startswith("agent-") for r in records) == 5
    records += [scenario.step(1_800_000_000.0 + n) for n in range(3000)]
    labels: Counter[str] = Counter()
    for record in records:
        labels[record.label.split(":")[0]] += 1
        if record.topic == "set":
            verified = verifier.verify(record.value, now=1_800_003_000.0)
            assert verified.jti == record.cause
            assert {e.key for e in security_events(verified)} == {record.key.decode()}
        else:
            activity = parse_activity(record.value)
            assert activity_key(activity) == record.key.decode()
            assert activity.activity_id == record.cause
    assert {"IdP", "presented", "session established"} <= set(labels), labels
    kinds = Counter(r.label for r in records if r.topic == "set")
    assert {"IdP: user risk high", "IdP: device not compliant", "IdP: password rotated",
            "IdP: session revoked", "IdP: account disabled"} <= set(kinds), kinds
