"""Small JOSE helpers shared by the codec test modules."""

from __future__ import annotations

import base64
from typing import Any

from caep.keys import private_key


def signing_key(jwk: dict[str, Any]) -> Any:
    """The private key object of `jwk` (`private_key` keeps each one it builds)."""
    return private_key(jwk)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
