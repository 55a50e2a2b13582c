"""For relying services: the engine's decisions in memory, enforced per request, as flags.

- `Subscriber` (`subscriber.py`): consumes `caep.decisions` and `caep.flags` into a
  `SessionView` (`view.py`, pure): `is_revoked`, `is_revoked_subject`, `required_acr`, `flags`.
- `CaepMiddleware` (`middleware.py`): pure ASGI; 401 for revoked sessions and step-ups.
- `CaepProvider` (`openfeature.py`): an OpenFeature provider of per-session flags.
"""

from caep.client.middleware import CaepMiddleware, Principal, bearer_claims, check, principal_of
from caep.client.openfeature import CaepProvider
from caep.client.subscriber import ChangesOverflow, Status, Subscriber, SubscriberError
from caep.client.view import Change, ChangeKind, FlagsEntry, SessionView, StepUp

__all__ = [
    "CaepMiddleware",
    "CaepProvider",
    "Change",
    "ChangeKind",
    "ChangesOverflow",
    "FlagsEntry",
    "Principal",
    "SessionView",
    "Status",
    "StepUp",
    "Subscriber",
    "SubscriberError",
    "bearer_claims",
    "check",
    "principal_of",
]
