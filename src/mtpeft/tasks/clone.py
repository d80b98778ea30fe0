"""Clone detection: are these two Java methods clones? BigCloneBench; F1 of the clone class at 0.5.

The pair is encoded jointly (one sequence, ``[CLS] a [SEP] b [SEP]`` for BERT-like tokenizers) as
in the study. Pairs come either with the code inline (``func1``/``func2``) or as ``idx1``/``idx2``
into a functions file (option ``functions``), as in CodeXGLUE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtpeft.data import SkipCounter, pick_text, read_jsonl
from mtpeft.data.jsonl import Record
from mtpeft.errors import DataError, MtpeftError
from mtpeft.evaluation.metrics import binary_f1
from mtpeft.tasks.binary import BinaryTask, Example
from mtpeft.tasks.registry import register_task


@register_task("clone")
class CloneTask(BinaryTask):
    name = "clone"
    metric = "f1"
    description = "clone detection (BigCloneBench): pair of methods -> clone?; F1 at 0.5"
    label_fields = ("label", "target")
    # ~77% of BigCloneBench pairs are clones: an unweighted head learns "always clone" first.
    # Weighing positives by negatives/positives balances the loss; the threshold stays the study's 0.5.
    default_pos_weight = "auto"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._functions: dict[str, str] | None = None
        self._skips = SkipCounter()

    def functions(self, skips: SkipCounter) -> dict[str, str]:
        """The idx -> code table, read once from the ``functions`` option."""
        if self._functions is None:
            path = self.options.get("functions")
            self._functions = {}
            if path:
                for record in read_jsonl(path, skips):
                    try:
                        if record.data.get("idx") is None:
                            raise record.error("missing field: idx")
                        self._functions[str(record.data["idx"])] = pick_text(record, ("func", "code"))
                    except DataError as error:
                        skips.handle(error)
        return self._functions

    def read_examples(self, source: Any, skips: SkipCounter, require_label: bool = True) -> list[Example]:
        self._skips = skips
        return super().read_examples(source, skips, require_label)

    def parse(self, record: Record, require_label: bool = True) -> Example:
        data = record.data
        if "func1" in data or "code1" in data:
            text_a, text_b = pick_text(record, ("func1", "code1")), pick_text(record, ("func2", "code2"))
            id1, id2 = str(data.get("idx1", data.get("id1", f"line{record.line}a"))), str(data.get("idx2", data.get("id2", f"line{record.line}b")))
        elif "idx1" in data and "idx2" in data:
            table = self.functions(self._skips)
            if not table:
                raise MtpeftError(f"{record.path}: pairs refer to idx1/idx2 but no functions file was given (task option 'functions')")
            id1, id2 = str(data["idx1"]), str(data["idx2"])
            missing = [i for i in (id1, id2) if i not in table]
            if missing:
                raise record.error(f"function idx {', '.join(missing)} not in the functions file {self.options.get('functions')}")
            text_a, text_b = table[id1], table[id2]
        else:
            raise record.error("missing fields: expected func1/func2, or idx1/idx2 with a functions file")
        return Example(f"{id1}\t{id2}", text_a, self.label_of(record, require_label), text_b)

    def read_predict(self, path: Path, skips: SkipCounter, options: dict[str, Any]) -> list[Example]:
        if options.get("functions"):
            self.options["functions"] = options["functions"]
            self._functions = None
        return super().read_predict(path, skips, options)

    def score(self, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        return binary_f1(labels, predictions)
