"""Model registry latency, loopwright against MLflow, measured side by side in one run.

    .venv/bin/python bench/registry.py            # a ~10 MB forest, about two minutes
    .venv/bin/python bench/registry.py --quick    # a ~1 MB forest, fewer repeats
    .venv/bin/python bench/registry.py --only rest --json results.json

Backends: embedded (SQLite and local artifacts in a temporary directory for both tools) and REST
(``loopwright server`` and ``mlflow server`` on 127.0.0.1 with one worker each, never both running
at once). MLflow runs in its own virtual environment through ``_mlflow_worker.py``, whose ``reg_*``
workloads live in ``_mlflow_registry.py``; loopwright's are in ``_registry_loopwright.py``.

Workloads (wall clock in the calling process, median of N after one warm-up):

* register: runs that already logged the model are setup; the clock covers
  ``client.registry.register(name, run_id)`` / ``mlflow.register_model("runs:/<id>/model", name)``.
* log_model + register: a run that logs the model, ends, and is registered, all in the clock.
  MLflow is given ``pip_requirements`` so it skips its requirement inference (its fastest
  documented path); the extra row shows MLflow's default, which infers them in a subprocess.
* resolve: ``client.registry.resolve("name@champion")`` / ``get_model_version_by_alias``.
* resolve + load: ``client.registry.load("name@champion")`` /
  ``mlflow.sklearn.load_model("models:/name@champion")``; a 1-row ``predict_proba`` follows each
  load outside the clock and is checked against the fitted forest.

Formats: loopwright stores skops. MLflow 3's default outside Databricks is skops too (its
``log_model`` also loads the file back once to check it); the extra load row gives MLflow a
cloudpickle copy, its pre-3 default. skops does not trust the forest's tree type by default, so
both tools are told it is trusted (``_registry_shared.TRUSTED``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _registry_loopwright as lw
from _procs import BenchError, free_port, loopwright_server_cmd, mlflow_server_cmd, run_worker
from _procs import server as start_server
from _registry_shared import FULL_TREES, QUICK_TREES, TRUSTED, build_model, predict_one
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from tracking import met_cell

from loopwright import Client
from loopwright.backends.sql.store import SqlTrackingStore

WORKER_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Sizes:
    trees: int
    repeat_register: int
    repeat_resolve: int
    repeat_load: int
    repeat_default: int


FULL = Sizes(trees=FULL_TREES, repeat_register=10, repeat_resolve=50, repeat_load=10,
             repeat_default=3)  # fmt: skip
QUICK = Sizes(trees=QUICK_TREES, repeat_register=5, repeat_resolve=20, repeat_load=5,
              repeat_default=1)  # fmt: skip


@dataclass(frozen=True)
class Workload:
    label: str
    ours: str  # the loopwright workload this MLflow workload is compared with
    target: float | None  # minimum MLflow/loopwright latency ratio, None = informational


def workloads(s: Sizes) -> dict[str, Workload]:
    return {
        "reg_register": Workload(f"register a version (median/{s.repeat_register})",
                                 "reg_register", 3),
        "reg_log_register": Workload(f"log_model + register (median/{s.repeat_register})",
                                     "reg_log_register", None),
        "reg_log_register_default": Workload("  vs MLflow inferring requirements "
                                             f"(median/{s.repeat_default})",
                                             "reg_log_register", None),
        "reg_resolve": Workload(f"resolve name@champion (median/{s.repeat_resolve})",
                                "reg_resolve", None),
        "reg_load": Workload(f"resolve name@champion + load (median/{s.repeat_load})",
                             "reg_load", 1.0),
        "reg_load_pickle": Workload("  vs MLflow cloudpickle format", "reg_load", None),
    }  # fmt: skip


LW_ORDER = ("reg_register", "reg_log_register", "reg_resolve", "reg_load")
MLFLOW_ORDER = ("reg_register", "reg_log_register", "reg_log_register_default", "reg_resolve",
                "reg_load", "reg_load_pickle")  # fmt: skip
BACKENDS: dict[str, int | None] = {"embedded": None, "REST w1": 1}


@dataclass
class Bench:
    sizes: Sizes
    tmp: Path
    progress: Progress
    task: Any
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, backend: str, tool: str, workload: str, value: dict[str, Any]) -> None:
        self.results.setdefault(backend, {}).setdefault(tool, {})[workload] = value
        self.progress.advance(self.task)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def worker_options(self) -> dict[str, int]:
        return asdict(self.sizes)


# -- phases ------------------------------------------------------------------------------------


def run_loopwright(b: Bench, backend: str, client: Client) -> None:
    s = b.sizes
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "reg_register": lambda: lw.register(client, s.trees, s.repeat_register),
        "reg_log_register": lambda: lw.log_register(client, s.trees, s.repeat_register),
        "reg_resolve": lambda: lw.resolve(client, s.trees, s.repeat_resolve),
        "reg_load": lambda: lw.load(client, s.trees, s.repeat_load),
    }
    try:
        for name in LW_ORDER:
            b.step(f"loopwright {backend}: {name}")
            try:
                result = steps[name]()
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            b.record(backend, "loopwright", name, result)
    finally:
        client.close()


def run_mlflow(b: Bench, backend: str, uri: str, workdir: Path, names: tuple[str, ...]) -> None:
    def on_result(r: dict[str, Any]) -> None:
        name = r.pop("workload")
        b.record(backend, "mlflow", name, r)
        b.step(f"MLflow {backend}: after {name}")

    b.step(f"MLflow {backend}: starting worker")
    try:
        run_worker(list(names), uri, b.worker_options(), workdir, on_result, WORKER_TIMEOUT_S)
    except BenchError as exc:
        got = b.results.get(backend, {}).get("mlflow", {})
        for name in names:
            if name not in got:
                b.record(backend, "mlflow", name, {"error": str(exc).splitlines()[0]})
        b.notes.append(f"MLflow {backend}: {exc}")


def bench_backend(b: Bench, backend: str, workers: int | None) -> None:
    d = b.tmp / backend.replace(" ", "-").lower()
    d.mkdir()
    lw_db, art = d / "lw.db", d / "lw-artifacts"
    if workers is None:
        run_loopwright(b, backend, Client(f"sqlite:///{lw_db}", artifacts_uri=str(art)))
        run_mlflow(b, backend, f"sqlite:///{d / 'mlflow.db'}", d, MLFLOW_ORDER)
        return
    SqlTrackingStore(f"sqlite:///{lw_db}").initialize().close()  # a fresh server store needs it
    cmd, how = loopwright_server_cmd(lw_db, art, free_port(), workers)
    env = {"LOOPWRIGHT_TRACKING_URI": f"sqlite:///{lw_db}", "LOOPWRIGHT_ARTIFACTS_URI": str(art)}
    b.notes.append(f"loopwright server started as: {how}")
    with_server(b, backend, "loopwright", cmd, d, env,
                lambda url: run_loopwright(b, backend, Client(url)))  # fmt: skip
    cmd = mlflow_server_cmd(d / "mlflow.db", d / "mlartifacts", free_port(), workers)
    with_server(b, backend, "mlflow", cmd, d, {},
                lambda url: run_mlflow(b, backend, url, d, MLFLOW_ORDER))  # fmt: skip


def with_server(b: Bench, backend: str, tool: str, cmd: list[str], d: Path,
                env: dict[str, str], body: Callable[[str], None]) -> None:  # fmt: skip
    port = int(cmd[cmd.index("--port") + 1])
    b.step(f"{tool} {backend}: starting server on 127.0.0.1:{port}")
    try:
        with start_server(cmd, port, d / f"{tool}-server.log", env) as url:
            body(url)
    except BenchError as exc:
        b.notes.append(f"{tool} {backend}: {exc}")
        got = b.results.get(backend, {}).get(tool, {})
        for name in LW_ORDER if tool == "loopwright" else MLFLOW_ORDER:
            if name not in got:
                b.record(backend, tool, name, {"error": "server did not start"})


def model_sizes(b: Bench) -> None:
    """Setup, untimed: fit the forest here and in MLflow's interpreter; note each format's size."""
    b.step(f"fitting the {b.sizes.trees}-tree forest for both tools (setup, untimed)")
    build_model(b.sizes.trees)
    run_mlflow(b, "setup", f"sqlite:///{b.tmp / 'size.db'}", b.tmp, ("reg_size",))
    ours = lw.model_size(b.sizes.trees)["model_bytes"]
    theirs = b.results["setup"]["mlflow"]["reg_size"]
    if "error" in theirs:
        return
    fmts = theirs["formats"]
    b.notes.append(
        f"model: RandomForestClassifier, {b.sizes.trees} trees; loopwright stores skops "
        f"({mb(ours)}); MLflow {theirs['version']} stores its default format "
        f"'{theirs['default_format']}' ({mb(fmts['skops']['model_bytes'])} model.skops), "
        f"cloudpickle when asked ({mb(fmts['cloudpickle']['model_bytes'])} model.pkl)"
    )


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


# -- reporting ---------------------------------------------------------------------------------


def figure(result: dict[str, Any] | None) -> float | None:
    return None if not result or "error" in result else float(result["ms"])


def rows(b: Bench) -> list[dict[str, Any]]:
    table = []
    for backend, tools in b.results.items():
        if backend == "setup":
            continue
        for name, spec in workloads(b.sizes).items():
            ours = figure(tools.get("loopwright", {}).get(spec.ours))
            theirs = figure(tools.get("mlflow", {}).get(name))
            ratio = theirs / ours if ours and theirs else None
            met = None if spec.target is None or ratio is None else ratio >= spec.target
            table.append(
                {"workload": name, "label": spec.label, "backend": backend, "loopwright": ours,
                 "mlflow": theirs, "ratio": ratio, "target": spec.target, "met": met}
            )  # fmt: skip
    return table


def render(b: Bench, table_rows: list[dict[str, Any]]) -> Table:
    t = Table(title="loopwright vs MLflow: model registry", title_justify="left")
    for col, justify in [("workload", "left"), ("backend", "left"), ("loopwright", "right"),
                         ("MLflow", "right"), ("ratio", "right"), ("target", "right"),
                         ("met?", "center")]:  # fmt: skip
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    order = list(workloads(b.sizes))
    last = None
    for r in sorted(table_rows, key=lambda r: order.index(r["workload"])):
        if last is not None and r["workload"] != last and not r["label"].startswith("  "):
            t.add_section()
        last = r["workload"]
        t.add_row(
            r["label"], r["backend"], ms(r["loopwright"]), ms(r["mlflow"]),
            "—" if r["ratio"] is None else f"{r['ratio']:,.1f}x",
            "info" if r["target"] is None else f">= {r['target']:g}x", met_cell(r["met"]),
        )  # fmt: skip
    return t


def ms(value: float | None) -> str:
    return "error" if value is None else f"{value:,.2f} ms"


def check_predictions(b: Bench) -> None:
    """Every loaded model must predict the row as the fitted forest does: say so, loudly if not."""
    expected = predict_one(*build_model(b.sizes.trees))
    for backend, tools in b.results.items():
        for tool, res in tools.items():
            for name in ("reg_load", "reg_load_pickle"):
                r = res.get(name, {})
                if "proba" in r:
                    mark = "ok" if r["proba"] == expected else f"MISMATCH, expected {expected}"
                    b.notes.append(
                        f"{tool} {backend} {name}: predict_proba(1 row) = {r['proba']} ({mark}), "
                        f"{r['predict_ms']:.2f} ms after load"
                    )
    for backend, tools in b.results.items():
        for tool, res in tools.items():
            for name, r in res.items():
                if "error" in r:
                    b.notes.append(f"{tool} {backend} {name}: {r['error']}")


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~1 MB model and fewer repeats")
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
    total = 1 + len(backends) * (len(LW_ORDER) + len(MLFLOW_ORDER))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lw-bench-registry-") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        b = Bench(sizes, Path(tmp), progress, progress.add_task("starting", total=total))
        model_sizes(b)
        for backend, workers in backends.items():
            bench_backend(b, backend, workers)
    elapsed = time.perf_counter() - started
    table_rows = rows(b)
    check_predictions(b)
    b.notes.append(
        f"both tools load the forest with its tree type trusted after review: {TRUSTED} "
        "(skops does not trust it by default)"
    )
    console.print(render(b, table_rows))
    for note in b.notes:
        console.print(f"- {note}", highlight=False)
    console.print(f"- total bench time {elapsed:,.0f} s; sizes {asdict(sizes)}", highlight=False)
    if args.json:
        payload = {"sizes": asdict(sizes), "rows": table_rows, "notes": b.notes,
                   "raw": b.results, "seconds": elapsed}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
