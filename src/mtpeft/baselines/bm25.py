"""A lexical retriever for code: BM25 (Okapi) over a code-aware tokenisation.

Tokens: every identifier / word of the text lower-cased, plus its camelCase and snake_case parts
(``readFileLines`` -> ``readfilelines read file lines``) and numbers. The BM25 statistics (idf
with rank_bm25's epsilon floor, document lengths) come from ``rank_bm25.BM25Okapi``; scoring
uses a sparse document-term matrix, so scoring a long query (a whole function, for k-shot
selection) against tens of thousands of documents stays fast. Scores equal
``BM25Okapi.get_scores`` (a test checks it).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np
from rank_bm25 import BM25Okapi
from scipy import sparse

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def code_tokens(text: str) -> list[str]:
    """Identifiers and words lower-cased, followed by their camelCase / snake_case parts."""
    tokens: list[str] = []
    for word in _WORD.findall(text or ""):
        lower = word.lower()
        tokens.append(lower)
        parts = [p.lower() for chunk in word.split("_") for p in _CAMEL.findall(chunk)]
        if len(parts) > 1 or (parts and parts[0] != lower):
            tokens.extend(p for p in parts if p != lower)
    return tokens


class BM25Index:
    """BM25 over a fixed list of documents; ``scores(query)`` gives one score per document."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        corpus = [code_tokens(d) or ["<empty>"] for d in documents]
        self.size = len(corpus)
        if not corpus:
            self.vocab: dict[str, int] = {}
            self.matrix = sparse.csr_matrix((0, 0))
            return
        okapi = BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
        self.vocab = {term: i for i, term in enumerate(okapi.idf)}
        idf = np.array([okapi.idf[t] for t in self.vocab], dtype=np.float64)
        lengths = np.asarray(okapi.doc_len, dtype=np.float64)
        norm = k1 * (1 - b + b * lengths / okapi.avgdl)
        rows, cols, values = [], [], []
        for d, freqs in enumerate(okapi.doc_freqs):
            for term, tf in freqs.items():
                rows.append(d)
                cols.append(self.vocab[term])
                values.append(idf[self.vocab[term]] * tf * (k1 + 1) / (tf + norm[d]))
        # documents x terms: the BM25 weight of each term in each document
        self.matrix = sparse.csr_matrix((values, (rows, cols)), shape=(self.size, len(self.vocab)))

    def query_vector(self, text: str) -> sparse.csr_matrix:
        """A 1 x terms row: how often each known term occurs in the query (rank_bm25 sums over the
        query's tokens, repeats included)."""
        counts = Counter(t for t in code_tokens(text) if t in self.vocab)
        cols = [self.vocab[t] for t in counts]
        return sparse.csr_matrix(
            (np.array(list(counts.values()), dtype=np.float64), ([0] * len(cols), cols)), shape=(1, len(self.vocab))
        )

    def scores(self, text: str) -> np.ndarray:
        if self.size == 0:
            return np.zeros(0)
        return np.asarray((self.matrix @ self.query_vector(text).T).todense()).ravel()

    def score_matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Queries x documents."""
        if not texts or self.size == 0:
            return np.zeros((len(texts), self.size))
        queries = sparse.vstack([self.query_vector(t) for t in texts]).tocsr()
        return np.asarray((queries @ self.matrix.T).todense())

    def top(self, text: str, k: int, exclude: set[int] | None = None) -> list[int]:
        """Indices of the k best documents, best first (ties: lower index first)."""
        scores = self.scores(text)
        order = np.argsort(-scores, kind="stable")
        if exclude:
            order = [int(i) for i in order if int(i) not in exclude]
        return [int(i) for i in order[:k]]
