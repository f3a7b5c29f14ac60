"""capture_environment against real temporary git repositories (the ``git`` CLI, no mocks)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from loopwright.tracking.environment import EnvironmentInfo, capture_environment

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git CLI")

GIT_KEYS = {"lw.git.commit", "lw.git.branch", "lw.git.dirty", "lw.git.diff_digest"}
BASE_KEYS = {
    "lw.python",
    "lw.platform",
    "lw.packages_digest",
    "lw.env_digest",
    "lw.entry_point",
    "lw.user",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("print('hello')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    return path


@needs_git
def test_clean_tree_is_not_dirty(repo: Path) -> None:
    env = capture_environment(str(repo))
    assert env.git_commit == git(repo, "rev-parse", "HEAD")
    assert env.git_branch == "main"
    assert env.git_dirty is False
    assert env.git_diff_digest is None
    tags = env.to_tags()
    assert tags["lw.git.dirty"] == "false"
    assert "lw.git.diff_digest" not in tags


@needs_git
def test_modified_file_makes_tree_dirty_and_digest_follows_content(repo: Path) -> None:
    (repo / "train.py").write_text("print('changed')\n")
    first = capture_environment(str(repo))
    assert first.git_dirty is True
    assert first.git_diff_digest is not None
    assert first.to_tags()["lw.git.dirty"] == "true"

    assert capture_environment(str(repo)).git_diff_digest == first.git_diff_digest
    (repo / "train.py").write_text("print('changed again')\n")
    assert capture_environment(str(repo)).git_diff_digest != first.git_diff_digest


@needs_git
def test_untracked_file_makes_tree_dirty(repo: Path) -> None:
    (repo / "notes.txt").write_text("new\n")
    env = capture_environment(str(repo))
    assert env.git_dirty is True
    assert env.git_diff_digest is not None


@needs_git
def test_detached_head_has_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    env = capture_environment(str(repo))
    assert env.git_branch is None
    assert env.git_commit is not None
    assert "lw.git.branch" not in env.to_tags()


@needs_git
def test_subdirectory_of_work_tree_is_inside_it(repo: Path) -> None:
    sub = repo / "src"
    sub.mkdir()
    assert capture_environment(str(sub)).git_commit == git(repo, "rev-parse", "HEAD")


def test_outside_a_repository_git_keys_are_absent(tmp_path: Path) -> None:
    env = capture_environment(str(tmp_path))
    assert (env.git_commit, env.git_branch, env.git_dirty, env.git_diff_digest) == (None,) * 4
    assert not GIT_KEYS & env.to_tags().keys()


def test_missing_git_binary_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    env = capture_environment(str(tmp_path))
    assert env.git_commit is None
    assert env.packages


def test_nonexistent_directory_never_raises(tmp_path: Path) -> None:
    assert capture_environment(str(tmp_path / "gone")).git_dirty is None


def test_packages_are_sorted_normalised_and_include_pytest(tmp_path: Path) -> None:
    env = capture_environment(str(tmp_path))
    names = [line.split("==", 1)[0] for line in env.packages]
    assert "pytest" in names
    assert names == sorted(names)  # by name, like pip freeze: "mypy" before "mypy-extensions"
    assert len(names) == len(set(names))
    assert all(name == name.lower() and "_" not in name and "." not in name for name in names)
    expected = hashlib.sha256("\n".join(env.packages).encode()).hexdigest()
    assert env.packages_digest == expected


def test_requirements_text_is_one_package_per_line(tmp_path: Path) -> None:
    env = capture_environment(str(tmp_path))
    assert env.requirements_text().splitlines() == env.packages
    assert env.requirements_text().endswith("\n")


@needs_git
def test_tags_have_the_documented_keys(repo: Path) -> None:
    (repo / "train.py").write_text("dirty\n")
    tags = capture_environment(str(repo)).to_tags()
    assert tags.keys() == BASE_KEYS | GIT_KEYS
    assert all(isinstance(value, str) and value for value in tags.values())


def test_env_digest_depends_on_packages_not_on_code(tmp_path: Path) -> None:
    env = capture_environment(str(tmp_path))
    assert env.to_tags()["lw.env_digest"] == env.digest
    same = EnvironmentInfo(
        env.python_version, "other", env.platform, "other", [], env.packages_digest
    )
    assert same.digest == env.digest
    other = EnvironmentInfo(env.python_version, "x", env.platform, "x", [], "different")
    assert other.digest != env.digest


def test_entry_point_is_relative_when_under_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "jobs" / "train.py"
    monkeypatch.setattr("sys.argv", [str(script)])
    monkeypatch.setattr("__main__.__spec__", None, raising=False)
    assert capture_environment(str(tmp_path)).entry_point == "jobs/train.py"
    assert capture_environment(str(tmp_path / "elsewhere")).entry_point == str(script)


def test_entry_point_of_dash_m_is_the_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = type("Spec", (), {"name": "mypkg.train"})()
    monkeypatch.setattr("__main__.__spec__", spec, raising=False)
    assert capture_environment(str(tmp_path)).entry_point == "mypkg.train"
    monkeypatch.setattr("__main__.__spec__", type("Spec", (), {"name": "mypkg.__main__"})())
    assert capture_environment(str(tmp_path)).entry_point == "mypkg"


def test_user_is_none_when_the_lookup_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_user() -> str:
        raise OSError("no passwd entry")

    monkeypatch.setattr("getpass.getuser", no_user)
    env = capture_environment(str(tmp_path))
    assert env.user is None
    assert "lw.user" not in env.to_tags()
