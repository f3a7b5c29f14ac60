"""Model serving throughput and latency: loopwright against MLServer, the HTTP floor and the model.

    .venv/bin/python bench/serving.py            # ~15 s per point, about eight minutes
    .venv/bin/python bench/serving.py --quick    # ~3 s per point
    .venv/bin/python bench/serving.py --json results.json

One ``HistGradientBoostingClassifier`` (20 numeric features), single-row requests from wrk at
concurrency 1 and 16, for:

* in-process ``predict_proba`` (the limit: one row per call, and rows/s in batches of 32);
* a bare Starlette app answering a constant under uvicorn (the HTTP floor);
* MLServer 1.7.1 + mlserver-sklearn (its own venv, created if missing), without and with adaptive
  batching, one BLAS/OpenMP thread;
* ``loopwright serve bench-hgb@champion`` with prediction logging and ``/metrics`` on,
  ``--workers 1`` and ``--workers 2``, on ``POST /predict`` and on the V2 infer endpoint.

Only one server runs at a time; each is stopped (its whole process group) before the next starts,
also when a point fails. See ``_serving_*.py`` for the model, the servers and the load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _serving_model as model
import httpx
from _procs import session_cpu_s
from _serving_load import WRK, LoadError, Point, lua_script, run_wrk, time_calls
from _serving_procs import (
    ONE_THREAD,
    BenchError,
    ensure_mlserver_venv,
    floor_cmd,
    free_port,
    loopwright_cmd,
    mlserver_cmd,
    server,
    write_mlserver_repo,
)
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

CONCURRENCY = (1, 16)
FULL_S, QUICK_S = 15.0, 3.0
WARMUP_S = 2.0
BATCH_ROWS = 32
#: MLServer adaptive batching settings tried: (max_batch_size, max_batch_time in seconds).
MLSERVER_BATCHING = ((16, 0.005), (32, 0.002))
THROUGHPUT_TARGET = 5.0  # loopwright c16 req/s vs MLServer's best configuration
LATENCY_TARGET = 1.5  # loopwright c1 median vs (HTTP floor median + one in-process predict)
PREDICT = "/predict"
V2_INFER = f"/v2/models/{model.MODEL}/infer"


@dataclass
class System:
    """One line of the table: a server (or the in-process call) on one endpoint."""

    key: str
    label: str
    endpoint: str
    kind: str  # limit | floor | mlserver | loopwright
    points: dict[int, Point] = field(default_factory=dict)
    error: str | None = None
    note: str = ""


@dataclass
class Bench:
    seconds: float
    tmp: Path
    progress: Progress
    task: Any
    fitted: model.Fitted
    systems: list[System] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scripts: dict[str, Path] = field(default_factory=dict)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=escape(text))

    def add(self, system: System) -> System:
        self.systems.append(system)
        return system


# -- in process --------------------------------------------------------------------------------


def in_process(b: Bench, loaded: Any) -> None:
    """The model alone, one native thread (as every server gets), in this process."""
    from threadpoolctl import threadpool_limits

    est, row, batch = b.fitted.model, b.fitted.row, b.fitted.batch(BATCH_ROWS)
    seconds = max(2.0, b.seconds / 3)
    with threadpool_limits(1):
        cases: list[tuple[str, str, Callable[[], Any], int]] = [
            ("limit", "estimator.predict_proba, 1-row DataFrame", lambda: est.predict_proba(row),
             1),
            ("limit-lw", "loopwright LoadedModel.predict_proba, 1 row",
             lambda: loaded.predict_proba(row), 1),
            ("limit-batch", f"estimator.predict_proba, batches of {BATCH_ROWS}",
             lambda: est.predict_proba(batch), BATCH_ROWS),
        ]  # fmt: skip
        for key, label, fn, rows in cases:
            b.step(f"in-process: {label}")
            s = b.add(System(key, label, "in-process", "limit"))
            s.points[1] = time_calls(fn, seconds, rows)
            b.progress.advance(b.task)


# -- servers -----------------------------------------------------------------------------------


def measure(
    b: Bench, url: str, pid: int, s: System, expect: Callable[[httpx.Response], Any]
) -> None:
    """Check one answer, then wrk at each concurrency (after a warm-up at that concurrency).

    Besides wrk's figures, the server's CPU time per request (all its processes, from /proc) is
    recorded: on a shared 2-core machine it is the figure least moved by other load.
    """
    script = b.scripts[s.endpoint]
    body = model.v2_body(b.fitted) if s.endpoint == V2_INFER else model.predict_body(b.fitted)
    try:
        answer = httpx.post(url + s.endpoint, content=body, timeout=60.0,
                            headers={"content-type": "application/json"})  # fmt: skip
        if answer.status_code != 200:
            raise BenchError(f"HTTP {answer.status_code}: {answer.text[:200]}")
        got = expect(answer)
        if got is not None and got != model.expected_label(b.fitted):
            raise BenchError(f"wrong prediction {got!r}")
    except (httpx.HTTPError, BenchError, KeyError, IndexError, ValueError) as exc:
        s.error = f"check failed: {exc}"
        b.progress.advance(b.task, len(CONCURRENCY))
        return
    for c in CONCURRENCY:
        b.step(f"{s.label} {s.endpoint}: c{c}")
        try:
            run_wrk(url + s.endpoint, script, c, min(WARMUP_S, b.seconds / 2))
            cpu_before = session_cpu_s(pid)
            point = run_wrk(url + s.endpoint, script, c, b.seconds)
            cpu = session_cpu_s(pid) - cpu_before
            if point.requests:
                point = replace(point, cpu_us=cpu / point.requests * 1e6)
        except LoadError as exc:
            s.error = str(exc)
            b.progress.advance(b.task)
            continue
        if point.errors:
            b.notes.append(f"{s.label} {s.endpoint} c{c}: {point.errors} failed requests")
        s.points[c] = point
        b.progress.advance(b.task)


def run_server(
    b: Bench,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    systems: list[tuple[System, Callable[[httpx.Response], Any]]],
    after: Callable[[str], None] | None = None,
) -> None:
    port = _port_of(cmd)
    b.step(f"{name}: starting on 127.0.0.1:{port}")
    try:
        with server(cmd, port, b.tmp / f"{name}.log", env) as (url, pid):
            for s, expect in systems:
                b.add(s)
                measure(b, url, pid, s, expect)
            if after is not None:
                after(url)
    except BenchError as exc:
        for s, _ in systems:
            if s not in b.systems:
                b.add(s)
                b.progress.advance(b.task, len(CONCURRENCY))
            s.error = s.error or "server did not start"
        b.notes.append(f"{name}: {str(exc).splitlines()[0]} (log: {b.tmp / f'{name}.log'})")


def _port_of(cmd: list[str]) -> int:
    if "--port" in cmd:
        return int(cmd[cmd.index("--port") + 1])
    settings = json.loads((Path(cmd[-1]) / "settings.json").read_text())
    return int(settings["http_port"])


def floor(b: Bench) -> None:
    s = System("floor", "Starlette + uvicorn, constant", PREDICT, "floor")
    run_server(b, "floor", floor_cmd(free_port()), ONE_THREAD, [(s, lambda r: None)])


def mlserver(b: Bench, python: Path, joblib_file: Path) -> None:
    configs: list[tuple[str, tuple[int, float] | None]] = [("no batching", None)]
    configs += [(f"adaptive batching {n} rows / {t * 1000:g} ms", (n, t))
                for n, t in MLSERVER_BATCHING]  # fmt: skip
    for i, (label, batch) in enumerate(configs):
        port = free_port()
        repo = write_mlserver_repo(b.tmp / f"mlserver-{i}", joblib_file, port, batch, 1)
        s = System(f"mlserver-{i}", f"MLServer, {label}", V2_INFER, "mlserver")
        # sklearn warns on every call that a [1, 20] tensor has no feature names: not a cost
        # MLServer should pay here (loopwright sends the model a named frame)
        env = {**ONE_THREAD, "PYTHONWARNINGS": "ignore"}
        run_server(b, f"mlserver-{i}", mlserver_cmd(python, repo), env, [(s, _v2_label)])


def loopwright(
    b: Bench, ref: str, db: Path, artifacts: Path, pythonpath: Path | None = None
) -> None:
    """``loopwright serve`` with 1 and 2 workers; ``pythonpath``: another checkout's ``src``."""
    env = dict(ONE_THREAD)
    suffix, tag_key = "", "lw"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
        suffix, tag_key = f" (patched: {pythonpath})", "lwp"
    for workers in (1, 2):
        port = free_port()
        log_dir = b.tmp / f"predlog-{tag_key}{workers}"
        cmd = loopwright_cmd(db, artifacts, log_dir, ref, port, workers)
        tag = f"loopwright --workers {workers}{suffix}"
        systems = [
            (System(f"{tag_key}{workers}-predict", tag, PREDICT, "loopwright" + suffix),
             lambda r: r.json()["predictions"][0]),
            (System(f"{tag_key}{workers}-v2", tag, V2_INFER, "loopwright" + suffix), _v2_label),
        ]  # fmt: skip

        def after(url: str, workers: int = workers, log_dir: Path = log_dir) -> None:
            _check_logging(b, url, f"{tag_key}{workers}", log_dir)

        run_server(b, f"{tag_key}-w{workers}", cmd, env, systems, after)


def _v2_label(answer: httpx.Response) -> Any:
    return answer.json()["outputs"][0]["data"][0]


def _check_logging(b: Bench, url: str, who: str, log_dir: Path) -> None:
    """Logging and metrics were on: say what the server logged and counted (one worker's view)."""
    try:
        status = httpx.get(url + "/status", timeout=10.0).json()
        metrics = httpx.get(url + "/metrics", timeout=10.0).text
    except (httpx.HTTPError, ValueError) as exc:
        b.notes.append(f"{who}: cannot read /status or /metrics: {exc}")
        return
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("loopwright_requests_total{")
    )
    log = status.get("log") or {}
    time.sleep(1.5)  # one flush interval, so the files below include the last second
    files = list(log_dir.rglob("*.parquet"))
    b.notes.append(
        f"{who}: prediction log on ({log.get('written', 0):,} rows written, "
        f"{log.get('pending', 0):,} pending, {log.get('dropped', 0):,} dropped by the worker that "
        f"answered /status; {len(files)} Parquet files on disk); /metrics counted "
        f"{counted:,.0f} requests"
    )


# -- reporting ---------------------------------------------------------------------------------


def best_mlserver(b: Bench) -> System | None:
    ok = [s for s in b.systems if s.kind == "mlserver" and 16 in s.points]
    return max(ok, key=lambda s: s.points[16].rps, default=None)


def get(b: Bench, key: str) -> System | None:
    return next((s for s in b.systems if s.key == key), None)


def render(b: Bench) -> Table:
    t = Table(title="Serving one HistGradientBoosting model, single-row requests",
              title_justify="left")  # fmt: skip
    t.add_column("system")
    t.add_column("endpoint")
    for c in CONCURRENCY:
        t.add_column(f"c{c} rate", justify="right")
        t.add_column(f"c{c} p50 ms", justify="right")
        t.add_column(f"c{c} p99 ms", justify="right")
        t.add_column(f"c{c} CPU µs/req", justify="right")
    last = None
    for s in b.systems:
        if last is not None and s.kind != last:
            t.add_section()
        last = s.kind
        cells: list[str] = []
        for c in CONCURRENCY:
            p = s.points.get(c)
            if p is None:
                cells += ["error" if s.error else "—", "", "", ""]
            else:
                cpu = "" if p.cpu_us is None else f"{p.cpu_us:,.0f}"
                cells += [f"{p.rps:,.0f} {p.unit}", f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}", cpu]
        t.add_row(escape(s.label), s.endpoint, *cells)
    return t


def targets(b: Bench) -> tuple[Table, list[dict[str, Any]]]:
    t = Table(title="Targets", title_justify="left")
    for col, justify in [("target", "left"), ("loopwright", "left"), ("measured", "right"),
                         ("goal", "right"), ("met?", "center")]:  # fmt: skip
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    ours = [s for s in b.systems if s.kind.startswith("loopwright")]
    best = best_mlserver(b)
    if best is not None:
        theirs = best.points[16]
        for s in ours:
            p = s.points.get(16)
            if p is None:
                continue
            ratio = p.rps / theirs.rps
            met = ratio >= THROUGHPUT_TARGET and p.p99_ms <= theirs.p99_ms
            rows.append({"target": "c16 throughput", "system": s.key, "ratio": ratio,
                         "p99_ms": p.p99_ms, "mlserver_p99_ms": theirs.p99_ms,
                         "met": met})  # fmt: skip
            t.add_row(
                f"c16 req/s >= {THROUGHPUT_TARGET:g}x {best.label}, p99 no worse",
                escape(f"{s.label} {s.endpoint}"),
                f"{ratio:.2f}x ({p.rps:,.0f} vs {theirs.rps:,.0f}); p99 {p.p99_ms:.1f} vs "
                f"{theirs.p99_ms:.1f} ms",
                f">= {THROUGHPUT_TARGET:g}x, <= {theirs.p99_ms:.1f} ms", _met(met),
            )  # fmt: skip
    floor_s, limit = get(b, "floor"), get(b, "limit")
    if floor_s and 1 in floor_s.points and limit and 1 in limit.points:
        budget = floor_s.points[1].p50_ms + limit.points[1].p50_ms
        t.add_section()
        for s in ours:
            p = s.points.get(1)
            if p is None:
                continue
            ratio = p.p50_ms / budget
            met = ratio <= LATENCY_TARGET
            rows.append({"target": "c1 median", "system": s.key, "p50_ms": p.p50_ms,
                         "budget_ms": budget, "ratio": ratio, "met": met})  # fmt: skip
            t.add_row(
                f"c1 p50 <= {LATENCY_TARGET:g} x (floor p50 + one predict = {budget:.2f} ms)",
                escape(f"{s.label} {s.endpoint}"), f"{p.p50_ms:.2f} ms = {ratio:.2f}x",
                f"<= {LATENCY_TARGET * budget:.2f} ms", _met(met),
            )  # fmt: skip
    w1, w2 = get(b, "lw1-predict"), get(b, "lw2-predict")
    if w1 and w2 and 1 in w1.points and 1 in w2.points:
        extra = w2.points[1].p50_ms - w1.points[1].p50_ms
        t.add_section()
        t.add_row("--workers 2 adds no latency (c1 p50)", "loopwright /predict",
                  f"{w2.points[1].p50_ms:.2f} vs {w1.points[1].p50_ms:.2f} ms ({extra:+.2f})",
                  "no ~40 ms stall", _met(extra < 10.0))  # fmt: skip
    return t, rows


def _met(met: bool) -> str:
    return "[green]yes[/]" if met else "[bold red]NO[/]"


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    import numpy
    import sklearn
    import starlette
    import uvicorn

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, numpy {numpy.__version__}, "
        f"uvicorn {uvicorn.__version__}, starlette {starlette.__version__}"
    )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"~{QUICK_S:g} s per point")
    p.add_argument("--seconds", type=float, help="seconds per point (overrides --quick)")
    p.add_argument("--no-mlserver", action="store_true", help="skip MLServer")
    p.add_argument(
        "--patched", type=Path, metavar="SRC",
        help="also measure loopwright from another source tree (PYTHONPATH=SRC), e.g. a fix",
    )  # fmt: skip
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.seconds or (QUICK_S if args.quick else FULL_S)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if not Path(WRK).exists():
        console.print(f"[red]wrk not found ({WRK}); install it (apt-get install wrk)[/]")
        return 2
    started = time.perf_counter()
    n_servers = 1 + (0 if args.no_mlserver else 1 + len(MLSERVER_BATCHING)) + 4
    n_servers += 4 if args.patched else 0
    total = 3 + n_servers * len(CONCURRENCY) + 1
    with tempfile.TemporaryDirectory(prefix="lw-serving-") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("fitting the model (setup)", total=total)
        load_before = _loadavg()
        fitted = model.fit()
        b = Bench(seconds, Path(tmp), progress, task, fitted)
        b.notes.append(f"load average at the start: {load_before}")
        b.step("registering it in a fresh loopwright store (setup)")
        db, artifacts = b.tmp / "lw.db", b.tmp / "lw-artifacts"
        ref = model.register(fitted, db, artifacts)
        joblib_file = model.save_joblib(fitted, b.tmp / "model.joblib")
        b.scripts = {
            PREDICT: lua_script(b.tmp / "predict.lua", model.predict_body(fitted)),
            V2_INFER: lua_script(b.tmp / "v2.lua", model.v2_body(fitted)),
        }
        from loopwright import Client

        client = Client(f"sqlite:///{db}", artifacts_uri=str(artifacts))
        try:
            loaded = client.registry.load(ref)
        finally:
            client.close()
        in_process(b, loaded)
        floor(b)
        if args.no_mlserver:
            b.notes.append("MLServer skipped (--no-mlserver)")
        else:
            b.step("MLServer venv: checking (creating it if missing, a few minutes)")
            import sklearn

            python, why = ensure_mlserver_venv(sklearn.__version__)
            b.notes.append(why)
            progress.advance(task)
            if python is None:
                console.print(f"[yellow]MLServer skipped: {why}[/]")
            else:
                mlserver(b, python, joblib_file)
        loopwright(b, ref, db, artifacts)
        if args.patched:
            loopwright(b, ref, db, artifacts, args.patched.resolve())
        b.notes.append(f"load average at the end: {_loadavg()} (other work on the machine)")
    elapsed = time.perf_counter() - started
    console.print(render(b))
    target_table, target_rows = targets(b)
    console.print(target_table)
    for s in b.systems:
        if s.error:
            console.print(f"- [red]{escape(f'{s.label} {s.endpoint}: {s.error}')}[/]",
                          highlight=False)  # fmt: skip
    for note in b.notes:
        console.print(f"- {escape(note)}", highlight=False)
    console.print(f"- {machine()}", highlight=False)
    console.print(
        f"- wrk -t1 (one thread), {seconds:g} s per point after a {min(WARMUP_S, seconds / 2):g} s "
        f"warm-up; servers run with {' '.join(f'{k}={v}' for k, v in ONE_THREAD.items())}; "
        f"total {elapsed:,.0f} s",
        highlight=False,
    )
    if args.json:
        payload = {
            "seconds_per_point": seconds,
            "machine": machine(),
            "systems": [
                {"key": s.key, "label": s.label, "endpoint": s.endpoint, "kind": s.kind,
                 "error": s.error, "points": {c: p.to_dict() for c, p in s.points.items()}}
                for s in b.systems
            ],
            "targets": target_rows,
            "notes": b.notes,
            "total_s": elapsed,
        }  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
