"""Which issuers the engine accepts SETs from, and with which keys.

The trust file is TOML::

    [[issuer]]
    iss = "https://idp.example.com"
    audience = "https://rp.example.com"
    jwks_file = "keys/idp.jwks.json"        # or jwks_uri = "https://..."
    jwks_ca_file = "private-ca.pem"         # optional: CA bundle for the jwks_uri's TLS
    jwks_min_refetch_seconds = 30           # optional: refetch on unknown kid at most this often
    algorithms = ["RS256"]                  # optional allow-list, default RS256
    tenant = "acme"                         # optional, default: the issuer

Relative `jwks_file` paths are resolved against the trust file's directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import orjson
from jwt.api_jwk import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from caep.errors import ConfigError
from caep.signatures import SignatureCheck, signature_check
from caep.tomlfiles import load_toml

#: Algorithms never accepted, whatever a trust file says: unsigned and shared-secret JWS.
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
SUPPORTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                  "ES256", "ES384", "ES512", "EdDSA"})
MIN_RSA_BITS = 2048



class IssuerConfig(BaseModel):
    """One `[[issuer]]` entry of the trust file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: Annotated[str, Field(min_length=1)]
    audience: str | list[str]
    jwks_file: Path | None = None
    jwks_uri: HttpUrl | None = None
    jwks_ca_file: Path | None = None
    jwks_min_refetch_seconds: float = Field(default=30.0, ge=0)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    tenant: str | None = None
    allow_multiple_audiences: bool = False
    max_events: int = Field(default=1, ge=1)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg in FORBIDDEN_ALGORITHMS or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is never accepted for SETs")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r}")
        return value

    @field_validator("jwks_uri")
    @classmethod
    def _https_only(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and value.scheme != "https":
            raise ValueError("jwks_uri must use https")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        if (self.jwks_file is None) == (self.jwks_uri is None):
            raise ValueError("give exactly one of jwks_file or jwks_uri")
        return self

    @cached_property
    def audiences(self) -> frozenset[str]:
        return frozenset([self.audience] if isinstance(self.audience, str) else self.audience)

    @property
    def tenant_id(self) -> str:
        return self.tenant if self.tenant is not None else self.iss


class TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: list[IssuerConfig] = Field(min_length=1)


@dataclass(frozen=True)
class VerificationKey:
    """A public key prepared for one algorithm: `check(signing_input, signature) -> bool`."""

    kid: str | None
    alg: str
    key: Any
    check: SignatureCheck


@dataclass
class TrustedIssuer:
    config: IssuerConfig
    _candidates: dict[tuple[str | None, str], tuple[VerificationKey, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    keys: dict[str | None, list[VerificationKey]] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        """Replacing `keys` (a JWKS refetch) rebuilds the (kid, alg) index in the same step."""
        object.__setattr__(self, name, value)
        if name == "keys":
            index: dict[tuple[str | None, str], list[VerificationKey]] = {}
            for kid, group in value.items():
                for key in group:
                    if kid is not None:
                        index.setdefault((kid, key.alg), []).append(key)
                    index.setdefault((None, key.alg), []).append(key)
            object.__setattr__(
                self, "_candidates", {pair: tuple(keys) for pair, keys in index.items()})

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that may have signed a token with this `kid` (every key when it has none)
        and `alg`: one lookup, as this runs for every token."""
        return self._candidates.get((kid, alg), ())


def _key_algorithms(jwk: Mapping[str, Any], allowed: list[str]) -> list[str]:
    kty = jwk.get("kty")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise ConfigError(f"key {jwk.get('kid')!r}: alg must be a string")
    by_kty = {
        "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
        "EC": {"ES256", "ES384", "ES512"},
        "OKP": {"EdDSA"},
    }.get(str(kty), set())
    if declared is not None:
        if declared not in by_kty:
            raise ConfigError(f"key {jwk.get('kid')!r}: alg {declared!r} does not fit kty {kty!r}")
        return [declared] if declared in allowed else []
    return [alg for alg in allowed if alg in by_kty]


def load_jwks(
    document: Any, allowed: list[str], origin: str
) -> dict[str | None, list[VerificationKey]]:
    """Validate a JWKS strictly and prepare its signing keys for the allowed algorithms."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{origin}: not a JWKS (an object with a `keys` array)")
    prepared: dict[str | None, list[VerificationKey]] = {}
    seen_kids: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        where = f"{origin}: key #{index}"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where} is not an object")
        kid = jwk.get("kid")
        if kid is not None:
            if not isinstance(kid, str):
                raise ConfigError(f"{where}: kid must be a string")
            if kid in seen_kids:
                raise ConfigError(f"{where}: duplicate kid {kid!r}")
            seen_kids.add(kid)
        if jwk.get("use", "sig") != "sig":
            raise ConfigError(f"{where}: use {jwk.get('use')!r} is not `sig`")
        if any(member in jwk for member in ("d", "p", "q", "k")):
            raise ConfigError(f"{where}: private or symmetric key material in a trust JWKS")
        for alg in _key_algorithms(jwk, allowed):
            try:
                key = PyJWK(jwk, algorithm=alg).key
            except (PyJWKError, InvalidKeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: unusable key: {exc}") from None
            bits = getattr(key, "key_size", None)
            if jwk.get("kty") == "RSA" and (bits is None or bits < MIN_RSA_BITS):
                raise ConfigError(f"{where}: RSA key of {bits} bits; at least {MIN_RSA_BITS}")
            try:
                check = signature_check(alg, key)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            prepared.setdefault(kid, []).append(VerificationKey(kid, alg, key, check))
    if not prepared:
        raise ConfigError(f"{origin}: no key usable with algorithms {allowed}")
    return prepared


class TrustStore:
    """All trusted issuers by `iss`, with prepared keys."""

    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self.issuers = {issuer.config.iss: issuer for issuer in issuers}

    def get(self, iss: str) -> TrustedIssuer | None:
        return self.issuers.get(iss)

    @classmethod
    def from_file(
        cls, path: Path, fetch: Callable[[IssuerConfig], Any] | None = None
    ) -> TrustStore:
        """Load and check the whole trust file; `jwks_uri` keys are fetched now (`fetch`)."""
        parsed = load_toml(path, TrustFile, "trust file")
        seen: set[str] = set()
        issuers = []
        for config in parsed.issuer:
            if config.iss in seen:
                raise ConfigError(f"trust file {path}: issuer {config.iss!r} listed twice")
            seen.add(config.iss)
            issuers.append(_load_issuer(config, path.parent, fetch))
        return cls(issuers)

    @classmethod
    def from_jwks(cls, config: IssuerConfig, jwks: Mapping[str, Any]) -> TrustStore:
        """A one-issuer store from an in-memory JWKS; for tests and the REPL."""
        keys = load_jwks(dict(jwks), config.algorithms, config.iss)
        return cls([TrustedIssuer(config, keys)])


def _load_issuer(
    config: IssuerConfig, base: Path, fetch: Callable[[IssuerConfig], Any] | None
) -> TrustedIssuer:
    if config.jwks_file is not None:
        jwks_path = config.jwks_file if config.jwks_file.is_absolute() else base / config.jwks_file
        try:
            document = orjson.loads(jwks_path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"issuer {config.iss}: cannot read {jwks_path}: {exc.strerror}"
            ) from None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"issuer {config.iss}: {jwks_path} is not JSON: {exc}") from None
        origin = str(jwks_path)
    else:
        if fetch is None:
            from caep.jwks import fetch_jwks

            fetch = fetch_jwks
        if config.jwks_ca_file is not None and not config.jwks_ca_file.is_absolute():
            config = config.model_copy(update={"jwks_ca_file": base / config.jwks_ca_file})
        origin = str(config.jwks_uri)
        document = fetch(config)
    return TrustedIssuer(config, load_jwks(document, config.algorithms, origin))
