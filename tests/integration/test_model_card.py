"""Model cards for a real trained, evaluated and approved version, in Markdown and HTML."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_lineage import Trained, churn_frame, fit, make_repo, train_and_register

from loopwright import Client, Settings
from loopwright.cli.lineage import card_command
from loopwright.errors import InvalidInput
from loopwright.governance.audit import acting_as
from loopwright.governance.model_card import model_card
from loopwright.registry.entities import Evaluation

POLICY = {
    "dataset": "churn-holdout",
    "target": "churned",
    "task": "classification",
    "thresholds": {"accuracy": {"min": 0.5}},
    "fairness": {
        "attribute": "region",
        "demographic_parity_difference": {"max": 0.9},
        "min_group_size": 10,
    },
    "protected_aliases": ["champion"],
    "required_approvals": 1,
}


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trained]:
    repo = tmp_path / "repo"
    make_repo(repo)
    monkeypatch.chdir(repo)
    client = Client(str(tmp_path / "store"), settings=Settings(capture_environment=True))
    with acting_as("alice"):
        yield train_and_register(client, repo)
    client.close()


def evaluate(trained: Trained) -> Evaluation:
    """Evaluate churn/1 on held-out data under ``POLICY``.

    ``registry.evaluate`` loads the version through ``loopwright.registry.model``; until that
    module exists, the same report is computed by the gates module on the trained estimator and
    stored exactly as the service stores it.
    """
    holdout = churn_frame(7)
    registry = trained.client.registry
    if importlib.util.find_spec("loopwright.registry.model") is not None:
        return registry.evaluate("churn/1", holdout)
    from loopwright.data.datasets import describe_dataset
    from loopwright.governance.gates import GatePolicy
    from loopwright.governance.gates import evaluate as run_gates
    from loopwright.registry.service import policy_digest

    policy = GatePolicy.from_dict(POLICY)
    report = run_gates(policy, fit(trained.train), holdout).to_dict()
    report["policy_digest"] = policy_digest(policy.model_dump(mode="json"))
    return registry.store.add_evaluation(
        "churn", 1, dataset_name=policy.dataset,
        dataset_digest=describe_dataset(holdout, policy.dataset).digest,
        champion_version=None, passed=bool(report["passed"]), report=report,
    )  # fmt: skip


def promote_with_approval(trained: Trained) -> None:
    """alice asks, bob approves, alice moves ``champion`` (gates passed, approval granted)."""
    registry = trained.client.registry
    request = registry.request_alias("churn", "champion", 1, comment="ready for release")
    with acting_as("bob"):
        registry.decide(request.id, "APPROVE", comment="metrics and fairness look fine")
    registry.set_alias("churn", "champion", 1, reason="quarterly release")


def test_markdown_card_names_model_data_metrics_and_lineage(trained: Trained) -> None:
    mv = trained.client.registry.get_version("churn", 1)
    run = trained.client.get_run(trained.run_id)
    card = model_card(trained.client, "churn/1")
    assert card.startswith("# Model card: churn/1")
    for expected in (
        mv.digest, trained.digest, trained.commit, run.tags["lw.env_digest"],
        "ranks customers by churn risk", "| accuracy | 0.91 |", "churn-train",
        "a: float64, b: float64, region: str, churned: int64", trained.run_id,
        trained.parent_id, "sklearn", "alice",
    ):  # fmt: skip
        assert expected in card, expected
    assert "has not been evaluated" in card and "No approval was requested" in card


def test_card_reports_gates_fairness_approvals_and_aliases(trained: Trained) -> None:
    trained.client.registry.set_policy("churn", POLICY, reason="release policy")
    evaluation = evaluate(trained)
    assert evaluation.passed, evaluation.report["checks"]
    promote_with_approval(trained)
    card = model_card(trained.client, "churn@champion")

    checks = {c["name"]: c for c in evaluation.report["checks"]}
    assert any(name.startswith("fairness:demographic_parity_difference") for name in checks)
    for name, check in checks.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
        assert "| PASS |" in row and f"{check['bound']:.6g}" in row
    assert "Fairness by region" in card and "| north | 60 |" in card
    assert evaluation.id in card and evaluation.dataset_digest in card
    decision = next(line for line in card.splitlines() if "| bob |" in line)
    assert "APPROVE" in decision and "metrics and fairness look fine" in decision
    assert re.search(r"\| @champion \| APPLIED \| alice \|", card)
    assert "@champion" in card.split("## Training data")[0]  # the overview lists the alias


def test_html_card_is_self_contained_and_escapes_everything(trained: Trained) -> None:
    hostile = "<script>alert('x')</script> & <b>bold</b>"
    trained.client.registry.update_model("churn", description=hostile)
    with trained.client.start_run("churn-exp", run_name="<img src=x>") as run:
        run.log_model(fit(trained.train))
    mv = trained.client.registry.register("churn", run.id, description=hostile)
    page = model_card(trained.client, mv.uri, format="html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;img src=x&gt;" in page
    assert not re.search(r"<[^>]*\s(src|href)\s*=|<link|@import|url\(", page)  # no assets
    markdown = model_card(trained.client, mv.uri)
    assert r"\<script>alert" in markdown and not re.search(r"(?<!\\)<(script|/script|b)", markdown)


def test_unknown_format_is_refused(trained: Trained) -> None:
    with pytest.raises(InvalidInput) as caught:
        model_card(trained.client, "churn/1", format="pdf")
    assert caught.value.field == "format"


def test_card_command_writes_the_file(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "card.html"
    text = card_command(trained.client.settings, "churn/1", "html", out)
    assert out.read_text(encoding="utf-8") == text and "<h1>Model card: churn/1</h1>" in text
