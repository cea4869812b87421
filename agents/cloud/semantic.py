"""Cloud agent: semantic user modelling (CDA4Rec Eq. 2), batched, with each distinct text embedded once.

e_sem = alpha * AVG(Theta(q)) + (1 - alpha) * AVG(Theta(b)), projected into the item space of Eq. 1 (the
same PCA as the items), where q is the abstract's sanitized query and b its behaviour summary. An empty
query carries no intent, so its weight moves to the summary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from tools.embeddings import ItemSemantics
from tools.protocol import Abstract

EMPTY_SUMMARY = "no behaviour recorded"


class TextSpace:
    """Texts -> item-space vectors [N, d] (Eq. 1's encoder + PCA), memoised in a bounded LRU.

    Evaluations embed the same abstracts under many plans, and a chat repeats its summary, so each distinct
    text is embedded once while it stays among the `capacity` most recently used.
    """

    def __init__(self, semantics: ItemSemantics, capacity: int = 50_000) -> None:
        self.semantics = semantics
        self.capacity = capacity
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.semantics.dim

    def project(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        fresh = dict(zip(missing, self.semantics.project_texts(missing), strict=True)) if missing else {}
        with self._lock:
            out = []
            for text in texts:
                vector = fresh.get(text)
                if vector is None:
                    vector = self._memo[text]
                    self._memo.move_to_end(text)
                out.append(vector)
            for text, vector in fresh.items():
                self._memo[text] = vector
            while len(self._memo) > self.capacity:
                self._memo.popitem(last=False)
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def semantic_user_embeddings(abstracts: Sequence[Abstract], alphas: Sequence[float], space: TextSpace) -> np.ndarray:
    """CDA4Rec Eq. 2 for a batch of abstracts [B] -> e_sem [B, d] in the item space."""
    queries = [a.sanitized_query.strip() for a in abstracts]
    summaries = [a.behavior_summary.strip() or EMPTY_SUMMARY for a in abstracts]
    texts = list(dict.fromkeys([q for q in queries if q] + summaries))
    vectors = dict(zip(texts, space.project(texts), strict=True)) if texts else {}
    out = np.zeros((len(abstracts), space.dim), dtype=np.float32)
    for row, (query, summary, alpha) in enumerate(zip(queries, summaries, alphas, strict=True)):
        out[row] = vectors[summary] if not query else alpha * vectors[query] + (1.0 - alpha) * vectors[summary]
    return out
