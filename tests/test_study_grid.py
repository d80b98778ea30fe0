"""The study grid on a tiny in-process model: cells, resume, failed and killed cells, dry-run estimates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from mtpeft.errors import MtpeftError
from mtpeft.reporting import format_duration
from mtpeft.study import estimate
from mtpeft.study.config import load_study
from mtpeft.study.estimate import Rate, dry_run, estimate_cell, find_rate, rate_difference, rate_from_run
from mtpeft.study.grid import cell_config, cell_state, in_process_train, plan, read_status, run_grid


def write_study(tmp_path: Path, task_files: dict, **study) -> Path:
    base = tiny_config({t: task_files[t] for t in ("defect", "flaky", "search")}, tmp_path / "unused")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    spec = {
        "base": "base.yaml",
        "output_dir": str(tmp_path / "study"),
        "methods": {"lora": {"r": 2}},
        "regimes": ["single", "multi", "pairs"],
        "weighting": "learned_softmax",
        "weightings": {"methods": ["lora"], "names": {"equal": {}}},
        "budget": {"epochs": 1, "steps_per_epoch": 2, "max_eval_per_task": 8, "max_len": 32},
    } | study
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return tmp_path / "study.yaml"


def test_plan_lays_out_single_multi_pairs_and_weightings(tmp_path, task_files):
    path = write_study(tmp_path, task_files, methods={"full": {}, "lora": {"r": 2}}, pairs={"methods": ["lora"]},
                       weightings={"methods": ["lora"], "names": ["learned_softmax", "equal", "gradnorm"]})
    cells = plan(load_study(path))
    paths = [c.path for c in cells]
    assert paths == [  # the headline comparison (single + multi per method) first, then pairs, then weightings
        "full/single/defect", "full/single/flaky", "full/single/search", "full/multi/learned_softmax",
        "lora/single/defect", "lora/single/flaky", "lora/single/search", "lora/multi/learned_softmax",
        "lora/pairs/defect+flaky", "lora/pairs/defect+search", "lora/pairs/flaky+search",
        "lora/multi/equal", "lora/multi/gradnorm",
    ]
    study = load_study(path)
    full = cell_config(study, cells[0], tmp_path / "s")
    assert (full.method.name, full.method.options, list(full.tasks)) == ("full", {}, ["defect"])
    lora = cell_config(study, cells[10], tmp_path / "s")
    assert lora.method.options["r"] == 2 and lora.method.options["alpha"] == 8  # base's options kept for its own method
    assert (lora.training.epochs, lora.training.steps_per_epoch, lora.backbone.max_len) == (1, 2, 32)
    assert lora.output_dir == str(tmp_path / "s" / "lora/pairs/flaky+search")


def test_bad_study_configs_stop_with_one_line(tmp_path, task_files):
    with pytest.raises(MtpeftError, match="unknown study key"):
        load_study(write_study(tmp_path, task_files, epochs=3))
    with pytest.raises(MtpeftError, match="unknown budget key"):
        load_study(write_study(tmp_path, task_files, budget={"epoch": 3}))
    with pytest.raises(MtpeftError, match="unknown method 'loraa'"):
        load_study(write_study(tmp_path, task_files, methods=["loraa"]))
    with pytest.raises(MtpeftError, match="pairs.methods names full"):
        load_study(write_study(tmp_path, task_files, pairs={"methods": ["full"]}))
    with pytest.raises(MtpeftError, match="unknown option"):
        load_study(write_study(tmp_path, task_files, weightings={"methods": ["lora"], "names": {"gradnorm": {"beta": 1}}}))


def test_grid_reports_a_failed_cell_goes_on_and_resumes_skipping_finished_cells(tmp_path, task_files):
    real_train = in_process_train
    study = load_study(write_study(tmp_path, task_files))
    calls: list[str] = []

    def flaky_train(config, command="", resume=False):
        calls.append(config.output_dir)
        if config.output_dir.endswith("pairs/defect+search"):
            raise RuntimeError("disk full (simulated)")
        return real_train(config, command, resume)

    outcome = run_grid(study, flaky_train, log=lambda _: None)
    assert len(outcome) == 8 and outcome["lora/pairs/defect+search"] == "failed"
    assert sum(s == "done" for s in outcome.values()) == 7  # the other cells went on
    failed = study.output_dir / "lora/pairs/defect+search"
    assert read_status(failed)["state"] == "failed" and "disk full" in read_status(failed)["error"]
    assert "RuntimeError" in (failed / "error.log").read_text()
    summary = json.loads((study.output_dir / "study.json").read_text())
    assert {c["path"]: c["state"] for c in summary["cells"]}["lora/pairs/defect+search"] == "failed"
    done_cell = study.output_dir / "lora/single/defect"
    stamp = (done_cell / "metrics.json").stat().st_mtime_ns

    calls.clear()
    lines: list[str] = []
    outcome = run_grid(study, real_train_recording(calls, real_train), log=lines.append)
    assert calls == [str(failed)]  # only the failed cell ran again
    done = [line for line in lines if "done in" in line]  # (the other cells' lines say they are done already)
    assert len(done) == 1 and re.fullmatch(r"\[\d/8\] lora/pairs/defect\+search: done in 0h\d\dm\d\ds; 8 of 8 cells finished", done[0]), lines
    assert outcome["lora/pairs/defect+search"] == "done" and list(outcome.values()).count("skipped") == 7
    assert (done_cell / "metrics.json").stat().st_mtime_ns == stamp
    assert read_status(failed)["attempts"] == 2 and cell_state(failed) == "done"
    assert (study.output_dir / "lora/multi/equal" / "loss_weights.png").exists()
    # the report reads the real grid: affinity from the pairs, the weighting comparison, costs
    from mtpeft.study.report import write_report

    report = write_report(study.output_dir).read_text()
    assert "### lora" in report and (study.output_dir / "affinity_lora.png").stat().st_size > 10_000
    assert "| lora | equal |" in report and "| lora | learned_softmax |" in report
    assert "| multi-task PEFT ≈ multi-task full fine-tuning | no multi-task full fine-tuning cell | not measured |" in report


def real_train_recording(calls, real_train):
    def train(config, command="", resume=False):
        calls.append(config.output_dir)
        return real_train(config, command, resume)
    return train


def test_a_killed_cell_without_a_last_checkpoint_is_run_again_from_scratch(tmp_path, task_files):
    real_train = in_process_train
    study = load_study(write_study(tmp_path, task_files, regimes=["single"]))

    def killed_after_writing(config, command="", resume=False):
        Path(config.output_dir, "config.yaml").write_text("half", encoding="utf-8")
        Path(config.output_dir, "stale.txt").write_text("x", encoding="utf-8")
        raise KeyboardInterrupt  # as Ctrl-C or a kill: the grid stops, the cell stays "running"

    with pytest.raises(KeyboardInterrupt):
        run_grid(study, killed_after_writing, log=lambda _: None)
    cell = study.output_dir / "lora/single/defect"
    assert cell_state(cell) == "interrupted" and read_status(cell)["state"] == "running"
    outcome = run_grid(study, real_train, log=lambda _: None)
    assert outcome == {"lora/single/defect": "done", "lora/single/flaky": "done", "lora/single/search": "done"}
    assert not (cell / "stale.txt").exists() and read_status(cell)["previous"] == "interrupted"
    assert read_status(cell)["resumed"] is False


RESUMABLE = {"epochs": 3, "steps_per_epoch": 4}
SAVE_EVERY_STEP = {"training.save_every_steps": 1}


def test_a_killed_cell_resumes_from_its_last_checkpoint_to_the_same_result(tmp_path, task_files, monkeypatch):
    from mtpeft.training import loop

    def study_in(folder: str, **extra):
        return load_study(write_study(tmp_path, task_files, regimes=["single"], tasks=["defect"], budget=RESUMABLE,
                                      output_dir=str(tmp_path / folder), set=SAVE_EVERY_STEP, **extra))

    whole = study_in("whole")
    assert run_grid(whole, in_process_train, log=lambda _: None) == {"lora/single/defect": "done"}
    killed = study_in("killed")
    original, calls = loop.Trainer.train_step, {"n": 0}

    def killed_at_step_7(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # as if killed: steps 1-6 are in last/
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_step", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run_grid(killed, in_process_train, log=lambda _: None)
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    cell = killed.output_dir / "lora/single/defect"
    assert cell_state(cell) == "interrupted" and (cell / "last").is_dir()
    assert run_grid(killed, in_process_train, log=lambda _: None) == {"lora/single/defect": "done"}
    assert read_status(cell)["resumed"] is True and json.loads((cell / "ledger.json").read_text())["resumed"] is True
    reference = whole.output_dir / "lora/single/defect"
    for name in ("metrics.json", "history.json"):
        assert json.loads((cell / name).read_text()) == json.loads((reference / name).read_text()), name


@pytest.mark.parametrize("weighting", ["gradnorm", "famo", "loss_normalized"])
def test_a_killed_multi_task_cell_resumes_its_loss_weighting_exactly(tmp_path, task_files, monkeypatch, weighting):
    """The weighting's state (weights, Adam moments, last losses) travels in last/: the resumed
    cell's per-step weights and metrics equal those of an uninterrupted one."""
    from mtpeft.training import loop

    def study_in(folder: str):
        return load_study(write_study(tmp_path, task_files, regimes=["multi"], tasks=["defect", "flaky"], budget=RESUMABLE,
                                      weighting=weighting, weightings={}, output_dir=str(tmp_path / folder), set=SAVE_EVERY_STEP))

    whole, killed = study_in("whole"), study_in("killed")
    run_grid(whole, in_process_train, log=lambda _: None)
    original, calls = loop.Trainer.train_step, {"n": 0}

    def killed_at_step_6(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # mid-epoch 2: loss_normalized has switched weights after epoch 1
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_step", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        run_grid(killed, in_process_train, log=lambda _: None)
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    assert run_grid(killed, in_process_train, log=lambda _: None) == {f"lora/multi/{weighting}": "done"}
    cell, reference = (s.output_dir / f"lora/multi/{weighting}" for s in (killed, whole))
    assert read_status(cell)["resumed"] is True
    history = json.loads((cell / "history.json").read_text())
    assert history == json.loads((reference / "history.json").read_text())
    assert history[-1]["weights"][-1]["defect"] != pytest.approx(1.0, abs=1e-4)  # the weights did move
    assert json.loads((cell / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())


def test_a_killed_cell_whose_study_changed_starts_again(tmp_path, task_files, monkeypatch):
    from mtpeft.training import loop

    study = load_study(write_study(tmp_path, task_files, regimes=["single"], tasks=["defect"], budget=RESUMABLE, set=SAVE_EVERY_STEP))
    original, calls = loop.Trainer.train_step, {"n": 0}

    def killed_at_step_4(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_step", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_grid(study, in_process_train, log=lambda _: None)
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    cell = study.output_dir / "lora/single/defect"
    assert (cell / "last").is_dir()
    changed = load_study(write_study(tmp_path, task_files, regimes=["single"], tasks=["defect"], budget=RESUMABLE,
                                     set=SAVE_EVERY_STEP | {"training.lr": 0.002}))
    assert run_grid(changed, in_process_train, log=lambda _: None) == {"lora/single/defect": "done"}
    assert read_status(cell)["resumed"] is False and json.loads((cell / "ledger.json").read_text())["resumed"] is False


def test_dry_run_estimates_from_a_ledger_against_hand_computed_values(tmp_path, task_files):
    study = load_study(write_study(tmp_path, task_files, budget={"epochs": 2, "max_train_per_task": 20, "batch_size": 8, "max_eval_per_task": 10}))
    run = tmp_path / "earlier"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"backbone": {"name": "tiny-bert"}, "method": {"name": "lora"}, "training": {"batch_size": 4}}))
    (run / "ledger.json").write_text(json.dumps({"tasks": ["a", "b"], "steps": 50,
                                                 "wall_seconds": {"load_data": 1, "load_model": 2, "train_and_validate": 100, "reload": 1, "evaluate": 30}}))
    (run / "history.json").write_text(json.dumps([{"examples_seen": {"a": 200, "b": 200}}]))
    (run / "data_report.json").write_text(json.dumps({"sizes": {"a": {"train": 9, "valid": {"a": 50}, "test": {"a": 50}},
                                                                "b": {"train": 9, "valid": {"b": 50}, "test": {"b": 50, "b/x": 100}}}}))
    rate = rate_from_run(run)
    assert (rate.s_train, rate.s_eval, rate.fixed) == (100 / 400, 30 / 300, 4)
    single, multi = plan(study)[0], plan(study)[3]
    # single: 1 task x 2 epochs x 24 (20 rounded up to 3 batches of 8) = 48 examples; eval 1 x 2 x 10
    assert estimate_cell(study, single, rate) == pytest.approx(48 * 0.25 + 20 * 0.1 + 4)
    assert estimate_cell(study, multi, rate) == pytest.approx(3 * 48 * 0.25 + 60 * 0.1 + 4)
    # a newer ledger: only the test sets are evaluated after training ("evaluate_test")
    newer = json.loads((run / "ledger.json").read_text())
    newer["wall_seconds"] = {"train_and_validate": 100, "evaluate_test": 30}
    (run / "ledger.json").write_text(json.dumps(newer))
    test_only = rate_from_run(run)
    assert (test_only.s_eval, test_only.eval_splits, test_only.fixed) == (30 / 200, 1, 0)
    assert estimate_cell(study, single, test_only) == pytest.approx(48 * 0.25 + 10 * 0.15)
    # resumed from a checkpoint that predates the carried ledger: its seconds are one sitting's,
    # its examples the whole run's, so it gives no rate; with the earlier sittings carried it does
    (run / "ledger.json").write_text(json.dumps(newer | {"resumed": True}))
    assert rate_from_run(run) is None
    (run / "ledger.json").write_text(json.dumps(newer | {"resumed": True, "whole_run_timed": False}))
    assert rate_from_run(run) is None
    (run / "ledger.json").write_text(json.dumps(newer | {"resumed": True, "whole_run_timed": True}))
    assert rate_from_run(run).s_train == 100 / 400
    (run / "ledger.json").write_text(json.dumps(newer | {"wall_seconds": {"load_data": 1, "load_model": 2, "train_and_validate": 100, "reload": 1, "evaluate": 30}}))
    table, total = dry_run(study, [run], startup=5.0)
    assert "lora/pairs/flaky+search" in table and "earlier" in table
    # 3 single (18), 2 multi (46), 3 pairs (24 + 4 + 4), each + 5 s of process start-up
    assert total == pytest.approx(3 * 18 + 2 * 46 + 3 * 32 + 8 * 5)
    # an interrupted cell resumes: the 16 examples its last checkpoint trained are not counted again
    last = single.run_dir(study.output_dir) / "last"
    last.mkdir(parents=True)
    (last / "state.json").write_text(json.dumps({"progress": {"steps": 2, "examples_seen": {single.tasks[0]: 16}}}))
    (last / "state.safetensors").write_bytes(b"")
    table, resumed = dry_run(study, [run], startup=5.0)
    assert f"{single.path:<44} interrupted" in table and resumed == pytest.approx(total - 16 * 0.25)
    assert "of wall time" not in table
    table, _ = dry_run(study, [run], startup=5.0, workers=2)
    assert f"(about {format_duration(resumed / 2)} of wall time on 2 workers)" in table


def test_dry_run_matches_a_reference_run_on_method_max_len_and_threads():
    def run(method: str, max_len: int, threads: int, name: str) -> Rate:
        return Rate(1.0, 1.0, 0.0, name, backbone="tiny", method=method, max_len=max_len, threads=threads)

    methods_128_2 = run("serial_adapter", 128, 2, "methods")  # the cell's method, another setting
    lora_256_1 = run("lora", 256, 1, "study lora")  # another method, the cell's setting
    rates = [methods_128_2, lora_256_1]
    found = find_rate(rates, "tiny", "serial_adapter", 256, 1)
    assert (found.source, found.exact) == ("study lora", False)
    assert rate_difference(found, "serial_adapter", 256, 1) == "lora"
    found = find_rate(rates + [run("serial_adapter", 256, 1, "exact")], "tiny", "serial_adapter", 256, 1)
    assert (found.source, found.exact) == ("exact", True) and rate_difference(found, "serial_adapter", 256, 1) == ""
    found = find_rate([methods_128_2], "tiny", "serial_adapter", 256, 1)
    assert (found.source, found.exact) == ("methods", False)
    assert rate_difference(found, "serial_adapter", 256, 1) == "max_len 128, 2 threads"
    found = find_rate([run("lora", 128, 2, "other")], "tiny", "prefix", 256, 1)
    assert (found.source, found.exact) == ("other", False)
    assert find_rate(rates, "another-backbone", "lora", 256, 1) is None
    newer = run("lora", 256, 1, "newer")
    assert find_rate(rates + [newer], "tiny", "lora", 256, 1).source == "newer"  # the newest of a tier wins


def test_dry_run_probe_and_cli(tmp_path, task_files, capsys, monkeypatch):
    from mtpeft.cli import main

    monkeypatch.setattr(estimate, "startup_seconds", lambda: 0.0)  # (timing a fresh interpreter is not the point here)

    path = write_study(tmp_path, task_files, regimes=["single", "multi"], weightings={})
    table, total = dry_run(load_study(path), [tmp_path / "nothing"], startup=0.0)
    assert total is None and "--probe-steps" in table
    assert main(["study", str(path), "--dry-run", "--probe-steps", "2", "--ledgers", str(tmp_path / "nothing")]) == 0
    out = capsys.readouterr().out
    assert "probe of 2 steps" in out and "4 cells, 4 to run; estimated" in out and "without one" not in out
    assert not (tmp_path / "study").exists() or not any((tmp_path / "study").rglob("metrics.json"))  # trains nothing
    (tmp_path / "bad.yaml").write_text("base: base.yaml\nregimes: [solo]\n")
    assert main(["study", str(tmp_path / "bad.yaml"), "--dry-run"]) == 2
    assert "unknown regime(s) solo" in capsys.readouterr().err


def test_cli_runs_a_cell_in_its_own_process_and_the_report_reads_the_grid(tmp_path, task_files, capsys):
    from mtpeft.cli import main
    from mtpeft.study.report import write_report

    path = write_study(tmp_path, task_files, regimes=["single"], weightings={})
    assert main(["study", str(path), "--only", "single/defect", "--no-progress"]) == 0
    cell = tmp_path / "study" / "lora/single/defect"
    assert cell_state(cell) == "done" and (cell / "train.log").exists() and (cell / "cell_config.yaml").exists()
    assert "1 of 1 cells finished" in capsys.readouterr().out
    report = write_report(tmp_path / "study").read_text()
    assert "lora/single/flaky | pending" in report and "| lora | defect | accuracy |" in report
    # a cell whose process fails is reported with the last line of its log, and the command says so
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text().replace("tiny-bert", "no-such-backbone-dir"))
    assert main(["study", str(path), "--only", "single/flaky", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 cell(s) failed" in err and "lora/single/flaky" in err
    assert "exited with 2" in read_status(tmp_path / "study" / "lora/single/flaky")["error"]


def test_workers_train_cells_at_once_each_with_its_share_of_the_cores(tmp_path, task_files, monkeypatch):
    import threading

    from mtpeft.study import grid

    study = load_study(write_study(tmp_path, task_files, regimes=["single"], weightings={}))
    together = threading.Barrier(2, timeout=20)  # breaks (and the cells fail) unless the first two run at once

    def paired_train(config, command="", resume=False):
        if not config.output_dir.endswith("search"):
            together.wait()
        run = Path(config.output_dir)
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text("{}")
        (run / "ledger.json").write_text("{}")

    outcome = run_grid(study, paired_train, log=lambda _: None, workers=2)
    assert outcome == {"lora/single/defect": "done", "lora/single/flaky": "done", "lora/single/search": "done"}
    assert list(outcome) == [c.path for c in plan(study)]  # reported in plan order

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grid.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    assert (grid.threads_per_worker(1), grid.threads_per_worker(2), grid.threads_per_worker(3)) == (None, 4, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert grid.threads_per_worker(2) is None  # the user's own setting wins



def test_a_finished_cell_trained_with_another_config_stops_the_grid_unless_asked_to_rerun(tmp_path, task_files):
    """Changing the study (its budget, base or --set) after cells finished must not leave old cells
    in the new report silently; moving the data (vars.data) is not a change of the cell."""
    from mtpeft.config import save_config

    path = write_study(tmp_path, task_files, regimes=["single"], weightings={})
    trained: list[str] = []

    def recording_train(config, command="", resume=False):
        trained.append(Path(config.output_dir).name)
        run = Path(config.output_dir)
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run / "config.yaml")
        (run / "metrics.json").write_text("{}")
        (run / "ledger.json").write_text("{}")

    run_grid(load_study(path), recording_train, log=lambda _: None, extra=[("vars.data", "/data/here")])
    assert trained == ["defect", "flaky", "search"]
    trained.clear()
    moved = run_grid(load_study(path), recording_train, log=lambda _: None, extra=[("vars.data", "/data/elsewhere")])
    assert trained == [] and set(moved.values()) == {"skipped"}

    changed = yaml.safe_load(path.read_text())
    changed["budget"]["steps_per_epoch"] = 3
    path.write_text(yaml.safe_dump(changed))
    with pytest.raises(MtpeftError, match=r"3 finished cell\(s\) .*lora/single/defect \(training.steps_per_epoch \(2 -> 3\)\).*--rerun-stale"):
        run_grid(load_study(path), recording_train, log=lambda _: None)
    assert trained == []  # refused before training anything
    table, _ = dry_run(load_study(path), [], startup=1.0)
    assert "lora/single/defect                           stale" in table and "0 to run, 3 stale" in table
    outcome = run_grid(load_study(path), recording_train, log=lambda _: None, only="defect", rerun_stale=True)
    assert outcome == {"lora/single/defect": "done"} and trained == ["defect"]
    assert yaml.safe_load((tmp_path / "study/lora/single/defect/config.yaml").read_text())["training"]["steps_per_epoch"] == 3


def test_an_interrupted_grid_stops_each_running_cell_once_and_starts_no_other(tmp_path, task_files, monkeypatch):
    """Ctrl-C reaches the study alone (cells run in their own sessions); it passes SIGINT on exactly
    once to each running cell (a second would stop the cell before it writes last/), starts no new
    cell and ends interrupted; the stopped cells are 'interrupted' for the next call to resume."""
    import signal
    import threading

    from mtpeft.study import grid

    study = load_study(write_study(tmp_path, task_files, regimes=["single"], weightings={}))
    started, signals = [], []
    both_running = threading.Event()

    class CellProcess:  # stands in for 'mtpeft train': runs until signalled, then exits as it would
        def __init__(self, args, env=None, start_new_session=False, **_):
            assert start_new_session and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"  # 2 cores, 2 workers
            self.stopped = threading.Event()
            started.append(self)
            if len(started) == 2:
                both_running.set()

        def wait(self):
            self.stopped.wait(30)
            return grid.INTERRUPTED_EXIT

        def send_signal(self, sig):
            signals.append(sig)
            self.stopped.set()

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grid.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(grid.subprocess, "Popen", CellProcess)
    main = threading.main_thread().ident
    threading.Thread(target=lambda: both_running.wait(30) and signal.pthread_kill(main, signal.SIGINT), daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_grid(study, log=lambda _: None, workers=2)
    assert len(started) == 2 and signals == [signal.SIGINT, signal.SIGINT]  # once each; the third never started
    assert [cell_state(study.output_dir / f"lora/single/{t}") for t in ("defect", "flaky", "search")] == \
        ["interrupted", "interrupted", "pending"]


def test_a_cell_waited_on_in_the_main_thread_passes_an_interrupt_on_once(tmp_path, task_files, monkeypatch):
    """A sweep script waits on its cell in the main thread: Ctrl-C there (the cell, in its own
    session, does not see it) is passed on as one SIGINT, and the call waits for the cell to stop."""
    import signal

    from mtpeft.study import grid

    study = load_study(write_study(tmp_path, task_files, regimes=["single"], weightings={}))
    signals, waits = [], []

    class CellProcess:
        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            waits.append(len(signals))
            if not signals:
                raise KeyboardInterrupt  # Ctrl-C while the script waits
            return grid.INTERRUPTED_EXIT

        def send_signal(self, sig):
            signals.append(sig)

    monkeypatch.setattr(grid.subprocess, "Popen", CellProcess)
    with pytest.raises(KeyboardInterrupt):
        grid.subprocess_train(cell_config(study, plan(study)[0], tmp_path / "s"))
    assert signals == [signal.SIGINT] and waits == [0, 1]  # one signal, then waited for the cell to end
    assert not grid._RUNNING
