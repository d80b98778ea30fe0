"""Where the defect signal lies: TF-IDF + logistic regression on Devign, trained on the whole training
split and scored on the whole validation split, over different views of each function. It asks how much
a model loses by seeing only what mtpeft's encoder sees (the backbone's uncased word pieces, the first
256 of them, head+tail, several windows), against the raw-text floor.

    python scripts/defect_signal.py --data ../shared/data --out results/probe/defect_signal.json

Validation only (the test split is never read). One thread; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from mtpeft.data.jsonl import read_jsonl
from mtpeft.errors import DataError
from mtpeft.model.backbone import resolve

CODE_TOKENS = r"[A-Za-z_][A-Za-z0-9_]*|\S"  # identifiers and single symbols: the floor's tokenisation


def read_split(path: Path) -> tuple[list[str], np.ndarray]:
    """Devign's ``func`` and ``target`` (0/1) of every record; a bad record stops with file:line."""
    texts, labels = [], []
    try:
        for record in read_jsonl(path):
            if "func" not in record.data or record.data.get("target") not in (0, 1):
                raise record.error("needs 'func' and a 0/1 'target'")
            texts.append(record.data["func"])
            labels.append(int(record.data["target"]))
    except DataError as error:
        sys.exit(f"error: {error}")
    return texts, np.array(labels)


def piece_views(pieces: list[str]) -> dict[str, list[str]]:
    """The word pieces of one function, cut as the encoder's options would cut them."""
    def join(ps: list[str]) -> str:
        return " ".join(ps)
    return {"pieces, whole function": join(pieces),
            "pieces, first 256 (head truncation)": join(pieces[:254]),
            "pieces, first 127 + last 127 (head+tail)": join(pieces[:127] + pieces[-127:] if len(pieces) > 254 else pieces),
            "pieces, first 512": join(pieces[:508]),
            "pieces, first 1,016 (4 windows of 256)": join(pieces[:1016])}


def score(train: list[str], train_y: np.ndarray, valid: list[str], valid_y: np.ndarray,
          analyzer: Callable[[str], list[str]] | None = None) -> float:
    """Validation accuracy at the 0.5 threshold (defect's fixed threshold in the floor)."""
    vectorizer = (TfidfVectorizer(analyzer=analyzer, max_features=50_000, sublinear_tf=True) if analyzer
                  else TfidfVectorizer(token_pattern=CODE_TOKENS, max_features=50_000, sublinear_tf=True, lowercase=False))
    model = LogisticRegression(max_iter=3000, C=1.0).fit(vectorizer.fit_transform(train), train_y)
    return float((model.predict(vectorizer.transform(valid)) == valid_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--backbone", default="default", help="whose tokenizer cuts the word pieces")
    parser.add_argument("--out", type=Path, default=Path("results/probe/defect_signal.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    train, train_y = read_split(args.data / "defect" / "devign_train.jsonl.gz")
    valid, valid_y = read_split(args.data / "defect" / "devign_valid.jsonl.gz")
    tokenizer = AutoTokenizer.from_pretrained(resolve(args.backbone))
    start = time.perf_counter()
    train_views = [piece_views(tokenizer.tokenize(t)) for t in train]
    valid_views = [piece_views(tokenizer.tokenize(t)) for t in valid]
    results = {"raw text, whole function (the floor's view)": score(train, train_y, valid, valid_y)}
    for name in train_views[0]:
        results[name] = score([v[name] for v in train_views], train_y, [v[name] for v in valid_views], valid_y,
                              analyzer=str.split)
    out = {"valid_accuracy": {k: round(v, 4) for k, v in results.items()},
           "majority": round(max(valid_y.mean(), 1 - valid_y.mean()), 4), "train": len(train), "valid": len(valid),
           "standard_error": round(float(np.sqrt(0.25 / len(valid))), 4), "seconds": round(time.perf_counter() - start),
           "command": "python scripts/defect_signal.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
