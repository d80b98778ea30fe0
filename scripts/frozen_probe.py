"""How much of a binary task the frozen backbone already separates: logistic regression on its pooled
states, beside TF-IDF + logistic regression on the same examples (validation only).

    python scripts/frozen_probe.py --task defect --data ../shared/data --train 4000 --valid 1000

It reads the task's train and valid splits through the task's own reader (configs/full.yaml), keeps
a seeded, label-stratified sample of each, encodes the texts with the untrained backbone exactly as
training does (max_len, truncation, pooling), and fits both probes on the train sample. Output:
``results/probe/TASK.json`` and a line for the markdown table in ``results/probe/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from mtpeft.config import load_yaml, resolve_config
from mtpeft.errors import MtpeftError
from mtpeft.evaluation.metrics import accuracy, binary_f1, best_threshold
from mtpeft.model.build import build_model
from mtpeft.recipes import build_tasks, eval_context, load_data
from mtpeft.tasks.base import pooled_states, stratified_subsample

ROOT = Path(__file__).resolve().parent.parent


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, valid_x: np.ndarray, valid_y: np.ndarray, metric: str) -> dict[str, float]:
    """Logistic regression; the threshold is tuned on the valid sample itself (an optimistic ceiling
    for both probes alike), and the 0.5 threshold is reported beside it."""
    model = LogisticRegression(max_iter=2000, C=1.0).fit(train_x, train_y)
    probs = model.predict_proba(valid_x)[:, 1]
    tuned = best_threshold(valid_y, probs, metric)
    score = accuracy if metric == "accuracy" else binary_f1
    return {f"{metric}_at_0.5": score(valid_y, (probs >= 0.5).astype(int))[metric],
            f"{metric}_tuned_on_valid": score(valid_y, (probs >= tuned).astype(int))[metric]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="defect", help="a binary single-text task of the config (defect, flaky)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "full.yaml")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--train", type=int, default=4000, help="training examples sampled (label-stratified)")
    parser.add_argument("--valid", type=int, default=1000, help="validation examples sampled (label-stratified)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "probe")
    args = parser.parse_args()
    try:
        raw = load_yaml(args.config)
        raw["tasks"] = {args.task: raw["tasks"][args.task]}
        config = resolve_config(raw, [("vars.data", args.data), ("training.progress", False)])
        tasks = build_tasks(config)
        data, _ = load_data(config, tasks, with_train=True)
    except (MtpeftError, KeyError) as error:
        sys.exit(f"error: {error}")
    task = tasks[args.task]
    label = lambda e: e.label  # noqa: E731
    train = stratified_subsample(data[args.task].train, args.train, 0, label)
    valid = stratified_subsample(data[args.task].valid[0].data, args.valid, 0, label)
    model, _ = build_model(config, tasks)
    model.eval()
    ctx = eval_context(config, model.backbone.tokenizer)
    encoding = task.encoding(config.backbone.max_len)
    start = time.perf_counter()
    with torch.no_grad():
        train_x = pooled_states(model, [e.text for e in train], ctx, encoding, "train").float().numpy()
        valid_x = pooled_states(model, [e.text for e in valid], ctx, encoding, "valid").float().numpy()
    seconds = time.perf_counter() - start
    train_y, valid_y = np.array([e.label for e in train]), np.array([e.label for e in valid])
    tfidf = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_]*|\S", max_features=50_000, sublinear_tf=True)
    train_t = tfidf.fit_transform([e.text for e in train])
    valid_t = tfidf.transform([e.text for e in valid])
    result = {
        "task": args.task, "metric": task.metric, "backbone": config.backbone.name, "max_len": config.backbone.max_len,
        "train": len(train), "valid": len(valid), "valid_positive_share": float(valid_y.mean()),
        "majority": max(float(valid_y.mean()), 1 - float(valid_y.mean())),
        "frozen_backbone_probe": probe_scores(train_x, train_y, valid_x, valid_y, task.metric),
        "tfidf_probe": probe_scores(train_t, train_y, valid_t, valid_y, task.metric),
        "encode_seconds": round(seconds, 1),
        "command": "python scripts/frozen_probe.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.task}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
