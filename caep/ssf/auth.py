"""Who may talk to the edge: bearer tokens of transmitters (push) and receivers (streams).

The edge file is TOML::

    [[transmitter]]                       # may POST SETs to /ssf/push
    name = "okta"
    token_sha256 = "9f86d0..."            # hex SHA-256 of its bearer token
    issuers = ["https://idp.example.com"] # optional: the `iss` values it may send (default: any
                                          #   issuer of the trust file)

    [[receiver]]                          # may manage its own streams and poll them
    client_id = "rp-1"
    token_sha256 = "60303a..."            # optional when an authorization server is listed
    audience = "https://rp.example.com"   # the `aud` of its streams' SETs
    scopes = ["ssf.manage", "ssf.read"]   # optional, default both (CAEP interop profile scopes)
    tenants = ["acme"]                    # optional: only these tenants' decisions reach it

    [[authorization_server]]              # optional: OAuth 2.0 JWT access tokens (RFC 9068)
    issuer = "https://as.example.com"
    jwks_file = "as.jwks.json"            # relative to the edge file
    audience = "https://edge.example.com" # the `aud` its tokens carry for the edge
    algorithms = ["RS256"]                # optional

    [[upstream]]                          # optional: a transmitter the edge polls (RFC 8936)
    issuer = "https://idp.example.com"    # its SSF issuer (also in the trust file)
    token_env = "IDP_SSF_TOKEN"           # env var holding the bearer token for its API
    events_requested = ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]

Static tokens: only hashes are kept, so the file holds no usable secret; tokens are compared
by hash in constant time. Access tokens: signature, `iss`, `aud`, `exp` (required), `nbf` are
checked; `client_id` (else `sub`) names the receiver and `scope` grants `ssf.manage` /
`ssf.read`, never more than the receiver's configured scopes (CAEP interoperability profile:
OAuth service, and the SSF transmitter as a resource server).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import jwt
import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from caep.errors import ConfigError
from caep.tomlfiles import load_toml
from caep.trust import FORBIDDEN_ALGORITHMS

SCOPE_MANAGE = "ssf.manage"
SCOPE_READ = "ssf.read"

TokenHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def token_hash(token: str) -> str:
    """The hex SHA-256 the edge file stores for a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


class TransmitterClient(BaseModel):
    """An identity provider allowed to push SETs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    token_sha256: TokenHash
    issuers: tuple[str, ...] | None = None

    def may_send(self, iss: str) -> bool:
        return self.issuers is None or iss in self.issuers


class ReceiverClient(BaseModel):
    """A relying party allowed to manage its own streams."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Annotated[str, Field(min_length=1)]
    token_sha256: TokenHash | None = None
    audience: str | tuple[str, ...]
    scopes: tuple[str, ...] = (SCOPE_MANAGE, SCOPE_READ)
    tenants: tuple[str, ...] | None = None

    def can_read(self) -> bool:
        return SCOPE_READ in self.scopes or SCOPE_MANAGE in self.scopes

    def can_manage(self) -> bool:
        return SCOPE_MANAGE in self.scopes

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


ACCESS_TOKEN_LEEWAY = 30


class AuthorizationServer(BaseModel):
    """An OAuth 2.0 authorization server whose JWT access tokens the edge accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Annotated[str, Field(min_length=1)]
    jwks_file: Path
    audience: Annotated[str, Field(min_length=1)]
    algorithms: tuple[str, ...] = ("RS256",)
    _keys: dict[str | None, Any] = PrivateAttr(default_factory=dict)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alg in value:
            if alg in FORBIDDEN_ALGORITHMS or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is not accepted for access tokens")
        return value

    def load_keys(self, document: Mapping[str, Any]) -> None:
        keys = document.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError(f"authorization server {self.issuer}: JWKS has no keys")
        for jwk in keys:
            try:
                self._keys[jwk.get("kid")] = jwt.PyJWK(jwk).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"authorization server {self.issuer}: unusable key "
                                  f"{jwk.get('kid')!r}: {exc}") from None

    def claims(self, token: str) -> dict[str, Any] | None:
        """The access token's claims when it is this server's and valid now, else None."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid")) or (
                next(iter(self._keys.values())) if len(self._keys) == 1 else None)
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.algorithms), audience=self.audience,
                issuer=self.issuer, leeway=ACCESS_TOKEN_LEEWAY,
                options={"require": ["exp", "iss", "aud"]})
        except (jwt.PyJWTError, ValueError):
            return None
        return claims


class Upstream(BaseModel):
    """A transmitter whose poll stream the edge configures and drains into the engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Annotated[str, Field(min_length=1)]
    token_env: Annotated[str, Field(min_length=1)]
    events_requested: tuple[str, ...] | None = None
    description: str = "caep-engine edge"
    max_events: int = Field(default=100, ge=1)


class EdgeClients(BaseModel):
    """Every transmitter and receiver the edge knows, looked up by bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transmitter: tuple[TransmitterClient, ...] = ()
    receiver: tuple[ReceiverClient, ...] = ()
    authorization_server: tuple[AuthorizationServer, ...] = ()
    upstream: tuple[Upstream, ...] = ()

    @field_validator("receiver")
    @classmethod
    def _unique_client_ids(
        cls, value: tuple[ReceiverClient, ...]
    ) -> tuple[ReceiverClient, ...]:
        ids = [r.client_id for r in value]
        if len(ids) != len(set(ids)):
            raise ValueError("a receiver client_id is listed twice")
        return value

    def transmitter_for(self, authorization: str | None) -> TransmitterClient | None:
        return _match(self.transmitter, authorization)

    def receiver_for(self, authorization: str | None) -> ReceiverClient | None:
        """The receiver a static token or a valid access token stands for; an access token's
        receiver carries the scopes the token grants (within its configured ones)."""
        found = _match(self.receiver, authorization)
        if found is not None:
            return found
        token = bearer_token(authorization)
        if token is None or token.count(".") != 2:
            return None
        for server in self.authorization_server:
            claims = server.claims(token)
            if claims is None:
                continue
            client_id = claims.get("client_id", claims.get("sub"))
            receiver = self.receiver_by_id(client_id) if isinstance(client_id, str) else None
            if receiver is None:
                return None
            scope = claims.get("scope")
            granted = set(scope.split()) if isinstance(scope, str) else set()
            return receiver.model_copy(
                update={"scopes": tuple(s for s in receiver.scopes if s in granted)})
        return None

    def receiver_by_id(self, client_id: str) -> ReceiverClient | None:
        return next((r for r in self.receiver if r.client_id == client_id), None)

    @classmethod
    def from_file(cls, path: Path) -> EdgeClients:
        clients = load_toml(path, cls, "edge file")
        for server in clients.authorization_server:
            jwks = server.jwks_file if server.jwks_file.is_absolute() else \
                path.parent / server.jwks_file
            try:
                server.load_keys(orjson.loads(jwks.read_bytes()))
            except OSError as exc:
                raise ConfigError(f"edge file {path}: cannot read {jwks}: {exc.strerror}"
                                  ) from None
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"edge file {path}: {jwks} is not JSON: {exc}") from None
        return clients


_Client = TypeVar("_Client", TransmitterClient, ReceiverClient)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an RFC 6750 section 2.1 `Authorization: Bearer` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _match(
    clients: tuple[_Client, ...], authorization: str | None
) -> _Client | None:
    token = bearer_token(authorization)
    if token is None:
        return None
    digest = token_hash(token)
    found = None
    for client in clients:  # no early exit: the time taken does not tell which entry matched
        if client.token_sha256 is not None and hmac.compare_digest(client.token_sha256, digest):
            found = client
    return found
