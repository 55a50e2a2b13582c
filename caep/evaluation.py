"""Where an event becomes decisions: `evaluate(state, event, policy, now) -> (state, decisions)`.

Pure: no I/O, time is an argument, the input state is never modified. Three kinds of input:
a verified security event (`SecurityEvent`), a session-activity fact (`SessionActivity`), and
the passage of time (`Tick`), which expires elevations and idle or too-old sessions.

Invariants, whatever the order or repetition of inputs:
- the same input applied twice changes nothing the second time (its id is remembered);
- a revoked session never becomes active again; good news (a session established) counts only
  if it is newer than the last revocation of its subject;
- revoking a session revokes every session acting on its behalf, however deep the chain.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from caep.activity import ActivityKind, SessionActivity
from caep.codec import SubjectEvent, VerifiedSet
from caep.decisions import Action, Decision, SignalWeight, decision_id
from caep.events import (
    CredentialCompromise,
    DeviceComplianceChange,
    Event,
    RiskLevelChange,
    SessionEstablished,
    SessionPresented,
    TokenClaimsChange,
    UnrecognizedEvent,
)
from caep.policy import Mode, Policy, Rule, event_name
from caep.scoring import add_signal, current_risk, impossible_travel, set_floor
from caep.state import MAX_DEVICES, MAX_SEEN, Session, Signal, SubjectState, seen_mark
from caep.subjects import device_of, partition_key, session_id_of, subject_key


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One verified event of a SET, reduced to what evaluation needs."""

    tenant: str
    subject: dict[str, Any]
    key: str
    event_type: str
    event: Event | UnrecognizedEvent
    iss: str
    jti: str
    occurred_at: float
    session_id: str | None
    device_id: str | None

    @property
    def cause(self) -> str:
        return f"{self.iss}|{self.jti}|{self.event_type}"


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: check expiries as of `now`."""


EngineInput = SecurityEvent | SessionActivity | Tick


def security_events(verified: VerifiedSet) -> list[SecurityEvent]:
    """The evaluation inputs of a verified SET, one per event."""
    return [_security_event(verified, item) for item in verified.items]


def _security_event(verified: VerifiedSet, item: SubjectEvent) -> SecurityEvent:
    tenant = verified.tenant_for(item)
    timestamp = getattr(item.event, "event_timestamp", None)
    occurred = float(timestamp) / 1000 if isinstance(timestamp, int | float) else verified.iat
    if occurred > 1e11:  # some issuers send event_timestamp in seconds, most in milliseconds
        occurred /= 1000
    return SecurityEvent(
        tenant=tenant, subject=item.subject_raw,
        key=partition_key(tenant, subject_key(item.subject)),
        event_type=item.event_type, event=item.event, iss=verified.iss, jti=verified.jti,
        occurred_at=occurred if occurred > 1e8 else verified.iat,
        session_id=session_id_of(item.subject), device_id=device_of(item.subject),
    )


_PRINCIPALS = ("user", "session", "application", "group", "org_unit")


def device_only(event: SecurityEvent) -> bool:
    """Whether the event is about a device and nothing else: it must reach the subjects using
    that device, through the device index."""
    subject = event.subject
    return (event.device_id is not None and subject.get("format") == "complex"
            and not any(member in subject for member in _PRINCIPALS))


def device_key(tenant: str, device_id: str) -> str:
    return f"{tenant}|device|{device_id}"


def devices_added(before: SubjectState | None, after: SubjectState) -> set[str]:
    """Devices the subject's sessions use now that they did not before: for the device index."""
    old = {d for s in before.sessions.values() for d in s.devices} if before else set()
    return {d for s in after.sessions.values() for d in s.devices} - old


def activity_key(activity: SessionActivity) -> str:
    return activity.key


class _Plan:
    """What a policy's rules mean for evaluation, worked out once per policy: which rules can
    fire on an event name (in policy order), and the band rules that set flags. Only a cache:
    every rule it lists is still matched exactly as before."""

    def __init__(self, policy: Policy) -> None:
        self.rules = tuple(_Compiled(rule, policy.enforced(rule)) for rule in policy.rule)
        self.by_name: dict[str, tuple[tuple[_Compiled, ...], bool, frozenset[str] | None]] = {}
        self.band_flag_rules = tuple(
            rule for rule in policy.rule
            if rule.on is None and rule.action is Action.SET_FLAGS and policy.enforced(rule))
        # Band rules in monitor mode are the only readers of the bands before an input.
        self.needs_bands_before = any(c.rule.on is None and not c.enforced for c in self.rules)
        self.default_flags = dict(policy.flags)
        self.flags_cache: dict[tuple[Any, ...], tuple[tuple[tuple[str, Any], ...],
                                                      Rule | None]] = {}

    def for_name(self, name: str) -> tuple[tuple[_Compiled, ...], bool, frozenset[str] | None]:
        """The rules that can match an event called `name` (those naming it or naming none),
        whether any of them looks at the event's attributes, and, when they are all band rules
        (no event rule, no subject-wide action), the bands any of them fires in."""
        found = self.by_name.get(name)
        if found is None:
            rules = tuple(c for c in self.rules if c.rule.on is None or name in c.rule.on)
            # Band rules alone, none for this session's band: nothing can fire (see apply_rules).
            only_bands = all(not c.event_rule and not c.subject_action and c.bands is not None
                             for c in rules)
            bands = frozenset().union(*(c.bands or () for c in rules)) if only_bands else None
            found = (rules, any(c.rule.on is not None and c.rule.match for c in rules), bands)
            if len(self.by_name) < 4096:
                self.by_name[name] = found
        return found


class _Compiled:
    """A rule with what `apply_rules` asks of it on every input, asked once."""

    __slots__ = ("bands", "enforced", "event_rule", "revoke_session", "rule", "subject_action")

    def __init__(self, rule: Rule, enforced: bool) -> None:
        self.rule = rule
        self.enforced = enforced
        self.event_rule = rule.on is not None
        self.subject_action = rule.action is Action.REVOKE_SUBJECT
        self.revoke_session = rule.action is Action.REVOKE_SESSION
        self.bands = rule.band  # None: any band


_PLANS: dict[int, tuple[weakref.ref[Policy], _Plan]] = {}


def _plan(policy: Policy) -> _Plan:
    entry = _PLANS.get(id(policy))
    if entry is not None and entry[0]() is policy:
        return entry[1]
    if len(_PLANS) >= 64:  # forget the plans of policies gone
        for key in [key for key, (ref, _) in _PLANS.items() if ref() is None]:
            del _PLANS[key]
    plan = _Plan(policy)
    _PLANS[id(policy)] = (weakref.ref(policy), plan)
    return plan


class _Run:
    """One evaluation: the working copy of the state and the decisions made so far."""

    def __init__(self, state: SubjectState, policy: Policy, now: float, cause: str,
                 source: str, jti: str | None = None, iss: str | None = None) -> None:
        self.state = state
        self.sessions = dict(state.sessions)
        self.revoked_at = state.revoked_at
        self.risk_floor = state.risk_floor
        self.policy = policy
        self.plan = _plan(policy)
        self.now = now
        self.cause = cause
        self.source = source
        self.jti = jti
        self.iss = iss
        self.context: list[str] = []
        self.decisions: list[Decision] = []

    # -- decisions -------------------------------------------------------------------------

    def decide(self, action: Action, rule: Rule | None, session: Session | None,
               reasons: list[str], *, enforced: bool = True, **extra: Any) -> None:
        session_id = session.session_id if session is not None else None
        scored = session is not None and session.risk_at > 0
        risk = current_risk(session, self.policy.scoring, self.now) if (
            session is not None and scored) else None
        self.decisions.append(Decision(
            decision_id=decision_id(cause=self.cause, action=action, session_id=session_id,
                                    rule=rule.name if rule else None),
            action=action, tenant=self.state.tenant, subject=self.state.subject,
            subject_key=self.state.key, session_id=session_id,
            rule=rule.name if rule else None, reasons=reasons + self.context, source=self.source,
            source_jti=self.jti, source_iss=self.iss,
            jtis=sorted({s.source[4:] for s in (session.signals if session else ())
                         if s.source.startswith("jti:")} | ({self.jti} if self.jti else set())),
            score=round(risk, 2) if risk is not None else None,
            band=self.policy.scoring.band(risk) if risk is not None else None,
            signals=[SignalWeight(name=s.name, weight=s.weight, source=s.source)
                     for s in (session.signals if session is not None else ())],
            enforced=enforced, decided_at=self.now, **extra,
        ))

    # -- effects -----------------------------------------------------------------------------

    def revoke(self, session: Session, rule: Rule | None, reason: str, *,
               enforced: bool = True) -> None:
        """Revoke one session and, transitively, every session acting on its behalf."""
        if not enforced:
            for target in self._with_delegates(session):
                current = self.sessions.get(target.session_id, target)
                root = target.session_id == session.session_id
                if current.active or (root and current.status == "ended"):
                    why = reason if target.session_id == session.session_id else (
                        f"{reason}; acts on behalf of session {session.session_id}")
                    self.decide(Action.REVOKE_SESSION, rule, current, [why], enforced=False)
            return
        for target in self._with_delegates(session):
            current = self.sessions.get(target.session_id, target)
            if current.status == "revoked":
                continue
            was_known_active = current.active
            revoked = current.with_changes(status="revoked", revoked_at=self.now)
            self.sessions[target.session_id] = revoked
            why = reason if target.session_id == session.session_id else (
                f"{reason}; acts on behalf of revoked session {session.session_id}")
            if was_known_active or target.session_id == session.session_id:
                self.decide(Action.REVOKE_SESSION, rule, revoked, [why])

    def _with_delegates(self, root: Session) -> list[Session]:
        children: dict[str, list[Session]] = {}
        for s in self.sessions.values():
            if s.parent is not None:
                children.setdefault(s.parent, []).append(s)
        found, stack, seen = [], [root], {root.session_id}
        while stack:
            current = stack.pop()
            found.append(current)
            for child in children.get(current.session_id, ()):
                if child.session_id not in seen:
                    seen.add(child.session_id)
                    stack.append(child)
        return found

    def set_sticky_flags(self, session: Session, flags: Mapping[str, Any]) -> Session:
        merged = dict(session.sticky_flags) | dict(flags)
        updated = session.with_changes(sticky_flags=tuple(sorted(merged.items())))
        self.sessions[session.session_id] = updated
        return updated

    def refresh_flags(self, session: Session, rule: Rule | None, reasons: list[str]) -> None:
        """Recompute a session's flags: defaults, then sticky flags, then what its band wants."""
        if not session.active:
            return
        risk = current_risk(session, self.policy.scoring, self.now)
        band = self.policy.scoring.band(risk)
        plan = self.plan
        try:
            cache_key: tuple[Any, ...] | None = (band, self.state.tenant, session.sticky_flags)
            cached = plan.flags_cache.get(cache_key)  # type: ignore[arg-type]
        except TypeError:  # a sticky flag holding a list or an object: not cacheable
            cache_key, cached = None, None
        if cached is None:
            flags = plan.default_flags | dict(session.sticky_flags)
            band_rule = None
            for candidate in plan.band_flag_rules:
                if candidate.matches("", band, self.state.tenant, {}):
                    flags |= candidate.flags
                    band_rule = band_rule or candidate
            cached = (tuple(sorted(flags.items())), band_rule)
            if cache_key is not None and len(plan.flags_cache) < 4096:
                plan.flags_cache[cache_key] = cached
        new, band_rule = cached
        if new == session.flags:
            return
        updated = session.with_changes(flags=new)
        self.sessions[session.session_id] = updated
        self.decide(Action.SET_FLAGS, rule or band_rule, updated, reasons, flags=dict(new))

    def step_up(self, session: Session, rule: Rule, reasons: list[str], enforced: bool) -> None:
        if not session.active or session.acr == rule.acr or session.required_acr == rule.acr:
            return
        if enforced:
            session = session.with_changes(required_acr=rule.acr)
            self.sessions[session.session_id] = session
        self.decide(Action.STEP_UP, rule, session, reasons, enforced=enforced,
                    required_acr=rule.acr, max_age=rule.max_age)

    # -- policy ------------------------------------------------------------------------------

    def apply_rules(self, name: str, targets: list[Session],
                    attributes: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                    occurred_at: float, band_before: Mapping[str, str], *,
                    subject_wide: bool = False) -> None:
        """Fire every rule that matches, per target session (or once for the subject).

        A session revocation about a whole subject (the event names no session or device)
        revokes the subject: every session established before the event, known or not yet.
        `attributes` may be a function giving them, called only if a rule looks at them.
        """
        fired_subject = False
        rules, needs_attributes, firing_bands = self.plan.for_name(name)
        scoring = self.policy.scoring
        sessions, tenant = self.sessions, self.state.tenant
        if firing_bands is not None and len(targets) == 1:
            # The usual presentation: only band rules, and the session is in none of their
            # bands, so none of them can match.
            (target,) = targets
            session = sessions.get(target.session_id, target)
            if scoring.band(current_risk(session, scoring, self.now)) not in firing_bands:
                return
        if callable(attributes):
            attributes = attributes() if needs_attributes else {}
        bands: dict[str, str] = {}  # a session's band: no rule firing changes its score
        for compiled in rules:
            rule, enforced = compiled.rule, compiled.enforced
            if compiled.subject_action or (subject_wide and compiled.revoke_session):
                if not fired_subject and compiled.event_rule and rule.matches(
                        name, "low", tenant, attributes):
                    fired_subject = True
                    self.revoke_subject(rule, occurred_at, name, enforced)
                continue
            event_rule = compiled.event_rule
            for target in targets:
                session = sessions.get(target.session_id, target)
                status = session.status
                if status != "active" and not (status == "ended" and compiled.revoke_session):
                    continue
                band = bands.get(session.session_id)
                if band is None:
                    band = scoring.band(current_risk(session, scoring, self.now))
                    bands[session.session_id] = band
                if compiled.bands is not None and band not in compiled.bands:
                    continue  # what rule.matches would answer first
                if not rule.matches(name if event_rule else "", band, tenant,
                                    attributes if event_rule else {}):
                    continue
                if not event_rule and not enforced and band_before.get(
                        session.session_id) == band:
                    continue  # monitor-mode band rules report band changes, not every event
                self.fire(rule, session, name, occurred_at, enforced, band)

    def fire(self, rule: Rule, session: Session, name: str, occurred_at: float,
             enforced: bool, band: str) -> None:
        reason = f"{name}" if rule.on is not None else f"risk band {band}"
        if rule.action is Action.REVOKE_SESSION:
            if rule.scope == "established_before" and session.established_at >= occurred_at:
                return
            self.revoke(session, rule, reason, enforced=enforced)
        elif rule.action is Action.STEP_UP:
            self.step_up(session, rule, [reason], enforced)
        elif rule.action is Action.SET_FLAGS:
            if not enforced:
                self.decide(Action.SET_FLAGS, rule, session, [reason], enforced=False,
                            flags=dict(rule.flags))
            elif rule.on is not None:
                updated = self.set_sticky_flags(session, rule.flags)
                self.refresh_flags(updated, rule, [reason])
        elif rule.action is Action.NOTIFY:
            self.decide(Action.NOTIFY, rule, session, [reason], enforced=enforced)

    def revoke_subject(self, rule: Rule, occurred_at: float, name: str, enforced: bool) -> None:
        if not enforced:
            # Report all that enforcing would do: the subject and each session it would end.
            if self.revoked_at is None or self.revoked_at < occurred_at:
                self.decide(Action.REVOKE_SUBJECT, rule, None, [name], enforced=False,
                            established_before=occurred_at)
                for session in list(self.sessions.values()):
                    if session.active and session.established_at <= occurred_at:
                        for target in self._with_delegates(session):
                            if self.sessions.get(target.session_id, target).active:
                                self.decide(Action.REVOKE_SESSION, rule, target,
                                            [f"{name}: all sessions of the subject"],
                                            enforced=False)
            return
        if self.revoked_at is not None and self.revoked_at >= occurred_at:
            return
        self.revoked_at = occurred_at
        self.decide(Action.REVOKE_SUBJECT, rule, None, [name], established_before=occurred_at)
        for session in list(self.sessions.values()):
            if session.active and session.established_at <= occurred_at:
                self.revoke(session, rule, f"{name}: all sessions of the subject")

    def finish(self, mark: str | None) -> tuple[SubjectState, list[Decision]]:
        """The new state, remembering the input by its `seen_mark` (None: not remembered)."""
        _sweep(self, self.policy)
        remembered = self.state.seen
        if mark is not None:
            remembered = (*remembered, mark)[-MAX_SEEN:]
        state = self.state.with_changes(sessions=self.sessions, revoked_at=self.revoked_at,
                                        seen=remembered, risk_floor=self.risk_floor)
        return state, self.decisions


def _attributes(event: Event | UnrecognizedEvent) -> dict[str, Any]:
    if isinstance(event, UnrecognizedEvent):
        return dict(event.payload)
    return event.model_dump(mode="json", exclude_none=True, by_alias=True)


def _new_session(session_id: str, at: float, policy: Policy) -> Session:
    return Session(session_id=session_id, established_at=at, last_seen=at,
                   flags=tuple(sorted(policy.flags.items())))


def _bands(run: _Run, sessions: Iterable[Session]) -> dict[str, str]:
    return {s.session_id: run.policy.scoring.band(current_risk(s, run.policy.scoring, run.now))
            for s in sessions}


def _evaluate_event(state: SubjectState, event: SecurityEvent, policy: Policy,
                    now: float) -> tuple[SubjectState, list[Decision]]:
    mark = seen_mark(event.cause)
    if mark in state.seen:
        return state, []
    name = event_name(event.event_type)
    run = _Run(state, policy, now, event.cause, name, jti=event.jti, iss=event.iss)
    run.context = [f"event {event.event_type}", f"jti {event.jti}"]
    if isinstance(event.event, SessionEstablished | SessionPresented) and event.session_id:
        kind: ActivityKind = (
            "established" if isinstance(event.event, SessionEstablished) else "presented")
        fact = SessionActivity(
            kind=kind, tenant=event.tenant, subject=event.subject, session_id=event.session_id,
            observed_at=event.occurred_at, device_id=event.device_id,
            acr=getattr(event.event, "acr", None), user_agent=event.event.fp_ua)
        return _evaluate_activity(state, fact, policy, now, cause=event.cause, source=name)

    if event.session_id is not None:
        known = run.sessions.get(event.session_id)
        if known is None:
            # Remember a session revoked before we saw it, so it can never become active.
            known = _new_session(event.session_id, event.occurred_at, policy)
            run.sessions[known.session_id] = known
            _check_standing(run, known, policy)
            known = run.sessions[known.session_id]
        elif known.active and event.occurred_at < known.established_at:
            known = known.with_changes(established_at=event.occurred_at)
            run.sessions[known.session_id] = known
            _check_standing(run, known, policy)
            known = run.sessions[known.session_id]
        targets = [known]
    elif event.device_id is not None:
        targets = [s for s in run.sessions.values() if event.device_id in s.devices]
    else:
        targets = list(run.sessions.values())
    band_before = _bands(run, targets) if run.plan.needs_bands_before else {}

    weights = policy.scoring.weights
    signal_source = f"jti:{event.jti}"
    if isinstance(event.event, RiskLevelChange) and event.session_id is None:
        # Remembered for the subject, so sessions reported later start at this risk.
        level = event.event.current_level
        floor_weight = {"LOW": weights.idp_risk_low, "MEDIUM": weights.idp_risk_medium,
                        "HIGH": weights.idp_risk_high}[level]
        run.risk_floor = (floor_weight, now, f"idp_risk_{level.lower()}|{signal_source}")
    for target in targets:
        session = run.sessions[target.session_id]
        if not session.active:
            continue
        signal: Signal | None = None
        if isinstance(event.event, RiskLevelChange):
            floor = {"LOW": weights.idp_risk_low, "MEDIUM": weights.idp_risk_medium,
                     "HIGH": weights.idp_risk_high}[event.event.current_level]
            signal = Signal(f"idp_risk_{event.event.current_level.lower()}", floor, now,
                            signal_source)
            if event.event.current_level == "LOW":
                session = session.with_changes(risk=floor, risk_at=now,
                                               signals=(*session.signals, signal)[-8:])
            else:
                session = set_floor(session, floor, signal, policy.scoring, now)
            run.sessions[session.session_id] = session
            continue
        if isinstance(event.event, CredentialCompromise):
            signal = Signal("credential_compromise", weights.credential_compromise, now,
                            signal_source)
        elif isinstance(event.event, DeviceComplianceChange):
            if event.event.current_status == "not-compliant":
                signal = Signal("device_not_compliant", weights.device_not_compliant, now,
                                signal_source)
        elif isinstance(event.event, TokenClaimsChange):
            signal = Signal("claims_change", weights.claims_change, now, signal_source)
        if signal is not None:
            run.sessions[session.session_id] = add_signal(session, signal, policy.scoring, now)

    run.apply_rules(name, targets, lambda: _attributes(event.event), event.occurred_at,
                    band_before,
                    subject_wide=event.session_id is None and event.device_id is None)
    for target in targets:
        session = run.sessions[target.session_id]
        run.refresh_flags(session, None, [f"{name} changed the risk band"])
    return run.finish(mark)


def _evaluate_activity(state: SubjectState, activity: SessionActivity, policy: Policy,
                       now: float, *, cause: str | None = None,
                       source: str | None = None) -> tuple[SubjectState, list[Decision]]:
    cause = cause or activity.dedupe_key()
    mark = seen_mark(cause)
    if mark in state.seen:
        return state, []
    # Presentations reported as activity are idempotent by their time and too frequent to
    # remember; everything else, a session-presented SET included, is remembered by its id.
    remembered = None if activity.kind == "presented" and source is None else mark
    name = source or f"activity:{activity.kind}"
    run = _Run(state, policy, now, cause, name)
    at = activity.observed_at
    existing = run.sessions.get(activity.session_id)

    if existing is None:
        session = _new_session(activity.session_id, at, policy)
        session = session.with_changes(
            parent=activity.parent_session_id,
            actor=str(activity.act.get("sub")) if activity.act and "sub" in activity.act else None,
            devices=(activity.device_id,) if activity.device_id else (),
            ip=str(activity.ip) if activity.ip is not None else None,
            user_agent=activity.user_agent, acr=activity.acr,
            geo=(activity.geo.lat, activity.geo.lon, at) if activity.geo else None,
            elevated_until=activity.elevated_until)
        if activity.kind == "ended":
            # Kept as a tombstone, so a later report cannot bring the session back.
            run.sessions[session.session_id] = session.with_changes(status="ended")
            return run.finish(mark)
        if activity.elevated_until is not None and activity.elevated_until > now:
            session = session.with_changes(sticky_flags=(("elevated", True),))
        if run.risk_floor is not None:
            weight, at_floor, source = run.risk_floor
            name_, _, origin = source.partition("|")
            inherited = Signal(name_, weight, at_floor, origin)
            session = session.with_changes(risk=weight, risk_at=at_floor, signals=(inherited,))
        run.sessions[session.session_id] = session
        run.apply_rules(name, [session], {}, at, {})
        run.refresh_flags(run.sessions[session.session_id], None, ["session established"])
        _check_standing(run, run.sessions[session.session_id], policy)
        return run.finish(mark)

    if not existing.active:
        return run.finish(remembered)

    session = existing
    if at < session.established_at or (
            activity.parent_session_id and session.parent is None):
        # An earlier fact (or a late parent link) about a session already known: it existed
        # since `at`, acting for that parent; check again whether it may still stand.
        session = session.with_changes(
            established_at=min(session.established_at, at),
            parent=session.parent or activity.parent_session_id)
        run.sessions[session.session_id] = session
        if _check_standing(run, session, policy):
            return run.finish(remembered)

    if activity.kind == "ended":
        run.sessions[session.session_id] = session.with_changes(status="ended")
        return run.finish(mark)
    if activity.kind == "presented" and at <= session.last_seen:
        # No newer than what was already seen: a redelivery or a stale report, nothing new.
        return run.finish(remembered)

    band_before = _bands(run, [session]) if run.plan.needs_bands_before else {}
    session = _presented(session, activity, policy, now)
    run.sessions[session.session_id] = session
    if activity.acr is not None and activity.acr == session.required_acr:
        session = session.with_changes(required_acr=None, acr=activity.acr)
        run.sessions[session.session_id] = session
    run.apply_rules(name, [session], lambda: activity.model_dump(mode="json", exclude_none=True),
                    at, band_before)
    run.refresh_flags(run.sessions[session.session_id], None, [f"{name} changed the risk band"])
    return run.finish(remembered)


def _check_standing(run: _Run, session: Session, policy: Policy, *,
                    report: bool = True) -> bool:
    """Revoke an active session that cannot stand: established before the subject's
    revocation, or acting (however indirectly) for a session that is no longer active.
    True if it was revoked."""
    if not session.active:
        return False
    if run.revoked_at is not None and session.established_at <= run.revoked_at:
        run.revoke(session, None, "established before the subject's revocation")
        return True
    ancestor = _inactive_ancestor(run, session)
    if ancestor is not None:
        # A revoked ancestor was revoked by an enforced decision; an ended one was not revoked
        # at all, so cutting its delegates off follows the policy's mode.
        enforced = ancestor.status == "revoked" or policy.mode is Mode.ENFORCE
        if enforced or report:
            run.revoke(session, None, f"acts on behalf of {ancestor.status} session "
                                      f"{ancestor.session_id}", enforced=enforced)
        return enforced
    return False


def _inactive_ancestor(run: _Run, session: Session) -> Session | None:
    """The first session up the delegation chain that is not active, if any."""
    seen = {session.session_id}
    parent_id = session.parent
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = run.sessions.get(parent_id)
        if parent is None:
            return None
        if not parent.active:
            return parent
        parent_id = parent.parent
    return None


def _sweep(run: _Run, policy: Policy) -> None:
    """Whatever an input changed, no active session may outlive what it stands on: facts
    arrive in any order, so a parent or a revocation may be learned after its delegates."""
    revoked_at = run.revoked_at
    for session_id in list(run.sessions):
        session = run.sessions[session_id]
        if session.status != "active" or (session.parent is None and (
                revoked_at is None or session.established_at > revoked_at)):
            continue  # stands on nothing that could have fallen: nothing to check
        ancestor = _inactive_ancestor(run, session) if session.active else None
        before = run.state.sessions.get(ancestor.session_id) if ancestor else None
        # Report (in monitor mode) only what this input changed, so it is reported once.
        changed = ancestor is not None and (before is None or before.active)
        _check_standing(run, session, policy, report=changed)


def _presented(session: Session, activity: SessionActivity, policy: Policy,
               now: float) -> Session:
    """The session after one presentation, with a signal for everything that looks wrong."""
    weights, source = policy.scoring.weights, f"activity:{activity.session_id}"
    signals: list[Signal] = []
    if activity.device_id and session.devices and activity.device_id not in session.devices:
        signals.append(Signal("new_device", weights.new_device, now, source))
    if activity.user_agent and session.user_agent and activity.user_agent != session.user_agent:
        signals.append(Signal("user_agent_change", weights.user_agent_change, now, source))
    ip = str(activity.ip) if activity.ip is not None else None
    if ip and session.ip and ip != session.ip:
        signals.append(Signal("ip_change", weights.ip_change, now, source))
    geo = session.geo
    if activity.geo is not None:
        if geo is not None and impossible_travel(geo, activity.geo.lat, activity.geo.lon,
                                                 activity.observed_at, policy.scoring):
            signals.append(Signal("impossible_travel", weights.impossible_travel, now, source))
        if geo is None or activity.observed_at >= geo[2]:
            geo = (activity.geo.lat, activity.geo.lon, activity.observed_at)
    devices = session.devices
    if activity.device_id and activity.device_id not in devices:
        devices = (*devices, activity.device_id)[-MAX_DEVICES:]
    session = session.with_changes(
        last_seen=max(session.last_seen, activity.observed_at), devices=devices,
        ip=ip or session.ip, user_agent=activity.user_agent or session.user_agent, geo=geo)
    for signal in signals:
        session = add_signal(session, signal, policy.scoring, now)
    return session


def _evaluate_time(state: SubjectState, policy: Policy,
                   now: float) -> tuple[SubjectState, list[Decision]]:
    run = _Run(state, policy, now, f"time:{now!r}", "time")
    for session_id in list(run.sessions):
        session = run.sessions[session_id]  # fresh: an earlier expiry may have cascaded here
        if not session.active:
            continue
        expiries = []
        if session.elevated_until is not None and now >= session.elevated_until:
            expiries.append(("elevation-expired", session.elevated_until))
            session = session.with_changes(elevated_until=None)
            run.sessions[session.session_id] = session
        if now - session.last_seen >= policy.lifetimes.idle_seconds:
            expiries.append(("idle-timeout", session.last_seen + policy.lifetimes.idle_seconds))
        elif now - session.established_at >= policy.lifetimes.absolute_seconds:
            expiries.append(("absolute-lifetime",
                             session.established_at + policy.lifetimes.absolute_seconds))
        for name, due in expiries:
            if not run.sessions[session_id].active:
                break
            run.cause = f"{name}:{session_id}:{due!r}"
            run.source = name
            run.apply_rules(name, [run.sessions[session_id]], {}, due, {})
    for session_id, session in list(run.sessions.items()):
        if not session.active and forget_at(session, policy) <= now:
            del run.sessions[session_id]
    return run.finish(None)


def forget_at(session: Session, policy: Policy) -> float:
    """When a session that is no longer active leaves the state. It was established before it
    ended and lives at most the policy's absolute lifetime, so past that (plus clock skew) no
    token of it can be presented, and its tombstone guards nothing: the relying services' view
    keeps a revocation just as long (caep/client/view.py). Without this a subject's state
    would grow by every session it ever had."""
    ended = max(session.established_at, session.last_seen, session.revoked_at or 0.0)
    return ended + policy.lifetimes.absolute_seconds + policy.lifetimes.clock_skew_seconds


def next_deadline(state: SubjectState, policy: Policy) -> float | None:
    """When `Tick` would next change this state: for a timer index, so time needs no scan."""
    deadlines = []
    for s in state.sessions.values():
        if s.active:
            deadlines.append(min(s.last_seen + policy.lifetimes.idle_seconds,
                                 s.established_at + policy.lifetimes.absolute_seconds))
            if s.elevated_until is not None:
                deadlines.append(s.elevated_until)
        else:
            deadlines.append(forget_at(s, policy))
    return min(deadlines) if deadlines else None


def evaluate(state: SubjectState | None, item: EngineInput, policy: Policy, now: float,
             *, tenant: str = "", key: str = "",
             subject: dict[str, Any] | None = None) -> tuple[SubjectState, list[Decision]]:
    """The next state of one subject and the decisions `item` causes. Pure."""
    if state is None:
        if isinstance(item, SecurityEvent):
            tenant, key, subject = item.tenant, item.key, item.subject
        elif isinstance(item, SessionActivity):
            tenant, key, subject = item.tenant, activity_key(item), item.subject
        state = SubjectState(tenant=tenant, key=key, subject=dict(subject or {}))
    if isinstance(item, SecurityEvent):
        return _evaluate_event(state, item, policy, now)
    if isinstance(item, SessionActivity):
        return _evaluate_activity(state, item, policy, now)
    return _evaluate_time(state, policy, now)


def decide(verified: VerifiedSet, now: float, policy: Policy | None = None) -> list[Decision]:
    """Decisions for one verified SET about a subject the engine knows nothing of yet."""
    from caep.policy import load_policy

    chosen = policy or load_policy()
    decisions: list[Decision] = []
    for event in security_events(verified):
        decisions += evaluate(None, event, chosen, now)[1]
    return decisions
