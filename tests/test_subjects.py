"""Subject identifiers: wire round-trips, the canonical key, helpers and rejection of bad input."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caep.errors import InvalidRequest
from caep.subjects import (
    AliasesSubject,
    ComplexSubject,
    EmailSubject,
    IpAddressesSubject,
    OpaqueSubject,
    PhoneNumberSubject,
    UnknownFormatSubject,
    device_of,
    parse_subject,
    session_id_of,
    subject_key,
    tenant_of,
)

text = st.text(min_size=1, max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
emails = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[A-Za-z0-9._+\-]{1,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9\-]{1,10}", fullmatch=True),
    st.sampled_from(["com", "EXAMPLE", "org"]),
)
phones = st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True)
ips = st.ip_addresses().map(str)

simple_identifiers: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda e: {"format": "account", "uri": f"acct:{e}"}, emails),
    st.builds(lambda e: {"format": "email", "email": e}, emails),
    st.builds(lambda i, s: {"format": "iss_sub", "iss": i, "sub": s}, text, text),
    st.builds(lambda i: {"format": "opaque", "id": i}, text),
    st.builds(lambda p: {"format": "phone_number", "phone_number": p}, phones),
    st.builds(
        lambda m, i: {"format": "did", "url": f"did:{m}:{i}"},
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9.:/?=\-]{1,12}", fullmatch=True),
    ),
    st.builds(
        lambda s, r: {"format": "uri", "uri": f"{s}:{r}"},
        st.sampled_from(["https", "urn", "HTTP", "mailto"]),
        st.from_regex(r"[A-Za-z0-9./:\-]{1,16}", fullmatch=True),
    ),
    st.builds(lambda i, j: {"format": "jwt_id", "iss": i, "jti": j}, text, text),
    st.builds(
        lambda i, a: {"format": "saml_assertion_id", "issuer": i, "assertion_id": a}, text, text
    ),
    st.builds(lambda a: {"format": "ip-addresses", "ip-addresses": a}, st.lists(ips, min_size=1)),
    st.builds(
        lambda f, m: {**m, "format": f},
        st.from_regex(r"x-[a-z_]{1,10}", fullmatch=True),
        st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), json_values, max_size=3),
    ),
)
aliases = st.builds(
    lambda ids: {"format": "aliases", "identifiers": ids},
    st.lists(simple_identifiers, min_size=1, max_size=3),
)
simple_subjects = simple_identifiers | aliases
complex_subjects = st.fixed_dictionaries(
    {"format": st.just("complex")},
    optional={
        name: simple_subjects
        for name in ("user", "device", "session", "application", "tenant", "org_unit", "group")
    }
    | {"x_extra_member": simple_subjects},
).filter(lambda d: len(d) > 1)
subjects = simple_subjects | complex_subjects


def shuffled(obj: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's members in a different order."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(obj, list):
        return [shuffled(v, rnd) for v in obj]
    return obj


@given(subjects)
def test_round_trip_is_exact(wire: dict[str, Any]) -> None:
    subject = parse_subject(wire)
    dumped = subject.model_dump(mode="json", exclude_none=True)
    assert dumped == wire
    assert parse_subject(json.loads(json.dumps(dumped))) == subject


@given(subjects, st.randoms())
def test_key_ignores_member_order(wire: dict[str, Any], rnd: random.Random) -> None:
    assert subject_key(parse_subject(shuffled(wire, rnd))) == subject_key(parse_subject(wire))


@given(simple_subjects)
def test_simple_key_is_itself_a_subject(wire: dict[str, Any]) -> None:
    key = subject_key(parse_subject(wire))
    assert subject_key(parse_subject(json.loads(key))) == key


@given(simple_subjects, simple_subjects, simple_subjects, simple_subjects)
def test_complex_key_is_tenant_and_user_only(
    user: dict[str, Any], session: dict[str, Any], device: dict[str, Any], tenant: dict[str, Any]
) -> None:
    bare = parse_subject({"format": "complex", "user": user, "tenant": tenant})
    rich = parse_subject(
        {"format": "complex", "user": user, "tenant": tenant, "session": session, "device": device}
    )
    assert subject_key(rich) == subject_key(bare)
    assert session_id_of(bare) is None
    assert session_id_of(rich) is not None


@given(simple_subjects)
def test_user_only_complex_shares_the_users_key(user: dict[str, Any]) -> None:
    assert subject_key(parse_subject({"format": "complex", "user": user})) == subject_key(
        parse_subject(user)
    )


def test_tenant_distinguishes_users() -> None:
    user = {"format": "email", "email": "jane@example.com"}
    keys = {
        subject_key(parse_subject({"format": "complex", "user": user})),
        subject_key(
            parse_subject(
                {"format": "complex", "user": user, "tenant": {"format": "opaque", "id": "t1"}}
            )
        ),
        subject_key(
            parse_subject(
                {"format": "complex", "user": user, "tenant": {"format": "opaque", "id": "t2"}}
            )
        ),
    }
    assert len(keys) == 3


def test_complex_key_without_user_falls_back_to_the_next_principal() -> None:
    tenant = {"format": "opaque", "id": "t"}
    device = {"format": "opaque", "id": "d"}
    with_device = parse_subject({"format": "complex", "device": device, "tenant": tenant})
    tenant_only = parse_subject({"format": "complex", "tenant": tenant})
    assert json.loads(subject_key(with_device)) == {
        "format": "complex",
        "tenant": tenant,
        "device": device,
    }
    assert json.loads(subject_key(tenant_only)) == {"format": "complex", "tenant": tenant}
    extra_only = parse_subject({"format": "complex", "workload": device})
    assert subject_key(extra_only) == subject_key(parse_subject(device))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("jane@EXAMPLE.com", "jane@example.com"),
        ("Ame\u0301lie@example.com", "am\u00e9lie@example.com"),
    ],
)
def test_email_key_folds_case_and_unicode_form(one: str, other: str) -> None:
    assert subject_key(parse_subject({"format": "email", "email": one})) == subject_key(
        parse_subject({"format": "email", "email": other})
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [("jane.doe@example.com", "janedoe@example.com"), ("jane+x@example.com", "jane@example.com")],
)
def test_email_key_keeps_provider_specific_differences(one: str, other: str) -> None:
    assert subject_key(parse_subject({"format": "email", "email": one})) != subject_key(
        parse_subject({"format": "email", "email": other})
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (
            {"format": "phone_number", "phone_number": "+1 206 555 0123"},
            {"format": "phone_number", "phone_number": "+12065550123"},
        ),
        (
            {"format": "phone_number", "phone_number": "+1 (206) 555-0123"},
            {"format": "phone_number", "phone_number": "+1.206.555.0123"},
        ),
        (
            {"format": "account", "uri": "ACCT:jane@Service.Example.com"},
            {"format": "account", "uri": "acct:jane@service.example.com"},
        ),
        (
            {"format": "uri", "uri": "HTTPS://user.example.com/"},
            {"format": "uri", "uri": "https://user.example.com/"},
        ),
        (
            {"format": "ip-addresses", "ip-addresses": ["2001:0db8:0000::1", "10.0.0.1"]},
            {"format": "ip-addresses", "ip-addresses": ["10.0.0.1", "2001:db8::1", "10.0.0.1"]},
        ),
        (
            {
                "format": "aliases",
                "identifiers": [
                    {"format": "opaque", "id": "a"},
                    {"format": "email", "email": "x@y.z"},
                ],
            },
            {
                "format": "aliases",
                "identifiers": [
                    {"format": "email", "email": "X@Y.Z"},
                    {"format": "opaque", "id": "a"},
                    {"format": "opaque", "id": "a"},
                ],
            },
        ),
    ],
)
def test_equivalent_spellings_share_a_key(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert subject_key(parse_subject(one)) == subject_key(parse_subject(other))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"format": "opaque", "id": "ABC"}, {"format": "opaque", "id": "abc"}),
        (
            {"format": "iss_sub", "iss": "https://a/", "sub": "1"},
            {"format": "iss_sub", "iss": "https://a", "sub": "1"},
        ),
        ({"format": "opaque", "id": "a|b"}, {"format": "iss_sub", "iss": "a", "sub": "b"}),
        ({"format": "did", "url": "did:example:ABC"}, {"format": "did", "url": "did:example:abc"}),
    ],
)
def test_distinct_identities_have_distinct_keys(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert subject_key(parse_subject(one)) != subject_key(parse_subject(other))


def test_member_helpers() -> None:
    subject = parse_subject(
        {
            "format": "complex",
            "session": {"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"},
            "device": {"format": "iss_sub", "iss": "https://idp/", "sub": "e92979"},
            "tenant": {"format": "opaque", "id": "123456789"},
            "user": {"format": "email", "email": "jane@example.com"},
        }
    )
    assert session_id_of(subject) == "dMTlD|1600802906337.16|16008.16"
    assert tenant_of(subject) == "123456789"
    assert device_of(subject) == subject_key(
        parse_subject({"format": "iss_sub", "iss": "https://idp/", "sub": "e92979"})
    )
    simple = parse_subject({"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"})
    assert (session_id_of(simple), tenant_of(simple), device_of(simple)) == (None, None, None)


def test_models_are_typed_and_frozen() -> None:
    subject = parse_subject(
        {
            "format": "complex",
            "user": {"format": "email", "email": "a@b.c"},
            "workload": {"format": "opaque", "id": "w"},
        }
    )
    assert isinstance(subject, ComplexSubject)
    assert isinstance(subject.user, EmailSubject)
    assert subject.members == {
        "user": EmailSubject(format="email", email="a@b.c"),
        "workload": OpaqueSubject(format="opaque", id="w"),
    }
    assert hash(subject) == hash(parse_subject(subject.model_dump(mode="json", exclude_none=True)))
    with pytest.raises(ValueError, match="frozen"):
        subject.user = None  # type: ignore[misc]


def test_formats_map_to_their_models() -> None:
    assert isinstance(
        parse_subject({"format": "phone_number", "phone_number": "+12065550100"}),
        PhoneNumberSubject,
    )
    assert isinstance(
        parse_subject({"format": "ip-addresses", "ip-addresses": ["10.29.37.75"]}),
        IpAddressesSubject,
    )
    assert isinstance(
        parse_subject({"format": "aliases", "identifiers": [{"format": "opaque", "id": "1"}]}),
        AliasesSubject,
    )


def test_unknown_formats_are_kept_verbatim() -> None:
    wire = {"format": "catalog_item", "catalog_id": "c0384/winter/2354122", "n": [1, {"a": None}]}
    subject = parse_subject(wire)
    assert isinstance(subject, UnknownFormatSubject)
    assert subject.model_dump(mode="json", exclude_none=True) == wire


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (None, 'JSON object with a string "format"'),
        ("email", 'JSON object with a string "format"'),
        ({}, 'JSON object with a string "format"'),
        ({"format": 7}, 'JSON object with a string "format"'),
        ({"format": ""}, "format: String should have at least 1 character"),
        ({"format": "email"}, "email: Field required"),
        ({"format": "email", "email": ""}, "email: String should have at least 1 character"),
        ({"format": "email", "email": "no-at-sign"}, "email: must be an addr-spec"),
        ({"format": "email", "email": 42}, "email: Input should be a valid string"),
        (
            {"format": "email", "email": "a@b.c", "name": "x"},
            "name: Extra inputs are not permitted",
        ),
        ({"format": "opaque", "id": None}, "id: Input should be a valid string"),
        ({"format": "iss_sub", "iss": "https://i/"}, "sub: Field required"),
        ({"format": "phone_number", "phone_number": "2065550100"}, "phone_number: must be E.164"),
        ({"format": "account", "uri": "mailto:a@b.c"}, 'uri: must be an "acct" URI'),
        ({"format": "did", "url": "https://x"}, "url: must be a DID URL"),
        ({"format": "uri", "uri": "no scheme"}, "uri: must be a URI with a scheme"),
        ({"format": "ip-addresses", "ip-addresses": []}, "ip-addresses: needs at least 1"),
        ({"format": "ip-addresses", "ip-addresses": ["300.1.1.1"]}, "ip-addresses[0]: must be"),
        ({"format": "aliases", "identifiers": []}, "identifiers: needs at least 1"),
        (
            {"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": []}]},
            "identifiers[0]: subject format 'aliases' is not allowed here",
        ),
        ({"format": "complex"}, "a complex subject needs at least one member"),
        ({"format": "complex", "user": None}, "a complex subject needs at least one member"),
        (
            {"format": "complex", "user": {"format": "complex", "user": {}}},
            "user: subject format 'complex' is not allowed here",
        ),
        ({"format": "complex", "user": {"format": "email"}}, "user.email: Field required"),
        ({"format": "complex", "extra": "x"}, 'extra: needs to be a JSON object with a string "fo'),
        ({"subject_type": "iss-sub", "iss": "i", "sub": "s"}, '"subject_type" is not "format"'),
    ],
)
def test_malformed_subjects_are_described(wire: object, expected: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_subject(wire)
    assert caught.value.description.startswith("invalid subject identifier: ")
    assert expected in caught.value.description
    assert caught.value.to_dict()["err"] == "invalid_request"


def test_errors_do_not_echo_the_input() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_subject({"format": "email", "email": "secret-but-invalid"})
    assert "secret" not in caught.value.description


def test_deep_nesting_is_rejected_cleanly() -> None:
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="invalid subject identifier: n"):
        parse_subject({"format": "x-proprietary", "n": deep})


junk = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["format", "email", "id", "user", "identifiers"]), json_values),
    st.builds(
        lambda f, m: {**m, "format": f},
        st.sampled_from(["email", "complex", "aliases"]),
        st.dictionaries(st.text(max_size=12), json_values | subjects, max_size=4),
    ),
    st.from_type(type).flatmap(st.from_type).filter(lambda v: not isinstance(v, dict)),
)


@settings(max_examples=300)
@given(junk)
def test_junk_is_a_subject_or_invalid_request(wire: object) -> None:
    try:
        parse_subject(wire)
    except InvalidRequest as exc:
        assert exc.description.startswith("invalid subject identifier: ")
