"""Issue 9, item 20: a fifth task is one file. This one (a 3-class label over a function, scored by
an error rate, lower is better) is defined only here and goes through train, evaluate, predict and
report without any other module knowing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtpeft.cli import main
from mtpeft.data import SkipCounter, pick_text, read_records
from mtpeft.data.fields import record_id
from mtpeft.tasks import TASKS, EvalContext, EvalSet, Task, register_task
from mtpeft.tasks.base import pooled_states
from mtpeft.tasks.encoding import encode_texts
from tests.conftest import tiny_task_files, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class KindTask(Task):
    """Which of three kinds a function is (0 string, 1 arithmetic, 2 io); error rate (lower is better)."""

    name = "kind"
    metric = "error_rate"
    higher_is_better = False
    description = "function kind (3 classes); error rate"

    def parse(self, record: Any, require_label: bool = True) -> tuple[str, str, int | None]:
        label = record.data.get("kind")
        if require_label and label not in (0, 1, 2):
            raise record.error(f"kind must be 0, 1 or 2, got {label!r}")
        return record_id(record), pick_text(record, ("code",)), label

    def read_train(self, source: Any, skips: SkipCounter) -> list[Any]:
        return list(read_records(source, skips, self.parse))

    def read_eval(self, name: str, source: Any, skips: SkipCounter, limit: int | None, seed: int) -> EvalSet:
        return self.cap(EvalSet(name, self.read_train(source, skips)), limit, seed, "test")

    def text_length(self, example: Any) -> int:
        return len(example[1])

    def make_head(self, hidden_size: int) -> nn.Module:
        return nn.Linear(hidden_size, 3)

    def collate(self, examples: Sequence[Any], tokenizer: Any, max_len: int) -> dict[str, Any]:
        return {"inputs": encode_texts([e[1] for e in examples], tokenizer, self.encoding(max_len)),
                "labels": torch.tensor([e[2] for e in examples])}

    def loss(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(model.heads[self.name](model.encode(batch["inputs"])).float(), batch["labels"])

    def outputs(self, model: Any, evalset: EvalSet, ctx: EvalContext) -> np.ndarray:
        states = pooled_states(model, [e[1] for e in evalset.data], ctx, self.encoding(ctx.max_len), "kind")
        with torch.no_grad():
            return model.heads[self.name](states).argmax(-1).numpy()

    def score_from(self, evalset: EvalSet, outputs: np.ndarray) -> dict[str, float]:
        return {"error_rate": float(np.mean(outputs != np.array([e[2] for e in evalset.data])))}

    def trivial_metrics(self, evalset: EvalSet) -> dict[str, float]:
        labels = np.array([e[2] for e in evalset.data])
        return {"error_rate": float(np.mean(labels != np.bincount(labels).argmax()))}

    def read_predict(self, path: Path, skips: SkipCounter, options: dict[str, Any]) -> list[Any]:
        return list(read_records(path, skips, lambda r: self.parse(r, require_label=False)))

    def predict_rows(self, model: Any, inputs: Any, ctx: EvalContext, top_k: int = 100) -> list[dict[str, Any]]:
        kinds = self.outputs(model, EvalSet(self.name, inputs), ctx)
        return [{"idx": e[0], "kind": int(k)} for e, k in zip(inputs, kinds)]

    def codexglue_line(self, row: dict[str, Any]) -> str:
        return f"{row['idx']}\t{row['kind']}"


@pytest.fixture()
def kind_task():
    register_task("kind")(KindTask)
    yield KindTask
    TASKS._items.pop("kind")


def kind_files(root: Path) -> dict[str, str]:
    snippets = ["s = name.upper() + suffix", "x = a * b + c", "f = open(path).read()"]
    rows = [{"idx": f"k{i}", "code": f"{snippets[i % 3]}  # {i}", "kind": i % 3} for i in range(30)]
    return {split: str(write_jsonl(root / f"kind_{split}.jsonl", part))
            for split, part in (("train", rows), ("valid", rows[:9]), ("test", rows[9:21]))}


def test_a_task_defined_in_one_file_trains_evaluates_predicts_and_reports(kind_task, tmp_path, capsys):
    files = {"kind": kind_files(tmp_path / "data"), "defect": tiny_task_files(tmp_path / "data")["defect"]}
    config = {"backbone": {"name": "tiny-bert", "max_len": 32}, "method": {"name": "lora", "r": 4},
              "tasks": files, "training": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "progress": False, "bf16": False},
              "output_dir": str(tmp_path / "run")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "error_rate" in out  # the terminal table shows the new task's metric
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["kind"]["error_rate"] <= 1
    assert json.loads((run / "trivial_baselines.json").read_text())["test"]["kind"]["error_rate"] == pytest.approx(8 / 12)
    assert json.loads((run / "data_report.json").read_text())["sizes"]["kind"] == {"train": 30, "valid": {"kind": 9}, "test": {"kind": 12}}

    assert main(["evaluate", str(run), "-o", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["test"] == metrics["test"]
    capsys.readouterr()

    assert main(["predict", str(run), files["kind"]["test"], "--task", "kind"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12 and all(r[1] in ("0", "1", "2") for r in rows)

    assert main(["report", str(run)]) == 0
    table = capsys.readouterr().out
    assert "kind error_rate" in table and "defect accuracy" in table


def test_selection_prefers_a_lower_error_rate(kind_task):
    from mtpeft.evaluation.evaluate import selection_score

    tasks = {"kind": KindTask()}
    assert selection_score(tasks, {"kind": {"error_rate": 0.2}}) > selection_score(tasks, {"kind": {"error_rate": 0.5}})
