"""Issue 9, reliability: run folders, hangs, damaged checkpoints, typed config, seeds, durability."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

from mtpeft.cli import main
from tests.conftest import tiny_config, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def write_config(tmp_path: Path, task_files: dict, name: str = "run.yaml", **kw) -> Path:
    path = tmp_path / name
    data = tiny_config(task_files, tmp_path / "run", **kw)
    data["training"] |= {"epochs": 1, "steps_per_epoch": 2}
    path.write_text(yaml.safe_dump(data))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mtpeft: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One trained tiny run (two tasks) shared by the run-folder tests; copied before damaging."""
    from tests.conftest import tiny_task_files

    root = tmp_path_factory.mktemp("trained")
    files = tiny_task_files(root / "data")
    files = {k: files[k] for k in ("clone", "defect")}
    config = root / "run.yaml"
    data = tiny_config(files, root / "run", bf16=False)
    data["training"] |= {"epochs": 1, "steps_per_epoch": 2}
    config.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(config)]) == 0
    return root / "run", config


def copy_run(trained_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    return run


# ---- item 1: a second run into the same folder ----------------------------------------------------
def test_a_non_empty_output_folder_is_refused_without_overwrite(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    before = (run / "checkpoint" / "heads.safetensors").read_bytes()
    config = trained_run[1]
    assert main(["train", "--config", str(config), "--output", str(run), "--pooling", "cls"]) == 2
    line = one_line_error(capsys)
    assert "not empty" in line and "--overwrite" in line
    assert (run / "checkpoint" / "heads.safetensors").read_bytes() == before
    assert yaml.safe_load((run / "config.yaml").read_text())["backbone"]["pooling"] == "mean"
    # --overwrite replaces the run (and nothing of the old one is left beside the new)
    (run / "metrics.json").unlink()
    assert main(["train", "--config", str(config), "--output", str(run), "--pooling", "cls", "--overwrite"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["backbone"]["pooling"] == "cls"
    assert (run / "metrics.json").exists()


def test_evaluate_reads_the_config_saved_inside_the_checkpoint(trained_run, tmp_path, capsys):
    """A config.yaml changed (or replaced by a failed rerun) beside the weights does not change them."""
    run = copy_run(trained_run, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["backbone"]["pooling"] = "cls"
    config["tasks"].pop("defect")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(run), "-o", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["config"]["backbone"]["pooling"] == "mean"


def test_evaluate_can_score_validation_alone(trained_run, tmp_path, capsys, monkeypatch):
    """`mtpeft evaluate RUN --split valid` rescores the validation sets and never the test sets."""
    from mtpeft import recipes

    run = copy_run(trained_run, tmp_path)
    scored = []
    real = recipes.evaluate_sets
    monkeypatch.setattr(recipes, "evaluate_sets", lambda model, tasks, sets, ctx: scored.append(sets) or real(model, tasks, sets, ctx))
    assert main(["evaluate", str(run), "--split", "valid", "-o", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "test" not in metrics and metrics["valid"] == json.loads((run / "metrics.json").read_text())["valid"]
    assert len(scored) == 1


def test_a_failed_run_leaves_an_empty_folder_reusable(tmp_path, task_files, capsys):
    config = write_config(tmp_path, task_files)
    Path(task_files["flaky"]["train"]).unlink()
    assert main(["train", "--config", str(config)]) == 2
    assert "file not found" in one_line_error(capsys)
    assert not any((tmp_path / "run").iterdir())


# ---- item 2: hangs ------------------------------------------------------------------------------
class Hang(Exception):
    pass


@pytest.fixture()
def alarm():
    """Turns a hang into a test failure after a few seconds."""
    def ring(*_):
        raise Hang("timed out")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_zero_training_examples_is_an_error_not_a_hang(tmp_path, task_files, capsys, alarm):
    config = write_config(tmp_path, task_files)
    assert main(["train", "--config", str(config), "--max-train-per-task", "0"]) == 2
    assert "max_train_per_task" in one_line_error(capsys)


def test_a_single_search_pair_is_an_error_not_a_hang(tmp_path, task_files, capsys, alarm):
    single = write_jsonl(tmp_path / "one.jsonl", [{"idx": 1, "query": "add one", "code": "def f(x): return x + 1"}])
    files = {"search": task_files["search"] | {"train": str(single)}}
    config = write_config(tmp_path, files)
    assert main(["train", "--config", str(config)]) == 2
    assert "no training examples left" in one_line_error(capsys)


def test_bucketed_batches_refuse_an_empty_set():
    from mtpeft.errors import MtpeftError
    from mtpeft.training.batching import BucketedBatches

    with pytest.raises(MtpeftError, match="0 training examples"):
        BucketedBatches([], 4, len, 0)


# ---- item 3: damaged checkpoints ---------------------------------------------------------------------
def truncate_heads(run: Path) -> None:
    heads = run / "checkpoint" / "heads.safetensors"
    heads.write_bytes(heads.read_bytes()[:100])


def remove_adapter(run: Path) -> None:
    shutil.rmtree(run / "checkpoint" / "adapter")


def heads_of_other_shapes(run: Path) -> None:
    state_file = run / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["tasks"]["clone"]["options"]["pair_encoding"] = "joint"  # another head shape
    state_file.write_text(json.dumps(state))


def heads_of_other_tasks(run: Path) -> None:
    state_file = run / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["tasks"]["flaky"] = state["config"]["tasks"]["defect"]
    state_file.write_text(json.dumps(state))


@pytest.mark.parametrize("damage", [truncate_heads, remove_adapter, heads_of_other_shapes, heads_of_other_tasks])
def test_a_damaged_checkpoint_is_one_line_naming_the_run(trained_run, tmp_path, capsys, damage):
    run = copy_run(trained_run, tmp_path)
    damage(run)
    assert main(["evaluate", str(run)]) == 2
    line = one_line_error(capsys)
    assert str(run) in line and "checkpoint" in line


# ---- item 4: typed, range-checked config ------------------------------------------------------------
def test_a_float_written_without_a_dot_is_read_as_a_number():
    from mtpeft.config import resolve_config

    assert resolve_config({}, [("training.lr", "1e-4")]).training.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "training.epochs=two"], "training.epochs must be an integer, got 'two'"),
        (["--set", "training.batch_size=0"], "training.batch_size must be in [1, inf), got 0"),
        (["--max-valid-per-task", "0"], "training.max_valid_per_task must be in [1, inf), got 0"),
        (["--set", "tasks.defect.options.threshold=auto"], "option threshold must be a probability in [0, 1] or 'tune'"),
        (["--set", "method.rank=4"], "method 'lora': unknown option(s) rank; valid options: r, alpha, dropout, target"),
        (["--set", "tasks.clone.options.functionz=x"], "task 'clone': unknown option(s) functionz; valid options: "),
        (["--set", "method.r=many"], "method 'lora': option 'r' must be an integer, got 'many'"),
        (["--set", "training.warmup=2"], "training.warmup must be in [0, 1], got 2"),
        (["--set", "backbone.max_len=long"], "backbone.max_len must be an integer"),
    ],
)
def test_bad_config_values_are_one_line_errors(tmp_path, task_files, capsys, args, message):
    config = write_config(tmp_path, task_files)
    assert main(["train", "--config", str(config), *args]) == 2
    assert message in one_line_error(capsys)


def test_a_null_method_means_the_default_method(tmp_path, task_files):
    from mtpeft.config import resolve_config

    data = tiny_config(task_files, tmp_path / "run") | {"method": None}
    assert resolve_config(data).method.name == "lora"
    assert resolve_config(data, [("method.r", 4)]).method.options == {"r": 4}
    assert resolve_config(data | {"method": "ia3"}).method.name == "ia3"


# ---- item 8: MRR ties ----------------------------------------------------------------------------
def test_a_collapsed_embedding_scores_the_worst_mrr_not_the_best():
    import numpy as np

    from mtpeft.evaluation.metrics import mrr

    assert mrr(np.zeros((5, 100)), [0, 1, 2, 3, 4])["mrr"] == pytest.approx(0.01)


# ---- item 9: capped search sets rank against every code --------------------------------------------
def test_a_capped_pair_search_set_keeps_its_whole_corpus(tmp_path, task_files):
    from mtpeft.config import resolve_config
    from mtpeft.recipes import build_tasks, load_data

    config = resolve_config(tiny_config({"search": task_files["search"]}, tmp_path / "run", max_eval_per_task=3))
    tasks = build_tasks(config)
    data, _ = load_data(config, tasks, with_train=False)
    test = {s.name: s for s in data["search"].test}["search"].data
    assert len(test.queries) == 3 and len(test.corpus) == 10
    assert [test.corpus_ids[a] for a in test.answers] == test.query_ids  # each query still finds its code
    assert tasks["search"].trivial_metrics(data["search"].test[0])["mrr"] < 0.3  # random ranking among 10, not among 3


# ---- item 10: threshold tuning ---------------------------------------------------------------------
def test_accuracy_tuning_can_choose_all_negative():
    import numpy as np

    from mtpeft.evaluation.metrics import accuracy, best_threshold

    labels, probs = [0, 0, 0, 1], np.array([0.9, 0.8, 0.7, 0.1])
    threshold = best_threshold(labels, probs, "accuracy")
    assert threshold > 0.9
    assert accuracy(labels, (probs >= threshold).astype(int))["accuracy"] == 0.75


def test_a_validation_cap_keeps_every_positive_and_a_test_cap_keeps_the_shares():
    from mtpeft.tasks import EvalSet, build_task
    from mtpeft.tasks.binary import Example

    examples = [Example(str(i), f"t{i}", int(i % 27 == 0)) for i in range(1000)]  # 38 positives
    flaky = build_task("flaky")
    valid = flaky.cap(EvalSet("flaky", examples), 300, 0, "valid")
    assert len(valid.data) == 300 and sum(e.label for e in valid.data) == 38
    assert valid.class_weights[0] == pytest.approx(962 / 262)
    test = flaky.cap(EvalSet("flaky", examples), 300, 0, "test")
    assert len(test.data) == 300 and sum(e.label for e in test.data) == round(300 * 38 / 1000)
    assert flaky.cap(EvalSet("flaky", examples), 300, 1, "test").data != test.data  # still a seeded sample

    # a common positive class (BigCloneBench: 77% clones) must not crowd the negatives out
    pairs = [Example(str(i), f"t{i}", int(i % 100 < 77)) for i in range(1000)]
    clone = build_task("clone").cap(EvalSet("clone", pairs), 150, 0, "valid")
    kept_negatives = sum(e.label == 0 for e in clone.data)
    assert len(clone.data) == 150 and kept_negatives == 75
    assert clone.class_weights == {0: pytest.approx(230 / 75), 1: pytest.approx(770 / 75)}


def test_tuning_on_an_enriched_validation_set_weighs_the_negatives_back():
    """With the negatives weighed back to their real share, the F1-best threshold is the one of
    the full set, not of the positive-rich capped one."""
    import numpy as np

    from mtpeft.evaluation.metrics import best_threshold

    labels = [1, 1, 0, 0, 0]
    probs = np.array([0.9, 0.6, 0.7, 0.2, 0.1])
    assert best_threshold(labels, probs, "f1") == pytest.approx(0.6)  # 2 TP, 1 FP: F1 0.8
    weights = [1, 1, 10, 10, 10]  # each kept negative stands for ten
    assert best_threshold(labels, probs, "f1", weights) == pytest.approx(0.9)


def test_scores_on_an_enriched_validation_set_estimate_the_whole_set():
    """A validation cap that keeps every flaky test (38 of 1,000 -> 38 of 300) must not report the F1
    of a 13%-positive set: its negatives are weighed back, so a fixed predictor scores the same F1 and
    accuracy on the capped set as on the whole one, and so does the trivial all-positive baseline."""
    import numpy as np

    from mtpeft.tasks import EvalSet, build_task
    from mtpeft.tasks.binary import Example

    examples = [Example(str(i), f"t{i}", int(i % 27 == 0)) for i in range(1000)]
    flaky, defect = build_task("flaky"), build_task("defect")
    whole = EvalSet("flaky", examples)
    capped = flaky.cap(whole, 300, 0, "valid")
    # a predictor that finds every positive and calls one negative in six positive
    outputs = {e.id: float(e.label or int(e.id) % 6 == 0) for e in examples}

    def scores(task, evalset):
        return task.score_from(evalset, np.array([outputs[e.id] for e in evalset.data]))

    for task in (flaky, defect):
        full, estimate = scores(task, whole), scores(task, capped)
        assert estimate == pytest.approx(full, abs=0.03)
    assert flaky.trivial_metrics(capped)["f1"] == pytest.approx(flaky.trivial_metrics(whole)["f1"])
    assert defect.trivial_metrics(capped)["accuracy"] == pytest.approx(962 / 1000)


# ---- item 11: precision and clipping ---------------------------------------------------------------
def test_heads_and_infonce_run_in_fp32_under_bf16_autocast():
    from mtpeft.tasks import build_task

    torch.manual_seed(0)
    x, y = torch.randn(8, 64), torch.randn(8, 64)
    for task in (build_task("defect"), build_task("clone"), build_task("search")):
        head = task.make_head(64).eval()
        inputs = (x, y) if task.name == "clone" else (x,)
        plain = head(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = head(*inputs)
        assert mixed.dtype == torch.float32 and torch.equal(mixed, plain), task.name
    search = build_task("search")
    q, c = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
    plain = search.info_nce(q, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(search.info_nce(q, c), plain)


def test_gradient_clipping_includes_the_loss_weights(tmp_path, task_files, monkeypatch):
    from mtpeft.config import resolve_config
    from mtpeft.recipes import train
    from mtpeft.training import loop

    made, clipped = [], []
    real_build, real_clip = loop.build_weighting, torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(loop, "build_weighting", lambda *a, **k: made.append(real_build(*a, **k)) or made[-1])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, *a, **k: clipped.append(list(params)) or real_clip(params, *a, **k))
    files = {k: task_files[k] for k in ("defect", "flaky")}
    config = resolve_config(tiny_config(files, tmp_path / "run", epochs=1, steps_per_epoch=1, weighting="learned_softmax"))
    train(config)
    (weights,) = list(made[0].parameters())
    assert clipped and any(p is weights for p in clipped[0])


# ---- item 5: seeds ---------------------------------------------------------------------------------
def test_building_the_tiny_backbone_does_not_reseed_the_caller(tmp_path):
    from mtpeft.model.tiny import build_tiny_backbone

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    build_tiny_backbone(tmp_path / "tiny", "bert")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_data_seed_fixes_the_evaluation_sets_whatever_the_training_seed(tmp_path, task_files):
    from mtpeft.config import resolve_config
    from mtpeft.recipes import build_tasks, load_data

    def sets(**training):
        config = resolve_config(tiny_config(task_files, tmp_path / "run", max_eval_per_task=5, max_train_per_task=10, **training))
        data, _ = load_data(config, build_tasks(config), with_train=True)
        held = data["search"].valid[0].data.query_ids
        return held, [e.id for e in data["defect"].test[0].data], [e.id for e in data["defect"].train]

    assert sets(seed=1) == sets(seed=2)
    assert sets(seed=1, data_seed=1)[0] != sets(seed=1, data_seed=2)[0]


# ---- item 6: durability ----------------------------------------------------------------------------
def test_config_yaml_is_written_atomically(tmp_path, monkeypatch):
    from mtpeft.config import resolve_config, save_config

    path = tmp_path / "config.yaml"
    save_config(resolve_config({}), path)
    before = path.read_text()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_config(resolve_config({}, [("training.epochs", 9)]), path)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_the_run_folder_is_fsynced_after_the_checkpoint_rename(tmp_path, task_files, monkeypatch):
    from mtpeft.config import resolve_config
    from mtpeft.model.build import build_model
    from mtpeft.recipes import build_tasks
    from mtpeft.training import checkpoint

    config = resolve_config(tiny_config({"defect": task_files["defect"]}, tmp_path / "run"))
    model, method = build_model(config, build_tasks(config))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    run = tmp_path / "run"
    checkpoint.save_checkpoint(run, model, method, {}, {"epoch": 1})
    assert str(run) in synced  # the folder whose entries the renames changed


# ---- item 7: portable run folders ------------------------------------------------------------------
def test_a_copied_run_folder_evaluates_with_its_data_elsewhere(tmp_path, capsys):
    from tests.conftest import tiny_task_files

    data = tmp_path / "data"
    tiny_task_files(data)
    files = {"defect": {"train": "${data}/defect.jsonl.gz", "valid": "${data}/defect_v.jsonl", "test": "${data}/defect_t.jsonl"},
             "search": {"train": "${data}/search.jsonl", "test": "${data}/search_t.jsonl"}}
    config = tmp_path / "run.yaml"
    body = tiny_config(files, tmp_path / "run", bf16=False)
    body["training"] |= {"epochs": 1, "steps_per_epoch": 2}
    config.write_text(yaml.safe_dump(body))
    assert main(["train", "--config", str(config), "--data", str(data)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    saved = (run / "config.yaml").read_text()
    assert "${data}/defect.jsonl.gz" in saved and str(data) not in saved.replace(f"data: {data}", "")
    assert yaml.safe_load(saved)["vars"]["data"] == str(data)  # the root, recorded once, replaceable
    assert json.loads((run / "checkpoint/adapter/adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-bert"
    card = (run / "checkpoint/adapter/README.md").read_text()
    assert "base_model: tiny-bert" in card and "mtpeft-cache" not in card  # peft's card names no machine folder
    assert not any(arg.startswith("/") for arg in (run / "command.txt").read_text().split())
    assert "${data}/defect.jsonl.gz" in (run / "README.md").read_text()

    # another machine: the run folder copied, the data somewhere else
    elsewhere = tmp_path / "machine2"
    shutil.copytree(run, elsewhere / "run")
    shutil.move(str(data), str(elsewhere / "corpus"))
    shutil.rmtree(run)
    assert main(["evaluate", str(elsewhere / "run"), "--data", str(elsewhere / "corpus"), "-o", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["test"] == metrics["test"]
    assert main(["evaluate", str(elsewhere / "run")]) == 2  # the old data root is gone: one clear line
    assert "file not found" in one_line_error(capsys)


def test_a_validation_only_run_never_scores_the_test_sets(tmp_path, task_files, monkeypatch):
    """Recipe sweeps choose on validation: with training.evaluate_test false no test set is scored."""
    from mtpeft import recipes
    from mtpeft.config import resolve_config

    scored = []
    real = recipes.evaluate_sets
    monkeypatch.setattr(recipes, "evaluate_sets", lambda model, tasks, sets, ctx: scored.append(sets) or real(model, tasks, sets, ctx))
    files = {k: task_files[k] for k in ("defect", "flaky")}
    config = resolve_config(tiny_config(files, tmp_path / "run", epochs=1, steps_per_epoch=1, evaluate_test=False))
    result = recipes.train(config)
    assert not scored and "test" not in result["metrics"] and set(result["metrics"]["valid"]) == {"defect", "flaky"}
    assert set(json.loads((tmp_path / "run" / "trivial_baselines.json").read_text())) == {"valid"}
