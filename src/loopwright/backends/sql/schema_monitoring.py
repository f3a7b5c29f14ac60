"""Monitoring tables (revision 0004), on the same ``MetaData`` as :mod:`.schema`.

- ``reference_profiles``: the distribution a version is compared against, one row per (model,
  version, kind). ``kind`` is ``features`` (computed at registration from the training data) or
  ``predictions`` (the version's own outputs in its first monitored window; see
  :mod:`loopwright.monitoring.service`).
- ``monitor_windows``: one computed window per (deployment, window spec, start); the unique key is
  what makes ``loopwright monitor run`` idempotent even with two runners at once.
- ``monitor_series``: one value per (deployment, series name, window spec, window end); the
  primary key doubles as the index for reading one series in time order.
- ``alerts``: fired alerts and their resolution (by the rule, or by hand with a ``resolution``
  reason); ``deliveries`` records every notification attempt per transition.

Times are integer milliseconds since the epoch, as everywhere in the SQL store. A series ``value``
of NULL means NaN (a metric undefined in that window, e.g. ROC AUC with one class).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, String, Table, Text

from loopwright.backends.sql.schema import ID, metadata

NAME = String(250)
SPEC = String(32)  # a window spec: "15m", "1h", "1d"

reference_profiles = Table(
    "reference_profiles",
    metadata,
    Column("model", NAME, primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("profile", JSON, nullable=False),
    Column("source", Text),
    Column("created_at", BigInteger, nullable=False),
)

monitor_windows = Table(
    "monitor_windows",
    metadata,
    Column("deployment", NAME, primary_key=True),
    Column("window", SPEC, primary_key=True),
    Column("start_ms", BigInteger, primary_key=True),
    Column("end_ms", BigInteger, nullable=False),
    Column("computed_at", BigInteger, nullable=False),
    Column("n_predictions", BigInteger, nullable=False),
    Column("n_labelled", BigInteger, nullable=False),
    Column("report", JSON, nullable=False),
)

monitor_series = Table(
    "monitor_series",
    metadata,
    Column("deployment", NAME, primary_key=True),
    Column("name", NAME, primary_key=True),
    Column("window", SPEC, primary_key=True),
    Column("end_ms", BigInteger, primary_key=True),
    Column("value", Float(precision=53)),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("deployment", NAME, nullable=False),
    Column("rule", NAME, nullable=False),
    Column("series", NAME, nullable=False),
    Column("window", SPEC, nullable=False),
    Column("op", String(4), nullable=False),
    Column("state", String(16), nullable=False),  # firing | resolved
    Column("severity", String(16), nullable=False),
    Column("fired_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger),
    Column("value", Float(precision=53)),  # on the window it fired on
    Column("resolved_value", Float(precision=53)),
    Column("threshold", Float(precision=53), nullable=False),
    Column("window_end", BigInteger, nullable=False),  # the window it fired on
    Column("message", Text, nullable=False),
    Column("resolution", Text),
    Column("deliveries", JSON, nullable=False),
    Index(None, "deployment", "state"),
)
