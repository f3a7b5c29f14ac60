"""A model's retraining loop as the audit trail records it: events grouped into cycles.

The controller keeps no table of its own. Every step is one audit event with
``target_type="loop"``, ``target_id=<model>`` and ``action="loop.<kind>"``; ``after`` carries the
cycle id, the controller's clock (``at_ms``) and the step's figures. Reading them back in order
gives the state (the last step of the newest cycle) and the story ``loopwright loop status``
prints -- and because the audit trail is hash-chained, that story cannot be quietly edited.

Kinds, in the order a cycle goes through them::

    policy            the policy the controller runs under (recorded when first seen or changed)
    triggered         alert / schedule / new_labels / manual, with what fired
    trained           the tracked run, its datasets (digests) and executor
    registered        the model version
    gates             the gate evaluation (passed or the failed checks)
    challenger        the challenger alias set (shadow or canary), the champion it faces
    compared          champion vs challenger figures on live traffic
    awaiting_approval the promotion request waiting for approvers
    promoted          the promote alias moved           (ends the cycle)
    not_promoted      why not                           (ends the cycle)
    failed            training could not produce a model (ends the cycle)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopwright.governance.audit import AuditEvent
    from loopwright.registry.service import RegistryService

__all__ = ["KINDS", "TERMINAL", "Cycle", "LoopEvent", "LoopHistory", "describe", "read_history"]

TARGET_TYPE = "loop"
KINDS = (
    "policy",
    "triggered",
    "trained",
    "registered",
    "gates",
    "challenger",
    "compared",
    "awaiting_approval",
    "promoted",
    "not_promoted",
    "failed",
    "orphaned",
)
TERMINAL = frozenset({"promoted", "not_promoted", "failed"})
#: Steps that say something happened without moving the cycle on (an orphaned run was marked).
INFORMATIONAL = frozenset({"orphaned"})
_PAGE = 1000


@dataclass(frozen=True)
class LoopEvent:
    """One recorded step (``detail`` is the audit event's ``after`` without cycle and clock)."""

    kind: str
    model: str
    cycle: str | None
    at_ms: int
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    seq: int | None = None
    actor: str | None = None

    @classmethod
    def from_audit(cls, event: AuditEvent) -> LoopEvent:
        after = dict(event.after or {})
        cycle = after.pop("cycle", None)
        at_ms = int(after.pop("at_ms", event.ts))
        return cls(
            kind=event.action.removeprefix("loop."),
            model=event.target_id,
            cycle=cycle,
            at_ms=at_ms,
            detail=after,
            reason=event.reason,
            seq=event.seq,
            actor=event.actor,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "cycle": self.cycle,
            "at_ms": self.at_ms,
            "detail": self.detail,
            "reason": self.reason,
            "seq": self.seq,
            "actor": self.actor,
        }


@dataclass
class Cycle:
    """One retraining, from its trigger to its end (or to where it is now)."""

    id: str
    steps: list[LoopEvent] = field(default_factory=list)

    @property
    def phase(self) -> str:
        moved = [step.kind for step in self.steps if step.kind not in INFORMATIONAL]
        return moved[-1] if moved else "idle"

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    def last(self, kind: str) -> LoopEvent | None:
        for step in reversed(self.steps):
            if step.kind == kind:
                return step
        return None

    def get(self, kind: str, key: str, default: Any = None) -> Any:
        step = self.last(kind)
        return default if step is None else step.detail.get(key, default)

    @property
    def started_ms(self) -> int:
        return self.steps[0].at_ms


@dataclass
class LoopHistory:
    """Every loop event of one model, in order, and what follows from them."""

    model: str
    events: list[LoopEvent] = field(default_factory=list)
    cycles: list[Cycle] = field(default_factory=list)

    def add(self, event: LoopEvent) -> None:
        self.events.append(event)
        if event.cycle is None:
            return
        if not self.cycles or self.cycles[-1].id != event.cycle:
            found = next((c for c in self.cycles if c.id == event.cycle), None)
            if found is None:
                found = Cycle(event.cycle)
                self.cycles.append(found)
            found.steps.append(event)
            return
        self.cycles[-1].steps.append(event)

    @property
    def current(self) -> Cycle | None:
        """The cycle in progress, if any."""
        if self.cycles and not self.cycles[-1].done:
            return self.cycles[-1]
        return None

    @property
    def phase(self) -> str:
        current = self.current
        return "idle" if current is None else current.phase

    @property
    def policy_event(self) -> LoopEvent | None:
        for event in reversed(self.events):
            if event.kind == "policy":
                return event
        return None

    @property
    def watching_since_ms(self) -> int | None:
        """When the controller first saw a policy for this model (the schedule's first anchor)."""
        for event in self.events:
            if event.kind == "policy":
                return event.at_ms
        return None

    @property
    def last_trigger_ms(self) -> int | None:
        for cycle in reversed(self.cycles):
            return cycle.started_ms
        return None

    def consumed_alerts(self) -> set[str]:
        """Alert ids that already started a cycle (an alert triggers one retraining)."""
        return {
            str(a)
            for cycle in self.cycles
            for step in cycle.steps
            if step.kind == "triggered"
            for a in step.detail.get("alerts", [])
        }


def read_history(registry: RegistryService, model: str) -> LoopHistory:
    """All loop events of ``model`` from the audit trail, oldest first."""
    history = LoopHistory(model)
    after = 0
    while True:
        page = registry.audit_events(after, _PAGE, TARGET_TYPE, model)
        for event in page:
            if event.action.startswith("loop."):
                history.add(LoopEvent.from_audit(event))
        if len(page) < _PAGE:
            return history
        after = page[-1].seq


# -- the story ----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _short(digest: Any) -> str:
    return "-" if not digest else str(digest)[:12]


def describe(event: LoopEvent) -> str:
    """One plain sentence for a loop event: what ``loopwright loop status`` prints."""
    d, kind = event.detail, event.kind
    if kind == "policy":
        return f"policy {_short(d.get('digest'))} in force for deployment {d.get('deployment')}"
    if kind == "triggered":
        how = d.get("trigger", "manual")
        if how == "alert":
            what = f"alert {', '.join(d.get('rules', []))} ({', '.join(d.get('alerts', []))})"
        elif how == "schedule":
            what = f"schedule {d.get('schedule')!r}"
        elif how == "new_labels":
            what = f"{d.get('new_labels')} new labels (threshold {d.get('threshold')})"
        else:
            what = f"a manual trigger by {event.actor}"
        return f"triggered by {what}: {event.reason}"
    if kind == "trained":
        ds, ref, logged = d.get("dataset") or {}, d.get("reference") or {}, d.get("logged") or {}
        parts = [
            f"run {d.get('run_id')} ({d.get('executor')}) trained on dataset "
            f"{ds.get('name')} {_short(ds.get('digest'))}: {ds.get('rows')} rows"
        ]
        if ref.get("digest"):
            parts.append(
                f"reference {ref.get('name')} {_short(ref.get('digest'))} ({ref.get('rows')} rows)"
            )
        if logged.get("digest"):
            parts.append(
                f"labelled traffic of the last {logged.get('window')} "
                f"{_short(logged.get('digest'))} ({logged.get('rows')} rows)"
            )
        metrics = d.get("metrics") or {}
        key = f"val_{d.get('metric')}"
        if key in metrics:
            parts.append(f"validation {d.get('metric')} {_fmt(metrics[key])}")
        return "; ".join(parts)
    if kind == "registered":
        text = f"registered {event.model}/{d.get('version')} from run {d.get('run_id')}"
        profile = d.get("reference_profile") or {}
        if profile.get("source") == "logged":
            text += f"; drift reference: the labelled traffic ({profile.get('rows')} rows)"
        return text
    if kind == "orphaned":
        return f"run {d.get('run_id')} marked FAILED: {event.reason}"
    if kind == "gates":
        if d.get("policy", "") is None:
            return f"gates: none (the model has no gate policy) for v{d.get('version')}"
        if d.get("passed"):
            return f"gates passed on {d.get('dataset')!r} (evaluation {d.get('evaluation')})"
        return f"gates failed: {event.reason}"
    if kind == "challenger":
        weight = f", weight {d.get('weight')}" if d.get("weight") else ""
        return (
            f"{event.model}@{d.get('alias')} -> v{d.get('version')} as {d.get('mode')}{weight}, "
            f"against champion v{d.get('champion_version')}; deciding after "
            f"{d.get('min_requests')} requests and {d.get('min_labels')} labels, at the latest "
            f"{_when(d.get('deadline_ms'))}"
        )
    if kind == "compared":
        if d.get("champion_version") is None:
            return f"no champion to compare with: {d.get('why')}"
        agreement = d.get("agreement")
        agree = "" if agreement is None else f", agreement {agreement:.1%}"
        return (
            f"compared on {d.get('n_requests')} {'shared ' if d.get('mode') == 'shadow' else ''}"
            f"requests ({d.get('n_labelled')} labelled): {d.get('metric')} challenger "
            f"v{d.get('challenger_version')} {_fmt(d.get('challenger_value'))} vs champion "
            f"v{d.get('champion_version')} {_fmt(d.get('champion_value'))} "
            f"(difference {_fmt(d.get('delta'), '+.4f')}, margin {d.get('margin')}){agree} -> "
            + ("better" if d.get("better") else "not better")
        )
    if kind == "awaiting_approval":
        return (
            f"promotion of v{d.get('version')} to {d.get('alias')} awaits approval: request "
            f"{d.get('request_id')} ({d.get('approvals')} of {d.get('required')})"
        )
    if kind == "promoted":
        before = d.get("previous")
        was = f" (was v{before})" if before is not None else ""
        return (
            f"promoted: {event.model}@{d.get('alias')} -> v{d.get('version')}{was}: {event.reason}"
        )
    if kind == "not_promoted":
        cleared = "; challenger alias cleared" if d.get("challenger_cleared") else ""
        return f"not promoted ({d.get('stage')}): {event.reason}{cleared}"
    if kind == "failed":
        return f"failed at {d.get('stage')}: {d.get('error')}"
    return f"{kind}: {event.reason or d}"


def _when(ms: Any) -> str:
    from datetime import UTC, datetime

    if ms is None:
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
