"""The drift bench's data: seeded reference/current frames with known drifted columns.

50 columns, 30 stable and 20 drifted. Each column is drawn from its own generator, seeded with
``(seed, rows, column index, side)``, so a frame is the same on every machine and every run for a
given seed and size. Both frames have ``rows`` rows and are written as Parquet beside
``truth.json``, which names, for each column, its kind, whether it drifted, what changed and the
population effect size (Wasserstein distance over the reference std for numeric columns,
Jensen-Shannon distance in base 2 for categorical ones).

Strengths: a *strong* drift has an effect of 0.13 or more; a *subtle* one 0.07-0.08. That band
sits above loopwright's default effect floors (0.05) and below Evidently's fixed default
thresholds (0.1): the subtle drifts are where the two defaults disagree, on purpose, and the bench
says so. Every change keeps what it does not mean to change: shape changes keep the mean and the
variance; frequency shifts keep the set of categories.

Stable columns are two independent draws from one distribution, including the awkward ones:
integer counts with many ties, heavy tails, 5% missing values, a boolean, and a 300-level Zipf
categorical (more levels than a profile keeps).

This module is imported by the bench only (loopwright's interpreter, which writes the files); the
workers just read Parquet and JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
DEFAULT_SEED = 20240605

Draw = Callable[[np.random.Generator, int], pa.Array]


@dataclass(frozen=True)
class Column:
    """One column: how each side is drawn, and the truth about it."""

    name: str
    kind: str  # "numeric" | "categorical"
    reference: Draw
    current: Draw
    change: str = "none"
    strength: str = "none"  # "none" | "subtle" | "strong"
    effect: float = 0.0  # population W1/std (numeric) or JS distance base 2 (categorical)

    @property
    def drifted(self) -> bool:
        return self.strength != "none"

    def truth(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "drifted": self.drifted,
            "change": self.change,
            "strength": self.strength,
            "effect": round(self.effect, 4),
        }


# -- numeric draws ---------------------------------------------------------------------------------


def _floats(values: np.ndarray, missing: float = 0.0, rng: np.random.Generator | None = None):
    if missing and rng is not None:
        mask = rng.random(values.size) < missing
        return pa.array(values, mask=mask, type=pa.float64())
    return pa.array(values, type=pa.float64())


def normal(mu: float, sigma: float, *, shift: float = 0.0, scale: float = 1.0, missing=0.0) -> Draw:
    """N(mu, sigma), moved by ``shift`` sigmas and spread ``scale`` times about mu."""

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        z = rng.standard_normal(n)
        return _floats(mu + sigma * (shift + scale * z), missing, rng)

    return draw


def lognormal(m: float, s: float, *, shift: float = 0.0) -> Draw:
    """exp(N(m, s)), moved by ``shift`` times its population std."""
    std = math.sqrt((math.exp(s * s) - 1) * math.exp(2 * m + s * s))

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(rng.lognormal(m, s, n) + shift * std)

    return draw


def uniform(a: float, b: float, *, shift: float = 0.0) -> Draw:
    std = (b - a) / math.sqrt(12)

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(rng.uniform(a, b, n) + shift * std)

    return draw


def exponential(scale: float, *, shift: float = 0.0) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(rng.exponential(scale, n) + shift * scale)

    return draw


def poisson(lam: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return pa.array(rng.poisson(lam, n), type=pa.int64())

    return draw


def student_t(df: float, mu: float, scale: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(mu + scale * rng.standard_t(df, n))

    return draw


def beta(a: float, b: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(rng.beta(a, b, n))

    return draw


def bimodal(mu: float, sigma: float, sep: float) -> Draw:
    """Mean mu, std sigma: an even mixture of N(mu +- sep*sigma, sqrt(1 - sep^2)*sigma)."""
    inner = math.sqrt(1 - sep * sep)

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        side = np.where(rng.random(n) < 0.5, -sep, sep)
        return _floats(mu + sigma * (side + inner * rng.standard_normal(n)))

    return draw


def gamma_like(mu: float, sigma: float, k: float) -> Draw:
    """Mean mu, std sigma, the (right-skewed) shape of a Gamma(k): skewness 2/sqrt(k)."""

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        g = (rng.gamma(k, 1.0, n) - k) / math.sqrt(k)
        return _floats(mu + sigma * g)

    return draw


def t_like(mu: float, sigma: float, df: float) -> Draw:
    """Mean mu, std sigma, the heavy tails of a Student t with ``df`` > 2 degrees of freedom."""
    unit = math.sqrt((df - 2) / df)

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return _floats(mu + sigma * unit * rng.standard_t(df, n))

    return draw


# -- categorical draws -----------------------------------------------------------------------------


def zipf(k: int, s: float) -> list[float]:
    w = 1 / np.arange(1, k + 1) ** s
    return (w / w.sum()).tolist()


def categorical(prefix: str, probs: list[float], *, missing: float = 0.0) -> Draw:
    """Strings ``prefix00``, ``prefix01``... with probabilities ``probs`` (0 = never drawn)."""
    levels = pa.array([f"{prefix}{i:02d}" for i in range(len(probs))], type=pa.string())
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()

    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        codes = rng.choice(p.size, size=n, p=p)
        out = levels.take(pa.array(codes))
        if missing:
            mask = pa.array(rng.random(n) < missing)
            out = pc.if_else(mask, pa.scalar(None, pa.string()), out)
        return out

    return draw


def boolean(p_true: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> pa.Array:
        return pa.array(rng.random(n) < p_true, type=pa.bool_())

    return draw


# -- the 50 columns --------------------------------------------------------------------------------

FREQ = [0.4, 0.3, 0.2, 0.1]
FIVE = [0.3, 0.25, 0.2, 0.15, 0.1]


def columns() -> list[Column]:
    """The columns, stable ones first; effects computed from the populations (see docstring)."""
    s = [
        # 20 stable numeric
        Column("s_norm_income", "numeric", normal(52_000, 15_000), normal(52_000, 15_000)),
        Column("s_norm_age", "numeric", normal(41, 12), normal(41, 12)),
        Column("s_norm_score", "numeric", normal(0, 1), normal(0, 1)),
        Column("s_norm_temp", "numeric", normal(-3, 0.2), normal(-3, 0.2)),
        Column("s_norm_balance", "numeric", normal(1e6, 3e5), normal(1e6, 3e5)),
        Column("s_lognorm_spend", "numeric", lognormal(4, 0.8), lognormal(4, 0.8)),
        Column("s_lognorm_amount", "numeric", lognormal(2, 0.5), lognormal(2, 0.5)),
        Column("s_lognorm_duration", "numeric", lognormal(6, 1.2), lognormal(6, 1.2)),
        Column("s_unif_ratio", "numeric", uniform(0, 1), uniform(0, 1)),
        Column("s_unif_offset", "numeric", uniform(-50, 50), uniform(-50, 50)),
        Column("s_exp_wait", "numeric", exponential(3.5), exponential(3.5)),
        Column("s_exp_gap", "numeric", exponential(120), exponential(120)),
        Column("s_pois_visits", "numeric", poisson(3), poisson(3)),
        Column("s_pois_items", "numeric", poisson(20), poisson(20)),
        Column("s_pois_clicks", "numeric", poisson(100), poisson(100)),
        Column("s_missing_tenure", "numeric", normal(60, 25, missing=0.05),
               normal(60, 25, missing=0.05)),
        Column("s_missing_util", "numeric", normal(0.4, 0.15, missing=0.05),
               normal(0.4, 0.15, missing=0.05)),
        Column("s_bimodal_hour", "numeric", bimodal(12, 5, 0.8), bimodal(12, 5, 0.8)),
        Column("s_t_return", "numeric", student_t(3, 0, 0.02), student_t(3, 0, 0.02)),
        Column("s_beta_share", "numeric", beta(2, 5), beta(2, 5)),
        # 10 stable categorical
        Column("s_cat_segment", "categorical", categorical("seg", [1, 1, 1]),
               categorical("seg", [1, 1, 1])),
        Column("s_cat_region", "categorical", categorical("reg", [1, 1, 1, 1]),
               categorical("reg", [1, 1, 1, 1])),
        Column("s_cat_product", "categorical", categorical("prd", FIVE), categorical("prd", FIVE)),
        Column("s_cat_channel", "categorical", categorical("ch", [5, 3, 2, 2, 1, 1, 1]),
               categorical("ch", [5, 3, 2, 2, 1, 1, 1])),
        Column("s_cat_branch", "categorical", categorical("br", [1] * 10),
               categorical("br", [1] * 10)),
        Column("s_cat_city", "categorical", categorical("city", zipf(30, 1.1)),
               categorical("city", zipf(30, 1.1))),
        Column("s_cat_merchant", "categorical", categorical("m", zipf(300, 1.05)),
               categorical("m", zipf(300, 1.05))),
        Column("s_cat_status", "categorical", categorical("st", [0.9, 0.05, 0.05]),
               categorical("st", [0.9, 0.05, 0.05])),
        Column("s_cat_device", "categorical", categorical("dev", FREQ, missing=0.03),
               categorical("dev", FREQ, missing=0.03)),
        Column("s_bool_promo", "categorical", boolean(0.2), boolean(0.2)),
    ]  # fmt: skip
    d = [
        # 13 drifted numeric
        Column("d_mean_strong_norm", "numeric", normal(100, 20), normal(100, 20, shift=0.5),
               "mean +0.5 std", "strong", 0.5),
        Column("d_mean_strong_lognorm", "numeric", lognormal(3, 0.6), lognormal(3, 0.6, shift=0.3),
               "mean +0.3 std", "strong", 0.3),
        Column("d_mean_strong_pois", "numeric", poisson(20), poisson(22),
               "Poisson mean 20 -> 22 (+0.45 std)", "strong", 0.447),
        Column("d_mean_subtle_norm", "numeric", normal(10, 4), normal(10, 4, shift=0.08),
               "mean +0.08 std", "subtle", 0.08),
        Column("d_mean_subtle_exp", "numeric", exponential(40), exponential(40, shift=0.08),
               "mean +0.08 std", "subtle", 0.08),
        Column("d_mean_subtle_unif", "numeric", uniform(0, 300), uniform(0, 300, shift=0.08),
               "mean +0.08 std", "subtle", 0.08),
        Column("d_mean_subtle_pois", "numeric", poisson(100), poisson(100.8),
               "Poisson mean 100 -> 100.8 (+0.08 std)", "subtle", 0.08),
        Column("d_var_strong", "numeric", normal(5, 2), normal(5, 2, scale=1.5),
               "std x1.5", "strong", 0.399),
        Column("d_var_narrow", "numeric", normal(-20, 6), normal(-20, 6, scale=0.8),
               "std x0.8", "strong", 0.16),
        Column("d_var_subtle", "numeric", normal(300, 45), normal(300, 45, scale=1.1),
               "std x1.1", "subtle", 0.08),
        Column("d_shape_bimodal", "numeric", normal(12, 5), bimodal(12, 5, 0.9),
               "normal -> bimodal, same mean and std", "strong", 0.207),
        Column("d_shape_tails", "numeric", normal(0, 0.03), t_like(0, 0.03, 4),
               "normal -> Student t(4) tails, same mean and std", "strong", 0.137),
        Column("d_shape_skew", "numeric", normal(50, 10), gamma_like(50, 10, 16),
               "normal -> right skew 0.5, same mean and std", "subtle", 0.081),
        # 7 drifted categorical
        Column("d_cat_new_strong", "categorical", categorical("pay", [*FIVE, 0]),
               categorical("pay", [*(0.9 * p for p in FIVE), 0.1]),
               "new category at 10%", "strong", 0.228),
        Column("d_cat_new_subtle", "categorical", categorical("src", [*FIVE, 0]),
               categorical("src", [*(0.99 * p for p in FIVE), 0.01]),
               "new category at 1%", "subtle", 0.071),
        Column("d_cat_vanish", "categorical", categorical("plan", FREQ),
               categorical("plan", [0.4, 0.3, 0.2, 0]),
               "a 10% category vanishes", "strong", 0.228),
        Column("d_cat_freq_strong", "categorical", categorical("tier", FREQ),
               categorical("tier", [0.25, 0.3, 0.25, 0.2]),
               "frequencies 40/30/20/10 -> 25/30/25/20", "strong", 0.164),
        Column("d_cat_freq_subtle", "categorical", categorical("lang", FREQ),
               categorical("lang", [0.32, 0.32, 0.23, 0.13]),
               "frequencies 40/30/20/10 -> 32/32/23/13", "subtle", 0.075),
        Column("d_cat_zipf", "categorical", categorical("store", zipf(30, 1.1)),
               categorical("store", zipf(30, 1.5)),
               "30-level Zipf exponent 1.1 -> 1.5", "strong", 0.178),
        Column("d_bool_subtle", "categorical", boolean(0.30), boolean(0.38),
               "share of True 30% -> 38%", "subtle", 0.072),
    ]  # fmt: skip
    return s + d


# -- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    """Where one size's frames and truth are, and what the truth says."""

    directory: Path
    rows: int
    seed: int
    truth: dict[str, Any]

    @property
    def reference(self) -> Path:
        return self.directory / "reference.parquet"

    @property
    def current(self) -> Path:
        return self.directory / "current.parquet"

    @property
    def drifted(self) -> set[str]:
        return {c["name"] for c in self.truth["columns"] if c["drifted"]}

    @property
    def stable(self) -> set[str]:
        return {c["name"] for c in self.truth["columns"] if not c["drifted"]}


def generate(cache: Path, rows: int, seed: int = DEFAULT_SEED) -> DataSet:
    """The frames for ``rows`` rows, written once per (version, seed, rows) and then reused."""
    directory = cache / f"drift-v{GENERATOR_VERSION}-s{seed}-{rows}"
    truth_file = directory / "truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())
        if truth.get("generator") == GENERATOR_VERSION and (directory / "current.parquet").exists():
            return DataSet(directory, rows, seed, truth)
    directory.mkdir(parents=True, exist_ok=True)
    cols = columns()
    for side_index, side in enumerate(("reference", "current")):
        arrays = {}
        for i, col in enumerate(cols):
            rng = np.random.default_rng([seed, rows, i, side_index])
            arrays[col.name] = (col.reference if side == "reference" else col.current)(rng, rows)
        tmp = directory / f"{side}.parquet.tmp"
        pq.write_table(pa.table(arrays), tmp, compression="zstd", row_group_size=256 * 1024)
        tmp.replace(directory / f"{side}.parquet")
    truth = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "rows": rows,
        "effect": "W1/reference std (numeric), Jensen-Shannon distance base 2 (categorical)",
        "columns": [c.truth() for c in cols],
    }
    tmp = directory / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=1))
    tmp.replace(truth_file)
    return DataSet(directory, rows, seed, truth)


def summary() -> dict[str, Any]:
    cols = columns()
    return {
        "columns": len(cols),
        "numeric": sum(c.kind == "numeric" for c in cols),
        "categorical": sum(c.kind == "categorical" for c in cols),
        "drifted_strong": sum(c.strength == "strong" for c in cols),
        "drifted_subtle": sum(c.strength == "subtle" for c in cols),
        "stable": sum(not c.drifted for c in cols),
    }
