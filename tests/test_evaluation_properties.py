"""Invariants of the evaluation core (`caep.evaluation.evaluate`), checked with hypothesis.

Every input is about one subject (tenant "t", key "t|alice") over a small universe, so orders,
times and identifiers collide: five session ids, three devices, four event times, two jtis per
event kind (in the machine two different SETs may share a jti: the engine must then treat the
second as a redelivery, and the oracle does). Event times are offsets (-100, -99, -95, -90 s)
from the clock when an input is first delivered, so inputs between two ticks collide, inputs
after a tick are newer, and a redelivered input keeps its old time. Delegation is a random
forest over the session ids, fixed for one example (`sN` may act for `sM` only if M < N), and
about half the time the full chain s4 -> s3 -> s2 -> s1 -> s0; every activity about a delegated
session names its parent (`parent_session_id`, `act`).

1. `EvaluationMachine` (a `RuleBasedStateMachine`, default policy in enforce mode) delivers
   random activities, SETs and ticks, and redelivers earlier inputs. After every step the state
   is checked against a small oracle the machine keeps from the inputs alone:
   - a session once seen revoked (or ended) is never active again, nor is one an `ended`
     activity was delivered for;
   - a session whose ancestor (by the engine's own `parent` links) is revoked is not active;
   - a session an enforce-mode session-revoked SET named is not active;
   - a session established (by its established activity) at or before the latest subject-wide
     revocation (session-revoked without a session, credential-change, account-disabled,
     sessions-revoked, credential-compromise: all revoke the subject in the default policy) is
     not active; likewise one any input showed to exist at or before it (a presentation, or a
     SET about that session), and, in the engine's own terms, no active session has
     `established_at <= revoked_at`;
   - a session whose declared ancestor (from the activities delivered) is revoked, or must be
     dead by the rules above, is not active: revocation reaches delegates however deep, in
     whatever order the facts arrive;
   - redelivering an input already applied (same SET cause, same activity dedupe key) returns
     an equal state and no decisions; a tick applied twice at the same `now` does nothing;
   - no step decides revoke_session for a session already revoked before the step, or twice
     for one session, or for a session it leaves active, and decision ids are unique within a
     step;
   - `evaluate` is a deterministic pure function: a random earlier (prior state, input, now) is
     re-evaluated later and gives the same decisions (same ids) and state, and the prior state
     was not modified in between.
2. `test_revocation_outcome_is_order_independent`: a list of established / presented
   activities and revocation SETs, applied once in the given order and in a shuffled order
   with each input delivered one to three times, ends with the same revoked sessions and the
   same subject `revoked_at`, and no session revoked in one order is active in the other.
   Time does not pass (`now` is constant) and no session ends, so expiries and
   end-versus-revoke races are out of play. What legitimately depends on order is risk: the
   signals a presentation adds depend on what the session looked like before (a user agent
   A, B, A scores two changes; A, A, B one), so a session revoked by a risk-band rule
   (`risk-critical-revoke`) in either order, and every session acting on its behalf, is left
   out of the comparison. jtis are unique per SET content here (two different SETs never
   share a jti), because which of two colliding SETs is kept legitimately depends on order.
3. `test_monitor_mode_never_enforces`: with the default policy switched to monitor mode, no
   input makes a session revoked, sets `required_acr` or the subject's `revoked_at`; no
   revoke/step-up decision, and no decision made by a policy rule, is marked enforced; and
   every revoke_session / revoke_subject / step_up decision the enforce policy makes on the
   same prior state for the same input is emitted with the same decision id and
   `enforced=False` (checked separately for the per-session revocations of a subject-wide
   event, for delegates a revocation cascades to, and for the rest). Band rules (`on`
   omitted) are left out of that last comparison: in monitor mode they report band changes
   only, by design, while in enforce mode they fire on every event in the band.

Passing, the three run about 17k machine steps and 900 scenarios in about 35 s. A failure
takes minutes to shrink the first time; the example database replays it in seconds after.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from caep.activity import ActivityKind, Geo, SessionActivity
from caep.decisions import Action, Decision
from caep.evaluation import EngineInput, SecurityEvent, Tick, evaluate, forget_at
from caep.events import (
    AccountDisabled,
    AssuranceLevelChange,
    CredentialChange,
    CredentialCompromise,
    DeviceComplianceChange,
    Event,
    RiskLevelChange,
    SessionEstablished,
    SessionPresented,
    SessionRevoked,
    SessionsRevoked,
    TokenClaimsChange,
)
from caep.policy import default_policy_text, load_policy, parse_policy
from caep.state import MAX_SEEN, SubjectState

ENFORCE = load_policy()
MONITOR = parse_policy(default_policy_text().replace('mode = "enforce"', 'mode = "monitor"', 1))
assert MONITOR.mode != ENFORCE.mode

TENANT = "t"
KEY = "t|alice"
SUBJECT: dict[str, Any] = {"format": "email", "email": "alice@example.com"}
ISS = "https://idp.example.com"
START = 100_000.0  # the clock when an example starts

SESSIONS = ("s0", "s1", "s2", "s3", "s4")
DEVICES = ("d1", "d2", "d3")
TIMES = (-100.0, -99.0, -95.0, -90.0)  # event times, relative to the clock when first delivered
IPS = (None, "10.0.0.1", "10.0.0.2")
USER_AGENTS = (None, "ua-a", "ua-b")
GEOS: dict[str | None, Geo | None] = {
    None: None, "paris": Geo(lat=48.85, lon=2.35), "tokyo": Geo(lat=35.68, lon=139.69)}
ACRS = (None, "urn:caep-engine:acr:mfa", "pwd")
ELEVATIONS = (None, -50.0, 3900.0)  # elevated_until, relative to the clock likewise
ADVANCES = (10.0, 60.0, 600.0, 1800.0, 3600.0, 90000.0)

ENFORCING = frozenset({Action.REVOKE_SESSION, Action.REVOKE_SUBJECT, Action.STEP_UP})
BAND_RULES = frozenset(r.name for r in ENFORCE.rule if r.on is None)


# --- inputs: compact specs, built into engine inputs ------------------------------------------

class Act(NamedTuple):
    """A session activity (established / presented / ended)."""

    kind: str
    session: str
    at: float
    device: str | None = None
    ip: str | None = None
    ua: str | None = None
    geo: str | None = None
    acr: str | None = None
    elevated_until: float | None = None


class Set(NamedTuple):
    """One event of a SET: `kind` names the event and its subject scope (see KINDS)."""

    kind: str
    jti: int
    at: float
    session: str | None = None
    device: str | None = None
    level: str | None = None


class Wait(NamedTuple):
    """Time passes by `advance` seconds, then a Tick."""

    advance: float


Spec = Act | Set | Wait


def _payload(kind: str, level: str | None) -> Event:
    if kind in ("session-revoked", "subject-session-revoked"):
        return SessionRevoked.model_validate({})
    if kind == "credential-change":
        return CredentialChange.model_validate(
            {"credential_type": "password", "change_type": "update"})
    if kind == "account-disabled":
        return AccountDisabled.model_validate({})
    if kind == "sessions-revoked":
        return SessionsRevoked.model_validate({})
    if kind == "credential-compromise":
        return CredentialCompromise.model_validate({"credential_type": "password"})
    if kind == "risk-level-change":
        return RiskLevelChange.model_validate({"principal": "USER", "current_level": level})
    if kind == "assurance-level-change":
        return AssuranceLevelChange.model_validate(
            {"namespace": "NIST-AAL", "current_level": "nist-aal1", "change_direction": level})
    if kind == "token-claims-change":
        return TokenClaimsChange.model_validate({"claims": {"role": "reader"}})
    if kind == "session-established":
        return SessionEstablished.model_validate({"acr": level} if level else {})
    if kind == "session-presented":
        return SessionPresented.model_validate({})
    if kind == "device-compliance-change":
        previous = "compliant" if level == "not-compliant" else "not-compliant"
        return DeviceComplianceChange.model_validate(
            {"previous_status": previous, "current_status": level})
    raise AssertionError(kind)


# kind -> (subject scope, levels). Scope: "session" (names one session), "subject" (names none),
# "either", "device" (a device subject: device_id set, session_id None).
KINDS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "session-revoked": ("session", (None,)),
    "subject-session-revoked": ("subject", (None,)),
    "credential-change": ("subject", (None,)),
    "account-disabled": ("subject", (None,)),
    "sessions-revoked": ("subject", (None,)),
    "credential-compromise": ("subject", (None,)),
    "risk-level-change": ("either", ("HIGH", "LOW", "MEDIUM")),
    "assurance-level-change": ("either", ("decrease", "increase")),
    "token-claims-change": ("either", (None,)),
    "device-compliance-change": ("device", ("not-compliant", "compliant")),
    "session-established": ("session", (None, "urn:caep-engine:acr:mfa")),
    "session-presented": ("session", (None,)),
}
SUBJECT_REVOKING = frozenset({
    "subject-session-revoked", "credential-change", "account-disabled", "sessions-revoked",
    "credential-compromise"})
REVOCATION_KINDS = ("session-revoked", *sorted(SUBJECT_REVOKING))


def build(spec: Act | Set, parents: dict[str, str | None], now: float, *,
          unique_jti: bool = False) -> SecurityEvent | SessionActivity:
    """The engine input for `spec`, first delivered when the clock shows `now`."""
    at = now + spec.at
    if isinstance(spec, Act):
        elevated_until = None if spec.elevated_until is None else now + spec.elevated_until
        parent = parents.get(spec.session)
        delegation: dict[str, Any] = {}
        if parent is not None:
            delegation = {"parent_session_id": parent, "act": {"sub": f"agent-{spec.session}"}}
        return SessionActivity(
            kind=cast(ActivityKind, spec.kind), tenant=TENANT, subject=SUBJECT,
            session_id=spec.session,
            observed_at=at, device_id=spec.device,
            ip=ipaddress.ip_address(spec.ip) if spec.ip else None, user_agent=spec.ua,
            geo=GEOS[spec.geo], acr=spec.acr, elevated_until=elevated_until, **delegation)
    event = _payload(spec.kind, spec.level)
    jti = f"{spec.kind}-{spec.jti}"
    if unique_jti:
        jti += f"-{spec.session}-{spec.device}-{spec.level}-{at!r}"
    return SecurityEvent(
        tenant=TENANT, subject=SUBJECT, key=KEY, event_type=event.event_type, event=event,
        iss=ISS, jti=jti, occurred_at=at, session_id=spec.session, device_id=spec.device)


def identity(item: EngineInput) -> str | None:
    """What the engine deduplicates an input by (ticks have no identity)."""
    if isinstance(item, SecurityEvent):
        return item.cause
    if isinstance(item, SessionActivity):
        return item.dedupe_key()
    return None


def fresh_state() -> SubjectState:
    return SubjectState(tenant=TENANT, key=KEY, subject=dict(SUBJECT))


# --- strategies -------------------------------------------------------------------------------

CHAIN: dict[str, str | None] = {"s0": None, "s1": "s0", "s2": "s1", "s3": "s2", "s4": "s3"}


def topologies() -> st.SearchStrategy[dict[str, str | None]]:
    """Who acts on whose behalf: sN's parent is None or some sM with M < N (no cycles); the
    deepest chain, s4 for s3 for s2 for s1 for s0, about half the time."""
    choices = [st.sampled_from((None, *SESSIONS[:i])) for i in range(1, len(SESSIONS))]
    forest = st.tuples(*choices).map(lambda ps: {"s0": None, **dict(zip(SESSIONS[1:], ps,
                                                                        strict=True))})
    return st.one_of(forest, st.just(CHAIN))


def activity_specs(kinds: tuple[str, ...] = ("established", "presented", "ended"),
                   ) -> st.SearchStrategy[Act]:
    session, at = st.sampled_from(SESSIONS), st.sampled_from(TIMES)
    device = st.sampled_from((None, *DEVICES))
    options: list[st.SearchStrategy[Act]] = []
    if "established" in kinds:
        options.append(st.builds(
            Act, kind=st.just("established"), session=session, at=at, device=device,
            ip=st.sampled_from(IPS), ua=st.sampled_from(USER_AGENTS),
            geo=st.sampled_from(tuple(GEOS)), acr=st.sampled_from(ACRS),
            elevated_until=st.sampled_from(ELEVATIONS)))
    if "presented" in kinds:
        options.append(st.builds(
            Act, kind=st.just("presented"), session=session, at=at, device=device,
            ip=st.sampled_from(IPS), ua=st.sampled_from(USER_AGENTS),
            geo=st.sampled_from(tuple(GEOS)), acr=st.sampled_from(ACRS),
            elevated_until=st.none()))
    if "ended" in kinds:
        options.append(st.builds(lambda sid, t: Act("ended", sid, t), session, at))
    return st.one_of(options)


def set_specs(kinds: tuple[str, ...] = tuple(KINDS)) -> st.SearchStrategy[Set]:
    options = []
    for kind in kinds:
        scope, levels = KINDS[kind]
        session: st.SearchStrategy[str | None] = {
            "session": st.sampled_from(SESSIONS), "either": st.sampled_from((None, *SESSIONS)),
        }.get(scope, st.none())
        device: st.SearchStrategy[str | None] = (
            st.sampled_from(DEVICES) if scope == "device" else st.none())
        options.append(st.builds(
            Set, kind=st.just(kind), jti=st.integers(0, 1), at=st.sampled_from(TIMES),
            session=session, device=device, level=st.sampled_from(levels)))
    return st.one_of(options)


SESSION_KINDS = tuple(k for k in KINDS if k not in SUBJECT_REVOKING)


def input_specs() -> st.SearchStrategy[Act | Set]:
    return st.one_of(activity_specs(), set_specs())


# --- helpers ------------------------------------------------------------------------------------

def revoke_session_targets(decisions: list[Decision]) -> list[str | None]:
    return [d.session_id for d in decisions if d.action is Action.REVOKE_SESSION]


def ancestors(session_id: str, parent_of: dict[str, str | None]) -> list[str]:
    """The chain of sessions `session_id` acts for, nearest first (cycle-safe)."""
    chain: list[str] = []
    current = parent_of.get(session_id)
    while current is not None and current not in chain and current != session_id:
        chain.append(current)
        current = parent_of.get(current)
    return chain


# --- 1. the state machine -----------------------------------------------------------------------

class EvaluationMachine(RuleBasedStateMachine):
    applied = Bundle("applied")

    def __init__(self) -> None:
        super().__init__()
        self.state = fresh_state()
        self.now = START
        self.parents: dict[str, str | None] = {}
        # the oracle, built from the inputs alone
        self.applied_ids: set[str] = set()
        self.explicit_revoked: set[str] = set()  # named by a session-revoked SET
        self.subject_revoked_at: float | None = None  # latest subject-wide revocation
        self.established_min: dict[str, float] = {}  # earliest established activity
        self.existed_min: dict[str, float] = {}  # earliest evidence the session existed
        self.declared: set[str] = set()  # sessions whose parent an activity has told us
        self.ended: set[str] = set()  # sessions an `ended` activity was delivered for
        # what was observed of the engine
        self.ever_revoked: set[str] = set()
        self.ever_ended: set[str] = set()
        # forgetting: a session no longer active leaves the state at `forget_at`; what the
        # inputs said of it before then no longer binds the engine (those inputs are stale)
        self.about: dict[str, str | None] = {}  # input identity -> the session it names
        self.stale: set[str] = set()
        self.samples: list[tuple[SubjectState, bytes, EngineInput, float, SubjectState,
                                 list[Decision]]] = []

    @initialize(parents=topologies())
    def delegation(self, parents: dict[str, str | None]) -> None:
        self.parents = parents

    # Five delivering rules, so sessions are established often and the subject revoked less
    # often than everything else (a subject revocation ends every session known by then).
    @rule(target=applied, spec=activity_specs(("established",)))
    def establish(self, spec: Act) -> EngineInput:
        return self._deliver(spec)

    @rule(target=applied, spec=activity_specs(("presented",)))
    def present(self, spec: Act) -> EngineInput:
        return self._deliver(spec)

    @rule(target=applied, spec=activity_specs(("ended",)))
    def end(self, spec: Act) -> EngineInput:
        return self._deliver(spec)

    @rule(target=applied, spec=set_specs(SESSION_KINDS))
    def signal(self, spec: Set) -> EngineInput:
        return self._deliver(spec)

    @rule(target=applied, spec=set_specs(tuple(sorted(SUBJECT_REVOKING))))
    def revoke_subject(self, spec: Set) -> EngineInput:
        return self._deliver(spec)

    def _deliver(self, spec: Act | Set) -> EngineInput:
        item = build(spec, self.parents, self.now)
        self._apply(item)
        return item

    @rule(item=applied)
    def redeliver(self, item: EngineInput) -> None:
        assert identity(item) in self.applied_ids
        self._apply(item)

    @rule(advance=st.sampled_from(ADVANCES))
    def tick(self, advance: float) -> None:
        self.now += advance
        self._apply(Tick())
        again, decisions = evaluate(self.state, Tick(), ENFORCE, self.now)
        assert again == self.state, "a second tick at the same time changed the state"
        assert not decisions, f"a second tick at the same time decided {decisions}"

    @rule(index=st.integers(min_value=0))
    def recheck(self, index: int) -> None:
        if not self.samples:
            return
        prior, prior_bytes, item, now, result, decisions = self.samples[index % len(self.samples)]
        assert prior.to_bytes() == prior_bytes, "evaluate's input state was modified later"
        again_state, again = evaluate(prior, item, ENFORCE, now)
        assert [d.decision_id for d in again] == [d.decision_id for d in decisions], (
            f"decision ids differ on re-evaluation of {item}")
        assert again == decisions
        assert again_state == result

    def _apply(self, item: EngineInput) -> None:
        prior = self.state
        ident = identity(item)
        new, decisions = evaluate(prior, item, ENFORCE, self.now)
        self._check_forgetting(prior, new, item)
        if (ident is not None and ident in self.applied_ids and ident not in self.stale
                and len(self.applied_ids) < MAX_SEEN):
            label("redelivery")
            assert new == prior, f"redelivered {ident} changed the state"
            assert not decisions, f"redelivered {ident} decided again: {decisions}"
        already = {sid for sid, s in prior.sessions.items() if s.status == "revoked"}
        targets = revoke_session_targets(decisions)
        assert not already.intersection(targets), (
            f"revoke_session for already revoked {sorted(already.intersection(targets))}")
        assert len(targets) == len(set(targets)), f"one session revoked twice in a step: {targets}"
        undone = sorted(str(t) for t in targets if t in new.sessions and new.sessions[t].active)
        assert not undone, f"decided revoke_session for {undone}, yet they end the step active"
        links = {sid: s.parent for sid, s in new.sessions.items()}
        for target in targets:
            if target is not None and links.get(target) is not None:
                label(f"revoked a delegate {len(ancestors(target, links))} deep")
        ids = Counter(d.decision_id for d in decisions)
        assert all(n == 1 for n in ids.values()), f"duplicate decision ids in one step: {decisions}"
        self.samples = [*self.samples[-63:],
                        (prior, prior.to_bytes(), item, self.now, new, decisions)]
        if ident is not None and ident not in self.applied_ids:
            self.applied_ids.add(ident)
            self.about[ident] = getattr(item, "session_id", None)
            self._learn(item)
        self.state = new

    def _check_forgetting(self, prior: SubjectState, new: SubjectState,
                          item: EngineInput) -> None:
        """Only time forgets, only sessions no longer active, never before `forget_at` and
        never later than the first tick after it."""
        gone = sorted(set(prior.sessions) - set(new.sessions))
        if not isinstance(item, Tick):
            assert not gone, f"{item} made the engine forget {gone}"
            return
        for sid in gone:
            session = prior.sessions[sid]
            assert not session.active, f"forgot active session {sid}"
            assert self.now >= forget_at(session, ENFORCE), f"forgot {sid} too early"
            label("forgot a session")
            self._forget(sid)
        overdue = sorted(sid for sid, s in new.sessions.items()
                         if not s.active and forget_at(s, ENFORCE) <= self.now)
        assert not overdue, f"a tick at {self.now} kept sessions past their forget_at: {overdue}"

    def _forget(self, sid: str) -> None:
        self.stale |= {ident for ident, about in self.about.items() if about == sid}
        for facts in (self.explicit_revoked, self.declared, self.ended, self.ever_revoked,
                      self.ever_ended):
            facts.discard(sid)
        self.established_min.pop(sid, None)
        self.existed_min.pop(sid, None)

    def _learn(self, item: EngineInput) -> None:
        """The oracle: what the input obliges, without asking the engine."""
        if isinstance(item, SessionActivity):
            sid, at = item.session_id, item.observed_at
            self.declared.add(sid)
            if item.kind == "ended":
                self.ended.add(sid)
            self.existed_min[sid] = min(at, self.existed_min.get(sid, math.inf))
            if item.kind == "established":
                self.established_min[sid] = min(at, self.established_min.get(sid, math.inf))
        elif isinstance(item, SecurityEvent):
            kind = item.jti.rsplit("-", 1)[0]
            if kind == "session-revoked":
                assert item.session_id is not None
                self.explicit_revoked.add(item.session_id)
            elif kind in SUBJECT_REVOKING:
                latest = self.subject_revoked_at
                self.subject_revoked_at = (
                    item.occurred_at if latest is None else max(latest, item.occurred_at))
            elif kind == "session-established":
                assert item.session_id is not None
                self.established_min[item.session_id] = min(
                    item.occurred_at, self.established_min.get(item.session_id, math.inf))
                self.existed_min[item.session_id] = min(
                    item.occurred_at, self.existed_min.get(item.session_id, math.inf))
            elif item.session_id is not None:
                self.existed_min[item.session_id] = min(
                    item.occurred_at, self.existed_min.get(item.session_id, math.inf))

    @invariant()
    def revoked_sessions_stay_revoked(self) -> None:
        sessions = self.state.sessions
        active = {sid for sid, s in sessions.items() if s.active}
        assert not active & self.ever_revoked, (
            f"revoked session(s) active again: {sorted(active & self.ever_revoked)}")
        assert not active & self.ever_ended, (
            f"ended session(s) active again: {sorted(active & self.ever_ended)}")
        self.ever_revoked |= {sid for sid, s in sessions.items() if s.status == "revoked"}
        self.ever_ended |= {sid for sid, s in sessions.items() if s.status == "ended"}

    @invariant()
    def delegates_of_revoked_sessions_are_not_active(self) -> None:
        sessions = self.state.sessions
        links = {sid: s.parent for sid, s in sessions.items()}
        for sid, session in sessions.items():
            if session.active:
                revoked = [a for a in ancestors(sid, links)
                           if a in sessions and sessions[a].status == "revoked"]
                assert not revoked, f"{sid} is active but acts for revoked {revoked}"

    @invariant()
    def ended_sessions_are_not_active(self) -> None:
        active = {sid for sid, s in self.state.sessions.items() if s.active}
        assert not active & self.ended, (
            f"reported ended, yet active: {sorted(active & self.ended)}")

    @invariant()
    def revoked_by_the_idp_is_not_active(self) -> None:
        active = {sid for sid, s in self.state.sessions.items() if s.active}
        assert not active & self.explicit_revoked, (
            f"session-revoked named {sorted(active & self.explicit_revoked)}, still active")

    @invariant()
    def sessions_before_subject_revocation_are_not_active(self) -> None:
        sessions = self.state.sessions
        active = {sid for sid, s in sessions.items() if s.active}
        engine_at = self.state.revoked_at
        if engine_at is not None:
            early = sorted(sid for sid in active if sessions[sid].established_at <= engine_at)
            assert not early, f"active with established_at <= revoked_at {engine_at}: {early}"
        cutoff = self.subject_revoked_at
        if cutoff is None:
            return
        established = sorted(sid for sid in active
                             if self.established_min.get(sid, math.inf) <= cutoff)
        assert not established, (
            f"established at or before the subject revocation at {cutoff}, still active: "
            f"{[(sid, self.established_min[sid]) for sid in established]}")
        existed = sorted(sid for sid in active if self.existed_min.get(sid, math.inf) <= cutoff)
        assert not existed, (
            f"seen to exist at or before the subject revocation at {cutoff}, still active: "
            f"{[(sid, self.existed_min[sid]) for sid in existed]}")

    @invariant()
    def declared_delegates_of_dead_sessions_are_not_active(self) -> None:
        sessions = self.state.sessions
        cutoff = self.subject_revoked_at
        dead = self.explicit_revoked | self.ever_revoked | {
            sid for sid, at in self.established_min.items()
            if cutoff is not None and at <= cutoff}
        declared = {sid: self.parents.get(sid) for sid in self.declared}
        revoked = {sid for sid, s in sessions.items() if s.status == "revoked"}
        for sid, session in sessions.items():
            if session.active:
                chain = ancestors(sid, declared)
                assert not revoked.intersection(chain), (
                    f"{sid} acts (declared) for {chain}; {sorted(revoked.intersection(chain))} "
                    f"revoked, yet {sid} is active (engine parent: {session.parent!r})")
                assert not dead.intersection(chain), (
                    f"{sid} acts (declared) for {chain}; {sorted(dead.intersection(chain))} "
                    f"must be dead (revoked by the IdP or established before the subject's "
                    f"revocation), yet {sid} is active (engine parent: {session.parent!r}; "
                    f"states: {[(a, sessions[a].status) for a in chain if a in sessions]})")


EvaluationMachine.TestCase.settings = settings(
    max_examples=600, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEvaluationMachine = EvaluationMachine.TestCase


# --- 2. order independence ----------------------------------------------------------------------

@st.composite
def order_scenarios(draw: st.DrawFn) -> tuple[dict[str, str | None], list[Act | Set], list[int]]:
    parents = draw(topologies())
    specs = draw(st.lists(
        st.one_of(activity_specs(("established", "presented")), set_specs(REVOCATION_KINDS)),
        min_size=1, max_size=12))
    copies = draw(st.lists(st.integers(1, 3), min_size=len(specs), max_size=len(specs)))
    redelivered = [i for i, n in enumerate(copies) for _ in range(n)]
    return parents, specs, draw(st.permutations(redelivered))


def _run(items: Sequence[EngineInput], policy: Any = ENFORCE,
         ) -> tuple[SubjectState, list[Decision]]:
    state, decisions = fresh_state(), []
    for item in items:
        state, made = evaluate(state, item, policy, START)
        decisions += made
    return state, decisions


@settings(max_examples=500, deadline=None)
@given(order_scenarios())
def test_revocation_outcome_is_order_independent(
        scenario: tuple[dict[str, str | None], list[Act | Set], list[int]]) -> None:
    parents, specs, shuffled = scenario
    items = [build(spec, parents, START, unique_jti=True) for spec in specs]
    given_state, given_decisions = _run(items)
    other_state, other_decisions = _run([items[i] for i in shuffled])

    risk_revoked = {d.session_id for d in given_decisions + other_decisions
                    if d.action is Action.REVOKE_SESSION and d.rule in BAND_RULES}
    tainted = {sid for sid in SESSIONS
               if sid in risk_revoked or risk_revoked.intersection(ancestors(sid, parents))}

    def revoked(state: SubjectState) -> set[str]:
        return {sid for sid, s in state.sessions.items() if s.status == "revoked"} - tainted

    def active(state: SubjectState) -> set[str]:
        return {sid for sid, s in state.sessions.items() if s.active} - tainted

    assert given_state.revoked_at == other_state.revoked_at
    assert not revoked(given_state) & active(other_state), (
        f"revoked in the given order, active in the other: "
        f"{sorted(revoked(given_state) & active(other_state))}")
    assert not revoked(other_state) & active(given_state), (
        f"revoked in the shuffled order, active in the given one: "
        f"{sorted(revoked(other_state) & active(given_state))}")
    assert revoked(given_state) == revoked(other_state)


# --- 3. monitor mode ----------------------------------------------------------------------------

@st.composite
def monitor_scenarios(draw: st.DrawFn) -> tuple[dict[str, str | None], list[Spec]]:
    parents = draw(topologies())
    steps = draw(st.lists(st.one_of(input_specs(), st.builds(Wait, st.sampled_from(ADVANCES))),
                          min_size=1, max_size=25))
    return parents, steps


@settings(max_examples=400, deadline=None)
@given(monitor_scenarios())
def test_monitor_mode_never_enforces(scenario: tuple[dict[str, str | None], list[Spec]]) -> None:
    parents, steps = scenario
    state, now = fresh_state(), START
    for spec in steps:
        item: EngineInput
        if isinstance(spec, Wait):
            now += spec.advance
            item = Tick()
        else:
            item = build(spec, parents, now)
        after, decisions = evaluate(state, item, MONITOR, now)
        _, would = evaluate(state, item, ENFORCE, now)

        revoked = sorted(sid for sid, s in after.sessions.items() if s.status == "revoked")
        assert not revoked, f"monitor mode revoked {revoked} on {spec}"
        stepped = sorted(sid for sid, s in after.sessions.items() if s.required_acr is not None)
        assert not stepped, f"monitor mode set required_acr of {stepped} on {spec}"
        assert after.revoked_at is None, f"monitor mode set the subject's revoked_at on {spec}"
        enforcing = [d for d in decisions if d.enforced and d.action in ENFORCING]
        assert not enforcing, f"monitor mode enforced {enforcing} on {spec}"
        by_rule = [d for d in decisions if d.enforced and d.rule is not None]
        assert not by_rule, f"monitor mode enforced rule decisions {by_rule} on {spec}"

        reported = {d.decision_id for d in decisions if not d.enforced}

        def already_reported(d: Decision, state: SubjectState = state) -> bool:
            # Monitor mode reports that a delegate would be cut off once, when the session it
            # acts for stops being active; afterwards the delegate stays active under monitor
            # mode, so enforce mode, started from that state, would cut it off on every input.
            # A cascade appends "; acts on behalf of revoked session X" to the root cause, so
            # the session that stopped being active is the one the first clause names.
            cause = next((r for r in d.reasons if "acts on behalf of" in r), None)
            if d.rule is not None or cause is None:
                return False
            ancestor = cause.split(";", 1)[0].rsplit(" ", 1)[-1]
            prior = state.sessions.get(ancestor)
            return prior is not None and not prior.active

        missing = [d for d in would if d.action in ENFORCING and d.rule not in BAND_RULES
                   and d.decision_id not in reported and not already_reported(d)]
        own = getattr(item, "session_id", None)
        subject_wide = isinstance(item, SecurityEvent) and own is None and item.device_id is None

        def show(ds: list[Decision]) -> list[tuple[str, str | None, str | None]]:
            return [(d.action.value, d.session_id, d.rule) for d in ds]

        # one assertion per kind of omission, so hypothesis reports each separately
        per_session = [d for d in missing if subject_wide and d.action is Action.REVOKE_SESSION]
        assert not per_session, (
            f"enforce mode would revoke sessions {show(per_session)} on subject-wide {spec}; "
            f"monitor mode reported only {show(decisions)}")
        delegates = [d for d in missing if not subject_wide
                     and d.action is Action.REVOKE_SESSION and d.session_id != own]
        assert not delegates, (
            f"enforce mode would revoke delegates {show(delegates)} on {spec}; "
            f"monitor mode reported only {show(decisions)}")
        other = [d for d in missing if d not in per_session and d not in delegates]
        assert not other, (
            f"enforce mode would decide {show(other)} on {spec}; monitor mode did not report it")
        state = after
