"""scripts/recipe_sweep.py: variants of a base recipe, trained on validation only, in one table."""

from __future__ import annotations

import json
import sys

import yaml
from conftest import load_script, tiny_config


def test_a_sweep_trains_each_variant_once_on_validation_only_and_tabulates_it(tmp_path, task_files, monkeypatch):
    sweep_script = load_script("recipe_sweep")
    base = tiny_config({"defect": task_files["defect"]}, tmp_path / "unused", epochs=1, steps_per_epoch=2)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"base": "base.yaml", "output_dir": str(tmp_path / "recipe"),
             "budget": {"training.steps_per_epoch": 2}, "set": {"training.evaluate_test": False},
             "variants": {"defect/a": {"tasks": ["defect"]}, "defect/b": {"tasks": ["defect"], "set": {"training.lr": 3.0e-4}},
                          "defect/never": {"tasks": ["defect"]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["recipe_sweep.py", "sweep.yaml", "--only", "defect/a,defect/b", "--threads", "1"])
    sweep_script.main()

    for name, lr in (("a", 1e-3), ("b", 3e-4)):
        run = tmp_path / "recipe" / "defect" / name
        assert set(json.loads((run / "metrics.json").read_text())) >= {"valid"}
        assert "test" not in json.loads((run / "metrics.json").read_text())
        assert yaml.safe_load((run / "config.yaml").read_text())["training"]["lr"] == lr
    table = (tmp_path / "recipe" / "recipe.md").read_text()
    assert "| defect/a | defect | accuracy |" in table and "| defect/never | not run |" in table

    # a rerun skips what is done: no training happens
    before = (tmp_path / "recipe" / "defect" / "a" / "metrics.json").stat().st_mtime_ns
    sweep_script.main()
    assert (tmp_path / "recipe" / "defect" / "a" / "metrics.json").stat().st_mtime_ns == before

    # --rescore recomputes the finished variants' validation metrics (and reads no test set)
    metrics_path = tmp_path / "recipe" / "defect" / "a" / "metrics.json"
    true_valid = json.loads(metrics_path.read_text())["valid"]
    metrics_path.write_text(json.dumps({"valid": {"defect": {"accuracy": -1.0}}}))
    monkeypatch.setattr(sys, "argv", ["recipe_sweep.py", "sweep.yaml", "--only", "defect/a", "--rescore"])
    sweep_script.main()
    rescored = json.loads(metrics_path.read_text())
    assert "test" not in rescored and rescored["valid"]["defect"]["accuracy"] == true_valid["defect"]["accuracy"]
