"""``mtpeft report STUDY_DIR``: report.md, CSV files and PNGs from a study folder's cells.

Every number comes from the cells' own files (metrics.json test metrics, ledger.json,
history.json, trivial_baselines.json, data_report.json's test sizes); cells not finished are
listed, never filled in. Differences are in points (x100 of a metric in [0, 1]).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from statistics import mean, median
from typing import Any

from mtpeft.device import cpu_label
from mtpeft.errors import MtpeftError
from mtpeft.reporting import HEADLINE
from mtpeft.study import findings as F
from mtpeft.study import plots
from mtpeft.study.affinity import Matrix, affinity_matrix, mean_matrix, points
from mtpeft.study.costs import cell_costs, savings, setting_costs, whole_run_timed
from mtpeft.study.uncertainty import StandardError, difference_se, standard_error

METRIC = dict(HEADLINE)  # test set -> headline metric


@dataclass
class CellResult:
    path: str
    backbone: str
    method: str
    regime: str
    tasks: list[str]
    weighting: str
    test: dict[str, dict[str, float]]
    ledger: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    group: str = ""  # method, or backbone/method when the study has several backbones
    trivial: dict[str, dict[str, float]] = field(default_factory=dict)  # test set -> the trivial baseline's metrics
    sizes: dict[str, int] = field(default_factory=dict)  # test set -> examples (queries for search)

    @cached_property
    def standard_errors(self) -> dict[str, StandardError]:
        """test set -> the standard error of this cell's headline metric there (once: F1's is a bootstrap)."""
        out = {}
        for set_name, values in self.test.items():
            mine = headline(set_name, values)
            if mine and (se := standard_error(mine[0], values, self.trivial.get(set_name, {}), self.sizes.get(set_name))):
                out[set_name] = se
        return out

    def standard_error(self, set_name: str) -> StandardError | None:
        return self.standard_errors.get(set_name)


def _se(cell: CellResult | None, set_name: str) -> StandardError | None:
    return cell.standard_error(set_name) if cell else None


def headline(set_name: str, values: dict[str, float]) -> tuple[str, float] | None:
    metric = METRIC.get(set_name) or METRIC.get(set_name.split("/")[0]) or next(iter(values), None)
    return (metric, values[metric]) if metric in values else None


def is_study(folder: Path) -> bool:
    return (Path(folder) / "study.json").exists()


def _read(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as exc:
        raise MtpeftError(f"{path}: invalid JSON ({exc})") from None


def load_results(root: Path) -> tuple[dict[str, Any], list[CellResult], list[dict[str, Any]]]:
    summary = _read(root / "study.json")
    if summary is None:
        raise MtpeftError(f"{root}: not a study folder (no study.json; run 'mtpeft study CONFIG' first)")
    many = len(summary.get("backbones", [])) > 1
    results, missing = [], []
    for cell in summary["cells"]:
        folder = root / cell["path"]
        metrics, ledger = _read(folder / "metrics.json"), _read(folder / "ledger.json")
        if metrics is None or ledger is None:
            status = _read(folder / "study_cell.json", {})
            state = status.get("state", "pending")
            if state == "running":  # a killed cell's status stays "running" until the grid runs it again
                state = "running or interrupted"
            missing.append(cell | {"state": state, "error": status.get("error")})
            continue
        results.append(CellResult(cell["path"], cell["backbone"], cell["method"], cell["regime"], list(cell["tasks"]),
                                  cell["weighting"], metrics.get("test", {}), ledger, _read(folder / "history.json", []),
                                  f"{cell['backbone']}/{cell['method']}" if many else cell["method"],
                                  _read(folder / "trivial_baselines.json", {}).get("test", {}),
                                  sizes_of_test_sets(_read(folder / "data_report.json", {}))))
    return summary, results, missing


def sizes_of_test_sets(data_report: dict[str, Any]) -> dict[str, int]:
    """test set -> its size, from a run's data_report.json."""
    return {name: int(n) for task in data_report.get("sizes", {}).values() for name, n in task.get("test", {}).items()}


@dataclass
class Study:
    summary: dict[str, Any]
    cells: list[CellResult]
    missing: list[dict[str, Any]]

    @property
    def tasks(self) -> list[str]:
        return list(self.summary["tasks"])

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(c.group for c in self.cells))

    def single(self, group: str) -> dict[str, float]:
        """test set -> headline metric of the single-task cells (each set from its task's cell)."""
        out = {}
        for c in self.cells:
            if c.group == group and c.regime == "single":
                out |= {s: h[1] for s, v in c.test.items() if (h := headline(s, v))}
        return out

    def single_cell(self, group: str, set_name: str) -> CellResult | None:
        return next((c for c in self.cells if c.group == group and c.regime == "single" and set_name in c.test), None)

    def multi_cell(self, group: str, weighting: str | None = None) -> CellResult | None:
        weighting = weighting or self.summary["weighting"]
        return next((c for c in self.cells if c.group == group and c.regime == "multi" and c.weighting == weighting), None)

    def multi(self, group: str, weighting: str | None = None) -> dict[str, float]:
        cell = self.multi_cell(group, weighting)
        return {s: h[1] for s, v in cell.test.items() if (h := headline(s, v))} if cell else {}

    def sets(self) -> list[str]:
        found = {s for c in self.cells for s in c.test}
        ordered = [s for t in self.tasks for s in sorted(found) if s.split("/")[0] == t]
        return ordered

    def affinity(self, group: str) -> Matrix | None:
        pairs = {frozenset(c.tasks): {t: h[1] for t in c.tasks if t in c.test and (h := headline(t, c.test[t]))}
                 for c in self.cells if c.group == group and c.regime == "pairs"}
        if not pairs:
            return None
        return affinity_matrix(self.tasks, self.single(group), pairs)

    def affinity_se(self, group: str) -> Matrix:
        """SE[i][j]: the standard error (points) of A[i][j], the pair cell's and the single cell's as if independent."""
        out: Matrix = {i: {j: None for j in self.tasks} for i in self.tasks}
        for c in self.cells:
            if c.group == group and c.regime == "pairs":
                for i in c.tasks:
                    se = difference_se(_se(self.single_cell(group, i), i), c.standard_error(i))
                    for j in c.tasks:
                        if j != i and se is not None:
                            out[i][j] = 100 * se
        return out


def _fmt(value: Any) -> str:
    """Metrics (below 1) with 4 decimals, seconds and megabytes with 1, large counts in 3 digits."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) < 1:
            return f"{value:.4f}"
        return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.3g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def signed(value: float | None) -> str:
    """A difference in points, for the markdown tables (the CSVs keep the numbers)."""
    return "—" if value is None else f"{value:+.1f}"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, headers: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        writer.writerows([["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row] for row in rows])
    return path


def _diff(a: float | None, b: float | None) -> float | None:
    return points(a, b)


def single_vs_multi_rows(study: Study) -> list[list[Any]]:
    """[method, test set, metric, single, multi, Δ points, SE of Δ in points] per method and set."""
    rows = []
    for g in study.groups:
        single, multi, multi_cell = study.single(g), study.multi(g), study.multi_cell(g)
        for s in study.sets():
            if s in single or s in multi:
                metric = METRIC.get(s) or METRIC.get(s.split("/")[0], "")
                se = difference_se(_se(study.single_cell(g, s), s), _se(multi_cell, s))
                rows.append([g, s, metric, single.get(s), multi.get(s), _diff(multi.get(s), single.get(s)),
                             None if se is None else 100 * se])
    return rows


def last_record(cell: CellResult | None) -> dict[str, Any]:
    """A cell's last validation record in history.json (train losses since the one before)."""
    return cell.history[-1] if cell and cell.history else {}


def training_rows(study: Study) -> list[list[Any]]:
    """Per method and task, single- against multi-task at the last validation: the task's mean
    training loss over the last interval (unweighted) and its headline validation metric."""
    rows = []
    for g in study.groups:
        multi = last_record(study.multi_cell(g))
        for t in study.tasks:
            single = last_record(study.single_cell(g, t))
            loss = [r.get("train_loss", {}).get(t) for r in (single, multi)]
            valid = [headline(t, r.get("valid", {}).get(t, {})) for r in (single, multi)]
            valid_values = [v[1] if v else None for v in valid]
            if any(v is not None for v in loss + valid_values):
                metric = next((v[0] for v in valid if v), "")
                delta_loss = None if None in loss else loss[1] - loss[0]
                rows.append([g, t, *loss, delta_loss, metric, *valid_values, _diff(valid_values[1], valid_values[0])])
    return rows


def plus_minus(se_points: float | None) -> str:
    return "—" if se_points is None else f"±{se_points:.1f}"


def with_se(value: float | None, se_points: float | None) -> str:
    """A difference in points with its standard error, where both are known."""
    return signed(value) if value is None or se_points is None else f"{signed(value)} {plus_minus(se_points)}"


def precision_rows(study: Study) -> list[list[Any]]:
    """Per test set: its size, the metric, how its standard error is had, and the standard error of
    one cell's value over the cells (points): median, lowest, highest."""
    rows = []
    for s in study.sets():
        errors = [(c, e) for c in study.cells if s in c.test and (e := c.standard_error(s))]
        if not errors:
            continue
        in_points = sorted(100 * e.value for _, e in errors)
        cell = errors[0][0]
        positives = cell.trivial.get(s, {}).get("precision")
        n = cell.sizes[s]
        rows.append([s, n, None if positives is None else round(positives * n), headline(s, cell.test[s])[0],
                     errors[0][1].how, median(in_points), in_points[0], in_points[-1]])
    return rows


def precision_section(study: Study, out: Path) -> tuple[list[str], list[str]]:
    """The report's table of each test set's precision, and the sets noisier than the noise margin assumes."""
    headers = ["test set", "examples (queries)", "positives", "metric", "standard error by", "SE median (points)", "SE lowest", "SE highest"]
    rows = precision_rows(study)
    if not rows:
        return [], []
    write_csv(out / "standard_errors.csv", headers, rows)
    noisy = [f"{r[0]} ({plus_minus(r[5])})" for r in rows if r[5] > F.ASSUMED_MAX_SE]
    md = ["## How precise each test set is", "",
          "The standard error of one cell's test metric, in points: binomial for accuracy; for F1, a bootstrap of the "
          "test examples, drawn as the cell's confusion counts (recovered from its precision, recall, the sample's size "
          "and positive share); for MRR an upper bound, sqrt(m(1 − m) / queries), since no per-query ranks are kept. "
          "The single- vs multi-task table gives the SE of each difference as if the two cells were independent; both "
          "are scored on the same examples, so the paired error is usually smaller.", "",
          md_table(headers, [r[:5] + [f"{v:.1f}" for v in r[5:]] for r in rows]), ""]
    return md, noisy


def baseline_rows(study: Study) -> list[list[Any]]:
    """Every cell's test metric beside its trivial baseline (majority class, all-positive, random
    ranking) on the same test sample: a cell that does not beat it by more than the noise margin
    (1 point) has learned nothing readable."""
    rows = []
    for c in study.cells:
        for s, values in c.test.items():
            mine, trivial = headline(s, values), headline(s, c.trivial.get(s, {}))
            if mine and trivial and mine[0] == trivial[0]:
                rows.append([c.path, s, mine[0], mine[1], trivial[1], _diff(mine[1], trivial[1]),
                             "yes" if 100 * (mine[1] - trivial[1]) > F.NOISE_MARGIN else "no"])
    return rows


def unreadable_sets(rows: list[list[Any]]) -> list[str]:
    """Test sets on which at least one cell does not beat its trivial baseline."""
    return list(dict.fromkeys(r[1] for r in rows if r[-1] == "no"))


def peft_vs_full_rows(study: Study) -> list[list[Any]]:
    full = next((g for g in study.groups if g.split("/")[-1] == "full"), None)
    if full is None:
        return []
    reference = study.multi(full)
    rows = []
    for g in study.groups:
        if g == full:
            continue
        multi = study.multi(g)
        for s in study.sets():
            if s in multi and s in reference:
                rows.append([g, s, multi[s], reference[s], _diff(multi[s], reference[s])])
    return rows


def weighting_rows(study: Study) -> tuple[list[str], list[list[Any]], dict[str, dict[str, dict[str, float]]]]:
    sets = study.sets()
    rows, by_group = [], {}
    for g in study.groups:
        cells = [c for c in study.cells if c.group == g and c.regime == "multi"]
        if len(cells) < 2:
            continue
        by_group[g] = {}
        for c in cells:
            values = {s: h[1] for s, v in c.test.items() if (h := headline(s, v))}
            by_group[g][c.weighting] = values
            last = next((r for rec in reversed(c.history) for r in reversed(rec.get("weights", []))), {})
            final = ", ".join(f"{t} {last[t]:.2f}" for t in c.tasks if t in last)
            rows.append([g, c.weighting] + [values.get(s) for s in sets] + [mean(values.values()) if values else None, final])
    return ["method", "weighting", *sets, "mean", "final weights"], rows, by_group


def cell_cpus(ledger: dict[str, Any]) -> str:
    """The CPU(s) a cell trained on, from its ledger (older ledgers did not record it)."""
    cpus = ledger.get("cpus") or ([cpu_label(ledger)] if ledger.get("cpu") else [])
    return " + ".join(cpus) or "not recorded"


def cost_tables(study: Study) -> dict[str, Any]:
    """Per cell, per setting (single-task: its n single cells; multi-task: its one cell) and savings."""
    cell_rows = []
    for c in study.cells:
        k = cell_costs(c.ledger)
        cell_rows.append([c.path, c.group, c.regime, "+".join(c.tasks), c.weighting, int(k["trainable_params"]), int(k["storage_bytes"]),
                          round(k["wall_seconds"], 1), int(k["train_tokens"]), k["train_flops"], k["peak_rss_mb"],
                          c.ledger.get("torch_threads", ""), cell_cpus(c.ledger), "yes" if c.ledger.get("resumed") else "no", "yes" if whole_run_timed(c.ledger) else "no"])
    settings: dict[tuple[str, str], dict[str, float]] = {}
    for g in study.groups:
        singles = [c.ledger for c in study.cells if c.group == g and c.regime == "single"]
        if len(singles) == len(study.tasks):
            settings[(g, "single-task")] = setting_costs(singles)
        multi = study.multi_cell(g)
        if multi:
            settings[(g, "multi-task")] = setting_costs([multi.ledger])
    setting_rows = [[g, kind, int(v["cells"]), int(v["trainable_params"]), int(v["storage_bytes"]), round(v["wall_seconds"], 1), v["train_flops"], v["peak_rss_mb"]]
                    for (g, kind), v in settings.items()]
    full = next((g for g in study.groups if g.split("/")[-1] == "full"), None)
    saving_rows, vs_full, storage_ratio = [], {}, {}
    for g in study.groups:
        if g == full or (g, "multi-task") not in settings:
            continue
        mt = settings[(g, "multi-task")]
        for label, key in ((f"{len(study.tasks)} single-task full FT", (full, "single-task")), (f"{len(study.tasks)} single-task {g}", (g, "single-task"))):
            if key not in settings:
                continue
            s = savings(mt, settings[key])
            if key[0] == full:
                vs_full[g] = s
            saving_rows.append([g, label] + [s[k]["ratio"] for k in ("wall_seconds", "train_flops", "trainable_params", "storage_bytes")]
                               + [s[k]["less_percent"] for k in ("wall_seconds", "train_flops", "trainable_params", "storage_bytes")])
        if (g, "single-task") in settings:
            method_bytes = lambda ledgers: sum(l.get("adapter_bytes", 0) for l in ledgers)  # noqa: E731
            singles = [c.ledger for c in study.cells if c.group == g and c.regime == "single"]
            denominator = method_bytes(singles)
            if denominator:
                storage_ratio[g] = method_bytes([study.multi_cell(g).ledger]) / denominator
    return {"cells": cell_rows, "settings": setting_rows, "savings": saving_rows, "vs_full": vs_full, "storage_ratio": storage_ratio}


def rules_list() -> list[str]:
    return [f"{k}. {rule}" for k, rule in enumerate(F.RULES, 1)]


def check_findings(study: Study, costs: dict[str, Any], affinity_mean: Matrix) -> list[F.Finding]:
    single = {g.split("/")[-1]: study.single(g) for g in study.groups if study.single(g)}
    multi = {g.split("/")[-1]: study.multi(g) for g in study.groups if study.multi(g)}
    vs_full = {g.split("/")[-1]: v for g, v in costs["vs_full"].items()}
    return [
        F.peft_matches_full(multi),
        F.multi_close_to_single(single, multi),
        F.serial_adapter_all_rounder(multi),
        F.lora_best_for_search(multi),
        F.search_clone_defect_affinity(affinity_mean),
        F.compute_and_storage(vs_full, {g.split("/")[-1]: r for g, r in costs["storage_ratio"].items()}, len(study.tasks)),
    ]


def baseline_section(study: Study, out: Path) -> tuple[list[str], list[str]]:
    """The report's section on trivial baselines (failing rows only; all rows in a CSV) and the
    test sets it makes unreadable."""
    headers = ["cell", "test set", "metric", "cell's value", "trivial baseline", "Δ points", "beats it"]
    rows = baseline_rows(study)
    write_csv(out / "trivial_baselines.csv", headers, rows)
    failing = [r for r in rows if r[-1] == "no"]
    md = ["## Every cell against its trivial baseline", "",
          f"{len(rows) - len(failing)} of {len(rows)} (cell, test set) results beat the trivial baseline of their own test "
          f"sample (majority class, all-positive or random ranking) by more than {F.NOISE_MARGIN:g} point, the noise margin of "
          "a test sample of ~1,000 (every row in `trivial_baselines.csv`)."
          + (" Results that do not, so the comparisons on their sets are not readable at this budget:" if failing else ""), ""]
    if failing:
        md += [md_table(headers, [r[:5] + [signed(r[5]), r[6]] for r in failing]), ""]
    return md, unreadable_sets(rows)


def write_report(root: Path, output: Path | None = None) -> Path:
    root = Path(root)
    out = Path(output or root)
    out.mkdir(parents=True, exist_ok=True)
    summary, cells, missing = load_results(root)
    if not cells:
        raise MtpeftError(f"{root}: no finished cell yet (metrics.json + ledger.json); nothing to report")
    study = Study(summary, cells, missing)
    sets = study.sets()
    md = [f"# Study report: {root.name}", "",
          f"Tasks: {', '.join(study.tasks)}. Methods: {', '.join(summary['methods'])}. Backbones: {', '.join(summary['backbones'])}. "
          f"Default loss weighting: `{summary['weighting']}`. Base config: `{summary.get('base', '')}`.",
          f"Budget (every cell): `{json.dumps(summary.get('budget', {}))}`. "
          f"Cells finished: {len(cells)} of {len(summary['cells'])}.", "",
          "All metrics are on the test sets (headline metric per set: " + ", ".join(f"{s} {m}" for s, m in HEADLINE) + "); "
          "differences are in points (×100). CSV files beside this report hold every table.", ""]
    intro_end = len(md)  # the findings go here, once every table is computed
    readable, unreadable = baseline_section(study, out)
    precise, noisy = precision_section(study, out)
    noise = frozenset(unreadable)  # sets marked in the plots: no cell's change there is a result

    # single vs multi
    headers = ["method", "test set", "metric", "single-task", "multi-task", "Δ points", "SE of Δ (points)"]
    rows = single_vs_multi_rows(study)
    write_csv(out / "single_vs_multi.csv", headers, rows)
    md += ["## Single-task vs multi-task, per method", "", md_table(headers, [r[:5] + [signed(r[5]), plus_minus(r[6])] for r in rows]), ""]
    deltas = {}
    for g, s, _, a, b, d, _se_points in rows:
        if d is not None:
            deltas.setdefault(g, {})[s] = d
    if deltas:
        plots.grouped_bars(deltas, out / "multi_minus_single.png", "Multi-task minus single-task, per method",
                           "test metric difference (points)", unreadable=noise)
        md += ["![multi minus single](multi_minus_single.png)", ""]

    rows = training_rows(study)
    if rows:
        headers = ["method", "task", "train loss single", "train loss multi", "Δ loss", "valid metric", "valid single",
                   "valid multi", "Δ points"]
        write_csv(out / "training_single_vs_multi.csv", headers, rows)
        md += ["### What training saw, single- vs multi-task", "",
               "At each cell's last validation: the task's mean training loss over the last validation interval (its own "
               "loss, unweighted) and its headline metric on the validation sample (threshold tuned there, so optimistic "
               "in both settings; a capped validation sample keeps more of the rare class, so its F1 is steadier than the "
               "test sample's).", "",
               md_table(headers, [r[:4] + [None if r[4] is None else f"{r[4]:+.3f}", r[5], r[6], r[7], signed(r[8])] for r in rows]), ""]

    rows = peft_vs_full_rows(study)
    if rows:
        headers = ["method", "test set", "multi-task PEFT", "multi-task full FT", "Δ points"]
        write_csv(out / "peft_vs_full.csv", headers, rows)
        md += ["## Multi-task PEFT vs multi-task full fine-tuning", "", md_table(headers, [r[:-1] + [signed(r[-1])] for r in rows]), ""]

    # affinity
    matrices = {}
    for g in study.groups:
        matrix = study.affinity(g)
        if matrix is None:
            continue
        matrices[g] = matrix
        name = g.replace("/", "--")
        write_csv(out / f"affinity_{name}.csv", ["task measured \\ trained with", *study.tasks],
                  [[i] + [matrix[i][j] for j in study.tasks] for i in study.tasks])
        plots.affinity_heatmap(matrix, out / f"affinity_{name}.png", f"Task affinity ({g})", "headline test metric",
                               unreadable=noise)
    affinity_mean = mean_matrix(list(matrices.values()))
    if matrices:
        md += ["## Task affinity", "",
               "Change of the row task's test metric when trained with the column task, relative to training it alone "
               "(points; positive: the partner helps), ± its standard error (the two cells' as if independent). Mean over "
               "the methods with pairs first.", ""]
        tables = ({"mean over " + ", ".join(matrices): affinity_mean} if len(matrices) > 1 else {}) | matrices
        for label, matrix in tables.items():
            errors = study.affinity_se(label) if label in matrices else {}
            md += [f"### {label}", "", md_table(["measured \\ with", *study.tasks],
                                                [[i] + [with_se(matrix[i][j], errors.get(i, {}).get(j)) for j in study.tasks]
                                                 for i in study.tasks]), ""]
            if label in matrices:
                name = label.replace("/", "--")
                write_csv(out / f"affinity_se_{name}.csv", ["task measured \\ trained with", *study.tasks],
                          [[i] + [errors[i][j] for j in study.tasks] for i in study.tasks])
                md += [f"![affinity {label}](affinity_{name}.png)", ""]
        if len(matrices) > 1:
            write_csv(out / "affinity_mean.csv", ["task measured \\ trained with", *study.tasks],
                      [[i] + [affinity_mean[i][j] for j in study.tasks] for i in study.tasks])
            plots.affinity_heatmap(affinity_mean, out / "affinity_mean.png", "Task affinity (mean over methods)", "headline test metric",
                                   unreadable=noise)
            md += ["![affinity mean](affinity_mean.png)", ""]

    # loss weightings
    headers, rows, by_group = weighting_rows(study)
    if rows:
        write_csv(out / "weightings.csv", headers, rows)
        md += ["## Loss weightings (multi-task cell)", "", md_table(headers, rows), ""]
        for g, values in by_group.items():
            name = g.replace("/", "--")
            plots.grouped_bars(values, out / f"weightings_{name}.png", f"Loss weightings on the multi-task {g} cell",
                               "test metric (headline)", zero_line=False, unreadable=noise)
            histories = {c.weighting: [r for rec in c.history for r in rec.get("weights", [])]
                         for c in study.cells if c.group == g and c.regime == "multi"}
            plots.weight_trajectories(histories, out / f"weight_trajectories_{name}.png", f"Loss weights per step ({g}, multi-task)")
            md += [f"![weightings {g}](weightings_{name}.png)", "", f"![weight trajectories {g}](weight_trajectories_{name}.png)", ""]

    # costs
    costs = cost_tables(study)
    cell_headers = ["cell", "method", "regime", "tasks", "weighting", "trainable params", "storage bytes", "wall s", "train tokens",
                    "train FLOPs (est.)", "peak RSS MB", "torch threads", "CPU", "resumed", "whole run timed"]
    write_csv(out / "costs_cells.csv", cell_headers, costs["cells"])
    setting_headers = ["method", "setting", "runs", "effective trainable params", "storage bytes", "wall s", "train FLOPs (est.)", "peak RSS MB"]
    write_csv(out / "costs_settings.csv", setting_headers, costs["settings"])
    md += ["## Cost ledger", "",
           "A single-task setting needs one run (module + head) per task: its effective parameters, storage, time and FLOPs "
           "are the sums over its runs; peak RSS is the largest run's. Storage: the method's saved files + heads, on top of the "
           "shared frozen backbone (full fine-tuning saves the whole backbone). Training FLOPs are estimated as "
           "tokens × (4·N + 2·N_trainable) (N: backbone parameters, N_trainable: the method's; forward 2N, backward 2N for "
           "activation gradients + 2·N_trainable for weight gradients; 6N when everything trains; heads and evaluation left out). "
           "Per cell: `costs_cells.csv`.", ""]
    machines = Counter((cell_cpus(c.ledger), c.ledger.get("torch_threads")) for c in study.cells)
    md += ["Wall times compare fairly only on one CPU and thread count. The cells ran on: "
           + "; ".join(f"{cpu}, {threads or '?'} thread(s): {n} cell(s)" for (cpu, threads), n in sorted(machines.items(), key=str)) + ".", ""]
    untimed = [r[0] for r in costs["cells"] if r[-1] == "no"]
    if untimed:
        md += [f"Cells resumed from a checkpoint older than the carried ledger ({', '.join(untimed)}): their wall time is "
               "the last sitting's only, so the wall-time sums below undercount them.", ""]
    if costs["settings"]:
        md += [md_table(setting_headers, [r[:6] + [f"{r[6]:.3g}", r[7]] for r in costs["settings"]]), ""]
    if costs["savings"]:
        saving_headers = ["multi-task run", "against", "wall ratio", "FLOPs ratio", "params ratio", "storage ratio",
                          "wall % less", "FLOPs % less", "params % less", "storage % less"]
        write_csv(out / "savings.csv", saving_headers, costs["savings"])
        shown = [r[:2] + [_fmt(v) if v is None else f"{v:.3f}" for v in r[2:6]] + [_fmt(v) if v is None else f"{v:.0f}%" for v in r[6:]] for r in costs["savings"]]
        md += ["### Savings of one multi-task run (ratio = multi-task / the single-task setting)", "", md_table(saving_headers, shown), ""]
        bars = {f"{r[0]} vs {r[1]}": {"wall time": r[6], "training FLOPs": r[7], "trainable params": r[8], "storage": r[9]} for r in costs["savings"]}
        plots.grouped_bars(bars, out / "savings.png", "Savings of one multi-task run", "% less than the single-task setting", xlabel="cost")
        md += ["![savings](savings.png)", ""]

    found = check_findings(study, costs, affinity_mean)
    headers = ["the paper's finding", "our numbers", "verdict"]
    write_csv(out / "findings.csv", headers, [[f.claim, f.numbers, f.verdict] for f in found])
    caveat = ([f"Not readable: {', '.join(unreadable)} (some cell does not beat its trivial baseline there; see below). "
               "A finding that rests on those sets says less than its verdict.", ""] if unreadable else [])
    caveat += ([f"Noisier than the noise margin assumes (median standard error of one cell above {F.ASSUMED_MAX_SE:g} points): "
                f"{', '.join(noisy)}; see 'How precise each test set is'. A difference of two cells there is read with its own "
                "standard error, in the single- vs multi-task table.", ""] if noisy else [])
    md[intro_end:intro_end] = (["## The paper's findings, checked", "", md_table(headers, [[f.claim, f.numbers, f.verdict] for f in found]), "",
                                *caveat, "Rules (points = ×100):", "", *rules_list(), ""] + readable + precise)

    if missing:
        md += ["## Cells not finished", "", md_table(["cell", "state", "error"], [[m["path"], m["state"], m.get("error") or ""] for m in missing]), ""]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return path
