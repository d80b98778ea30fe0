"""The ``mtpeft`` command: parse arguments and YAML, then call one recipe per subcommand."""

from __future__ import annotations

import argparse
import os
import shlex
import warnings
import sys
from pathlib import Path
from typing import Any, Sequence

from mtpeft.allocator import configure_allocator
from mtpeft.baselines.command import add_parser as add_prompt_baseline_parser
from mtpeft.config import default_config_path, load_yaml, parse_override, resolve_config, select_tasks
from mtpeft.errors import MtpeftError
from mtpeft.reporting import format_ledger, format_metrics
from mtpeft.training.stopping import interrupt_on_stop_signals

# shortcut flag -> dotted config key (every other option: --set key=value)
SHORTCUTS: list[tuple[str, str, type, str]] = [
    ("--backbone", "backbone.name", str, "default | minilm | smollm2 | tiny-bert | tiny-llama | DIR | FILE.gguf | hub id"),
    ("--pooling", "backbone.pooling", str, "mean | cls | pooler | last"),
    ("--max-len", "backbone.max_len", int, "tokens per input"),
    ("--method", "method.name", str, "PEFT method (see 'mtpeft list')"),
    ("--epochs", "training.epochs", int, "training epochs"),
    ("--steps-per-epoch", "training.steps_per_epoch", int, "optimisation steps per epoch (default: sampler's epoch)"),
    ("--batch-size", "training.batch_size", int, "training batch size per task"),
    ("--lr", "training.lr", float, "learning rate"),
    ("--sampler", "training.sampler", str, "round_robin | proportional | temperature"),
    ("--weighting", "training.weighting", str, "loss weighting: learned_softmax | equal | uncertainty | loss_normalized | gradnorm | famo (options: --set training.weighting_options.KEY=V)"),
    ("--max-train-per-task", "training.max_train_per_task", int, "cap on training examples per task"),
    ("--max-eval-per-task", "training.max_eval_per_task", int, "cap on evaluation examples (queries) per set"),
    ("--max-valid-per-task", "training.max_valid_per_task", int, "cap on validation examples per set (default: --max-eval-per-task)"),
    ("--seed", "training.seed", int, "random seed"),
    ("--device", "training.device", str, "auto (CUDA when present) | cpu | cuda | cuda:N"),
    ("--output", "output_dir", str, "run directory"),
    ("--data", "vars.data", str, "root of the full data (${data} in configs; default ../shared/data)"),
]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train one shared PEFT module + task heads, then evaluate",
                       description="Train on the tasks of a YAML config (default: the bundled sample of all four tasks).")
    p.add_argument("--config", "-c", type=Path, default=None, help="YAML run config (default: bundled default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set training.warmup=0.05 --set method.r=8")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the config's tasks")
    for flag, _, kind, text in SHORTCUTS:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--skip-bad-records", action="store_true", help="skip (and count) malformed records instead of stopping")
    p.add_argument("--no-bf16", action="store_true", help="train and evaluate in float32")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue a killed run from its last/ checkpoint (written every training.save_every_steps "
                        "steps or save_every_minutes minutes), with the run's own saved config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in a non-empty --output folder (without it, such a folder is refused)")
    p.set_defaults(func=run_train)


def collect_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    overrides = [parse_override(text) for text in args.overrides]
    for flag, key, _, _ in SHORTCUTS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append((key, value))
    if args.skip_bad_records:
        overrides.append(("training.skip_bad_records", True))
    if args.no_bf16:
        overrides.append(("training.bf16", False))
    if args.no_progress:
        overrides.append(("training.progress", False))
    return overrides


def run_train(args: argparse.Namespace) -> None:
    from mtpeft.recipes import train

    overrides = collect_overrides(args)
    command = "mtpeft " + shlex.join(portable_args(sys.argv[1:]))
    if args.resume:
        from mtpeft.recipes import resume_config

        # the run's own config; anything else given on the command line must not change it
        requested = None
        if args.config or args.tasks or overrides:
            base = load_yaml(args.config or args.resume / "config.yaml")
            requested = resolve_config(select_tasks(base, args.tasks), overrides)
        config, resume = resume_config(args.resume, requested), True
    else:
        data = select_tasks(load_yaml(args.config or default_config_path()), args.tasks)
        config, resume = resolve_config(data, overrides), False
    # a stop signal during the test pass ends the run as one during training does (exit 130;
    # `--resume` evaluates again), also when it was started in the background
    with interrupt_on_stop_signals():
        result = train(config, command=command, overwrite=args.overwrite and not resume, resume=resume)
    if "metrics" not in result:
        return  # torchrun: a rank other than 0 trained its shard; rank 0 reports
    print(format_metrics(result["metrics"] | {"trivial": result["trivial"]}))
    print(format_ledger(result["ledger"]))
    print(f"run directory: {result['run_dir']}")


def portable_args(argv: Sequence[str]) -> list[str]:
    """The command line as recorded in a run folder: absolute paths are written relative to the
    working folder (``../shared/data``), so a committed run holds no machine's folder names."""
    out = []
    for arg in argv:
        if os.path.isabs(arg):
            arg = os.path.relpath(arg)
        out.append(arg)
    return out


def run_evaluate(args: argparse.Namespace) -> None:
    from mtpeft.recipes import evaluate_run

    metrics = evaluate_run(args.run_dir, args.output, args.data, args.device, tuple(args.split.split(",")))
    print(format_metrics(metrics))


def run_predict(args: argparse.Namespace) -> None:
    from mtpeft.fileio import atomic_write_text
    from mtpeft.recipes import predict

    names = [t.strip() for t in args.task.split(",") if t.strip()]
    lines, skips = predict(args.run_dir, names, args.file, {"functions": args.functions, "corpus": args.corpus},
                           args.format, args.top_k, show_progress(args), args.skip_bad_records, args.device)
    if skips.total:
        print(f"mtpeft: skipped {skips.total} malformed record(s): {skips.counts}", file=sys.stderr)
    text = "".join(line + "\n" for line in lines)
    if args.output is None:
        sys.stdout.write(text)
        return
    atomic_write_text(args.output, text)  # all or nothing: never a partial prediction file
    print(f"wrote {len(lines)} predictions ({', '.join(names)}) to {args.output}", file=sys.stderr)


class PredictHelp(argparse.Action):
    """``predict --help`` lists each task's inputs and outputs (importing the tasks only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show this help and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from mtpeft.tasks import TASKS, build_task

        tasks = "\n".join(f"  {name}: {build_task(name).predict_help()}" for name in TASKS.names())
        parser.epilog = (f"tasks (a run predicts those it was trained on):\n{tasks}\n\n"
                         "Output goes to stdout unless -o FILE is given (the run directory is never written); "
                         "progress bars show only on a terminal.")
        parser.print_help()
        parser.exit()


def add_predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict one or more tasks for a JSON Lines file (CodeXGLUE format or JSON Lines)",
                       description="Predict with a trained run: each task's head over the records of FILE, one model "
                                   "load for all the tasks asked for.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument("-h", "--help", action=PredictHelp)
    p.add_argument("run_dir", type=Path, help="a run directory of 'mtpeft train'")
    p.add_argument("file", type=Path, help="JSON Lines inputs (.jsonl or .jsonl.gz; labels not needed)")
    p.add_argument("--task", required=True, help="a task of the run, or several comma-separated: --task defect,flaky")
    p.add_argument("--output", "-o", type=Path, default=None, help="write the predictions to this file (default: stdout)")
    p.add_argument("--format", choices=("codexglue", "jsonl"), default=None,
                   help="codexglue: the task's CodeXGLUE file (default for one task); jsonl: one JSON object per "
                        "prediction with its task, probability or scores, and decision (default for several tasks)")
    p.add_argument("--top-k", type=int, default=100, help="search: code ids returned per query (default 100)")
    p.add_argument("--functions", default=None, help="clone: the functions file (idx, func) that idx1/idx2 pairs refer to")
    p.add_argument("--corpus", default=None, help="search: rank the queries against this corpus file (idx, code)")
    p.add_argument("--skip-bad-records", action="store_true", help="skip (and count, on stderr) malformed records")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    p.add_argument("--device", default=None, help="auto (CUDA when present, the default) | cpu | cuda | cuda:N")
    p.set_defaults(func=run_predict)


def run_list(args: argparse.Namespace) -> None:
    from mtpeft.model.backbone import SHORTCUTS as BACKBONES
    from mtpeft.model.methods import METHODS
    from mtpeft.tasks import TASKS
    from mtpeft.training.samplers import SAMPLERS
    from mtpeft.training.weightings import WEIGHTINGS

    print("tasks:      " + ", ".join(TASKS.names()))
    print("methods:    " + ", ".join(METHODS.names()))
    print("backbones:  " + ", ".join(BACKBONES) + ", or a directory / .gguf file / hub id")
    print("samplers:   " + ", ".join(SAMPLERS.names()))
    print("weightings: " + ", ".join(WEIGHTINGS.names()))


def run_report(args: argparse.Namespace) -> None:
    import json

    from mtpeft.reporting import runs_table
    from mtpeft.study.report import is_study, write_report

    if len(args.run_dirs) == 1 and is_study(args.run_dirs[0]):
        path = write_report(args.run_dirs[0], args.output)
        print(f"wrote {path} (+ CSV files and PNGs beside it)")
        return

    runs = {}
    for run in args.run_dirs:
        try:
            runs[run.name] = tuple(json.loads((run / f).read_text()) for f in ("metrics.json", "ledger.json"))
        except FileNotFoundError as exc:
            raise MtpeftError(f"{run}: not a finished run ({exc.filename} missing)") from None
    print(runs_table(runs))


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (never in CI logs or redirected output)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def load_encoder(args: argparse.Namespace) -> Any:
    import torch

    from mtpeft.inference.encoder import SharedEncoder

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return SharedEncoder.from_run(args.run, args.batch_size, show_progress(args))


def add_inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="functions per backbone pass")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")


def add_exclude_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip paths whose relative path or a folder name matches, e.g. --exclude test --exclude 'gen/*'")


def add_analyze_parser(sub: Any) -> None:
    p = sub.add_parser("analyze", help="score every function of a source tree with every head (one backbone pass each)",
                       description="Parse Java, C/C++ and Python files with tree-sitter; report vulnerability and "
                                   "flaky-test probabilities and clone groups as a table, JSON, SARIF 2.1.0 and HTML.")
    p.add_argument("path", type=Path, help="a source file or directory")
    p.add_argument("--run", type=Path, required=True, help="a run directory of 'mtpeft train'")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="write analysis.json, analysis.sarif and report.html into this directory")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--sarif", type=Path, default=None, help="write the SARIF 2.1.0 report here")
    p.add_argument("--html", type=Path, default=None, help="write the HTML report here")
    p.add_argument("--min-score", type=float, default=None,
                   help="report defect/flaky scores at or above this (default: each head's validation threshold)")
    p.add_argument("--top", type=int, default=30, help="rows of the terminal table")
    p.add_argument("--html-findings", type=int, default=50, help="findings shown in the HTML report")
    p.add_argument("--max-file-bytes", type=int, default=1_000_000, help="larger files are skipped (and reported)")
    p.add_argument("--clone-neighbours", type=int, default=5, help="nearest neighbours per function sent to the clone head")
    add_exclude_option(p)
    add_inference_options(p)
    p.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> None:
    import json

    from mtpeft.analysis.analyze import AnalyzeOptions, analyze_path, format_table
    from mtpeft.analysis.html import to_html
    from mtpeft.analysis.sarif import to_sarif

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise MtpeftError(f"--min-score must be a probability in [0, 1], got {args.min_score}")
    options = AnalyzeOptions(min_score=args.min_score, max_file_bytes=args.max_file_bytes,
                             clone_neighbours=args.clone_neighbours, exclude=tuple(args.exclude), progress=show_progress(args))
    encoder = load_encoder(args)
    analysis = analyze_path(args.path, encoder, options)
    print(format_table(analysis, args.top))
    targets = {"json": args.json, "sarif": args.sarif, "html": args.html}
    if args.output:
        defaults = {"json": "analysis.json", "sarif": "analysis.sarif", "html": "report.html"}
        targets = {k: v or args.output / defaults[k] for k, v in targets.items()}
    writers = {"json": lambda: json.dumps(analysis.to_dict(), indent=1), "sarif": lambda: json.dumps(to_sarif(analysis), indent=1),
               "html": lambda: to_html(analysis, args.html_findings)}
    for kind, target in targets.items():
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(writers[kind]() + "\n", encoding="utf-8")
            print(f"wrote {kind}: {target}")


def add_prescore_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prescore", choices=("float16", "float32"), default="float16",
                   help="score all rows in float16 and re-score the best 4k+32 in float32 (default; ~3x faster on "
                        "large indexes, same results in practice), or everything in float32")


def add_index_parsers(sub: Any) -> None:
    p = sub.add_parser("index", help="embed every function of a source tree for code search (incremental)",
                       description="Build or update a search index: only new or changed functions are embedded.")
    p.add_argument("path", type=Path, help="a source file or directory")
    p.add_argument("--run", type=Path, required=True, help="a run directory with a search head")
    p.add_argument("--index", type=Path, required=True, help="the index directory (created or updated)")
    p.add_argument("--max-file-bytes", type=int, default=1_000_000, help="larger files are skipped (and reported)")
    add_exclude_option(p)
    add_inference_options(p)
    p.set_defaults(func=run_index)
    p = sub.add_parser("search", help="natural-language search over an index of 'mtpeft index'")
    p.add_argument("query", help="what the code should do, e.g. \"read a file line by line\"")
    p.add_argument("--index", type=Path, required=True, help="an index directory")
    p.add_argument("--run", type=Path, default=None, help="the run that built the index (default: the one it records)")
    p.add_argument("-k", "--top", type=int, default=10, help="results to show")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_prescore_option(p)
    add_inference_options(p)
    p.set_defaults(func=run_search)


def run_index(args: argparse.Namespace) -> None:
    from mtpeft.serving.index import CodeIndex, build_index

    previous = None
    if args.index.exists() and any(args.index.iterdir()):
        try:
            previous = CodeIndex.load(args.index)
        except MtpeftError as error:
            print(f"mtpeft: note: {error}; rebuilding", file=sys.stderr)
    encoder = load_encoder(args)
    index, stats = build_index(args.path, encoder, previous, args.max_file_bytes, show_progress(args), args.exclude)
    index.save(args.index)
    for item in stats["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    print(f"indexed {stats['functions']} functions in {stats['files']} files ({stats['files_changed']} new or changed, "
          f"{stats['files_unchanged']} unchanged, {stats['files_removed']} removed); embedded {stats['functions_embedded']} "
          f"in {stats['seconds']} s -> {args.index}")


def run_search(args: argparse.Namespace) -> None:
    import json

    from mtpeft.inference.encoder import SharedEncoder
    from mtpeft.serving.index import CodeIndex

    if not args.query.strip():
        raise MtpeftError("the query is empty")
    if args.top < 1:
        raise MtpeftError(f"-k must be at least 1, got {args.top}")
    index = CodeIndex.load(args.index)
    args.run = args.run or Path(index.run)
    encoder = load_encoder(args)
    results = index.search(encoder.embed_queries([args.query]), args.top, args.prescore)[0]
    languages = encoder.languages()["search"]
    for r in results:
        r["in_domain"] = r["language"] in languages
    if args.json:
        print(json.dumps({"trained_languages": languages, "results": results}, indent=1))
        return
    print(f"search head trained on {'/'.join(languages)}; '*' = out of domain")
    for r in results:
        print(f"{r['score']:.3f}{' ' if r['in_domain'] else '*'} {r['file']}:{r['line']}  {r['name']}")


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="HTTP JSON API for the four heads and search (FastAPI + uvicorn)",
                       description="Serve a run: /v1/analyze, /v1/defect, /v1/flaky, /v1/clone, /v1/embed, /v1/search, "
                                   "/health; OpenAPI at /openapi.json, rendered at /docs.")
    p.add_argument("--run", type=Path, required=True, help="a run directory of 'mtpeft train'")
    p.add_argument("--index", type=Path, default=None, help="an index of 'mtpeft index' for /v1/search")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--max-batch", type=int, default=64, help="functions (or pairs) per request")
    p.add_argument("--max-batch-texts", type=int, default=256, help="texts gathered from concurrent requests into one pass")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="how long a request waits for others to share its pass")
    add_prescore_option(p)
    add_inference_options(p)
    p.set_defaults(func=run_serve, no_progress=True)


def run_serve(args: argparse.Namespace) -> None:
    from mtpeft.serving.index import CodeIndex
    from mtpeft.serving.server import Limits, serve

    for name in ("max_body_bytes", "max_batch", "max_batch_texts"):
        if getattr(args, name) < 1:
            raise MtpeftError(f"--{name.replace('_', '-')} must be at least 1")
    index = CodeIndex.load(args.index) if args.index else None
    encoder = load_encoder(args)
    limits = Limits(args.max_body_bytes, args.max_batch, args.max_batch_texts, args.batch_wait_ms, prescore=args.prescore)
    serve(encoder, index, args.host, args.port, limits)


def run_study(args: argparse.Namespace) -> None:
    from mtpeft.study.config import load_study
    from mtpeft.study.estimate import dry_run
    from mtpeft.study.grid import raise_if_failed, run_grid, threads_per_worker

    study = load_study(args.config, args.output)
    extra = [parse_override(text) for text in args.overrides]
    if args.data:
        extra.append(("vars.data", args.data))
    if args.no_progress:
        extra.append(("training.progress", False))
    if args.dry_run:
        table, _ = dry_run(study, [study.output_dir, *args.ledgers], args.probe_steps, extra=extra,
                           threads=threads_per_worker(args.workers), workers=args.workers)
        print(table)
        return
    with interrupt_on_stop_signals():  # `kill PID` stops the grid as Ctrl-C does, even started with `nohup ... &`
        outcome = run_grid(study, extra=extra, command="mtpeft " + shlex.join(sys.argv[1:]), only=args.only, workers=args.workers,
                           rerun_stale=args.rerun_stale)
    done = sum(1 for s in outcome.values() if s != "failed")
    print(f"{done} of {len(outcome)} cells finished in {study.output_dir}; report: mtpeft report {study.output_dir}")
    raise_if_failed(study.output_dir, outcome)


def add_study_parser(sub: Any) -> None:
    p = sub.add_parser("study", help="run a study grid (single / multi / pairs per method and weighting), resumably",
                       description="Each cell is an ordinary run directory under the study folder; finished cells are "
                                   "skipped, interrupted or failed ones run again. Then: mtpeft report STUDY_DIR.")
    p.add_argument("config", type=Path, help="study YAML (see configs/study.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and their estimated wall time; train nothing")
    p.add_argument("--output", type=Path, default=None, help="study folder (default: the config's output_dir)")
    p.add_argument("--data", default=None, help="root of the data (${data} in the base config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a run-config key in every cell")
    p.add_argument("--only", default=None, metavar="TEXT", help="run only the cells whose path contains TEXT")
    p.add_argument("--ledgers", type=Path, nargs="*", default=[Path("results")], help="folders of earlier runs for --dry-run estimates")
    p.add_argument("--probe-steps", type=int, default=0, help="--dry-run: time N training steps of methods without a ledger")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="cells trained at once, each in its own process with an equal share of the cores")
    p.add_argument("--rerun-stale", action="store_true",
                   help="train again the finished cells whose config is no longer the study's (without it they stop the study)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtpeft", description="Multi-task parameter-efficient fine-tuning for code analysis.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    p = sub.add_parser("evaluate", help="reload a run directory and recompute its metrics")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--output", "-o", type=Path, default=None, help="also write the metrics to this JSON file")
    p.add_argument("--data", default=None,
                   help="where ${data} is on this machine (default: the folder the run was trained with)")
    p.add_argument("--device", default=None, help="auto (CUDA when present, the default) | cpu | cuda | cuda:N")
    p.add_argument("--split", default="valid,test", choices=["valid,test", "valid", "test"],
                   help="which splits to score (valid alone: a recipe chosen on validation never reads the test sets)")
    p.set_defaults(func=run_evaluate)
    add_predict_parser(sub)
    p = sub.add_parser("report", help="a markdown table comparing finished run directories, or a study folder's report",
                       description="Given run directories: a markdown table comparing them. Given one study folder "
                                   "(made by 'mtpeft study'): report.md + CSV files + PNGs (tables, affinity, costs, findings).")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--output", "-o", type=Path, default=None, help="study report: folder for report.md, CSVs, PNGs (default: the study folder)")
    p.set_defaults(func=run_report)
    add_study_parser(sub)
    p = sub.add_parser("list", help="list the registered tasks, methods, backbones, samplers and weightings")
    p.set_defaults(func=run_list)
    add_prompt_baseline_parser(sub)
    add_analyze_parser(sub)
    add_index_parsers(sub)
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # peft calls a transformers property that transformers 5 deprecates; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    configure_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MtpeftError as error:
        print(f"mtpeft: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtpeft: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
