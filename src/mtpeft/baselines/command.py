"""``mtpeft prompt-baseline``: the zero-/k-shot prompting baseline (see mtpeft.baselines.prompting).

Importing this module is cheap (no torch): the work is imported when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Evaluate an instruct LLM, prompted zero-shot or k-shot, on the TEST split of each task with the
metrics of the fine-tuned runs. Binary tasks (defect, clone, flaky): a yes/no question, the answer
parsed; unparseable answers are counted and scored as the negative class. Search: the LLM re-ranks
the top-k BM25 candidates of each query; MRR over the whole corpus (bm25_mrr: BM25 alone).
Answers are cached in OUTPUT/answers.jsonl: rerunning the same command resumes.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("prompt-baseline", help="evaluate a prompted instruct LLM (zero-/k-shot) on the test splits",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="YAML with the task data, like configs/full.yaml (default: the bundled sample config)")
    p.add_argument("--data", default=None, help="root of the full data (${data} in configs; default ../shared/data)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the config's tasks")
    p.add_argument("--backend", choices=("local", "openai"), default="local",
                   help="local: a transformers model in-process; openai: an OpenAI-compatible chat-completions server")
    p.add_argument("--model", default="smollm2",
                   help="local: smollm2 (SmolLM2-135M-Instruct, offline) | DIR | FILE.gguf | hub id; openai: the model name")
    p.add_argument("--base-url", default=None, help="openai: the API root, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key-env", default=None,
                   help="openai: environment variable holding the API key (must be set when given; default: "
                        "OPENAI_API_KEY if set, else no key is sent, as local servers need none)")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds to wait for one answer (default 60)")
    p.add_argument("--retries", type=int, default=2, help="openai: retries after a 5xx / 429 / timeout / network error (default 2)")
    p.add_argument("--shots", type=int, default=0, help="demonstrations from the train split, picked by BM25 (default 0)")
    p.add_argument("--max-per-task", type=int, default=None,
                   help="cap on test examples per evaluation set (search: queries; the corpus stays whole); seeded sample")
    p.add_argument("--max-queries", type=int, default=None, help="search: cap on queries per set (default: --max-per-task)")
    p.add_argument("--top-k", type=int, default=10, help="search: BM25 candidates re-ranked by the LLM per query (default 10)")
    p.add_argument("--max-input-tokens", type=int, default=None,
                   help="tokens of each test input (a clone pair shares them; default per task in the prompts file)")
    p.add_argument("--shot-tokens", type=int, default=None, help="tokens of each demonstration's input (default per task)")
    p.add_argument("--context-tokens", type=int, default=2048,
                   help="prompt + answer must fit: demonstrations are dropped, then the input cut (default 2048)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per batch (openai: parallel requests) (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: the prompts file's, 6)")
    p.add_argument("--decision", choices=("generate", "logprob"), default="generate",
                   help="generate: greedy answer + parsing (default); logprob: P(yes) vs P(no) of the next token (local only)")
    p.add_argument("--prompts", type=Path, default=None, help="YAML of templates merged over the bundled prompts.yaml")
    p.add_argument("--seed", type=int, default=42, help="seed of the sample cap (default 42, as the core)")
    p.add_argument("--threads", type=int, default=None, help="local: torch CPU threads")
    p.add_argument("--device", default="auto", help="local: auto (CUDA when present, the default) | cpu | cuda | cuda:N")
    p.add_argument("--skip-bad-records", action="store_true", help="skip (and count) malformed records instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--output", "-o", type=Path, default=Path("runs/prompting"),
                   help="folder for metrics.json, summary.json and answers.jsonl (the resumable cache)")
    p.add_argument("--cache", type=Path, default=None,
                   help="answers file to read and extend (default OUTPUT/answers.jsonl); share one between runs "
                        "that ask the same questions, e.g. a smaller cap")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from mtpeft.baselines.backends import make_backend
    from mtpeft.baselines.prompting import Settings, format_table, load_prompts, run_prompt_baseline
    from mtpeft.config import default_config_path, load_yaml, resolve_config, select_tasks
    from mtpeft.errors import MtpeftError

    data = select_tasks(load_yaml(args.config or default_config_path()), args.tasks)
    overrides = [("vars.data", args.data)] if args.data else []
    if args.skip_bad_records:
        overrides.append(("training.skip_bad_records", True))
    config = resolve_config(data, overrides)
    for flag, value, low in (("--shots", args.shots, 0), ("--top-k", args.top_k, 1), ("--batch-size", args.batch_size, 1),
                             ("--max-per-task", args.max_per_task, 1), ("--max-queries", args.max_queries, 1),
                             ("--max-input-tokens", args.max_input_tokens, 8),
                             ("--shot-tokens", args.shot_tokens, 8), ("--context-tokens", args.context_tokens, 64),
                             ("--max-new-tokens", args.max_new_tokens, 1)):
        if value is not None and value < low:
            raise MtpeftError(f"{flag} must be at least {low}, got {value}")
    prompts = load_prompts(args.prompts)
    settings = Settings(
        shots=args.shots, max_per_task=args.max_per_task, max_queries=args.max_queries, top_k=args.top_k, max_input_tokens=args.max_input_tokens,
        shot_tokens=args.shot_tokens, context_tokens=args.context_tokens, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, decision=args.decision, seed=args.seed, progress=not args.no_progress,
    )
    backend = make_backend(
        args.backend, args.model, threads=args.threads, device=args.device, base_url=args.base_url,
        api_key_env=args.api_key_env or "OPENAI_API_KEY", api_key_required=args.api_key_env is not None,
        timeout=args.timeout, retries=args.retries, workers=args.batch_size,
    )
    result = run_prompt_baseline(config, backend, prompts, settings, args.output,
                                 command="mtpeft " + shlex.join(sys.argv[1:]), cache=args.cache)
    print(format_table(result["metrics"], result["summary"]))
    print(f"unparseable answers are scored as the negative class; answers: {result['summary']['answers']}")
    print(f"metrics: {args.output / 'metrics.json'}")
