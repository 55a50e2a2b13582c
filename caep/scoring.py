"""Where a signal is scored: risk as a decaying sum of weighted signals, and its bands.

"Ranking over verification": a session is not trusted or untrusted, it has a score that every
signal moves and time lowers; policy acts on the band the score falls in.
"""

from __future__ import annotations

import math

from caep.policy import Scoring
from caep.state import MAX_SIGNALS, Session, Signal

MAX_SCORE = 100.0
EARTH_RADIUS_KM = 6371.0


def current_risk(session: Session, scoring: Scoring, now: float) -> float:
    """The session's score decayed to `now` (half-life decay; never negative time)."""
    risk = session.risk
    if not risk:  # most sessions: nothing to decay (0.0 times any decay factor is itself)
        return float(risk)
    elapsed = max(0.0, now - session.risk_at)
    return float(risk * 0.5 ** (elapsed / scoring.half_life_seconds))


def add_signal(session: Session, signal: Signal, scoring: Scoring, now: float) -> Session:
    """The session with `signal` counted: decayed score plus its weight, capped at 100."""
    risk = min(MAX_SCORE, current_risk(session, scoring, now) + signal.weight)
    signals = (*session.signals, signal)[-MAX_SIGNALS:]
    return session.with_changes(risk=risk, risk_at=now, signals=signals)


def set_floor(session: Session, floor: float, signal: Signal, scoring: Scoring,
              now: float) -> Session:
    """An external risk level sets the score to at least `floor` (it does not stack)."""
    risk = max(current_risk(session, scoring, now), min(MAX_SCORE, floor))
    signals = (*session.signals, signal)[-MAX_SIGNALS:]
    return session.with_changes(risk=risk, risk_at=now, signals=signals)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def impossible_travel(previous: tuple[float, float, float], lat: float, lon: float, at: float,
                      scoring: Scoring) -> bool:
    """Whether going from the previous presentation to this one needs more than the max speed."""
    prev_lat, prev_lon, prev_at = previous
    if prev_lat == lat and prev_lon == lon:
        return False  # no distance at all, no travel (the usual case, spared the haversine)
    km = distance_km(prev_lat, prev_lon, lat, lon)
    hours = max(at - prev_at, 1.0) / 3600
    return km > 50 and km / hours > scoring.max_travel_speed_kmh
