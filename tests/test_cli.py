"""The whole CLI path on tiny in-process models: train -> metrics/ledger -> evaluate -> predict."""

import json
from pathlib import Path

import pytest
import yaml

from mtpeft.cli import main
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def write_config(tmp_path: Path, task_files: dict, **kw) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "run", **kw)))
    return path


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-llama"])
def test_train_evaluate_predict(tmp_path, task_files, capsys, backbone):
    config = write_config(tmp_path, task_files, backbone=backbone)
    assert main(["train", "--config", str(config), "--set", "training.weighting=uncertainty"]) == 0
    out = capsys.readouterr().out
    assert "test   search/cosqa" in out and "trainable" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test", "decisions"}
    assert metrics["decisions"]["flaky"]["threshold_tuned_on"] == "valid"
    assert set(metrics["test"]) == {"defect", "clone", "search", "search/cosqa", "flaky"}
    assert set(metrics["test"]["defect"]) >= {"accuracy"} and set(metrics["test"]["clone"]) == {"f1", "precision", "recall"}
    assert set(metrics["test"]["search"]) == {"mrr"} and 0 < metrics["test"]["search"]["mrr"] <= 1
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["parameters"]["trainable"] < ledger["parameters"]["total"]
    assert ledger["adapter_bytes"] > 0 and ledger["train_tokens"] > 0 and ledger["steps"] == 6
    assert (run / "checkpoint" / "adapter" / "adapter_config.json").exists()
    assert (run / "checkpoint" / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "checkpoint" / "heads.safetensors").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["weighting"] == "uncertainty"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "## Metrics" in (run / "README.md").read_text()
    assert (run / "learning_curve.png").stat().st_size > 5000
    history = json.loads((run / "history.json").read_text())
    assert [r["examples_seen"]["defect"] for r in history] == [12, 24]  # 3 steps x batch 4 per epoch

    # evaluate reloads the run from disk and reproduces the test metrics exactly
    assert main(["evaluate", str(run), "--output", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == metrics

    # predict writes CodeXGLUE-format files
    unlabeled = tmp_path / "functions.jsonl"  # prediction inputs need no label
    unlabeled.write_text("".join(json.dumps({"idx": r["idx"], "func": r["func"]}) + "\n" for r in map(json.loads, Path(task_files["defect"]["test"]).read_text().splitlines())))
    assert main(["predict", str(run), "--task", "defect", str(unlabeled), "-o", str(tmp_path / "d.txt")]) == 0
    rows = [line.split("\t") for line in (tmp_path / "d.txt").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r) == 2 and r[1] in ("0", "1") for r in rows)
    assert main(["predict", str(run), "--task", "clone", task_files["clone"]["test"], "-o", str(tmp_path / "c.txt"),
                 "--functions", task_files["clone"]["options"]["functions"]]) == 0
    rows = [line.split("\t") for line in (tmp_path / "c.txt").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r) == 3 and r[2] in ("0", "1") for r in rows)
    assert main(["predict", str(run), "--task", "search", task_files["search"]["test"], "-o", str(tmp_path / "s.jsonl")]) == 0
    answers = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(answers) == 10 and all(sorted(a["answers"]) == sorted(str(i) for i in range(10)) for a in answers)


def test_predictions_survive_save_and_load(tmp_path, task_files):
    """The in-memory model after training and the reloaded one predict identically."""
    from mtpeft.config import resolve_config
    from mtpeft.recipes import build_tasks, load_data, load_run
    from mtpeft.model.build import build_model
    from mtpeft.tasks import EvalContext
    from mtpeft.training.checkpoint import save_checkpoint
    from mtpeft.training.weightings import build_weighting
    import torch

    config = resolve_config(tiny_config(task_files, tmp_path / "run"))
    tasks = build_tasks(config)
    data, _ = load_data(config, tasks, with_train=False)
    model, method = build_model(config, tasks)
    with torch.no_grad():  # move away from the identity init so the check means something
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    from mtpeft.config import save_config
    (tmp_path / "run").mkdir()
    save_config(config, tmp_path / "run" / "config.yaml")
    save_checkpoint(tmp_path / "run", model, method, {"loss_weighting": build_weighting("learned_softmax", list(tasks))}, {"tasks": {}})
    _, tasks2, reloaded = load_run(tmp_path / "run")
    model.eval()
    ctx = EvalContext(model.backbone.tokenizer, 48, 4, False, False)
    examples = data["defect"].test[0].data
    before = tasks["defect"].probabilities(model, examples, ctx, "x")
    after = tasks2["defect"].probabilities(reloaded, examples, ctx, "x")
    assert before.tolist() == after.tolist()
    assert len(set(before.round(6))) > 1


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, task_files, monkeypatch):
    from mtpeft.config import resolve_config
    from mtpeft.recipes import build_tasks
    from mtpeft.model.build import build_model
    from mtpeft.training import checkpoint

    config = resolve_config(tiny_config(task_files, tmp_path / "run"))
    tasks = build_tasks(config)
    model, method = build_model(config, tasks)
    checkpoint.save_checkpoint(tmp_path, model, method, {}, {"epoch": 1})
    monkeypatch.setattr(checkpoint, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path, model, method, {}, {"epoch": 2})
    assert checkpoint.load_state(checkpoint.checkpoint_dir(tmp_path))["epoch"] == 1
    assert not list(tmp_path.glob(".checkpoint.tmp-*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "dora"], "unknown method 'dora'; valid methods: "),
        (["--backbone", "nosuchmodel"], "unknown backbone 'nosuchmodel'; valid names: default, minilm, smollm2"),
        (["--tasks", "vuln"], "task(s) vuln not in the config"),
        (["--set", "training.sampler=random"], "unknown sampler 'random'; valid samplers"),
    ],
)
def test_bad_names_list_the_valid_ones(tmp_path, task_files, capsys, args, message):
    config = write_config(tmp_path, task_files)
    assert main(["train", "--config", str(config), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_data_line_is_one_clear_error_or_a_counted_skip(tmp_path, task_files, capsys):
    bad = Path(task_files["flaky"]["train"])
    bad.write_text(bad.read_text() + '{"full_code": "@Test void t() {}", "flaky": "maybe"}\n')
    n_lines = len(bad.read_text().splitlines())
    config = write_config(tmp_path, task_files)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"flaky.jsonl:{n_lines}: label 'flaky' must be 0 or 1, got 'maybe'" in err
    assert main(["train", "--config", str(config), "--skip-bad-records", "--set", "training.epochs=1"]) == 0
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["skipped"] == {str(bad): 1}
    assert json.loads((tmp_path / "run" / "ledger.json").read_text())["skipped_records"] == 1
