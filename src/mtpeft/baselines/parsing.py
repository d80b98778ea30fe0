"""Turn a free-text LLM answer into a yes (1) / no (0) decision, or None when it cannot be read.

The rules, applied in this order to the answer lower-cased, with markdown marks (``* _ ` #``)
and surrounding quotes removed:

1. Empty answer -> None.
2. An explicit verdict anywhere: ``answer: yes``, ``the answer is no``, ``final answer - true``,
   ``verdict: no`` ... -> that word (the first such verdict wins). ``true``/``false`` count as
   yes/no.
3. A hedge at the start (``yes and no``, ``yes or no``, ``yes/no``, ``no, yes``) -> None. The
   whole answer ``y`` / ``n`` -> yes / no. The first word is a yes word (yes, yeah, yep, true,
   correct) or a no word (no, nope, false, incorrect) -> that decision.
4. Task words (from the prompt templates): negative phrases (``not vulnerable``, ``not a clone``
   ...) are matched first and cut out of the text, then positive words (``vulnerable``,
   ``clone`` ...). Only negatives -> 0, only positives -> 1, both or neither -> go on.
5. Standalone yes / no words anywhere in the text (``I think it is yes``, ``there is no
   bug``): only one polarity present -> that decision; both or neither -> None.

None ("unparseable") answers are counted and reported; the evaluation scores them as the
NEGATIVE class (0), which is what a user who acted on the answer would do.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

YES_WORDS = ("yes", "yeah", "yep", "true", "correct")
NO_WORDS = ("no", "nope", "false", "incorrect")
_MARKS = re.compile(r"[*_`#>\"'“”‘’]")
_SPACE = re.compile(r"\s+")
_VERDICT = re.compile(
    r"\b(?:final\s+answer|answer|verdict|conclusion|label|prediction)\s*(?:is|would\s+be|will\s+be|:|=|-|–)?\s*[:\-]?\s*"
    r"(yes|no|true|false)\b"
)
_FIRST_WORD = re.compile(r"^[\s\W]*([a-z]+)\b")
_HEDGE = re.compile(r"^[\s\W]*(yes|no)\s*(?:and|or|/|,|-)\s*(yes|no)\b")
_YES_ANY = re.compile(r"\b(?:yes|yeah|yep)\b")
_NO_ANY = re.compile(r"\b(?:no|nope)\b")


def normalise(answer: str) -> str:
    """Lower-case, drop markdown marks and quotes, collapse white space."""
    text = _MARKS.sub(" ", answer or "").lower()
    return _SPACE.sub(" ", text).strip()


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern | None:
    words = sorted({p.strip().lower() for p in phrases if p and p.strip()}, key=len, reverse=True)
    if not words:
        return None
    # a hyphen joins words here: "deterministic" must not match inside "non-deterministic"
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words) + r")(?![\w-])")


def parse_yes_no(answer: str | None, positive: Sequence[str] = (), negative: Sequence[str] = ()) -> int | None:
    """1 for yes, 0 for no, None when the answer cannot be read (see the module docstring)."""
    text = normalise(answer or "")
    if not text:
        return None
    verdict = _VERDICT.search(text)
    if verdict:
        return int(verdict.group(1) in ("yes", "true"))
    if text in ("y", "n", "y.", "n."):
        return int(text[0] == "y")
    hedge = _HEDGE.match(text)
    if hedge and hedge.group(1) != hedge.group(2):
        return None
    first = _FIRST_WORD.match(text)
    if first:
        word = first.group(1)
        if word in YES_WORDS:
            return 1
        if word in NO_WORDS:
            return 0
    negative_pattern, positive_pattern = _phrase_pattern(negative), _phrase_pattern(positive)
    rest = text
    has_negative = False
    if negative_pattern is not None:
        rest, count = negative_pattern.subn(" ", text)
        has_negative = count > 0
    has_positive = positive_pattern is not None and positive_pattern.search(rest) is not None
    if has_negative != has_positive:
        return int(has_positive)
    says_yes, says_no = _YES_ANY.search(text) is not None, _NO_ANY.search(text) is not None
    if says_yes != says_no:
        return int(says_yes)
    return None


def decide(parsed: int | None) -> int:
    """The decision scored for an answer: unparseable counts as the negative class."""
    return 0 if parsed is None else int(parsed)
