"""The ``scoring:`` section of a bundle: compiled, or refused naming line and field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.rulebook import RuleBook
from engine.scoring.spec import SCORES_MAX, ModelSpec

ONE_US = timedelta(microseconds=1)

BUNDLE = """\
bundle: scores
version: 1
scoring:
  profile: [contract, plan]
  snapshots: 4
  scores:
    churn:
      features: all
      labels: {churned: 1, renewed: 0}
      timeout: {after: 90d, label: 0}
      challenger: forest
    win:
      features: [days_since_last_event, reply_latency_hours, count.*, profile.plan, stage]
      labels:
        deal_won: 1
        deal_lost: 0
      model: {name: logistic_regression, learning_rate: 0.05, l2: 0.001}
      drift: {detector: adwin, delta: 0.01}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(text, "b.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_scoring_section_compiles() -> None:
    bundle = load_bundle(BUNDLE)
    assert bundle.scoring is not None
    assert bundle.scoring.profile == ("contract", "plan")
    assert bundle.scoring.snapshots == 4
    churn = bundle.scoring.score("churn")
    win = bundle.scoring.score("win")
    assert churn is not None and win is not None
    assert churn.labels == {"churned": 1, "renewed": 0}
    assert churn.timeout is not None
    assert churn.timeout.after == timedelta(days=90) // ONE_US
    assert churn.timeout.label == 0
    assert churn.model == ModelSpec()
    assert churn.challenger == ModelSpec(name="forest")
    assert churn.features is None and not churn.families
    assert win.model == ModelSpec(learning_rate=0.05, l2=0.001)
    assert win.drift.delta == 0.01
    assert win.families == frozenset({"count"})
    assert win.features == frozenset(
        {"days_since_last_event", "reply_latency_hours", "profile.plan", "stage"}
    )


def test_a_score_selects_its_features() -> None:
    bundle = load_bundle(BUNDLE)
    assert bundle.scoring is not None
    win = bundle.scoring.score("win")
    assert win is not None
    everything: dict[str, float | str] = {
        "days_since_last_event": 1.0,
        "count.purchase": 2.0,
        "channel.chat": 3.0,
        "profile.plan": "gold",
        "profile.contract": "annual",
        "stage": "won",
    }
    assert win.select(everything) == {
        "days_since_last_event": 1.0,
        "count.purchase": 2.0,
        "profile.plan": "gold",
        "stage": "won",
    }


def test_the_rulebook_holds_the_running_scores() -> None:
    book = RuleBook(load_bundle(BUNDLE))
    assert sorted(book.scores) == ["churn", "win"]
    assert book.scores["win"].labels == {"deal_won": 1, "deal_lost": 0}


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("challenger: forest", "challenger: forrest",
         "b.yaml:11: scoring.scores.churn.challenger: expected one of logistic_regression, "
         "forest, found 'forrest' (did you mean 'forest'?)"),
        ("labels: {churned: 1, renewed: 0}", "labels: {churned: 1, renewed: 2}",
         "b.yaml:9: scoring.scores.churn.labels.renewed: expected the label 1 or 0, found 2"),
        ("timeout: {after: 90d, label: 0}", "timeout: {after: 900d, label: 0}",
         "b.yaml:10: scoring.scores.churn.timeout.after: expected at most 730 days, found '900d'"),
        ("reply_latency_hours", "reply_latency_hour",
         "scoring.scores.win.features: unknown feature 'reply_latency_hour'"),
        ("profile.plan", "profile.seats",
         "scoring.scores.win.features: 'profile.seats' is not declared"),
        ("learning_rate: 0.05", "learning_rate: 5",
         "b.yaml:17: scoring.scores.win.model.learning_rate: expected a number above 0 up to 1, "
         "found 5"),
        ("l2: 0.001", "trees: 3",
         "b.yaml:17: scoring.scores.win.model.trees: is not a setting of logistic_regression"),
        ("snapshots: 4", "snapshots: 400",
         "b.yaml:5: scoring.snapshots: expected a whole number from 1 to 32, found 400"),
        ("delta: 0.01", "delta: 0", "scoring.scores.win.drift.delta: expected a number above 0"),
        ("    win:", "    Win:", "scoring.scores.Win: expected a score name such as lead"),
        ("deal_lost: 0", "deal_lost: 1",
         "b.yaml:14: scoring.scores.win.labels: expected label events giving both 1 and 0"),
        ("{churned: 1, renewed: 0}\n      timeout: {after: 90d, label: 0}",
         "{churned: 1}\n      timeout: {after: 90d, label: 1}",
         "b.yaml:10: scoring.scores.churn.timeout.label: expected the label the events do not "
         "give, found 1"),
        ("      drift:", "      drifts:", "scoring.scores.win.drifts: unknown field"),
    ],
)  # fmt: skip
def test_a_wrong_scoring_section_is_refused_naming_line_and_field(
    replace: str, by: str, expected: str
) -> None:
    text = BUNDLE.replace(replace, by)
    assert text != BUNDLE
    found = problems(text)
    assert any(expected in p for p in found), found


def test_every_wrong_score_is_named_at_once() -> None:
    text = BUNDLE.replace("challenger: forest", "challenger: svm").replace(
        "deal_lost: 0", "deal_lost: yes"
    )
    found = problems(text)
    assert any("scoring.scores.churn.challenger" in p for p in found), found
    assert any("scoring.scores.win.labels.deal_lost" in p for p in found), found


def test_too_many_scores_are_refused() -> None:
    scores = "".join(
        f"    s{i}:\n      labels: {{won: 1, lost: 0}}\n" for i in range(SCORES_MAX + 1)
    )
    text = f"bundle: many\nversion: 1\nscoring:\n  scores:\n{scores}"
    found = problems(text)
    assert any(f"expected at most {SCORES_MAX} scores" in p for p in found), found


def test_a_score_name_two_bundles_declare_is_taken_from_the_first_by_name() -> None:
    other = BUNDLE.replace("bundle: scores", "bundle: zzz-scores").replace(
        "churned: 1, renewed: 0", "cancelled: 1, renewed: 0"
    )
    book = RuleBook(load_bundle(other), load_bundle(BUNDLE))
    assert book.scores["churn"].labels == {"churned": 1, "renewed": 0}
