"""What a run ran on: interpreter, platform, installed packages, source revision, entry point.

A metric means little if nobody can tell which code and which libraries produced it, so a run
records this once at its start: a few ``lw.*`` system tags (:meth:`EnvironmentInfo.to_tags`) and
the full package list as the artifact ``environment/requirements.txt``
(:meth:`EnvironmentInfo.requirements_text`).

Capturing must never break a training script: a missing ``git``, a directory outside a work tree,
a hung repository or a user without a passwd entry all give ``None`` fields, never an exception.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EnvironmentInfo", "capture_environment"]

TAG_PREFIX = "lw."
_GIT_TIMEOUT_S = 5.0
_NORMALISE = re.compile(r"[-_.]+")


@dataclass(frozen=True, slots=True)
class EnvironmentInfo:
    """A snapshot of the environment; the ``git_*`` fields are ``None`` outside a git work tree."""

    python_version: str
    python_implementation: str
    platform: str
    machine: str
    packages: list[str] = field(default_factory=list)  # "name==version" by PEP 503 name
    packages_digest: str = ""
    git_commit: str | None = None
    git_branch: str | None = None  # None when HEAD is detached
    git_dirty: bool | None = None
    git_diff_digest: str | None = None  # None when the tree is clean
    entry_point: str | None = None
    user: str | None = None

    @property
    def digest(self) -> str:
        """Identifies the environment (not the code): equal digests mean runs are comparable."""
        material = "\n".join((self.python_version, self.platform, self.packages_digest))
        return _sha256(material.encode())

    def to_tags(self) -> dict[str, str]:
        """System tags for the run; keys whose value is unknown are left out, not set to ''."""
        values: dict[str, str | None] = {
            "python": self.python_version,
            "platform": self.platform,
            "packages_digest": self.packages_digest,
            "env_digest": self.digest,
            "git.commit": self.git_commit,
            "git.branch": self.git_branch,
            "git.dirty": None if self.git_dirty is None else str(self.git_dirty).lower(),
            "git.diff_digest": self.git_diff_digest,
            "entry_point": self.entry_point,
            "user": self.user,
        }
        return {TAG_PREFIX + key: value for key, value in values.items() if value is not None}

    def requirements_text(self) -> str:
        """The package list in pip's format, so ``pip install -r`` can rebuild the environment."""
        return "".join(f"{line}\n" for line in self.packages)


def capture_environment(cwd: str | None = None) -> EnvironmentInfo:
    """Describe the running interpreter and the git work tree around ``cwd`` (default: the cwd).

    The package scan is cached for the life of the process (installing packages mid-run is rare
    and the scan reads hundreds of metadata files); git state is read every time because editing
    code between runs in one notebook session is common.
    """
    directory = os.path.abspath(cwd if cwd is not None else os.getcwd())
    packages = list(_installed_packages())
    commit, branch, dirty, diff_digest = _git_state(directory)
    return EnvironmentInfo(
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        platform=platform.platform(),
        machine=platform.machine(),
        packages=packages,
        packages_digest=_sha256("\n".join(packages).encode()),
        git_commit=commit,
        git_branch=branch,
        git_dirty=dirty,
        git_diff_digest=diff_digest,
        entry_point=_entry_point(directory),
        user=_user(),
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalise_name(name: str) -> str:
    """PEP 503 form, so ``Foo_Bar`` and ``foo-bar`` are one package in the list and the digest."""
    return _NORMALISE.sub("-", name).lower()


@functools.lru_cache(maxsize=1)
def _installed_packages() -> tuple[str, ...]:
    """``name==version`` of every distribution, the first on ``sys.path`` winning.

    Sorted by name as pip freeze does (``mypy`` before ``mypy-extensions``). A name can appear
    twice (an editable install shadowing a site-packages copy); the first one is what ``import``
    would load, so that is the one recorded.
    """
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:  # broken metadata (a half-uninstalled package): nothing to record
            continue
        seen.setdefault(_normalise_name(name), dist.version)
    return tuple(f"{name}=={version}" for name, version in sorted(seen.items()))


def _git(directory: str, *args: str) -> bytes | None:
    """Run one git command; ``None`` on any failure, because capture must never raise.

    ``--no-optional-locks`` keeps ``git status`` from rewriting the index under a user who is
    running git in the same repository at that moment.
    """
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git, no such directory, a hung repository
        return None
    return done.stdout if done.returncode == 0 else None


def _git_text(directory: str, *args: str) -> str | None:
    out = _git(directory, *args)
    if out is None:
        return None
    return out.decode(errors="replace").strip() or None


def _git_state(directory: str) -> tuple[str | None, str | None, bool | None, str | None]:
    """(commit, branch, dirty, diff_digest); all ``None`` outside a git work tree."""
    if _git_text(directory, "rev-parse", "--is-inside-work-tree") != "true":
        return None, None, None, None
    commit = _git_text(directory, "rev-parse", "--verify", "-q", "HEAD")  # None before 1st commit
    branch = _git_text(directory, "symbolic-ref", "--short", "-q", "HEAD")  # None when detached
    status = _git(directory, "status", "--porcelain", "-z")
    if status is None:
        return commit, branch, None, None
    if not status:
        return commit, branch, False, None
    return commit, branch, True, _diff_digest(directory, has_head=commit is not None)


def _diff_digest(directory: str, *, has_head: bool) -> str | None:
    """Hash of the uncommitted changes: tracked edits (the diff) and new files (their names).

    Two dirty runs with equal digests ran the same code; the content of untracked files is not
    read, since it may be large data sitting next to the code.
    """
    diff_args = ("HEAD",) if has_head else ("--cached",)
    diff = _git(directory, "diff", "--no-ext-diff", "--no-color", "--binary", *diff_args)
    untracked = _git(directory, "ls-files", "--others", "--exclude-standard", "-z")
    if diff is None or untracked is None:
        return None
    names = sorted(name for name in untracked.split(b"\0") if name)
    return _sha256(diff + b"\0untracked\0" + b"\0".join(names))


def _entry_point(directory: str) -> str | None:
    """The script that started the process, relative to ``directory`` when it lives under it.

    For ``python -m pkg.mod`` this is the module name (``pkg`` for ``python -m pkg``), which says
    more than the path of the module file inside site-packages.
    """
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = str(getattr(main_spec, "name", "") or "")
    if module and module != "__main__":  # "__main__": ``python some_dir/`` or a zip app
        return module.removesuffix(".__main__")
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c":  # interactive interpreter or ``python -c``
        return script or None
    path = Path(os.path.abspath(script))
    if path.is_relative_to(directory):
        return path.relative_to(directory).as_posix()
    return str(path)


def _user() -> str | None:
    """The login name, or ``None`` in containers whose uid has no passwd entry."""
    try:
        return getpass.getuser()
    except Exception:  # OSError on 3.13+, KeyError before; never fail a run over a name
        return None
