"""Configuration: one explicit ``Settings`` object, built once at the edge and passed down.

Nothing reads the environment at import time. ``Settings.from_env()`` reads ``LOOPWRIGHT_*``
variables and fails loudly, naming the variable, when one is malformed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from loopwright.errors import InvalidInput

PREFIX = "LOOPWRIGHT_"
DEFAULT_HOME = ".loopwright"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything loopwright can be told, with the embedded defaults.

    ``tracking_uri``: a directory, ``sqlite:///...``, ``postgresql+psycopg://...`` or
    ``http(s)://`` (a loopwright server). ``None`` means ``./.loopwright`` in the working directory.
    ``artifacts_uri``: where blobs go for SQL stores (a directory or an fsspec URL); ``None`` means
    next to the SQLite file, or ``./.loopwright/artifacts`` for PostgreSQL.
    ``user``: the name changes are attributed to. Embedded, it is trusted as declared (like a git
    author); against a server with ``auth`` on, the token decides and ``user`` is ignored.
    """

    tracking_uri: str | None = None
    artifacts_uri: str | None = None
    max_request_bytes: int = 64 * 1024 * 1024
    max_artifact_bytes: int = 5 * 1024 * 1024 * 1024
    metric_flush_interval_s: float = 2.0
    metric_buffer_size: int = 20_000
    resource_sample_interval_s: float = 1.0
    capture_environment: bool = True
    http_timeout_s: float = 60.0
    user: str | None = None  # who acts (audit trail); default: the OS user
    token: str | None = None  # API token for a server with auth on
    auth: bool = False  # server: require tokens and enforce roles on every route

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(PREFIX + f.name.upper(), raw, f.type)
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_home(cwd: str | os.PathLike[str] | None = None) -> Path:
    return Path(cwd or os.getcwd()) / DEFAULT_HOME


def _parse(name: str, raw: str, type_: object) -> object:
    kind = str(type_)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a valid {kind.split()[0]}", field=name) from None
    return raw
