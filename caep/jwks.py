"""Issuer keys from a `jwks_uri`: fetched strictly, refreshed on rotation, never on demand of
an attacker.

An unknown `kid` usually means the issuer rotated its keys, so it triggers a refetch; but a
flood of random `kid`s must not become a flood of fetches, so each issuer is refetched at most
once per `jwks_min_refetch_seconds` (30 s by default), failed attempts included.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from caep.codec import SetVerifier, UnknownKey, VerifiedSet
from caep.errors import ConfigError, SetError
from caep.trust import IssuerConfig, TrustedIssuer, load_jwks

log = logging.getLogger("caep.jwks")

MAX_JWKS_BYTES = 1_000_000
FETCH_TIMEOUT_SECONDS = 10.0


def fetch_jwks(config: IssuerConfig) -> Any:
    """GET the issuer's `jwks_uri` over HTTPS (with its private CA bundle if configured)."""
    if config.jwks_uri is None:
        raise ConfigError(f"issuer {config.iss} has no jwks_uri")
    uri = str(config.jwks_uri)
    context = ssl.create_default_context(
        cafile=str(config.jwks_ca_file) if config.jwks_ca_file is not None else None
    )
    request = urllib.request.Request(uri, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(  # noqa: S310 -- https is enforced by IssuerConfig
            request, timeout=FETCH_TIMEOUT_SECONDS, context=context
        ) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
    except (OSError, urllib.error.URLError) as exc:
        raise ConfigError(f"cannot fetch JWKS from {uri}: {exc}") from None
    if len(body) > MAX_JWKS_BYTES:
        raise ConfigError(f"JWKS at {uri} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"JWKS at {uri} is not JSON: {exc}") from None


class KeyRefresher:
    """Refetches an issuer's JWKS when a token names a key it does not know, rate-limited."""

    def __init__(
        self,
        fetch: Callable[[IssuerConfig], Any] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._last_attempt: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    def due(self, issuer: TrustedIssuer) -> bool:
        """Whether this issuer may be refetched now."""
        if issuer.config.jwks_uri is None:
            return False
        last = self._last_attempt.get(issuer.config.iss)
        return last is None or self._clock() - last >= issuer.config.jwks_min_refetch_seconds

    def refresh(self, issuer: TrustedIssuer) -> bool:
        """Refetch if due; True when new keys were installed. Failures keep the old keys."""
        if not self.due(issuer):
            return False
        self._last_attempt[issuer.config.iss] = self._clock()
        self.fetches += 1
        try:
            keys = load_jwks(self._fetch(issuer.config), issuer.config.algorithms,
                             str(issuer.config.jwks_uri))
        except ConfigError as exc:
            log.warning("JWKS refresh for %s failed, keeping the old keys: %s",
                        issuer.config.iss, exc.description)
            return False
        issuer.keys = keys
        log.info("JWKS of %s refreshed: kids %s", issuer.config.iss, sorted(map(str, keys)))
        return True

    def verify(self, verifier: SetVerifier, token: str | bytes) -> VerifiedSet:
        """Verify; on an unknown `kid`, refresh that issuer's keys once (if due) and retry."""
        try:
            return verifier.verify(token)
        except UnknownKey as exc:
            if not self.refresh(exc.issuer):
                raise
        return verifier.verify(token)

    async def averify(self, verifier: SetVerifier, token: str | bytes) -> VerifiedSet:
        """`verify` for the event loop: the fetch runs in a thread, one at a time per issuer."""
        try:
            return verifier.verify(token)
        except UnknownKey as exc:
            if not await self._arefresh(exc.issuer):
                raise
        return verifier.verify(token)

    async def averify_all(
        self, verifier: SetVerifier, tokens: Sequence[str | bytes]
    ) -> list[VerifiedSet | SetError]:
        """`averify` for a batch (`SetVerifier.verify_all`): the tokens refused for an unknown
        `kid` are verified again once their issuer's keys were refreshed, if it was due."""
        outcomes = verifier.verify_all(tokens)
        refreshed: dict[str, bool] = {}
        again: list[int] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, UnknownKey):
                iss = outcome.issuer.config.iss
                if iss not in refreshed:
                    refreshed[iss] = await self._arefresh(outcome.issuer)
                if refreshed[iss]:
                    again.append(index)
        if again:
            for index, outcome in zip(again, verifier.verify_all([tokens[i] for i in again]),
                                      strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _arefresh(self, issuer: TrustedIssuer) -> bool:
        """`refresh` in a thread, one at a time per issuer. True when a token refused for an
        unknown `kid` is worth verifying again: new keys are in, or another task refreshed
        while this one waited for it."""
        if not self.due(issuer):
            return False
        lock = self._locks.setdefault(issuer.config.iss, asyncio.Lock())
        async with lock:
            if not self.due(issuer):
                return True
            return await asyncio.to_thread(self.refresh, issuer)
