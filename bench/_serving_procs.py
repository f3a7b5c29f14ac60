"""Servers for ``bench/serving.py``: the HTTP floor, MLServer (its own venv) and loopwright.

Each server starts in its own session, so stopping it reaches its worker processes (uvicorn's
workers, MLServer's inference pool) and only those; every wait is bounded, and the stop runs
even when a measurement fails. Readiness is ``GET /v2/health/ready`` answering 200 (all three
servers have it), then a bounded wait until the server's processes are idle.

MLServer 1.7.1 lives in ``/work/.mlserver-venv`` (``LOOPWRIGHT_BENCH_MLSERVER_VENV`` to move
it). :func:`ensure_mlserver_venv` creates it when missing, with the scikit-learn this venv has,
so the joblib file written here loads there; uvloop is pinned to 0.21 because MLServer 1.7.1
does not start with newer releases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _procs import BenchError, free_port, stop, tail, wait_idle

__all__ = [
    "MLSERVER_VENV",
    "BenchError",
    "ensure_mlserver_venv",
    "floor_cmd",
    "free_port",
    "loopwright_cmd",
    "mlserver_cmd",
    "server",
    "write_mlserver_repo",
]

MLSERVER_VENV = Path(os.environ.get("LOOPWRIGHT_BENCH_MLSERVER_VENV", "/work/.mlserver-venv"))
MLSERVER_VERSION = "1.7.1"
MLSERVER_NAME = "bench-hgb"
HEALTH_PATH = "/v2/health/ready"
READY_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 900.0
BENCH_DIR = Path(__file__).parent
#: One BLAS / OpenMP thread: on 2 cores a pool per worker fights the event loop and the client.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


# -- MLServer's virtualenv ---------------------------------------------------------------------


def ensure_mlserver_venv(sklearn_version: str) -> tuple[Path | None, str]:
    """The venv's interpreter (creating the venv if missing), or ``None`` and why not."""
    python = MLSERVER_VENV / "bin" / "python"
    found = _mlserver_versions(python)
    if found is not None:
        return python, f"MLServer venv {MLSERVER_VENV}: {found}"
    try:
        if not python.exists():
            base = shutil.which("python3") or sys.executable
            subprocess.run(
                [base, "-m", "venv", str(MLSERVER_VENV)], check=True, capture_output=True,
                timeout=120,
            )  # fmt: skip
        pins = [
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            "uvloop==0.21.*",
            f"scikit-learn=={sklearn_version}",
        ]
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *pins],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode:
            return None, f"pip install into {MLSERVER_VENV} failed: {done.stderr.strip()[-300:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create {MLSERVER_VENV}: {type(exc).__name__}: {exc}"
    found = _mlserver_versions(python)
    if found is None:
        return None, f"{MLSERVER_VENV} was created but does not import mlserver_sklearn"
    return python, f"MLServer venv {MLSERVER_VENV} (created now): {found}"


def _mlserver_versions(python: Path) -> str | None:
    if not python.exists():
        return None
    code = (
        "import importlib.metadata as m;"
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('mlserver', 'mlserver-sklearn', 'scikit-learn', 'uvloop')))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", "import mlserver_sklearn;" + code],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def write_mlserver_repo(
    root: Path, model_file: Path, port: int, batch: tuple[int, float] | None, workers: int
) -> Path:
    """A model repository for ``mlserver start``: server settings plus one model directory.

    ``batch`` is ``(max_batch_size, max_batch_time_s)`` for adaptive batching, or ``None``.
    Debug logging is off (MLServer's default is on; a log line per request is not the
    product's cost). Ports for gRPC and metrics are free ones, so runs never collide.
    """
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": workers,
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    model_dir = root / MLSERVER_NAME
    model_dir.mkdir(exist_ok=True)
    target = model_dir / "model.joblib"
    if not target.exists():
        target.write_bytes(model_file.read_bytes())
    model_settings: dict[str, object] = {
        "name": MLSERVER_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    if batch is not None:
        model_settings["max_batch_size"], model_settings["max_batch_time"] = batch
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return root


# -- commands ----------------------------------------------------------------------------------


def floor_cmd(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "_serving_floor:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def mlserver_cmd(python: Path, repo: Path) -> list[str]:
    return [str(python.with_name("mlserver")), "start", str(repo)]


def loopwright_cmd(
    db: Path, artifacts: Path, log_dir: Path, model_ref: str, port: int, workers: int
) -> list[str]:
    exe = Path(sys.executable).with_name("loopwright")
    return [
        str(exe), "--tracking-uri", f"sqlite:///{db}", "--artifacts-uri", str(artifacts),
        "serve", model_ref, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-uri", str(log_dir),
    ]  # fmt: skip


# -- running one -------------------------------------------------------------------------------


@contextlib.contextmanager
def server(
    cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Start ``cmd`` in its own session; yield ``(url, pid)`` once ready; always stop it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=log.parent,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        wait_idle(proc.pid)
        yield url, proc.pid
    finally:
        stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url + HEALTH_PATH, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"server at {url} not ready after {READY_TIMEOUT_S:.0f}s:\n{tail(log)}")
