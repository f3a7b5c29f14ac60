"""The quickstart: train real scikit-learn models on a simulated credit-risk book, tracked and
governed.

It is what ``python3 dev.py demo`` runs today: two models, each a run with its parameters, its
per-iteration learning curve, the exact data it saw (by content digest), its evaluation metrics,
resource usage, environment and the model itself (in the safe skops format). Both are registered;
a gate policy (AUC floor, fairness across a sensitive attribute the models never see, latency,
size) judges them on a holdout set; the data scientist asks for the ``champion`` alias, a risk
officer approves, and the promotion lands in the hash-chained audit trail and a model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from loopwright.client import Client
from loopwright.config import Settings

FEATURES = [
    "age",
    "income",
    "debt_ratio",
    "credit_lines",
    "delinquencies",
    "employment_years",
    "utilization",
    "home_ownership",
    "purpose",
]


def credit_book(n: int, seed: int) -> pd.DataFrame:
    """Applicants with a default label from a known, non-linear risk function (deterministic):
    the day-0 population of :mod:`loopwright.demo.scenario`, before anything drifts."""
    from loopwright.demo.scenario import applicants

    return applicants(n, 0, seed)


@dataclass(frozen=True)
class Result:
    run_id: str
    name: str
    auc: float


def _pipeline(kind: str, seed: int):  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = FEATURES[:7]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["home_ownership", "purpose"]),
        ]
    )
    if kind == "logistic":
        model = LogisticRegression(C=0.5, max_iter=500)
    else:
        model = HistGradientBoostingClassifier(
            max_iter=120,
            learning_rate=0.1,
            max_leaf_nodes=15,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=15,
            random_state=seed,
        )
    return Pipeline([("prep", prep), ("model", model)])


def train_one(
    client: Client, kind: str, train: pd.DataFrame, valid: pd.DataFrame, seed: int, experiment: str
) -> Result:
    """One tracked training run: the pattern a data scientist would write."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    pipe = _pipeline(kind, seed)
    with client.start_run(experiment, run_name=kind, tags={"team": "risk"}) as run:
        run.log_params({"model": kind, "seed": seed, "rows": len(train)})
        run.log_params(
            {
                k: v
                for k, v in pipe.named_steps["model"].get_params().items()
                if isinstance(v, int | float | str | bool)
            }
        )
        run.log_dataset(train, name="credit-train", context="train")
        run.log_dataset(valid, name="credit-valid", context="validation")
        pipe.fit(train[FEATURES], train["default"])
        model = pipe.named_steps["model"]
        for step, (tr, va) in enumerate(
            zip(
                getattr(model, "train_score_", []),
                getattr(model, "validation_score_", []),
                strict=False,
            )
        ):
            run.log_metrics({"train_loss": -tr, "early_stop_loss": -va}, step=step)
        proba = pipe.predict_proba(valid[FEATURES])[:, 1]
        auc = float(roc_auc_score(valid["default"], proba))
        run.log_metrics(
            {
                "val_auc": auc,
                "val_accuracy": float(accuracy_score(valid["default"], proba > 0.5)),
                "val_log_loss": float(log_loss(valid["default"], proba)),
            }
        )
        run.log_model(pipe, "model", input_example=train[FEATURES].head(20))
    return Result(run.id, kind, auc)


def run(
    settings: Settings | None = None,
    experiment: str = "quickstart",
    rows: int = 20_000,
    seed: int = 7,
    console: Console | None = None,
) -> list[Result]:
    console = console or Console()
    client = Client(settings=settings or Settings.from_env())
    book = credit_book(rows, seed)
    cut = int(rows * 0.8)
    train, valid = book.iloc[:cut], book.iloc[cut:]
    console.print(f"[bold]loopwright quickstart[/] — tracking into {client!r}")
    results = []
    for kind in ("logistic", "gbm"):
        with console.status(f"training {kind} on {len(train):,} applicants..."):
            results.append(train_one(client, kind, train, valid, seed, experiment))
        console.print(f"  [green]✓[/] {kind}: validation AUC {results[-1].auc:.4f}")
    _summary(console, client, experiment, results)
    govern(client, results, valid, console)
    _hints(console, client, experiment, results)
    return results


POLICY = """
dataset: credit-holdout
target: default
thresholds:
  roc_auc: {min: 0.65}
no_regression: {metric: roc_auc, tolerance: 0.01}
fairness:
  attribute: sex
  demographic_parity_difference: {max: 0.1}
  group_metric_floor: {metric: accuracy, min: 0.6}
latency_p95_ms: 250
max_size_mb: 50
protected_aliases: [champion]
required_approvals: 1
"""


def govern(client: Client, results: list[Result], holdout: pd.DataFrame, console: Console,
           model: str = "credit-risk") -> None:  # fmt: skip
    """Register both runs, judge them by the policy, and promote the best through an approval."""
    import dataclasses

    from loopwright.governance.model_card import model_card

    registry = client.registry
    versions = [registry.register(model, r.run_id, description=f"{r.name} credit-default model")
                for r in results]  # fmt: skip
    registry.register_dataset(holdout, "credit-holdout")
    registry.set_policy(model, POLICY, reason="credit policy CP-7")
    for mv in versions:
        ev = registry.evaluate(mv.uri)
        verdict = "[green]passed[/]" if ev.passed else "[red]failed[/]"
        console.print(f"  gates on {mv.uri}: {verdict}")
    best = max(zip(versions, results, strict=True), key=lambda p: p[1].auc)[0]
    alice = Client(settings=dataclasses.replace(client.settings, user="alice"))
    bob = Client(settings=dataclasses.replace(client.settings, user="bob"))
    request = alice.registry.request_alias(model, "champion", best.version, "best holdout AUC")
    bob.registry.decide(request.id, "APPROVE", "fairness and AUC reviewed")
    alice.registry.set_alias(model, "champion", best.version, reason="first release")
    card = Path(client.tracking_uri if "://" not in client.tracking_uri else ".") / "cards"
    card.mkdir(parents=True, exist_ok=True)
    path = card / f"{model}-v{best.version}.html"
    path.write_text(model_card(client, f"{model}@champion", "html"), encoding="utf-8")
    audit = registry.verify_audit()
    console.print(
        f"  [green]✓[/] {model}@champion -> version {best.version} (requested by alice, "
        f"approved by bob); audit chain {'intact' if audit.ok else 'BROKEN'} "
        f"({audit.checked} events)\n  model card: {path}",
        soft_wrap=True,
    )


def _summary(console: Console, client: Client, experiment: str, results: list[Result]) -> None:
    page = client.search_runs(
        experiment, "metrics.val_auc > 0.5", order_by="metrics.val_auc DESC", max_results=5
    )
    table = Table(title=f"best runs in experiment {experiment!r}")
    for col in ("run", "name", "val_auc", "val_log_loss", "peak MB", "wall s"):
        table.add_column(col)
    for r in page.items:
        m = r.metrics
        table.add_row(
            r.id,
            r.name,
            f"{m.get('val_auc', float('nan')):.4f}",
            f"{m.get('val_log_loss', float('nan')):.4f}",
            f"{m.get('system.peak_memory_mb', 0):.0f}",
            f"{m.get('system.wall_time_s', 0):.2f}",
        )
    console.print(table)


def _hints(console: Console, client: Client, experiment: str, results: list[Result]) -> None:
    uri = client.settings.tracking_uri or ".loopwright"
    a, b = results[0].run_id, results[1].run_id
    lw = f"loopwright --tracking-uri {uri}"
    console.print(
        "\n[bold]Where to look[/]\n"
        f"  {lw} runs list --experiment {experiment}\n"
        f"  {lw} runs compare {a} {b}\n"
        f'  {lw} runs list --filter "metrics.val_auc > 0.7" --order-by "metrics.val_auc DESC"\n'
        f"  {lw} models show credit-risk\n"
        f"  {lw} lineage credit-risk@champion\n"
        f"  {lw} models card credit-risk@champion --format md\n"
        f"  {lw} audit verify\n"
        f"  loopwright server --store-uri sqlite:///{uri}/loopwright.db "
        f"--artifacts-uri {uri}/artifacts   # then http://127.0.0.1:5000/docs",
        soft_wrap=True,
    )
