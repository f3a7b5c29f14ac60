"""Processes of the drift bench: Evidently's virtualenv, and one worker process per measurement.

Evidently (newest release) lives in ``/work/.evidently-venv`` (``LOOPWRIGHT_BENCH_EVIDENTLY_VENV``
to move it), with pandas 2: Evidently 0.7.x does not import with pandas 3, which loopwright's venv
has. :func:`ensure_evidently_venv` creates it when missing. Every worker starts in its own session
with a time limit, and is stopped (its process group only) when the limit passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _procs import BenchError, stop, tail

__all__ = ["EVIDENTLY_VENV", "BenchError", "ensure_evidently_venv", "run_worker"]

EVIDENTLY_VENV = Path(os.environ.get("LOOPWRIGHT_BENCH_EVIDENTLY_VENV", "/work/.evidently-venv"))
EVIDENTLY_PINS = ("evidently", "pandas<3", "pyarrow")
INSTALL_TIMEOUT_S = 900.0
WORKER = Path(__file__).with_name("_drift_worker.py")
QUIET_ENV = {"DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}


def ensure_evidently_venv() -> tuple[Path | None, str]:
    """The venv's interpreter (creating the venv if missing), or ``None`` and why not."""
    python = EVIDENTLY_VENV / "bin" / "python"
    found = _versions(python)
    if found is not None:
        return python, f"Evidently venv {EVIDENTLY_VENV}: {found}"
    try:
        if not python.exists():
            base = shutil.which("python3") or sys.executable
            subprocess.run(
                [base, "-m", "venv", str(EVIDENTLY_VENV)], check=True, capture_output=True,
                timeout=120,
            )  # fmt: skip
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *EVIDENTLY_PINS],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode:
            return None, f"pip install into {EVIDENTLY_VENV} failed: {done.stderr.strip()[-300:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create {EVIDENTLY_VENV}: {type(exc).__name__}: {exc}"
    found = _versions(python)
    if found is None:
        return None, f"{EVIDENTLY_VENV} was created but does not import evidently"
    return python, f"Evidently venv {EVIDENTLY_VENV} (created now): {found}"


def _versions(python: Path) -> str | None:
    if not python.exists():
        return None
    code = (
        "import evidently.presets, importlib.metadata as m;"
        "print(', '.join(f'{p} {m.version(p)}' for p in ('evidently', 'pandas', 'numpy')))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=180,
            check=False, env={**os.environ, **QUIET_ENV},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run_worker(
    python: Path | str, args: list[str], workdir: Path, timeout_s: float
) -> dict[str, Any]:
    """Run ``_drift_worker.py`` in a fresh process and return its ``RESULT``; bounded in time."""
    log = workdir / f"worker-{args[0]}-{time.time_ns()}.log"
    out_file = log.with_suffix(".out")
    with log.open("wb") as err, out_file.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), str(WORKER), *args], stdout=out, stderr=err, cwd=WORKER.parent,
            env={**os.environ, **QUIET_ENV}, start_new_session=True,
        )  # fmt: skip
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc)  # type: ignore[arg-type]
        raise BenchError(f"{args[0]} timed out after {timeout_s:.0f}s") from None
    for line in out_file.read_bytes().splitlines():
        if line.startswith(b"RESULT "):
            return json.loads(line[7:])
    raise BenchError(f"{args[0]} failed ({proc.returncode}):\n{tail(log)}")
