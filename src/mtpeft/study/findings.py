"""The paper's findings (Akli et al. 2026), each checked against the study's numbers with a stated
rule (``RULES``, printed in the report). Differences are in points (x100 of a metric in [0, 1]);
"multi" is a method's multi-task cell with the study's default weighting; PEFT methods are every
method but ``full``."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Mapping

from mtpeft.study.affinity import Matrix

RULES = [
    "multi-task PEFT ≈ multi-task full fine-tuning: a PEFT method's mean difference to full over the test sets "
    "is ≥ −2 points. Reproduced: every PEFT method; partly: at least one.",
    "multi-task within a few points of single-task, search losing most: (a) every method's mean multi − single "
    "is ≥ −3 points; (b) averaged over methods, search is the task that changes least favourably. Reproduced: both; partly: one.",
    "the serial adapter is the most reliable all-rounder: mean rank of the PEFT methods' multi-task cells over the "
    "test sets (1 = best). Reproduced: serial_adapter ranks first; partly: second.",
    "LoRA is best for search: LoRA's rank among the PEFT methods' multi-task cells on each search set. "
    "Reproduced: first on every search set; partly: first on some, or a mean rank ≤ 2.",
    "search+clone help each other, search+defect interfere (affinity, mean over the methods with pairs): "
    "A[search][clone] > +1, A[clone][search] > +1, A[search][defect] < −1, A[defect][search] < −1 point (a change within "
    "±1 point is read as no effect: a test metric on ~1,000 examples has a standard error of 1–1.6 points). "
    "Reproduced: 4 of 4; partly: 2 or 3.",
    "up to 85% less compute, storage ÷ number of tasks: (a) the best PEFT method's multi-task run saves ≥ 75% "
    "(within 10 points of 85%) of the estimated training FLOPs or of the wall time of the single-task full "
    "fine-tuning runs; (b) its method files take ≤ 1.25 / n_tasks of the same method's single-task runs' (heads "
    "are the same in both settings: one per task). Reproduced: both; partly: one.",
]

REPRODUCED, PARTLY, NOT, UNMEASURED = "reproduced", "partly", "not reproduced", "not measured"
# points: a smaller difference of two test metrics (a task in a pair against alone, a cell against its
# trivial baseline) is read as no difference: on ~1,000 test examples one standard error is 1-1.6 points
NOISE_MARGIN = 1.0
ASSUMED_MAX_SE = 1.6  # points: the largest standard error the margin above assumes (report: sets noisier than this)


@dataclass
class Finding:
    claim: str
    numbers: str
    verdict: str


Table = Mapping[str, Mapping[str, float]]  # method -> test set -> headline metric


def _verdict(held: int, total: int, partly_from: int = 1) -> str:
    if held == total:
        return REPRODUCED
    return PARTLY if held >= partly_from else NOT


def _lower(percent_less: float) -> str:
    return f"{abs(percent_less):.0f}% {'lower' if percent_less >= 0 else 'higher'}"


def _pts(x: float) -> str:
    return f"{x:+.1f}"


def peft_matches_full(multi: Table) -> Finding:
    claim = "multi-task PEFT ≈ multi-task full fine-tuning"
    if "full" not in multi or len(multi) < 2:
        return Finding(claim, "no multi-task full fine-tuning cell", UNMEASURED)
    diffs = {m: mean(100 * (v[s] - multi["full"][s]) for s in v if s in multi["full"]) for m, v in multi.items() if m != "full"}
    held = sum(d >= -2 for d in diffs.values())
    numbers = "mean PEFT − full: " + ", ".join(f"{m} {_pts(d)}" for m, d in diffs.items())
    return Finding(claim, numbers, _verdict(held, len(diffs)))


def multi_close_to_single(single: Table, multi: Table) -> Finding:
    claim = "multi-task within a few points of single-task, code search losing most"
    methods = [m for m in multi if m in single]
    if not methods:
        return Finding(claim, "no method with both single- and multi-task cells", UNMEASURED)
    per_method = {m: mean(100 * (multi[m][s] - single[m][s]) for s in multi[m] if s in single[m]) for m in methods}
    tasks = sorted({s for m in methods for s in multi[m] if s in single[m] and "/" not in s})
    per_task = {t: mean(100 * (multi[m][t] - single[m][t]) for m in methods if t in multi[m] and t in single[m]) for t in tasks}
    worst = min(per_task, key=per_task.get)
    a = all(d >= -3 for d in per_method.values())
    numbers = ("mean multi − single: " + ", ".join(f"{m} {_pts(d)}" for m, d in per_method.items())
               + "; per task (mean over methods): " + ", ".join(f"{t} {_pts(d)}" for t, d in per_task.items())
               + f"; loses most: {worst}")
    if "search" not in per_task:
        return Finding(claim, numbers + " (search not studied)", PARTLY if a else NOT)
    return Finding(claim, numbers, _verdict(int(a) + int(worst == "search"), 2))


def _ranks(multi: Table, sets: list[str]) -> dict[str, list[int]]:
    ranks: dict[str, list[int]] = {m: [] for m in multi}
    for s in sets:
        order = sorted((m for m in multi if s in multi[m]), key=lambda m: -multi[m][s])
        for r, m in enumerate(order, 1):
            ranks[m].append(r)
    return ranks


def serial_adapter_all_rounder(multi: Table) -> Finding:
    claim = "the serial adapter is the most reliable all-rounder"
    peft = {m: v for m, v in multi.items() if m != "full"}
    if "serial_adapter" not in peft or len(peft) < 2:
        return Finding(claim, "needs serial_adapter and another PEFT method", UNMEASURED)
    sets = sorted({s for v in peft.values() for s in v})
    mean_rank = {m: mean(r) for m, r in _ranks(peft, sets).items() if r}
    order = sorted(mean_rank, key=mean_rank.get)
    position = order.index("serial_adapter") + 1
    numbers = "mean rank over the test sets: " + ", ".join(f"{m} {mean_rank[m]:.2f}" for m in order)
    return Finding(claim, numbers, REPRODUCED if position == 1 else PARTLY if position == 2 else NOT)


def lora_best_for_search(multi: Table) -> Finding:
    claim = "LoRA is best for code search"
    peft = {m: v for m, v in multi.items() if m != "full"}
    sets = sorted({s for v in peft.values() for s in v if s.split("/")[0] == "search"})
    if "lora" not in peft or len(peft) < 2 or not sets:
        return Finding(claim, "needs lora, another PEFT method and a search set", UNMEASURED)
    ranks = _ranks(peft, sets)["lora"]
    best = {s: max(peft, key=lambda m: peft[m].get(s, float("-inf"))) for s in sets}
    numbers = "; ".join(f"{s}: lora {peft['lora'][s]:.4f} (rank {r}), best {best[s]} {peft[best[s]][s]:.4f}" for s, r in zip(sets, ranks))
    firsts = sum(r == 1 for r in ranks)
    verdict = REPRODUCED if firsts == len(ranks) else PARTLY if firsts or mean(ranks) <= 2 else NOT
    return Finding(claim, numbers, verdict)


def search_clone_defect_affinity(affinity: Matrix) -> Finding:
    claim = "search+clone help each other, search+defect interfere"
    wanted = [("search", "clone", 1), ("clone", "search", 1), ("search", "defect", -1), ("defect", "search", -1)]
    values = [(i, j, sign, affinity.get(i, {}).get(j)) for i, j, sign in wanted]
    if any(v is None for *_, v in values):
        return Finding(claim, "needs the pairs clone+search and defect+search", UNMEASURED)
    held = sum(sign * v > NOISE_MARGIN for *_, sign, v in values)
    numbers = ", ".join(f"A[{i}][{j}] {_pts(v)}" for i, j, _, v in values) + " (points; mean over the methods with pairs)"
    return Finding(claim, numbers, _verdict(held, 4, partly_from=2))


def compute_and_storage(vs_full: Mapping[str, Mapping[str, dict]], method_storage_ratio: Mapping[str, float], n_tasks: int) -> Finding:
    claim = "up to 85% less compute, storage ÷ number of tasks"
    if not vs_full and not method_storage_ratio:
        return Finding(claim, "needs single-task full fine-tuning and PEFT single/multi cells", UNMEASURED)
    parts, held, total = [], 0, 0
    if vs_full:
        def less(m: str, key: str) -> float:
            value = vs_full[m][key]["less_percent"]
            return float("-inf") if value is None else value
        best = max(vs_full, key=lambda m: max(less(m, "train_flops"), less(m, "wall_seconds")))
        flops, wall = less(best, "train_flops"), less(best, "wall_seconds")
        parts.append(f"best ({best}) multi-task vs {n_tasks} single-task full FT: training FLOPs {_lower(flops)}, wall time {_lower(wall)}")
        held, total = held + int(max(flops, wall) >= 75), total + 1
    if method_storage_ratio:
        best_ratio = min(method_storage_ratio.values())
        parts.append("method files multi / single-task setting: " + ", ".join(f"{m} {r:.3f}" for m, r in method_storage_ratio.items())
                     + f" (1/{n_tasks} = {1 / n_tasks:.3f})")
        held, total = held + int(best_ratio <= 1.25 / n_tasks), total + 1
    verdict = _verdict(held, 2) if total == 2 else (PARTLY if held else NOT)
    return Finding(claim, "; ".join(parts), verdict)
