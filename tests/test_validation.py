"""Validation costs one forward pass per set; cadence option; the ledger times training alone."""

import json
from collections import Counter

import numpy as np
import pytest

from mtpeft.config import resolve_config
from mtpeft.evaluation.evaluate import output_spread, validate_sets
from mtpeft.recipes import train
from mtpeft.tasks.base import EvalSet
from mtpeft.tasks.binary import BinaryTask
from mtpeft.tasks.defect import DefectTask
from mtpeft.tasks.search import SearchTask
from mtpeft.training.loop import collapsed_heads
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture()
def count_outputs(monkeypatch):
    """Counts the model passes over each evaluation set (every task's ``outputs`` call)."""
    calls: Counter = Counter()
    for cls in (BinaryTask, SearchTask):
        original = cls.outputs

        def counted(self, model, evalset, ctx, _original=original):
            calls[evalset.name] += 1
            return _original(self, model, evalset, ctx)

        monkeypatch.setattr(cls, "outputs", counted)
    return calls


def test_each_validation_set_is_encoded_once_per_validation_and_never_after_training(tmp_path, task_files, count_outputs):
    config = resolve_config(tiny_config(task_files, tmp_path / "run"))  # 2 epochs: 2 validations
    result = train(config)
    valid_sets = {"defect", "clone", "search", "flaky"}
    test_sets = {"defect", "clone", "search", "search/cosqa", "flaky"}
    # validation: 2 passes per valid set (one per epoch); test: 1 pass per test set, after the reload
    assert count_outputs == Counter({name: 2 for name in valid_sets}) + Counter(test_sets)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = [r for r in history if r["best"]][-1]  # the last validation that improved the score
    assert result["metrics"]["valid"] == best["valid"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["valid"] == best["valid"]


def test_validate_every_sets_the_cadence_and_the_final_model_is_always_validated(tmp_path, task_files):
    config = resolve_config(tiny_config(task_files, tmp_path / "run", validate_every=4))  # 2 x 3 steps
    train(config)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["step"] for r in history] == [4, 6]
    assert [r["epoch"] for r in history] == [2, 2]


def test_ledger_reports_training_alone_validation_time_and_memory_per_phase(tmp_path, task_files):
    train(resolve_config(tiny_config(task_files, tmp_path / "run")))
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text())
    wall = ledger["wall_seconds"]
    assert 0 < ledger["validation_seconds"] == wall["validate"] < wall["train_and_validate"]
    assert "save_last" not in wall  # no resumable checkpoint unless asked for
    assert ledger["train_seconds"] == pytest.approx(wall["train_and_validate"] - wall["validate"], abs=2e-3)
    assert ledger["train_tokens_per_second"] == pytest.approx(ledger["train_tokens"] / ledger["train_seconds"], rel=1e-2)
    for phase in ("load_data", "load_model", "validate", "train_and_validate", "evaluate_test"):
        memory = ledger["memory_by_phase"][phase]
        assert 0 < memory["rss_mb"] <= memory["peak_rss_mb_so_far"] <= ledger["peak_rss_mb"]
    assert ledger["validations"] == 2


def test_tuning_and_scoring_share_one_pass_and_tune_before_scoring():
    """validate_sets tunes the threshold on the primary set's outputs, then scores every set from
    the same outputs with the tuned threshold."""

    class Fixed(DefectTask):
        def outputs(self, model, evalset, ctx):
            return np.array([e[1] for e in evalset.data])

        def score_from(self, evalset, outputs):
            labels = np.array([e[0] for e in evalset.data])
            return self.score(labels, self.decide(outputs))

        def tune_from(self, evalset, outputs):
            self.tuned_on = evalset.name
            self.threshold = 0.7

    task = Fixed()
    primary = EvalSet("defect", [(1, 0.8), (0, 0.6), (1, 0.9), (0, 0.1)])
    extra = EvalSet("defect/other", [(0, 0.65), (1, 0.75)])
    metrics = validate_sets(None, {"defect": task}, {"defect": [extra, primary]}, None)
    assert task.tuned_on == "defect"
    assert metrics["defect"]["accuracy"] == 1.0 and metrics["defect/other"]["accuracy"] == 1.0  # 0.5 would miss 0.6 and 0.65


def test_a_head_that_answers_one_probability_is_flagged_as_collapsed() -> None:
    # the collapsed lr-1e-3 defect run answered 0.4533-0.4536; a learning head spreads ~0.1
    rng = np.random.default_rng(0)
    spreads = {"defect": output_spread(0.4534 + rng.normal(0, 8e-5, 300)),
               "flaky": output_spread(rng.uniform(0.0, 0.6, 300))}
    assert collapsed_heads(spreads) == ["defect"]
    assert output_spread(np.zeros((4, 8))) is None  # search embeddings are not one score per example
