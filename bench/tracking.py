"""Tracking throughput and latency, loopwright against MLflow, measured side by side in one run.

    .venv/bin/python bench/tracking.py            # full sizes, a few minutes
    .venv/bin/python bench/tracking.py --quick    # smoke-sized
    .venv/bin/python bench/tracking.py --only rest --json results.json

Backends: embedded (SQLite in a temporary directory for both tools) and REST (``loopwright
server`` and ``mlflow server`` on 127.0.0.1, each with 1 and then 2 workers, never both running at
once). MLflow runs in its own virtual environment through ``_mlflow_worker.py``. See README.md for
what each workload measures and why it is fair to both tools.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _loopwright_side as lw
from _procs import (
    BenchError,
    free_port,
    loopwright_server_cmd,
    mlflow_server_cmd,
    run_worker,
    server,
)
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopwright import Client

WORKER_TIMEOUT_S = 900.0
FLOOR_TARGET = 0.25


@dataclass(frozen=True)
class Sizes:
    percall: int
    runs: int
    keys: int
    steps: int
    search_runs: int
    history_steps: int = 500
    repeat_search: int = 5
    repeat_history: int = 20
    repeat_latency: int = 50

    @property
    def batched(self) -> int:
        return self.runs * self.keys * self.steps


FULL = Sizes(percall=2000, runs=20, keys=20, steps=500, search_runs=5000)
QUICK = Sizes(percall=200, runs=4, keys=10, steps=500, search_runs=500)


@dataclass(frozen=True)
class Workload:
    label: str
    unit: str  # "pts/s" (higher is better) or "ms" (lower is better)
    target: float | None  # minimum loopwright/MLflow ratio, None = informational

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "pts/s"


def workloads(s: Sizes) -> dict[str, Workload]:
    return {
        "percall": Workload(f"per-call log_metric ({s.percall:,} pts)", "pts/s", 50),
        "percall_async": Workload("  vs MLflow synchronous=False", "pts/s", None),
        "batched": Workload(f"batched ({s.batched:,} pts)", "pts/s", 10),
        "search": Workload(f"search {s.search_runs:,} runs (median/{s.repeat_search})", "ms", 10),
        "history": Workload(
            f"history {s.history_steps} steps (median/{s.repeat_history})", "ms", 5
        ),
        "latency": Workload(f"get_run round trip (median/{s.repeat_latency})", "ms", None),
    }


LW_ORDER = ("percall", "batched", "search", "history", "latency")
MLFLOW_ORDER = ("percall", "percall_async", "batched", "search", "history", "latency")
BACKENDS: dict[str, int | None] = {"embedded": None, "REST w1": 1, "REST w2": 2}


@dataclass
class Bench:
    sizes: Sizes
    tmp: Path
    progress: Progress
    task: Any
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    floor: float | None = None

    def record(self, backend: str, tool: str, workload: str, value: dict[str, Any]) -> None:
        self.results.setdefault(backend, {}).setdefault(tool, {})[workload] = value
        self.progress.advance(self.task)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def worker_options(self) -> dict[str, int]:
        s = self.sizes
        return {
            "points": s.percall,
            "runs": s.runs,
            "keys": s.keys,
            "steps": s.steps,
            "history_steps": s.history_steps,
            "repeat_search": s.repeat_search,
            "repeat_history": s.repeat_history,
            "repeat_latency": s.repeat_latency,
        }


# -- phases ------------------------------------------------------------------------------------


def seed(b: Bench) -> tuple[Path, Path]:
    """Both seed databases at once (setup, not timed): MLflow's worker runs beside our store."""
    seed_dir = b.tmp / "seed"
    seed_dir.mkdir()
    lw_db, ml_db = seed_dir / "lw.db", seed_dir / "mlflow.db"
    b.step(f"seeding {b.sizes.search_runs:,} runs for both tools (setup, untimed)")

    errors: list[BaseException] = []

    def mlflow_seed() -> None:
        try:
            run_worker(
                ["seed"], f"sqlite:///{ml_db}", {**b.worker_options(), "runs": b.sizes.search_runs},
                seed_dir, lambda r: b.record("setup", "mlflow", "seed", r), WORKER_TIMEOUT_S,
            )  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=mlflow_seed)
    thread.start()
    seconds = lw.seed(lw_db, b.sizes.search_runs, b.sizes.history_steps)
    b.record("setup", "loopwright", "seed", {"seconds": seconds})
    thread.join(WORKER_TIMEOUT_S + 30)
    if errors:
        raise errors[0]
    return lw_db, ml_db


def run_loopwright(b: Bench, backend: str, client: Client, db: Path) -> None:
    s = b.sizes
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "percall": lambda: lw.percall(client, s.percall),
        "batched": lambda: lw.batched(client, s.runs, s.keys, s.steps),
        "search": lambda: lw.search(client, s.repeat_search),
        "history": lambda: lw.history(client, s.repeat_history),
        "latency": lambda: lw.latency(client, s.repeat_latency),
    }
    try:
        for name in LW_ORDER:
            b.step(f"loopwright {backend}: {name}")
            try:
                result = steps[name]()
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            if name == "batched" and "run_ids" in result:
                result["stored"] = lw.count_metrics(db, result.pop("run_ids"))
            b.record(backend, "loopwright", name, result)
    finally:
        client.close()


def run_mlflow(b: Bench, backend: str, uri: str, db: Path, workdir: Path) -> None:
    def on_result(r: dict[str, Any]) -> None:
        name = r.pop("workload")
        if name == "batched":
            r["stored"] = mlflow_count(db, r.pop("run_ids"))
        b.record(backend, "mlflow", name, r)
        b.step(f"MLflow {backend}: after {name}")

    b.step(f"MLflow {backend}: starting worker")
    try:
        run_worker(
            list(MLFLOW_ORDER), uri, b.worker_options(), workdir, on_result, WORKER_TIMEOUT_S
        )
    except BenchError as exc:
        got = b.results.get(backend, {}).get("mlflow", {})
        for name in MLFLOW_ORDER:
            if name not in got:
                b.record(backend, "mlflow", name, {"error": str(exc).splitlines()[0]})
        b.notes.append(f"MLflow {backend}: {exc}")


def mlflow_count(db: Path, run_ids: list[str]) -> int:
    marks = ",".join("?" * len(run_ids))
    with sqlite3.connect(db) as conn:
        row = conn.execute(f"SELECT count(*) FROM metrics WHERE run_uuid IN ({marks})", run_ids)
        count = int(row.fetchone()[0])
    conn.close()
    return count


def bench_backend(b: Bench, backend: str, workers: int | None, seeds: tuple[Path, Path]) -> None:
    d = b.tmp / backend.replace(" ", "-").lower()
    d.mkdir()
    lw_db, ml_db = d / "lw.db", d / "mlflow.db"
    lw.copy_db(seeds[0], lw_db)
    lw.copy_db(seeds[1], ml_db)
    if workers is None:
        client = Client(f"sqlite:///{lw_db}", artifacts_uri=str(d / "lw-artifacts"))
        run_loopwright(b, backend, client, lw_db)
        run_mlflow(b, backend, f"sqlite:///{ml_db}", ml_db, d)
        return
    with_server(
        b,
        backend,
        "loopwright",
        d,
        lambda url: run_loopwright(b, backend, Client(url), lw_db),
        workers,
    )
    with_server(b, backend, "mlflow", d, lambda url: run_mlflow(b, backend, url, ml_db, d), workers)


def with_server(
    b: Bench, backend: str, tool: str, d: Path, body: Callable[[str], None], workers: int
) -> None:
    port = free_port()
    env: dict[str, str] = {}
    if tool == "loopwright":
        db, art = d / "lw.db", d / "lw-artifacts"
        cmd, how = loopwright_server_cmd(db, art, port, workers)
        env = {"LOOPWRIGHT_TRACKING_URI": f"sqlite:///{db}", "LOOPWRIGHT_ARTIFACTS_URI": str(art)}
        note = f"loopwright server started as: {how}"
        if note not in b.notes:
            b.notes.append(note)
    else:
        cmd = mlflow_server_cmd(d / "mlflow.db", d / "mlartifacts", port, workers)
    b.step(f"{tool} {backend}: starting server on 127.0.0.1:{port}")
    try:
        with server(cmd, port, d / f"{tool}-server.log", env) as url:
            body(url)
    except BenchError as exc:
        b.notes.append(f"{tool} {backend}: {exc}")
        order = LW_ORDER if tool == "loopwright" else MLFLOW_ORDER
        got = b.results.get(backend, {}).get(tool, {})
        for name in order:
            if name not in got:
                b.record(backend, tool, name, {"error": "server did not start"})


# -- reporting ---------------------------------------------------------------------------------


def figure(result: dict[str, Any] | None, unit: str) -> float | None:
    if not result or "error" in result:
        return None
    return float(result["rate"] if unit == "pts/s" else result["ms"])


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "error"
    return f"{value:,.0f} pts/s" if unit == "pts/s" else f"{value:,.2f} ms"


def rows(b: Bench) -> list[dict[str, Any]]:
    table = []
    specs = workloads(b.sizes)
    for backend, tools in b.results.items():
        if backend == "setup":
            continue
        for name, spec in specs.items():
            lw_name = "percall" if name == "percall_async" else name
            ours = figure(tools.get("loopwright", {}).get(lw_name), spec.unit)
            theirs = figure(tools.get("mlflow", {}).get(name), spec.unit)
            ratio = None
            if ours and theirs:
                ratio = ours / theirs if spec.higher_is_better else theirs / ours
            met = None if spec.target is None or ratio is None else ratio >= spec.target
            table.append(
                {"workload": name, "label": spec.label, "backend": backend, "unit": spec.unit,
                 "loopwright": ours, "mlflow": theirs, "ratio": ratio, "target": spec.target,
                 "met": met}
            )  # fmt: skip
    return table


def floor_row(b: Bench) -> dict[str, Any] | None:
    ours = figure(b.results.get("embedded", {}).get("loopwright", {}).get("batched"), "pts/s")
    if b.floor is None or ours is None:
        return None
    share = ours / b.floor
    return {"workload": "floor", "loopwright": ours, "floor": b.floor, "share": share,
            "target": FLOOR_TARGET, "met": share >= FLOOR_TARGET}  # fmt: skip


def render(b: Bench, table_rows: list[dict[str, Any]], floor: dict[str, Any] | None) -> Table:
    t = Table(title="loopwright vs MLflow: experiment tracking", title_justify="left")
    for col, justify in [("workload", "left"), ("backend", "left"), ("loopwright", "right"),
                         ("MLflow", "right"), ("ratio", "right"), ("target", "right"),
                         ("met?", "center")]:  # fmt: skip
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    last = None
    for r in sorted(table_rows, key=lambda r: list(workloads(b.sizes)).index(r["workload"])):
        if last is not None and r["workload"] != last and not r["workload"].endswith("_async"):
            t.add_section()
        last = r["workload"]
        t.add_row(
            r["label"], r["backend"], fmt(r["loopwright"], r["unit"]), fmt(r["mlflow"], r["unit"]),
            "—" if r["ratio"] is None else f"{r['ratio']:,.1f}x",
            "info" if r["target"] is None else f">= {r['target']:g}x", met_cell(r["met"]),
        )  # fmt: skip
    if floor is not None:
        t.add_section()
        t.add_row(
            "batched vs sqlite3 executemany floor", "embedded",
            fmt(floor["loopwright"], "pts/s"), f"floor {floor['floor']:,.0f} pts/s",
            f"{floor['share']:.0%} of floor", f">= {FLOOR_TARGET:.0%} of floor",
            met_cell(floor["met"]),
        )  # fmt: skip
    return t


def met_cell(met: bool | None) -> str:
    return "—" if met is None else ("[green]yes[/]" if met else "[bold red]NO[/]")


def check_counts(b: Bench) -> None:
    """The logging figures only count if every point is stored: say so, loudly if not."""
    for backend, tools in b.results.items():
        for tool, res in tools.items():
            batch = res.get("batched", {})
            if "stored" in batch:
                ok = batch["stored"] == batch["points"]
                mark = "ok" if ok else "MISMATCH"
                b.notes.append(
                    f"{tool} {backend} batched: {batch['stored']:,} of {batch['points']:,} "
                    f"points stored ({mark})"
                )
            pc = res.get("percall", {})
            if "stored" in pc and pc["stored"] != pc["points"]:
                b.notes.append(f"{tool} {backend} per-call: only {pc['stored']} points stored")
    search = {
        (bk, tool): r["search"]["matches"]
        for bk, tools in b.results.items()
        for tool, r in tools.items()
        if "matches" in r.get("search", {})
    }
    if len(set(search.values())) > 1:
        b.notes.append(f"search match counts differ: {search}")
    elif search:
        b.notes.append(f"search: every backend returned {next(iter(search.values()))} matches")


def nagle_note(b: Bench) -> None:
    lat = {
        (bk, tool): figure(r.get("latency"), "ms")
        for bk, tools in b.results.items()
        for tool, r in tools.items()
    }
    for tool in ("mlflow", "loopwright"):
        one, two = lat.get(("REST w1", tool)), lat.get(("REST w2", tool))
        if one is not None and two is not None:
            b.notes.append(
                f"{tool} get_run round trip: {one:.2f} ms with 1 worker, {two:.2f} ms with 2 "
                f"(+{two - one:.2f} ms per kept-alive request)"
            )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke-sized workloads")
    p.add_argument("--only", choices=("embedded", "rest"), help="one kind of backend")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    backends = {
        k: w
        for k, w in BACKENDS.items()
        if args.only is None or (w is None) == (args.only == "embedded")
    }
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough that no row wraps
        console = Console(width=132)
    total = (
        2
        + (1 if "embedded" in backends else 0)
        + len(backends) * (len(LW_ORDER) + len(MLFLOW_ORDER))
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        b = Bench(sizes, Path(tmp), progress, progress.add_task("starting", total=total))
        seeds = seed(b)
        if "embedded" in backends:
            b.step("raw sqlite3 floor")
            b.floor = lw.sqlite_floor(b.tmp, sizes.runs, sizes.keys, sizes.steps)
            progress.advance(b.task)
        for backend, workers in backends.items():
            bench_backend(b, backend, workers, seeds)
    elapsed = time.perf_counter() - started
    table_rows, floor = rows(b), floor_row(b)
    check_counts(b)
    nagle_note(b)
    console.print(render(b, table_rows, floor))
    for note in b.notes:
        console.print(f"- {note}", highlight=False)
    console.print(f"- total bench time {elapsed:,.0f} s; sizes {asdict(sizes)}", highlight=False)
    if args.json:
        payload = {"sizes": asdict(sizes), "rows": table_rows, "floor": floor, "notes": b.notes,
                   "raw": b.results, "seconds": elapsed}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
