#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py demo|test|lint|bench``.

Needs nothing but Python >= 3.11: it creates ``.venv`` beside this file on first use, installs
loopwright with its dev extras into it (again whenever ``pyproject.toml`` changes), then runs the
command inside it. CI calls ``python3 dev.py test``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".loopwright-installed"


def _python() -> str:
    return str(BIN / "python")


def _ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"loopwright needs Python >= 3.11; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and Path(_python()).exists():
        return
    if not Path(_python()).exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("installing loopwright and its dev dependencies (first run only)", flush=True)
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def _run(*args: str) -> int:
    return subprocess.run(list(args), cwd=ROOT).returncode


def demo(extra: list[str]) -> int:
    return _run(str(BIN / "loopwright"), "demo", *extra)


def lint(extra: list[str]) -> int:
    ruff = str(BIN / "ruff")
    return _run(ruff, "check", "src", "tests", "bench", "dev.py") or _run(
        ruff, "format", "--check", "src", "tests", "bench", "dev.py"
    )


def test(extra: list[str]) -> int:
    """Lint, then the whole suite on 2 workers (slow end-to-end tests included)."""
    code = lint([])
    if code:
        print("lint failed: run `python3 dev.py fmt` or fix the findings above", file=sys.stderr)
        return code
    return _run(_python(), "-m", "pytest", "-n", "2", "--dist", "loadfile", *extra)


def fmt(extra: list[str]) -> int:
    ruff = str(BIN / "ruff")
    return _run(ruff, "format", "src", "tests", "bench", "dev.py") or _run(
        ruff, "check", "--fix", "src", "tests", "bench", "dev.py"
    )


def bench(extra: list[str]) -> int:
    return _run(_python(), "bench/tracking.py", *extra)


COMMANDS = {"demo": demo, "test": test, "lint": lint, "fmt": fmt, "bench": bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args...]", file=sys.stderr)
        return 2
    _ensure_env()
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
