"""Cloud agent: semantic user modelling (CDA4Rec Eq. 2), batched, with each distinct text embedded once.

e_sem = alpha * Q(AVG(Theta(q))) + (1 - alpha) * H(AVG(Theta(b))), where q is the abstract's sanitized query, b its
behaviour summary and the item space one of two:

- Eq. 1's text space (the default): Q is the PCA P that made the item table, H the trained semantic head
  (`tools.semantic_head`, Eq. 2 trained with Eq. 10) when the cloud has one, else P;
- the device encoder's item space (`tools.encoder_space`): H the tower trained into E_str. It has no Q: it answers
  abstracts without a query only (the cloud's behaviour side, `CloudAgent.side`).

An empty query carries no intent, so its weight moves to the summary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from tools.embeddings import ItemSemantics, embed_texts
from tools.encoder_space import EncoderSpace
from tools.inference_thread import on_inference_thread
from tools.protocol import Abstract
from tools.semantic_head import SummaryHead, space_key
from tools.text_encoders import LocalMiniLM, Precision

EMPTY_SUMMARY = "no behaviour recorded"


class TextSpace:
    """Texts -> vectors: the text encoder of Eq. 1, then the items' PCA (`project`: Eq. 1's text space, where
    planning compares abstracts) and, into the item space e_sem lives in (`table`), queries (`project_queries`: the
    PCA; the encoder space has none) and behaviour summaries (`project_summaries`: the trained semantic head when
    there is one, or the encoder-space tower when `encoder_space` is given).

    `precision` "bf16" runs the packaged MiniLM in bfloat16 for these request-time texts (the item table stays
    float32; `tools.text_encoders.resolve_text_precision`); the space's key then says so.

    Every projection of a text is computed when it is first encoded and memoised in a bounded LRU: evaluations
    embed the same abstracts under many plans, and a chat repeats its summary, so each distinct text is encoded
    once while it stays among the `capacity` most recently used, and returns the same floats however it was
    batched later.
    """

    def __init__(self, semantics: ItemSemantics, capacity: int = 50_000, head: SummaryHead | None = None,
                 head_digest: str = "", precision: Precision = "fp32",
                 encoder_space: EncoderSpace | None = None) -> None:  # fmt: skip
        self.semantics = semantics
        local = isinstance(semantics.encoder, LocalMiniLM)
        self.precision: Precision = precision if local else "fp32"  # an endpoint's precision is its own
        self.encoder = LocalMiniLM(precision) if local and precision != "fp32" else semantics.encoder
        self.capacity = capacity
        self.head = head
        self.head_digest = head_digest
        self.encoder_space = encoder_space
        self._memo: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def table(self) -> np.ndarray:
        """The item table e_sem is scored against (Eq. 3, 7): E_str in the encoder space, else Eq. 1's E_I."""
        return self.encoder_space.table if self.encoder_space is not None else self.semantics.table

    def describe(self) -> str:
        """What maps behaviour summaries into e_sem's item space, in words (the demo, `eval rec`'s notes)."""
        if self.encoder_space is not None:
            return (f"semantic tower {self.encoder_space.digest[:12]} into the item table of SASRec "
                    f"{self.encoder_space.encoder_digest[:12]}")  # fmt: skip
        return f"semantic head {self.head_digest[:12]}" if self.head is not None else "PCA of Eq. 1 (no semantic head)"

    @property
    def table_key(self) -> str:
        """Which item table e_sem is scored against: Eq. 1's (the item semantics' key) or the encoder's (which
        checkpoint's table). Device and cloud must agree on it (`SemanticRequest.space`)."""
        if self.encoder_space is None:
            return self.semantics.key
        return f"{self.semantics.key}+encoder-{self.encoder_space.encoder_digest[:12]}"

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    @property
    def key(self) -> str:
        """What e_sem depends on: the item semantics, the head's digest when summaries go through one (or the
        encoder space's table and tower), and the request texts' precision."""
        if self.encoder_space is not None:
            return space_key(f"{self.semantics.key}+{self.encoder_space.key}", None, self.precision)
        return space_key(self.semantics.key, self.head_digest if self.head is not None else None, self.precision)

    def _fresh(self, texts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raw, summaries = on_inference_thread(self.encode_afresh, texts)  # the torch steps on the one inference thread
        by_pca = self.semantics.pca.transform(raw)
        summaries = by_pca if summaries is None else summaries
        return {text: (a, b) for text, a, b in zip(texts, by_pca, summaries, strict=True)}

    def encode_afresh(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Theta(texts) (Eq. 1) and, when summaries have a trained map (the head, or the encoder space's tower),
        H(Theta(texts)) (Eq. 2 trained), never from the memo (the caller picks the thread: requests run it on the
        inference thread)."""
        raw = embed_texts(texts, encoder=self.encoder)
        if self.encoder_space is not None:
            return raw, self.encoder_space.summaries(raw)
        return raw, self.head.project(raw).astype(np.float32) if self.head is not None else None

    def _vectors(self, texts: Sequence[str], which: int, dim: int) -> np.ndarray:
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
        return np.stack(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)

    def project(self, texts: Sequence[str]) -> np.ndarray:
        """Texts in Eq. 1's text space by the items' own PCA: tag descriptions, abstract vectors for planning."""
        return self._vectors(texts, 0, self.semantics.dim)

    def project_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries in e_sem's item space: the PCA (the encoder space has no map for queries)."""
        if self.encoder_space is not None and texts:
            raise ValueError("the encoder's item space has no map for queries: abstracts with a query are answered "
                             "in the text space (CloudAgent.side)")  # fmt: skip
        return self._vectors(texts, 0, self.dim)

    def project_summaries(self, texts: Sequence[str]) -> np.ndarray:
        """Behaviour summaries in e_sem's item space: the trained head or tower when there is one, else the PCA."""
        return self._vectors(texts, 1, self.dim)


def semantic_user_embeddings(abstracts: Sequence[Abstract], alphas: Sequence[float], space: TextSpace) -> np.ndarray:
    """CDA4Rec Eq. 2 for a batch of abstracts [B] -> e_sem [B, d] in the space's item space (`TextSpace.table`)."""
    queries = [a.sanitized_query.strip() for a in abstracts]
    summaries = [a.behavior_summary.strip() or EMPTY_SUMMARY for a in abstracts]
    asked = list(dict.fromkeys(q for q in queries if q))
    told = list(dict.fromkeys(summaries))
    space.project(list(dict.fromkeys(asked + told)))  # one encoder batch for both kinds, as the memo keeps them
    query_vectors = dict(zip(asked, space.project_queries(asked), strict=True))
    summary_vectors = dict(zip(told, space.project_summaries(told), strict=True))
    out = np.zeros((len(abstracts), space.dim), dtype=np.float32)
    for row, (query, summary, alpha) in enumerate(zip(queries, summaries, alphas, strict=True)):
        behaviour = summary_vectors[summary]
        out[row] = behaviour if not query else alpha * query_vectors[query] + (1.0 - alpha) * behaviour
    return out
