"""The prompting baseline: ask a chat LLM the four tasks' questions and score its answers with the
metrics of the fine-tuned runs, on the same test sets.

- Binary tasks (defect, clone, flaky): one yes/no question per test example. The answer is parsed
  (``parsing.parse_yes_no``); unparseable answers are counted and scored as the negative class.
  Metrics: the task's own ``score`` (defect: accuracy + F1; clone, flaky: F1, precision, recall).
- Code search: BM25 ranks the whole corpus for each query; the LLM is asked, for each of the
  top-k candidates, whether the code implements the query. Candidates answered "yes" move above
  those answered "no" (ties keep their BM25 order); candidates outside the top-k keep their BM25
  rank below them. MRR over the whole corpus; the BM25 MRR alone is reported as ``bm25_mrr``.
- k-shot: the k training examples most similar to the test input by BM25 are shown first, as
  earlier chat turns with their gold answers (most similar last). Search demonstrations are the
  training pairs whose queries are most similar, alternately with their own code (yes) and with
  another pair's code (no).
- A sample cap keeps a seeded random subset of each test set (``subsample``, as the core's
  ``max_eval_per_task``); for search it caps the queries and the corpus stays whole.

Every answer is appended to ``answers.jsonl`` in the output folder as soon as its batch is done.
The file is also the cache: an answer is reused when (task, set, example id, shots, model) match
and the prompt is unchanged (its sha1 is stored), so an interrupted evaluation resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from mtpeft.baselines.backends import Backend, BackendError, Conversation
from mtpeft.baselines.bm25 import BM25Index
from mtpeft.baselines.parsing import decide, parse_yes_no
from mtpeft.config import RunConfig, load_yaml
from mtpeft.fileio import atomic_write_text
from mtpeft.errors import MtpeftError

BINARY_TASKS = ("defect", "clone", "flaky")
DEFAULT_INPUT_TOKENS = 512


# ---- templates -------------------------------------------------------------------------------------

def default_prompts_path() -> Path:
    return Path(str(resources.files("mtpeft") / "resources" / "configs" / "prompts.yaml"))


def load_prompts(path: str | Path | None = None) -> dict[str, Any]:
    """The bundled templates, with a user file's keys merged over them task by task."""
    prompts = load_yaml(default_prompts_path())
    if path is not None:
        user = load_yaml(path)
        unknown = sorted(set(user) - {"system", "answer_yes", "answer_no", "max_new_tokens", "tasks"}, key=str)
        if unknown:
            hint = " (YAML reads a bare yes/no key as true/false: use answer_yes / answer_no)" if any(
                isinstance(k, bool) for k in unknown) else ""
            raise MtpeftError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; valid: system, answer_yes, "
                              f"answer_no, max_new_tokens, tasks{hint}")
        for key, value in user.items():
            if key == "tasks":
                if not isinstance(value, dict):
                    raise MtpeftError(f"{path}: 'tasks' must map task names to templates")
                for task, spec in value.items():
                    if not isinstance(spec, dict):
                        raise MtpeftError(f"{path}: tasks.{task} must be a mapping (user, positive_words, ...)")
                    prompts["tasks"][task] = {**prompts["tasks"].get(task, {}), **spec}
            else:
                prompts[key] = value
    for task, spec in prompts["tasks"].items():
        template = spec.get("user")
        if not isinstance(template, str) or not template.strip():
            raise MtpeftError(f"prompt template of task {task!r} has no 'user' text")
        from mtpeft.tasks import TASKS  # (imported here: reading prompts needs no torch otherwise)

        placeholders = TASKS.get(task).prompt_placeholders if task in TASKS else ()
        missing = [p for p in placeholders if "{" + p + "}" not in template]
        if missing:
            raise MtpeftError(f"prompt template of task {task!r} lacks the placeholder(s) {', '.join('{' + p + '}' for p in missing)}")
    return prompts


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known ``{placeholders}`` in one pass (code containing braces stays intact)."""
    import re

    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


# ---- settings and the answer cache -----------------------------------------------------------------

@dataclass
class Settings:
    shots: int = 0
    max_per_task: int | None = None  # test examples (search: queries) per evaluation set
    max_queries: int | None = None  # search: queries per evaluation set (None: max_per_task)
    top_k: int = 10
    max_input_tokens: int | None = None  # None: the template's value
    shot_tokens: int | None = None
    context_tokens: int = 2048  # prompt + answer must fit in this
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: the templates' value
    decision: str = "generate"  # generate (+ parsing) | logprob (local back-end only)
    seed: int = 42
    progress: bool = True


@dataclass
class Job:
    """One question to the LLM."""

    task: str
    set: str
    id: str
    conversation: Conversation
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def sha(self, settings: Settings, max_new_tokens: int) -> str:
        text = json.dumps([self.conversation, settings.decision, max_new_tokens], ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_key(task: str, set_name: str, example_id: str, shots: int, model: str) -> str:
    return json.dumps([task, set_name, example_id, shots, model], ensure_ascii=False)


class AnswerCache:
    """``answers.jsonl``: one JSON object per answer, appended batch by batch; the last line for a
    key wins. A line cut short by an interruption is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    key = cache_key(record["task"], record["set"], record["id"], record["shots"], record["model"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                self.records[key] = record

    def get(self, key: str, sha: str) -> dict[str, Any] | None:
        record = self.records.get(key)
        return record if record is not None and record.get("prompt_sha1") == sha else None

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[cache_key(record["task"], record["set"], record["id"], record["shots"], record["model"])] = record
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self) -> None:
        """Rewrite the file with the latest record per key only."""
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()))


# ---- search re-ranking -----------------------------------------------------------------------------

def rerank_scores(lexical: np.ndarray, top: Sequence[int], llm: Sequence[float]) -> np.ndarray:
    """Scores of one query over the whole corpus after re-ranking.

    The ``top`` candidates (corpus indices) are ordered by the LLM's score (1 yes / 0 no, or
    P(yes)), ties by their lexical score, and placed above every other candidate; those keep
    their lexical scores and order. Candidates equal on both keys share a score (the metric then
    ranks the answer below its ties, pessimistically, as for the fine-tuned models).
    """
    final = np.asarray(lexical, dtype=np.float64).copy()
    if len(top) == 0:
        return final
    order = sorted(range(len(top)), key=lambda i: (-float(llm[i]), -final[top[i]]))
    keys = [(float(llm[i]), final[top[i]]) for i in order]
    score = final.max() + 1.0 + len(top)
    for position, i in enumerate(order):
        if position and keys[position] != keys[position - 1]:
            score -= 1.0
        final[top[i]] = score
    return final


# ---- the evaluation --------------------------------------------------------------------------------

class Evaluator:
    def __init__(self, backend: Backend, prompts: dict[str, Any], settings: Settings, output: Path,
                 cache: Path | None = None) -> None:
        self.backend = backend
        self.prompts = prompts
        self.settings = settings
        self.output = Path(output)
        self.cache = AnswerCache(Path(cache) if cache is not None else self.output / "answers.jsonl")
        self.max_new_tokens = int(settings.max_new_tokens or prompts.get("max_new_tokens", 6))
        if settings.decision not in ("generate", "logprob"):
            raise MtpeftError(f"unknown --decision {settings.decision!r}; valid: generate, logprob")
        if settings.decision == "logprob" and not backend.supports_logprob:
            raise MtpeftError(f"the {backend.kind} back-end cannot score by log-probability; use --decision generate")
        self.summary: dict[str, Any] = {}
        self.asked = 0  # prompts sent to the back-end in this invocation (the rest came from the cache)

    # ---- prompts ------------------------------------------------------------------------------
    def spec(self, task: str) -> dict[str, Any]:
        if task not in self.prompts["tasks"]:
            raise MtpeftError(f"no prompt template for task {task!r}; add one under 'tasks' in --prompts")
        return self.prompts["tasks"][task]

    def budgets(self, task: str) -> tuple[int, int]:
        spec = self.spec(task)
        test = int(self.settings.max_input_tokens or spec.get("max_input_tokens") or DEFAULT_INPUT_TOKENS)
        shot = int(self.settings.shot_tokens or spec.get("shot_tokens") or max(16, test // 2))
        return test, shot

    def fields(self, task: str, example: Any, budget: int, stats: dict[str, int]) -> dict[str, str]:
        """The placeholder values of one input, each cut to its share of the budget."""
        def cut(text: str, tokens: int) -> str:
            text, was_cut = self.backend.truncate(text, tokens)
            stats["truncated_inputs"] += int(was_cut)
            return text

        if task == "clone":
            return {"code_a": cut(example.text, budget // 2), "code_b": cut(example.text_b or "", budget // 2)}
        if task == "search":
            query, code = example
            query_tokens = int(self.spec(task).get("query_tokens", 64))
            return {"query": cut(query, min(query_tokens, budget)), "code": cut(code, budget)}
        return {"code": cut(example.text, budget)}

    def conversation(self, task: str, test: dict[str, str], demos: Sequence[tuple[dict[str, str], int]]) -> Conversation:
        template = self.spec(task)["user"]
        messages: Conversation = []
        if self.prompts.get("system"):
            messages.append({"role": "system", "content": str(self.prompts["system"])})
        for values, label in demos:
            messages.append({"role": "user", "content": fill(template, values)})
            messages.append({"role": "assistant", "content": str(self.prompts["answer_yes"] if label else self.prompts["answer_no"])})
        messages.append({"role": "user", "content": fill(template, test)})
        return messages

    def demo_fields(self, task: str, demos: Sequence[tuple[Any, int]], stats: dict[str, int]) -> list[tuple[dict[str, str], int]]:
        """Demonstrations (example, label) as filled placeholders within the shot budget."""
        shot_budget = self.budgets(task)[1]
        return [(self.fields(task, example, shot_budget, stats), label) for example, label in demos]

    def fit(self, task: str, test_input: Any, demos: list[tuple[dict[str, str], int]], stats: dict[str, int]) -> Conversation:
        """A conversation that fits the context: drop the least similar demonstrations (the first)
        while it does not, then halve the test input's budget."""
        budget = self.budgets(task)[0]
        limit = self.settings.context_tokens - self.max_new_tokens
        while True:
            trial = {"truncated_inputs": 0}
            conversation = self.conversation(task, self.fields(task, test_input, budget, trial), demos)
            if self.backend.prompt_tokens(conversation) <= limit:
                break
            if demos:
                demos = demos[1:]
                stats["demos_dropped"] += 1
            elif budget > 16:
                budget //= 2
            else:
                raise MtpeftError(f"the {task} template alone does not fit in --context-tokens {self.settings.context_tokens}")
        stats["truncated_inputs"] += trial["truncated_inputs"]
        return conversation

    # ---- asking -------------------------------------------------------------------------------
    def ask(self, jobs: list[Job], desc: str) -> list[dict[str, Any]]:
        """Answer records for the jobs, from the cache or the back-end (in length-sorted batches)."""
        from tqdm.auto import tqdm

        model = self.backend.key
        shas = [job.sha(self.settings, self.max_new_tokens) for job in jobs]
        keys = [cache_key(j.task, j.set, j.id, self.settings.shots, model) for j in jobs]
        records: list[dict[str, Any] | None] = [self.cache.get(k, s) for k, s in zip(keys, shas)]
        todo = [i for i, r in enumerate(records) if r is None]
        todo.sort(key=lambda i: (sum(len(m["content"]) for m in jobs[i].conversation), i))
        spec = self.spec(jobs[0].task) if jobs else {}
        size = max(1, self.settings.batch_size)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, disable=not self.settings.progress, leave=False)
        try:
            for start in range(0, len(todo), size):
                index = todo[start : start + size]
                conversations = [jobs[i].conversation for i in index]
                scores: list[float | None] = [None] * len(index)
                try:
                    if self.settings.decision == "logprob":
                        scores = self.backend.yes_probability(conversations, [str(self.prompts["answer_yes"])], [str(self.prompts["answer_no"])])
                        answers = [f"P(yes)={p:.4f}" for p in scores]
                    else:
                        answers = self.backend.generate(conversations, self.max_new_tokens)
                except BackendError as error:
                    done = [self.record(jobs[index[k]], shas[index[k]], text, None, spec) for k, text in sorted(error.partial.items())]
                    self.cache.add(done)
                    cached = sum(1 for r in records if r is not None) + len(done)
                    raise MtpeftError(
                        f"{error} -- {cached} of {len(jobs)} answers of {desc} are saved in {self.cache.path}; "
                        "run the same command again to resume"
                    ) from None
                new = [self.record(jobs[i], shas[i], text, score, spec) for i, text, score in zip(index, answers, scores)]
                self.asked += len(new)
                self.cache.add(new)
                for i, record in zip(index, new):
                    records[i] = record
                bar.update(len(index))
        finally:
            bar.close()
        for record in records:  # parse again: cached answers follow the current rules and words
            if record is not None and record.get("p_yes") is None:
                record["parsed"] = parse_yes_no(record["answer"], spec.get("positive_words", ()), spec.get("negative_words", ()))
        return [r for r in records if r is not None]

    def record(self, job: Job, sha: str, answer: str, score: float | None, spec: dict[str, Any]) -> dict[str, Any]:
        if score is not None:
            parsed: int | None = int(score >= 0.5)
        else:
            parsed = parse_yes_no(answer, spec.get("positive_words", ()), spec.get("negative_words", ()))
        record = {
            "task": job.task, "set": job.set, "id": job.id, "shots": self.settings.shots, "model": self.backend.key,
            "decision": self.settings.decision, "answer": answer, "parsed": parsed, "p_yes": score, "label": job.label,
        }
        return record | job.meta | {"prompt_sha1": sha}

    # ---- tasks --------------------------------------------------------------------------------
    def new_stats(self) -> dict[str, int]:
        return {"truncated_inputs": 0, "demos_dropped": 0}

    def evaluate_binary(self, task: Any, evalset: Any, train: Sequence[Any]) -> dict[str, float]:
        from mtpeft.tasks.base import subsample

        examples = subsample(evalset.data, self.settings.max_per_task, self.settings.seed)
        stats = self.new_stats()
        index = self.shot_index(train, lambda e: e.text + "\n" + (e.text_b or ""))
        jobs, nearest = [], []
        for example in examples:
            demos = []
            if index is not None:
                near = index.top(example.text + "\n" + (example.text_b or ""), self.settings.shots)
                demos = self.demo_fields(task.name, [(train[i], int(train[i].label)) for i in reversed(near)], stats)
                nearest.append(int(train[near[0]].label) if near else 0)
            conversation = self.fit(task.name, example, demos, stats)  # most similar demonstration last
            jobs.append(Job(task.name, evalset.name, example.id, conversation, int(example.label)))
        records = self.ask(jobs, f"{evalset.name} ({self.settings.shots}-shot)")
        labels = np.array([r["label"] for r in records], dtype=np.int64)
        predictions = np.array([decide(r["parsed"]) for r in records], dtype=np.int64)
        metrics = task.score(labels, predictions)
        self.summary[evalset.name] = stats | {
            "examples": len(examples), "of": len(evalset.data), "prompts": len(jobs),
            "unparseable": sum(r["parsed"] is None for r in records),
            "predicted_positive": int(predictions.sum()), "positives": int(labels.sum()),
        }
        if nearest:
            # what copying the label of the most similar demonstration would score (a BM25 1-NN
            # classifier): k-shot results are to be read against it
            self.summary[evalset.name]["nearest_demo_agreement"] = float(np.mean(predictions == np.array(nearest)))
            self.summary[evalset.name]["nearest_demo_label_scores"] = task.score(labels, np.array(nearest, dtype=np.int64))
        return metrics

    def evaluate_search(self, evalset: Any, train: Sequence[Any]) -> dict[str, float]:
        from mtpeft.evaluation.metrics import mrr
        from mtpeft.tasks.base import subsample

        ranking = evalset.data
        cap = self.settings.max_queries if self.settings.max_queries is not None else self.settings.max_per_task
        keep = subsample(range(len(ranking.queries)), cap, self.settings.seed)
        queries = [ranking.queries[i] for i in keep]
        answers = [ranking.answers[i] for i in keep]
        lexical = BM25Index(ranking.corpus).score_matrix(queries)
        k = min(self.settings.top_k, len(ranking.corpus))
        tops = [[int(j) for j in np.argsort(-row, kind="stable")[:k]] for row in lexical]
        stats = self.new_stats()
        index = self.shot_index(train, lambda p: p.query)
        jobs = []
        for q, i in enumerate(keep):
            demos = []
            if index is not None:
                near = index.top(queries[q], self.settings.shots + 1)
                for rank, t in enumerate(near[: self.settings.shots]):
                    # alternately the pair's own code (yes) and a neighbour's code (no)
                    other = near[(rank + 1) % len(near)]
                    positive = rank % 2 == 0 or other == t
                    demos.append(((train[t].query, train[t if positive else other].code), int(positive)))
                demos = self.demo_fields("search", demos[::-1], stats)
            for j in tops[q]:
                conversation = self.fit("search", (queries[q], ranking.corpus[j]), demos, stats)
                jobs.append(Job("search", evalset.name, f"{ranking.query_ids[i]} -> {ranking.corpus_ids[j]}", conversation,
                                int(j == answers[q]), {"query": ranking.query_ids[i], "candidate": ranking.corpus_ids[j]}))
        records = self.ask(jobs, f"{evalset.name} ({self.settings.shots}-shot, top {k})")
        final = lexical.copy()
        for q in range(len(queries)):
            chunk = records[q * k : (q + 1) * k]
            llm = [r["p_yes"] if r["p_yes"] is not None else decide(r["parsed"]) for r in chunk]
            final[q] = rerank_scores(lexical[q], tops[q], llm)
        bm25 = mrr(lexical, answers)["mrr"]
        in_top = sum(a in top for a, top in zip(answers, tops))
        self.summary[evalset.name] = stats | {
            "queries": len(queries), "of": len(ranking.queries), "corpus": len(ranking.corpus), "top_k": k,
            "prompts": len(jobs), "unparseable": sum(r["parsed"] is None for r in records),
            "answered_yes": sum(decide(r["parsed"]) for r in records), "answer_in_top_k": in_top,
        }
        return mrr(final, answers) | {"bm25_mrr": bm25}

    def shot_index(self, train: Sequence[Any], text: Any) -> BM25Index | None:
        if self.settings.shots <= 0:
            return None
        if not train:
            raise MtpeftError("k-shot prompting needs the task's train split in the config")
        return BM25Index([text(e) for e in train])


def run_prompt_baseline(config: RunConfig, backend: Backend, prompts: dict[str, Any], settings: Settings, output: Path,
                        command: str = "", cache: Path | None = None) -> dict[str, Any]:
    """Evaluate ``backend`` on the test sets of the config's tasks; write metrics.json,
    summary.json and the answers (``cache``, default OUTPUT/answers.jsonl) to ``output``;
    return the metrics."""
    from mtpeft.data import SkipCounter
    from mtpeft.tasks.loading import load_task_data
    from mtpeft.runs import write_json
    from mtpeft.tasks import TASKS, build_task

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(backend, prompts, settings, output, cache)
    skips = SkipCounter(enabled=config.training.skip_bad_records)
    # the whole test sets are read (no core budget); the cap is applied per set below, so that a
    # capped search set still ranks against its whole corpus
    training = type(config.training)(**{**asdict(config.training), "max_eval_per_task": None,
                                        "max_train_per_task": None, "seed": settings.seed})
    metrics: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for name, spec in config.tasks.items():
        if name not in TASKS or not TASKS.get(name).prompt_placeholders:
            known = [t for t in TASKS.names() if TASKS.get(t).prompt_placeholders]
            raise MtpeftError(f"the prompting baseline knows the tasks {', '.join(known)}, not {name!r}")
        task = build_task(name, spec.options)
        data = load_task_data(task, spec, training, skips, with_train=settings.shots > 0)
        if not data.test:
            raise MtpeftError(f"task {name}: the config gives no test split")
        for evalset in data.test:
            if name == "search":
                metrics[evalset.name] = evaluator.evaluate_search(evalset, data.train)
            else:
                metrics[evalset.name] = evaluator.evaluate_binary(task, evalset, data.train)
            write_json(output / "metrics.json", {"test": metrics})
    evaluator.cache.compact()
    summary = {
        "command": command,
        "model": backend.key,
        "answers": str(evaluator.cache.path),
        "settings": asdict(settings) | {"max_new_tokens": evaluator.max_new_tokens},
        "unparseable_scored_as": 0,
        "sets": evaluator.summary,
        "skipped_records": skips.report() if skips.total else {},
        "prompts_sent": evaluator.asked,  # this invocation; the other answers came from the cache
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json(output / "metrics.json", {"test": metrics})
    write_json(output / "summary.json", summary)
    (output / "prompts.yaml").write_text(yaml.safe_dump(prompts, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return {"metrics": {"test": metrics}, "summary": summary}


def format_table(metrics: dict[str, Any], summary: dict[str, Any]) -> str:
    names = ["accuracy", "f1", "precision", "recall", "mrr", "bm25_mrr"]
    header = f"{'set':<16} {'n':>6} {'unparsed':>8} " + " ".join(f"{n:>9}" for n in names)
    lines = [header, "-" * len(header)]
    for name, values in metrics.get("test", {}).items():
        info = summary.get("sets", {}).get(name, {})
        n = info.get("examples", info.get("queries", ""))
        cells = " ".join(f"{values[k]:>9.4f}" if k in values else f"{'':>9}" for k in names)
        lines.append(f"{name:<16} {n:>6} {info.get('unparseable', ''):>8} {cells}")
    return "\n".join(lines)
