"""Baselines that need no fine-tuning: prompting an instruct LLM (``mtpeft prompt-baseline``).

Modules: ``bm25`` (lexical retriever for code), ``parsing`` (yes/no answers), ``backends``
(local transformers model, OpenAI-compatible HTTP endpoint), ``prompting`` (the evaluation and
its resumable answer cache), ``command`` (the CLI subcommand). Nothing heavy is imported here.
"""
