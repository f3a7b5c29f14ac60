"""``loopwright demo``: the whole loop on a simulated credit-risk book, embedded, in minutes.

What happens, in order (every step is a real call of the public SDK or the serving app):

1. Train v1 on the day-0 population (a tracked run), register it with its reference profile,
   judge it by a gate policy, and promote it to ``champion`` through alice's request and bob's
   approval.
2. Serve it: the deployment ``credit-api`` (champion + a ``challenger`` shadow route) runs in the
   same Starlette app ``loopwright deploy`` serves; the demo talks to it through HTTP calls made
   in-process (no socket), on a simulated clock, one day at a time.
3. Replay traffic day by day while the population shifts (:mod:`loopwright.demo.scenario`):
   predictions are logged, late labels come back a day later through ``POST /feedback``.
4. After each day, ``MonitorService.run`` computes the day's drift and performance; alert rules
   fire; the retraining policy's controller sees the alert, retrains on reference data plus the
   newly labelled traffic, registers v2, evaluates the gates, and sets the ``challenger`` alias;
   the deployment's shadow route picks it up. Once the challenger has answered enough labelled
   traffic, the controller compares it with the champion on the same requests and asks for the
   promotion; bob approves; the champion route swaps to v2. v2's drift reference is the labelled
   traffic it was trained on (``data.reference_profile: logged``), so once it answers, drift is
   measured against the new normal and the ``input-drift`` alert resolves.
5. The story, the report path and the audit-chain check are printed at the end.

Deterministic for a seed (times are simulated; the only wall-clock values are run durations).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from loopwright.client import Client
from loopwright.config import Settings
from loopwright.demo.quickstart import FEATURES, POLICY, train_one
from loopwright.demo.scenario import DRIFTING, STABLE, Scenario, applicants
from loopwright.errors import InvalidInput

__all__ = ["DemoResult", "run_demo"]

MODEL = "credit-risk"
DEPLOYMENT = "credit-api"
DAY_MS = 86_400_000
#: Day 0 of the simulation (a Monday, UTC midnight): fixed, so runs are reproducible.
EPOCH_MS = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
MARKER = ".loopwright-demo"

#: The quickstart's policy with a latency budget that holds on a busy laptop too.
DEMO_POLICY = POLICY.replace("latency_p95_ms: 250", "latency_p95_ms: 2000")

MONITOR = """
deployment: credit-api
windows: ["1d"]
task: classification
sensitive: sex
min_rows: 200
recompute_labels: 2
alerts:
  - {name: input-drift, series: drift.share, op: ">=", threshold: 0.3, for_windows: 3,
     severity: warning, notify: [{log: true}]}
  - {name: auc-drop, series: perf.roc_auc.delta, op: "<", threshold: -0.05, for_windows: 1,
     severity: critical, notify: [{log: true}]}
"""

RETRAIN = """
model: credit-risk
deployment: credit-api
triggers: {alerts: [input-drift, auc-drop]}
train: {entry_point: "loopwright.demo.loop:train_challenger"}
data: {reference: credit-train, include_logged: true, window: 2d, label_column: default,
       reference_profile: logged}
challenger: {mode: shadow, alias: challenger, min_requests: 600, min_labels: 300,
             metric: roc_auc, margin: 0.01}
promote: {alias: champion}
"""


@dataclass
class DemoResult:
    """What happened, for the printed story and for the test that checks it."""

    root: Path
    days: int
    drifted_by_day: dict[int, list[str]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retrained: list[int] = field(default_factory=list)  # registered challenger versions
    promoted: int | None = None
    promoted_day: int | None = None
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # challenger vs champion
    report: Path | None = None
    audit_ok: bool = False

    @property
    def drifted_features(self) -> set[str]:
        return {f for fs in self.drifted_by_day.values() for f in fs}


def train_challenger(data: Any) -> Any:
    """The retraining policy's entry point: the same pipeline as v1, on the data it is given."""
    from loopwright.demo.quickstart import _pipeline

    frame = data.frame
    pipe = _pipeline("gbm", 7)
    pipe.fit(frame[FEATURES], frame[data.label_column].astype(int))
    return pipe


def _fresh_root(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise InvalidInput(
                f"{root} exists and is not a loopwright demo directory; choose another --dir",
                field="dir",
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("created by `loopwright demo`; removed by the next demo run\n")


def run_demo(
    root: Path | str = "loopwright-demo",
    *,
    days: int = 12,
    per_day: int = 1_500,
    batch: int = 50,
    train_rows: int = 8_000,
    seed: int = 7,
    scenario: Scenario | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run the loop; see the module docstring. ``root`` is wiped if a previous demo made it."""
    if days < 2:
        raise InvalidInput("days must be at least 2", field="days")
    if per_day < batch or batch < 1:
        raise InvalidInput("per_day must be at least batch, and batch positive", field="per_day")
    console = console or Console()
    root = Path(root).resolve()
    _fresh_root(root)
    settings = dataclasses.replace(
        Settings.from_env(), tracking_uri=str(root), artifacts_uri=None, user="alice"
    )
    client = Client(settings=settings)
    result = DemoResult(root=root, days=days)
    try:
        _release_v1(client, settings, train_rows, seed, console)
        asyncio.run(
            _replay(client, settings, result, days, per_day, batch, seed, scenario, console)
        )
        _finish(client, result, console)
    finally:
        client.close()
    return result


# -- 1. train, register, gate, approve ------------------------------------------------------


def _release_v1(client: Client, settings: Settings, rows: int, seed: int, console: Console) -> None:
    console.rule("[bold]1. train, register, gate, approve")
    book = applicants(rows, 0, seed)
    cut = int(rows * 0.8)
    train, valid = book.iloc[:cut], book.iloc[cut:]
    with console.status("training v1 (gradient boosting) on the day-0 population..."):
        v1 = train_one(client, "gbm", train, valid, seed, "credit-loop")
    registry = client.registry
    mv = registry.register(
        MODEL, v1.run_id, description="credit default model", reference_data=train[FEATURES]
    )
    registry.register_dataset(train, "credit-train")
    registry.register_dataset(valid, "credit-holdout")
    registry.set_policy(MODEL, DEMO_POLICY, reason="credit policy CP-7")
    ev = registry.evaluate(mv.uri)
    bob = Client(settings=dataclasses.replace(settings, user="bob"))
    try:
        request = registry.request_alias(MODEL, "champion", mv.version, "first release")
        bob.registry.decide(request.id, "APPROVE", "AUC and fairness reviewed")
    finally:
        bob.close()
    registry.set_alias(MODEL, "champion", mv.version, reason="first release")
    console.print(
        f"  v{mv.version}: validation AUC {v1.auc:.3f}, gates "
        f"{'[green]passed[/]' if ev.passed else '[red]failed[/]'}; alice asked for champion, "
        "bob approved"
    )


# -- 2-4. serve, replay, monitor, retrain -----------------------------------------------------


async def _replay(
    client: Client,
    settings: Settings,
    result: DemoResult,
    days: int,
    per_day: int,
    batch: int,
    seed: int,
    scenario: Scenario | None,
    console: Console,
) -> None:
    import httpx

    try:
        from loopwright.automation import LoopController, RetrainPolicy
    except ImportError:
        LoopController = RetrainPolicy = None
    from loopwright.monitoring.config import MonitorConfig
    from loopwright.serving.app import create_serving_app
    from loopwright.serving.deployment import DeploymentSpec
    from loopwright.serving.runtime import DeploymentRuntime

    console.rule("[bold]2. serve, 3. replay traffic, 4. monitor and retrain")
    clock = _Clock(EPOCH_MS + DAY_MS)
    spec = DeploymentSpec.from_dict(
        {
            "name": DEPLOYMENT,
            "model": MODEL,
            "champion": "champion",
            "shadows": ["challenger"],
            "batching": {"max_batch_size": 64, "max_wait_ms": 0},
            "watch_interval_s": 3600,  # the demo refreshes after each controller step instead
        }
    )
    runtime = DeploymentRuntime(client, spec, clock=clock)
    app = create_serving_app(runtime)
    monitor = client.monitor
    config = MonitorConfig.from_yaml(MONITOR)
    policy = RetrainPolicy.from_yaml(RETRAIN) if RetrainPolicy else None
    controller = LoopController(client) if LoopController else None
    pending: list[tuple[int, list[dict[str, Any]]]] = []  # (due day, labels)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as http,
    ):
        for day in range(1, days + 1):
            start = EPOCH_MS + day * DAY_MS
            due = [labels for when, labels in pending if when <= day]
            pending = [(when, labels) for when, labels in pending if when > day]
            for labels in due:
                clock.now = start
                r = await http.post("/feedback", json={"labels": labels})
                r.raise_for_status()
            frame = applicants(per_day, day, seed, scenario)
            labels = []
            for i in range(0, per_day, batch):
                chunk = frame.iloc[i : i + batch]
                clock.now = start + int(i / per_day * (DAY_MS - 60_000))
                body = {"records": chunk[FEATURES].to_dict("records"), "id": f"d{day}-{i}"}
                r = await http.post("/predict", json=body)
                r.raise_for_status()
                rid = r.json()["request_id"]
                labels += [
                    {"request_id": f"{rid}/{j}", "label": int(y), "ts": start + DAY_MS}
                    for j, y in enumerate(chunk["default"])
                ]
            pending.append((day + 1, labels))
            await runtime.drain()
            clock.now = start + DAY_MS + 120_000
            windows = await asyncio.to_thread(
                monitor.run, DEPLOYMENT, "1d", now_ms=clock.now, config=config
            )
            events = (
                await asyncio.to_thread(controller.tick, policy, now_ms=clock.now)
                if controller
                else []
            )
            if await _approve_if_asked(settings, events, console):
                events += await asyncio.to_thread(controller.tick, policy, now_ms=clock.now)
            if events:
                await runtime.refresh()
            _record_day(result, day, windows, events, runtime, console)


class _Clock:
    """The simulated time the deployment stamps its log with (ms since the epoch)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def _approve_if_asked(settings: Settings, events: list[Any], console: Console) -> bool:
    """Bob, the risk officer, approves a promotion the controller asked for."""
    asked = [e for e in events if e.kind == "awaiting_approval"]
    if not asked:
        return False
    bob = Client(settings=dataclasses.replace(settings, user="bob"))
    try:
        for event in asked:
            request_id = event.detail["request_id"]
            bob.registry.decide(request_id, "APPROVE", "challenger beat the champion on live data")
            console.print(f"  bob approved promotion request {request_id[:8]}")
    finally:
        bob.close()
    return True


def _record_day(
    result: DemoResult,
    day: int,
    windows: list[Any],
    events: list[Any],
    runtime: Any,
    console: Console,
) -> None:
    fresh = [w for w in windows if not w.recomputed]
    relabelled = [w for w in windows if w.recomputed]
    drifted = sorted({f for w in fresh for f in w.drifted})
    share = next((w.drift_share for w in fresh if w.drift_share is not None), None)
    auc = next((w.metrics.get("roc_auc") for w in reversed(relabelled) if w.metrics), None)
    alerts = []
    for w in windows:
        for a in w.alerts:
            alerts.append(f"{a.get('rule')} {a.get('action', '')}".strip())
            result.alerts.append({"day": day, **a})
    result.drifted_by_day[day] = drifted
    for e in events:
        kind = getattr(e, "kind", "")
        if kind == "registered":
            result.retrained.append(int(e.detail["version"]))
        elif kind == "compared":
            result.comparisons.append({"day": day, **e.detail})
        elif kind == "promoted":
            result.promoted = int(e.detail["version"])
            result.promoted_day = day
    loop = ", ".join(e.kind for e in events)
    console.print(
        f"  day {day:>2}: champion v{runtime.slot('champion').version}, "
        + ("" if auc is None else f"AUC {auc:.3f} (day {day - 1}), ")
        + ("" if share is None else f"drift share {share:.2f} on ")
        + f"{', '.join(drifted) or 'nothing'}"
        + (f" | alerts: {'; '.join(alerts)}" if alerts else "")
        + (f" | loop: {loop}" if loop else ""),
        soft_wrap=True,
    )


# -- 5. the story ----------------------------------------------------------------------------


def _finish(client: Client, result: DemoResult, console: Console) -> None:
    from loopwright.serving.predlog import join_labels, read_labels, read_predictions

    console.rule("[bold]5. what happened")
    log_uri = str(result.root / "predictions")
    last = EPOCH_MS + result.days * DAY_MS
    frame = join_labels(
        read_predictions(log_uri, DEPLOYMENT, last - 3 * DAY_MS, last + DAY_MS),
        read_labels(log_uri, since_ms=last - 4 * DAY_MS),
    )
    versions = sorted({1, *result.retrained})
    result.auc = _auc_by_version(client, frame, versions)
    monitor = client.monitor
    windows = monitor.windows(DEPLOYMENT, "1d")
    if windows:
        report = result.root / "reports" / f"{DEPLOYMENT}-latest.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            monitor.report_html(DEPLOYMENT, "1d", windows[-1].start_ms), encoding="utf-8"
        )
        result.report = report
    audit = client.registry.verify_audit()
    result.audit_ok = audit.ok
    stable_flagged = sorted(result.drifted_features & set(STABLE))
    found = sorted(result.drifted_features & set(DRIFTING))
    console.print(f"  drift found on: {', '.join(found) or 'nothing'}")
    console.print(f"  stable features flagged: {', '.join(stable_flagged) or 'none (correct)'}")
    if result.retrained:
        console.print(f"  retrained: challenger version(s) {result.retrained}")
    for c in result.comparisons:
        console.print(
            f"  day {c['day']}: challenger v{c['challenger_version']} vs champion "
            f"v{c['champion_version']} on {c['n_requests']} shared live requests "
            f"({c['n_labelled']} labelled): {c['metric']} {c['challenger_value']:.3f} vs "
            f"{c['champion_value']:.3f}, agreement {c['agreement']:.0%}"
        )
    if result.promoted is not None:
        console.print(
            f"  promoted: v{result.promoted} became champion on day {result.promoted_day}"
        )
    for a in result.alerts:
        if a.get("action") in ("fire", "resolve"):
            verb = "fired" if a["action"] == "fire" else "resolved"
            console.print(f"  alert {a.get('rule')} {verb} on day {a['day']}")
    if result.promoted is not None and any(a.get("action") == "resolve" for a in result.alerts):
        console.print(
            f"  (v{result.promoted}'s drift reference is the labelled traffic it was trained on: "
            "the new normal, so the drift that triggered the retrain is answered)"
        )
    if result.auc:
        console.print(
            "  ROC AUC on the last three days' labelled requests, every version re-scored: "
            + ", ".join(f"v{v} {a:.3f}" for v, a in sorted(result.auc.items()))
        )
    console.print(f"  audit chain {'intact' if audit.ok else 'BROKEN'} ({audit.checked} events)")
    if result.report:
        console.print(f"  report: {result.report}")
    uri = result.root
    console.print(
        "\n[bold]Where to look[/]\n"
        f"  loopwright --tracking-uri {uri} loop status {MODEL}\n"
        f"  loopwright --tracking-uri {uri} monitor windows {DEPLOYMENT}\n"
        f"  loopwright --tracking-uri {uri} alerts list\n"
        f"  loopwright --tracking-uri {uri} lineage {MODEL}@champion\n"
        f"  loopwright --tracking-uri {uri} audit verify",
        soft_wrap=True,
    )
    (result.root / "story.json").write_text(
        json.dumps(_story(result), indent=2, default=str), encoding="utf-8"
    )


def _auc_by_version(client: Client, frame: pd.DataFrame, versions: list[int]) -> dict[str, float]:
    """Every version re-scored on the same labelled, logged requests of the last days."""
    from sklearn.metrics import roc_auc_score

    from loopwright.monitoring.service import inputs_frame

    answered = frame[~frame["shadow"] & frame["error"].isna() & frame["label"].notna()]
    if answered.empty:
        return {}
    X = inputs_frame(answered)[FEATURES]
    y = answered["label"].astype(float).astype(int).to_numpy()
    out = {}
    for version in versions:
        model = client.registry.load(f"{MODEL}/{version}")
        out[str(version)] = float(roc_auc_score(y, model.predict_proba(X)[:, 1]))
    return out


def _story(result: DemoResult) -> dict[str, Any]:
    return {
        "days": result.days,
        "drifted_by_day": result.drifted_by_day,
        "alerts": result.alerts,
        "retrained": result.retrained,
        "promoted": result.promoted,
        "promoted_day": result.promoted_day,
        "auc": result.auc,
        "comparisons": result.comparisons,
        "report": result.report,
        "audit_ok": result.audit_ok,
    }
