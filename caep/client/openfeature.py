"""An OpenFeature provider for the engine's per-session flags.

    api.set_provider(CaepProvider(subscriber))
    client = api.get_client()
    client.get_boolean_value("downloads.enabled", False,
                             EvaluationContext(targeting_key=session_id))

The evaluation context's `targeting_key` is the session id (an optional `tenant` attribute
names its tenant). Flags are the policy's `[flags]`: a session the engine restricted resolves
to its flags (reason TARGETING_MATCH, variant `session`, or `default` when the value is the
default), any other session to the policy default (reason DEFAULT). A session's flags change
fires PROVIDER_CONFIGURATION_CHANGED at once, with the changed keys in `flags_changed` and the
session in the event metadata. The provider's status follows the subscriber's, including when
it is set while the subscriber is STALE or in ERROR: PROVIDER_READY, PROVIDER_STALE and
PROVIDER_ERROR as it changes (a stopped subscriber, NOT_READY again, is PROVIDER_ERROR with code
PROVIDER_NOT_READY: the SDK has no way back to NOT_READY).

Fail closed: a flag listed in the policy's `[security_flags]` resolves to its safe value
whenever the state is not known: the view not caught up, stale or in error, no session named,
a tenant this service does not serve, or a revoked session. On errors the SDK itself returns
the caller's default, so the provider's hook puts the safe value back: an application cannot
fail open by passing a permissive default.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, GeneralError, ProviderNotReadyError
from openfeature.flag_evaluation import (
    FlagEvaluationDetails,
    FlagResolutionDetails,
    FlagType,
    FlagValueType,
    Reason,
)
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, Metadata

from caep.client.subscriber import Status, Subscriber
from caep.client.view import Change
from caep.policy import Policy, json_type

_MISMATCH = object()
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


def _typed(value: Any, kind: FlagType) -> Any:
    """`value` as a flag of `kind`, or _MISMATCH (an integer is a float, a bool nothing else)."""
    if kind is FlagType.BOOLEAN:
        return value if isinstance(value, bool) else _MISMATCH
    if kind is FlagType.STRING:
        return value if isinstance(value, str) else _MISMATCH
    if kind is FlagType.INTEGER:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH
    if kind is FlagType.FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _MISMATCH
    # A copy: the caller may change it, and it is the policy's or the view's own.
    return copy.deepcopy(value) if isinstance(value, dict | list) else _MISMATCH


class FailClosedHook(Hook):
    """Puts a security flag's safe value in place of the caller's default after any error."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def finally_after(self, hook_context: HookContext,
                      details: FlagEvaluationDetails[FlagValueType], hints: HookHints) -> None:
        if details.error_code is None or hook_context.flag_key not in self.policy.security_flags:
            return
        safe = _typed(self.policy.security_flags[hook_context.flag_key], hook_context.flag_type)
        if safe is not _MISMATCH:
            details.value = safe
            details.variant = "fail-closed"


class CaepProvider(AbstractProvider):
    """Per-session flags from a `Subscriber`'s view; see the module docstring."""

    def __init__(self, subscriber: Subscriber, *, init_timeout: float = 30.0,
                 name: str = "caep-engine") -> None:
        super().__init__()
        self.subscriber = subscriber
        self.policy = subscriber.view.policy
        self.init_timeout = init_timeout
        self._name = name
        self._hook = FailClosedHook(self.policy)
        self._lock = threading.Lock()
        self._active = False  # following the subscriber's status (after initialize's outcome)
        self._attached = False  # between initialize and shutdown: change events are emitted
        self._epoch = 0  # one per initialize: a late relay of an earlier one does nothing
        self._told: Status | None = None  # the status the SDK was last given for the provider
        subscriber.on_status(self._on_status)
        subscriber.on_change(self._on_change)

    # -- life cycle and events ------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name=self._name)

    def get_provider_hooks(self) -> list[Hook]:
        return [self._hook]

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait (on the SDK's thread) until the subscriber is READY, STALE or ERROR.

        The SDK records READY when this returns and ERROR when it raises, whatever the
        subscriber's status; so once the SDK has done so (this thread has ended), `_relay`
        emits the subscriber's actual status: a provider set while the view is STALE turns
        STALE at once, and one that timed out turns READY when the view catches up."""
        status = self.subscriber.wait_settled(self.init_timeout)
        reason = self.subscriber.reason
        with self._lock:
            self._epoch += 1
            self._active, self._attached = False, True
            epoch = self._epoch
        told = Status.READY if status in (Status.READY, Status.STALE) else status
        threading.Thread(target=self._relay, args=(threading.current_thread(), epoch, told),
                         name="caep-provider-status", daemon=True).start()
        if status is Status.ERROR:
            raise GeneralError(f"the engine's view is in error: {reason}")
        if status is Status.NOT_READY:
            raise ProviderNotReadyError(
                f"the engine's view did not catch up within {self.init_timeout:g} s: {reason}")

    def _relay(self, initializing: threading.Thread, epoch: int, told: Status) -> None:
        """After the SDK recorded initialize's outcome, follow the subscriber from there.
        With `set_provider_and_wait` the SDK records it on the caller's thread, which goes
        on: then the relay starts after a second at most."""
        initializing.join(1.0)
        with self._lock:
            if epoch != self._epoch:
                return
            self._active, self._told = True, told
        self._follow()

    def shutdown(self) -> None:
        with self._lock:
            self._epoch += 1
            self._active = self._attached = False

    def _on_status(self, status: Status, reason: str) -> None:
        self._follow()

    def _follow(self) -> None:
        """Emit the event that takes the SDK's status to the subscriber's, if they differ."""
        with self._lock:
            status, reason = self.subscriber.status, self.subscriber.reason
            if not self._active or status is self._told:
                return
            self._told = status
            if status is Status.READY:
                self.emit_provider_ready(ProviderEventDetails(message=reason))
            elif status is Status.STALE:
                self.emit_provider_stale(ProviderEventDetails(message=reason))
            else:  # the SDK has no way back to NOT_READY: an error that says so
                self.emit_provider_error(ProviderEventDetails(
                    message=reason, error_code=ErrorCode.GENERAL if status is Status.ERROR
                    else ErrorCode.PROVIDER_NOT_READY))

    def _on_change(self, change: Change) -> None:
        if not self._attached or not change.flags_changed:
            return
        self.emit_provider_configuration_changed(ProviderEventDetails(
            flags_changed=sorted(change.flags_changed),
            metadata={"session_id": change.session_id or "", "tenant": change.tenant,
                      "change": change.kind.value}))

    # -- resolution -------------------------------------------------------------------------------

    def _resolve(self, key: str, default: Any, context: EvaluationContext | None,
                 kind: FlagType) -> FlagResolutionDetails[Any]:
        policy, view = self.policy, self.subscriber.view
        if key not in policy.flags:
            return _error(default, ErrorCode.FLAG_NOT_FOUND,
                          f"flag {key!r} is not in the policy's [flags]")
        security = key in policy.security_flags
        status = self.subscriber.status
        if status is Status.NOT_READY or status is Status.ERROR:
            code = ErrorCode.PROVIDER_NOT_READY if status is Status.NOT_READY else (
                ErrorCode.GENERAL)
            return _error(default, code, f"the engine's view is {status.value}: "
                                         f"{self.subscriber.reason}")
        stale = status is Status.STALE
        if stale and security:
            return _error(default, ErrorCode.GENERAL,
                          f"the engine's view is STALE ({self.subscriber.reason}): "
                          "a security flag fails closed")
        session_id = context.targeting_key if context is not None else None
        if not session_id:
            return _error(default, ErrorCode.TARGETING_KEY_MISSING,
                          "the evaluation context's targeting_key must be the session id")
        tenant = context.attributes.get("tenant") if context is not None else None
        if tenant is not None and not isinstance(tenant, str):
            return _error(default, ErrorCode.INVALID_CONTEXT,
                          "the evaluation context's tenant attribute must be a string")
        metadata: dict[str, bool | int | float | str] = {"security": security}
        variant = "default"
        if tenant is not None and tenant not in view.tenants:
            value = policy.security_flags[key] if security else policy.flags[key]
            reason, variant = Reason.DEFAULT, "fail-closed" if security else "default"
            metadata["scope"] = "tenant not served"
        elif security and view.is_revoked(session_id, tenant):
            value, reason, variant = policy.security_flags[key], Reason.TARGETING_MATCH, (
                "fail-closed")
            metadata["revoked"] = True
        elif security and view.ambiguous(session_id, tenant):
            value, reason, variant = policy.security_flags[key], Reason.DEFAULT, "fail-closed"
            metadata["scope"] = "session id of several tenants: name the tenant"
        else:
            entry = view.session_flags(session_id, tenant)
            if entry is not None and key in entry.flags:
                value = entry.flags[key]
                reason = Reason.TARGETING_MATCH
                variant = "default" if value == policy.flags[key] else "session"
                metadata["updated_at"] = entry.updated_at
            else:
                value, reason = policy.flags[key], Reason.DEFAULT
            if stale:
                reason = Reason.STALE
        typed = _typed(value, kind)
        if typed is _MISMATCH:
            return _error(default, ErrorCode.TYPE_MISMATCH,
                          f"flag {key!r} is a {json_type(value)}, not a {kind.value.lower()}")
        return FlagResolutionDetails(value=typed, reason=reason, variant=variant,
                                     flag_metadata=metadata)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.BOOLEAN)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.STRING)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.INTEGER)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None,
                              ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.FLOAT)

    def resolve_object_details(self, flag_key: str, default_value: ObjectValue,
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve(flag_key, default_value, evaluation_context, FlagType.OBJECT)


def _error(default: Any, code: ErrorCode, message: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(value=default, reason=Reason.ERROR, error_code=code,
                                 error_message=message)
