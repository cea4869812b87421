"""Cloud agent: semantic user modelling (CDA4Rec Eq. 2), batched, with each distinct text embedded once.

e_sem = alpha * P(AVG(Theta(q))) + (1 - alpha) * H(AVG(Theta(b))), in the item space of Eq. 1, where q is the
abstract's sanitized query, b its behaviour summary, P the PCA that made the item table and H the trained
semantic head (`tools.semantic_head`, Eq. 2 trained with Eq. 10) when the cloud has one, else P. An empty
query carries no intent, so its weight moves to the summary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from tools.embeddings import ItemSemantics, embed_texts
from tools.inference_thread import on_inference_thread
from tools.protocol import Abstract
from tools.semantic_head import SummaryHead, space_key
from tools.text_encoders import LocalMiniLM, Precision

EMPTY_SUMMARY = "no behaviour recorded"


class TextSpace:
    """Texts -> item-space vectors [N, d]: the text encoder of Eq. 1, then the items' PCA (`project`) or, for
    behaviour summaries, the trained semantic head when there is one (`project_summaries`).

    `precision` "bf16" runs the packaged MiniLM in bfloat16 for these request-time texts (the item table stays
    float32; `tools.text_encoders.resolve_text_precision`); the space's key then says so.

    Both projections of a text are computed when it is first encoded and memoised in a bounded LRU: evaluations
    embed the same abstracts under many plans, and a chat repeats its summary, so each distinct text is encoded
    once while it stays among the `capacity` most recently used, and returns the same floats however it was
    batched later.
    """

    def __init__(self, semantics: ItemSemantics, capacity: int = 50_000, head: SummaryHead | None = None,
                 head_digest: str = "", precision: Precision = "fp32") -> None:  # fmt: skip
        self.semantics = semantics
        local = isinstance(semantics.encoder, LocalMiniLM)
        self.precision: Precision = precision if local else "fp32"  # an endpoint's precision is its own
        self.encoder = LocalMiniLM(precision) if local and precision != "fp32" else semantics.encoder
        self.capacity = capacity
        self.head = head
        self.head_digest = head_digest
        self._memo: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.semantics.dim

    @property
    def key(self) -> str:
        """What e_sem depends on: the item semantics, and the head's digest when summaries go through one."""
        return space_key(self.semantics.key, self.head_digest if self.head is not None else None, self.precision)

    def _fresh(self, texts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raw, by_head = on_inference_thread(self.encode_afresh, texts)  # both torch steps on the one inference thread
        by_pca = self.semantics.pca.transform(raw)
        by_head = by_pca if by_head is None else by_head
        return {text: (a, b) for text, a, b in zip(texts, by_pca, by_head, strict=True)}

    def encode_afresh(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Theta(texts) (Eq. 1) and, when there is a head, H(Theta(texts)) (Eq. 2 trained), never from the memo (the
        caller picks the thread: requests run it on the inference thread)."""
        raw = embed_texts(texts, encoder=self.encoder)
        return raw, self.head.project(raw).astype(np.float32) if self.head is not None else None

    def _vectors(self, texts: Sequence[str], which: int) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        fresh = self._fresh(missing) if missing else {}
        with self._lock:
            out = []
            for text in texts:
                pair = fresh.get(text)
                if pair is None:
                    pair = self._memo[text]
                    self._memo.move_to_end(text)
                out.append(pair[which])
            for text, pair in fresh.items():
                self._memo[text] = pair
            while len(self._memo) > self.capacity:
                self._memo.popitem(last=False)
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def project(self, texts: Sequence[str]) -> np.ndarray:
        """Texts in the item space by the items' own PCA (Eq. 1-2): queries, tag descriptions, abstract vectors."""
        return self._vectors(texts, 0)

    def project_summaries(self, texts: Sequence[str]) -> np.ndarray:
        """Behaviour summaries in the item space: through the trained head when there is one, else the PCA."""
        return self._vectors(texts, 1)


def semantic_user_embeddings(abstracts: Sequence[Abstract], alphas: Sequence[float], space: TextSpace) -> np.ndarray:
    """CDA4Rec Eq. 2 for a batch of abstracts [B] -> e_sem [B, d] in the item space."""
    queries = [a.sanitized_query.strip() for a in abstracts]
    summaries = [a.behavior_summary.strip() or EMPTY_SUMMARY for a in abstracts]
    asked = list(dict.fromkeys(q for q in queries if q))
    told = list(dict.fromkeys(summaries))
    space.project(list(dict.fromkeys(asked + told)))  # one encoder batch for both kinds, as the memo keeps them
    query_vectors = dict(zip(asked, space.project(asked), strict=True))
    summary_vectors = dict(zip(told, space.project_summaries(told), strict=True))
    out = np.zeros((len(abstracts), space.dim), dtype=np.float32)
    for row, (query, summary, alpha) in enumerate(zip(queries, summaries, alphas, strict=True)):
        behaviour = summary_vectors[summary]
        out[row] = behaviour if not query else alpha * query_vectors[query] + (1.0 - alpha) * behaviour
    return out
