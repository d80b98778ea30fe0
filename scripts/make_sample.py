"""Build the compact real-data sample that ships inside the package (the demo's default data).

    python scripts/make_sample.py --data ../shared/data --out src/mtpeft/resources/sample

Deterministic (seeded) random subsets of the fixed splits of ../shared/data; labels and code are
unchanged. The CoSQA corpus is cut to the sampled queries' answers plus random distractors, so
sample MRR is not comparable with full-corpus MRR (documented in ATTRIBUTION.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

SIZES = {
    ("defect", "devign"): {"train": 2000, "valid": 300, "test": 400},
    ("clone", "bcb"): {"train": 2000, "valid": 300, "test": 400},
    ("search", "csn_ruby"): {"train": 1200, "test": 400},
    ("flaky", "flakeflagger"): {"train": 3000, "valid": 800, "test": 800},
}
COSQA_QUERIES, COSQA_CORPUS = 200, 1000


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical across rebuilds
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for record in records:
            handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def sample(records: list[dict], n: int, rng: random.Random) -> list[dict]:
    return records if n >= len(records) else [records[i] for i in sorted(rng.sample(range(len(records)), n))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("src/mtpeft/resources/sample"))
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts = {}
    for (task, stem), splits in SIZES.items():
        for split, n in splits.items():
            records = sample(read(args.data / task / f"{stem}_{split}.jsonl.gz"), n, rng)
            if task == "flaky":  # the demo uses full_code (as the TF-IDF floor); final_code halves the size
                records = [{k: v for k, v in r.items() if k != "final_code"} for r in records]
            if task == "clone":
                for r in records:
                    r.pop("clone_type", None)
            write(args.out / task / f"{split}.jsonl.gz", records)
            counts[f"{task}/{split}"] = len(records)
    # clone: only the functions the sampled pairs refer to
    needed = {str(r[k]) for split in ("train", "valid", "test") for r in read(args.out / "clone" / f"{split}.jsonl.gz") for k in ("idx1", "idx2")}
    functions = [f for f in read(args.data / "clone" / "bcb_functions.jsonl.gz") if str(f["idx"]) in needed]
    write(args.out / "clone" / "functions.jsonl.gz", functions)
    counts["clone/functions"] = len(functions)
    # cosqa: sampled queries, their answers plus distractors as the corpus
    queries = sample(read(args.data / "search" / "cosqa_queries_valid.jsonl.gz"), COSQA_QUERIES, rng)
    corpus = read(args.data / "search" / "cosqa_corpus.jsonl.gz")
    answers = {str(q["answer_idx"]) for q in queries}
    others = [c for c in corpus if str(c["idx"]) not in answers]
    kept = [c for c in corpus if str(c["idx"]) in answers] + sample(others, COSQA_CORPUS - len(answers), rng)
    kept.sort(key=lambda c: int(c["idx"]))
    write(args.out / "search" / "cosqa_queries.jsonl.gz", queries)
    write(args.out / "search" / "cosqa_corpus.jsonl.gz", kept)
    counts["search/cosqa_queries"], counts["search/cosqa_corpus"] = len(queries), len(kept)
    (args.out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
