"""Alert rules on monitoring series, their evaluation window by window, and notifications.

A rule watches one series (``drift.share``, ``drift.psi.income``, ``perf.roc_auc``,
``perf.roc_auc.delta``, ``labels.coverage``, ``serving.error_rate``, ...) and compares each window's
value with a threshold. It *fires* once the last ``for_windows`` windows all breach -- one bad hour
is noise, three in a row is a trend -- and *resolves* as soon as the latest window no longer
breaches. Evaluation is a pure function of the rules, the series and the alerts already open, so
re-running a monitor over the same windows changes nothing and notifies nobody twice:

- a firing alert for the same (deployment, rule) is never fired again, only kept ("unchanged");
- a missing series, or a window whose value is undefined (``None``/``NaN``: no labels yet), is
  reported as ``no_data``: it neither fires nor resolves anything;
- an alert's id is derived from (deployment, rule, window it fired on), so a store can upsert it.

Notifications are delivered by :class:`Notifier`: one ``key=value`` line on the logger
``loopwright.alerts``, and webhooks -- an HTTP POST of a JSON body, retried with exponential
backoff (jittered, so a receiver that comes back is not hit by every sender at once) on connection
errors, timeouts, 5xx and 429 (never on other 4xx: the receiver said the request is wrong, and
sending it again will not change its mind), with a bound on the attempts and on the total time.
A delivery never raises; its result (status, attempts, error) is returned so the caller can store
it next to the alert.

Secrets never sit in the YAML: header values may name environment variables (``Authorization:
"Bearer ${PAGER_TOKEN}"``, expanded when sending), and ``secret_env`` names the variable holding
the key that signs every body. The signature header is
``X-Loopwright-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>``: a receiver
recomputes it over the raw body and refuses a wrong one, or an old ``t`` (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import operator
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loopwright.errors import InvalidInput
from loopwright.yamldoc import YamlDocument

__all__ = [
    "Alert",
    "AlertRule",
    "AlertRules",
    "AlertTransition",
    "Delivery",
    "Notifier",
    "Notify",
    "alert_id",
    "evaluate_rules",
    "load_rules",
    "sign",
    "verify",
    "webhook_payload",
]

Op = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
Action = Literal["fire", "resolve", "unchanged"]
Status = Literal["firing", "pending", "ok", "no_data"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_NEGATED = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}

logger = logging.getLogger("loopwright.alerts")


# -- rules ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Notify(_Strict):
    """Where an alert goes: ``{log: true}`` or ``{webhook: URL, headers, retries, backoff_s}``.

    A webhook makes at most ``1 + retries`` attempts, waiting ``backoff_s * 2**k`` before retry
    ``k + 1`` (or the receiver's ``Retry-After``, if longer), and starts no attempt that would end
    after ``max_total_s``; each attempt waits at most ``timeout_s`` for the answer.
    """

    log: bool | None = None
    webhook: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # values may hold ${ENV_VAR}
    secret_env: str | None = None  # the environment variable holding the signing key
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0.0, le=60.0)
    timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)
    max_total_s: float = Field(default=30.0, gt=0.0, le=600.0)

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("a webhook must be an http:// or https:// URL")
        return url

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.fullmatch(name):
            raise ValueError("secret_env must name an environment variable, e.g. ALERT_SECRET")
        return name

    @field_validator("headers")
    @classmethod
    def _env_refs(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            for ref in _ENV_REF.findall(value):
                if not _ENV_NAME.fullmatch(ref):
                    raise ValueError(f"header {name!r}: ${{{ref}}} is not a variable name")
        return headers

    @model_validator(mode="after")
    def _one_target(self) -> Notify:
        if self.webhook is None and (self.headers or self.secret_env):
            raise ValueError("headers and secret_env belong to a webhook")
        if (self.webhook is None) == (self.log is None):
            raise ValueError("give exactly one of 'log: true' or 'webhook: <url>'")
        if self.log is False:
            raise ValueError("'log: false' notifies nobody; leave the entry out")
        return self

    @property
    def kind(self) -> Literal["log", "webhook"]:
        return "webhook" if self.webhook is not None else "log"


class AlertRule(_Strict, YamlDocument):
    """Fire when ``series op threshold`` held in each of the last ``for_windows`` windows."""

    document_name: ClassVar[str] = "alert rule"
    document_field: ClassVar[str] = "rule"

    name: str = Field(min_length=1, max_length=200)
    series: str = Field(min_length=1, max_length=500)
    op: Op
    threshold: float
    for_windows: int = Field(default=1, ge=1, le=1000)
    severity: Severity = "warning"
    notify: list[Notify] = Field(default_factory=lambda: [Notify(log=True)])
    description: str = ""

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("the threshold must be a finite number")
        return value

    def breached(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


class AlertRules(_Strict, YamlDocument):
    """A document of rules (``rules: [...]``); names are unique, as alerts are keyed by them."""

    document_name: ClassVar[str] = "alert rules"
    document_field: ClassVar[str] = "rules"

    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertRules:
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(twice)}")
        return self


def load_rules(source: str | Path | Mapping[str, Any] | Sequence[Any]) -> list[AlertRule]:
    """Rules from a YAML file path, YAML text, ``{rules: [...]}`` or a bare list of rules.

    Errors are :class:`~loopwright.errors.InvalidInput` naming the YAML path
    (``rules.1.threshold``), whichever form the rules came in.
    """
    if isinstance(source, Path):
        return list(AlertRules.from_file(source).rules)
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"alert rules are not valid YAML: {exc}", field="rules") from None
        return load_rules(data if data is not None else [])
    if isinstance(source, Mapping):
        return list(AlertRules.from_dict(source).rules)
    if isinstance(source, Sequence):
        return list(AlertRules.from_dict({"rules": list(source)}).rules)
    raise InvalidInput("alert rules must be YAML, a mapping or a list", field="rules")


# -- alerts and transitions -------------------------------------------------------------------


def alert_id(deployment: str, rule: str, window_end_ms: int) -> str:
    """Stable id of the alert a rule fires on a window: the same inputs, the same id."""
    key = "\x1f".join([deployment, rule, str(int(window_end_ms))])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Alert:
    """A rule that fired for a deployment; ``state`` becomes ``resolved`` when it clears."""

    id: str
    rule: str
    deployment: str
    state: Literal["firing", "resolved"]
    severity: Severity
    series: str
    op: Op
    threshold: float
    value: float  # the value on the window it fired on
    window_end_ms: int  # the window it fired on
    fired_at_ms: int
    message: str
    resolved_at_ms: int | None = None
    resolved_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AlertTransition:
    """What evaluating one rule did: ``fire``, ``resolve`` or ``unchanged`` (with its status).

    ``status`` is ``firing`` (an alert is open), ``pending`` (breaching, not yet for enough
    windows), ``ok`` or ``no_data`` (no series, or the latest window's value is undefined).
    Only ``fire`` and ``resolve`` notify.
    """

    action: Action
    status: Status
    rule: AlertRule
    deployment: str
    alert: Alert | None
    value: float | None
    window_end_ms: int | None
    breaching_windows: int
    message: str

    @property
    def notifies(self) -> bool:
        return self.action in ("fire", "resolve")


Points = Sequence[tuple[int, float | None]]


def evaluate_rules(
    rules: Iterable[AlertRule],
    series: Mapping[str, Points],
    open_alerts: Iterable[Alert] = (),
    deployment: str = "",
    *,
    now_ms: int | None = None,
) -> list[AlertTransition]:
    """One transition per rule, given each series' points ``[(window_end_ms, value), ...]``.

    ``open_alerts`` are the deployment's alerts still firing (others are ignored). ``now_ms``
    stamps ``fired_at_ms`` / ``resolved_at_ms``; by default the window's end, so replaying
    history gives the same alerts as living through it.
    """
    firing: dict[str, Alert] = {}
    for alert in open_alerts:
        if alert.state == "firing" and alert.deployment == deployment:
            current = firing.get(alert.rule)
            if current is None or alert.window_end_ms > current.window_end_ms:
                firing[alert.rule] = alert
    return [
        _evaluate(rule, _points(series.get(rule.series)), firing.get(rule.name), deployment, now_ms)
        for rule in rules
    ]


def _points(raw: Points | None) -> list[tuple[int, float | None]]:
    """Sorted by window end, one value per window (the last given wins), NaN as ``None``."""
    by_end: dict[int, float | None] = {}
    for end, value in raw or ():
        number = None if value is None else float(value)
        by_end[int(end)] = number if number is not None and math.isfinite(number) else None
    return sorted(by_end.items())


def _streak(rule: AlertRule, points: list[tuple[int, float | None]]) -> int:
    """How many of the latest windows breach in a row (an undefined value ends the run)."""
    count = 0
    for _, value in reversed(points):
        if value is None or not rule.breached(value):
            break
        count += 1
    return count


def _evaluate(
    rule: AlertRule,
    points: list[tuple[int, float | None]],
    open_alert: Alert | None,
    deployment: str,
    now_ms: int | None,
) -> AlertTransition:
    end, value = points[-1] if points else (None, None)
    streak = _streak(rule, points)

    def transition(
        action: Action, status: Status, alert: Alert | None, message: str
    ) -> AlertTransition:
        return AlertTransition(action, status, rule, deployment, alert, value, end, streak, message)

    if end is None or value is None:
        why = "no series" if end is None else "the latest window has no value"
        return transition("unchanged", "no_data", open_alert, f"{rule.name}: no data ({why})")
    if open_alert is not None:
        if rule.breached(value) or end <= open_alert.window_end_ms:
            return transition("unchanged", "firing", open_alert, open_alert.message)
        message = (
            f"{rule.name} resolved: {rule.series} = {value:.6g} "
            f"({_NEGATED[rule.op]} {rule.threshold:g})"
        )
        resolved = replace(
            open_alert,
            state="resolved",
            resolved_at_ms=end if now_ms is None else now_ms,
            resolved_value=value,
        )
        return transition("resolve", "ok", resolved, message)
    if streak >= rule.for_windows:
        alert = _fire(rule, deployment, end, value, now_ms)
        return transition("fire", "firing", alert, alert.message)
    if streak:
        message = f"{rule.name}: breaching {streak} of {rule.for_windows} windows"
        return transition("unchanged", "pending", None, message)
    return transition("unchanged", "ok", None, f"{rule.name}: ok")


def _fire(rule: AlertRule, deployment: str, end: int, value: float, now_ms: int | None) -> Alert:
    windows = f" for {rule.for_windows} windows" if rule.for_windows > 1 else ""
    where = f" on {deployment}" if deployment else ""
    message = (
        f"{rule.name}{where}: {rule.series} = {value:.6g} {rule.op} {rule.threshold:g}{windows}"
    )
    return Alert(
        id=alert_id(deployment, rule.name, end),
        rule=rule.name,
        deployment=deployment,
        state="firing",
        severity=rule.severity,
        series=rule.series,
        op=rule.op,
        threshold=rule.threshold,
        value=value,
        window_end_ms=end,
        fired_at_ms=end if now_ms is None else now_ms,
        message=message,
    )


# -- notifications ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of one notification to one target; ``ok`` False carries the last error."""

    target: str  # "log" or the webhook URL
    kind: Literal["log", "webhook"]
    alert_id: str
    transition: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
_RETRY_AFTER_CAP_S = 60.0


def webhook_payload(alert: Alert, transition: str, value: float | None = None) -> dict[str, Any]:
    """The JSON body a webhook receives (documented in docs/alerts.md)."""
    resolved = transition == "resolve"
    current = value if value is not None else (alert.resolved_value if resolved else alert.value)
    end = alert.window_end_ms
    return {
        "transition": transition,
        "id": alert.id,
        "deployment": alert.deployment,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state,
        "series": alert.series,
        "op": alert.op,
        "value": current,
        "threshold": alert.threshold,
        "window": {
            "end_ms": end,
            "end": datetime.fromtimestamp(end / 1000, tz=UTC).isoformat().replace("+00:00", "Z"),
        },
        "message": alert.message,
        "alert": alert.to_dict(),
    }


class Notifier:
    """Delivers alert transitions to their rule's targets; never raises.

    ``client`` is an ``httpx.Client`` to send webhooks with (one is created, and closed by
    :meth:`close`, when none is given). ``sleep`` and ``clock`` are the waiting and the
    monotonic time the retry loop uses.
    """

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self._sleep = sleep
        self._clock = clock
        #: A factor in [0.5, 1] on each backoff (senders retrying together spread out).
        self._jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def notify(self, transitions: Iterable[AlertTransition]) -> list[Delivery]:
        """Send every ``fire`` and ``resolve``; ``unchanged`` ones notify nobody."""
        out: list[Delivery] = []
        for t in transitions:
            if t.notifies and t.alert is not None:
                out.extend(self.send(t.alert, t))
        return out

    def send(
        self,
        alert: Alert,
        transition: AlertTransition | str,
        targets: Sequence[Notify] | None = None,
    ) -> list[Delivery]:
        """Deliver one alert to ``targets`` (default: the transition's rule's ``notify``)."""
        action: str
        if isinstance(transition, AlertTransition):
            action, value = transition.action, transition.value
            targets = transition.rule.notify if targets is None else targets
        else:
            action, value = transition, None
        if targets is None:
            targets = [Notify(log=True)]
        body = webhook_payload(alert, action, value)
        return [self._deliver(target, alert, action, body) for target in targets]

    def _deliver(self, target: Notify, alert: Alert, action: str, body: dict[str, Any]) -> Delivery:
        try:
            if target.webhook is None:
                _log_line(alert, action, body)
                return Delivery("log", "log", alert.id, action, ok=True, attempts=1)
            return self._post(target, target.webhook, alert, action, body)
        except Exception as exc:  # a notification failure is recorded, never raised
            where = target.webhook or "log"
            error = f"{type(exc).__name__}: {exc}"
            return Delivery(where, target.kind, alert.id, action, False, 0, error=error)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False)
        return self._client

    def _post(
        self, target: Notify, url: str, alert: Alert, action: str, body: dict[str, Any]
    ) -> Delivery:
        content = json.dumps(_json_safe(body), allow_nan=False).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "loopwright-alerts",
            "x-loopwright-alert-id": alert.id,
            "idempotency-key": f"{alert.id}:{action}",
            **{name: _expand(value) for name, value in target.headers.items()},
        }
        if target.secret_env is not None:
            headers["x-loopwright-signature"] = sign(_secret(target.secret_env), content)
        deadline = self._clock() + target.max_total_s
        status: int | None = None
        error: str | None = None
        attempt = 0
        for attempt in range(1, target.retries + 2):
            remaining = deadline - self._clock()
            try:
                response = self._http().post(
                    url,
                    content=content,
                    headers=headers,
                    timeout=max(min(target.timeout_s, remaining), 0.001),
                )
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                status, error, wait_hint = None, f"{type(exc).__name__}: {exc}", 0.0
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Delivery(url, "webhook", alert.id, action, True, attempt, status)
                error = f"HTTP {status}: {response.text[:200]}"
                if status != 429 and status < 500:
                    break  # the receiver refused this request; sending it again will not help
                wait_hint = _retry_after(response)
            if attempt > target.retries:
                break
            delay = max(target.backoff_s * 2 ** (attempt - 1) * self._jitter(), wait_hint)
            if self._clock() + delay >= deadline:
                error += f" (gave up: next attempt would pass max_total_s={target.max_total_s:g})"
                break
            self._sleep(delay)
        logger.warning(
            "webhook delivery failed url=%s alert=%s attempts=%d error=%s",
            url,
            alert.id,
            attempt,
            _kv(error),
        )
        return Delivery(url, "webhook", alert.id, action, False, attempt, status, error)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_REF = re.compile(r"\$\{([^}]*)\}")


def _expand(value: str) -> str:
    """``${NAME}`` replaced by the environment variable (a missing one is an error: a header
    sent with the placeholder would fail at the receiver, later and less clearly)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InvalidInput(f"environment variable {name} (a webhook header) is not set",
                               field="headers")  # fmt: skip
        return os.environ[name]

    return _ENV_REF.sub(one, value)


def _secret(name: str) -> bytes:
    secret = os.environ.get(name, "")
    if not secret:
        raise InvalidInput(f"environment variable {name} (the webhook's secret_env) is not set",
                           field="secret_env")  # fmt: skip
    return secret.encode()


def sign(key: bytes, body: bytes, at: int | None = None) -> str:
    """The ``X-Loopwright-Signature`` value for ``body`` (see the module docstring)."""
    t = int(time.time()) if at is None else int(at)
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(key: bytes, body: bytes, header: str, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches ``body`` and ``t`` is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = sign(key, body, at=t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _retry_after(response: httpx.Response) -> float:
    """The receiver's ``Retry-After`` in seconds (capped), or 0 when absent or a date."""
    raw = response.headers.get("retry-after")
    try:
        return min(max(float(raw), 0.0), _RETRY_AFTER_CAP_S) if raw is not None else 0.0
    except ValueError:
        return 0.0


def _log_line(alert: Alert, action: str, body: dict[str, Any]) -> None:
    """One ``key=value`` line per transition; resolutions log at INFO."""
    fields = {
        "transition": action,
        "id": alert.id,
        "deployment": alert.deployment,
        "rule": alert.rule,
        "severity": alert.severity,
        "series": alert.series,
        "value": body["value"],
        "op": alert.op,
        "threshold": alert.threshold,
        "window_end": body["window"]["end"],
        "message": alert.message,
    }
    level = logging.INFO if action == "resolve" else _LEVEL[alert.severity]
    logger.log(level, "alert %s", " ".join(f"{k}={_kv(v)}" for k, v in fields.items()))


def _kv(value: Any) -> str:
    """A value for a ``key=value`` line: bare when safe, else JSON-quoted."""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "null" if value is None else str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
