"""Plan exemplars in Chroma: labelled abstracts with their hindsight target plans, retrieved as few-shot examples.

`tandem prompts exemplars build --data D` writes one collection per data set, `tandem-<data>-plan-exemplars`,
from the hindsight labels (`tandem plans label`): one record per labelled validation abstract, its vector
(the abstract's text in the cloud's text space, Tandem's own embeddings: Chroma's default embedding function
would download a model, so the collection has none), the abstract as the document and its target plan in the
compact JSON the planning prompt asks for. A planning prompt whose header says `exemplars: plan-exemplars`
gets the k records nearest the request's abstract as its few-shot examples (`agents.cloud.planner`). A build
replaces the collection whole; the collection's metadata names the labels it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ground.errors import TandemError
from tools.tag_index import chroma_call

ADD_BATCH = 1000


class ExemplarsUnavailableError(TandemError):
    """No exemplar collection for this data set (or Chroma cannot be read)."""


def hindsight_dir(home: Path, data: str) -> Path:
    """Where `tandem plans label` keeps a data set's hindsight labels (`evals.hindsight`)."""
    return home / "hindsight" / data


def exemplars_path(home: Path, data: str) -> Path:
    """Where the learned planners (and `tandem prompts exemplars build`) find the newest labels of a data set."""
    return hindsight_dir(home, data) / "exemplars.npz"


def collection_name(data: str) -> str:
    return f"tandem-{data}-plan-exemplars"


@dataclass
class ExemplarIndex:
    """The plan exemplars of one data set in one Chroma database (embedded or server)."""

    client: object
    data: str

    def build(self, vectors: np.ndarray, abstracts: Sequence[str], plans: Sequence[dict], keys: Sequence[str],
              source: str) -> int:  # fmt: skip
        """Replace the collection with these records; returns how many were written."""
        name = collection_name(self.data)
        with chroma_call("building the plan exemplars"):
            if name in [c if isinstance(c, str) else c.name for c in self.client.list_collections()]:
                self.client.delete_collection(name)
            collection = self.client.create_collection(name, configuration={"hnsw": {"space": "cosine"}},
                                                       embedding_function=None,
                                                       metadata={"source": source, "count": len(keys)})  # fmt: skip
            for at in range(0, len(keys), ADD_BATCH):
                end = at + ADD_BATCH
                collection.add(ids=list(keys[at:end]), embeddings=np.asarray(vectors[at:end], np.float32).tolist(),
                               documents=list(abstracts[at:end]),
                               metadatas=[{"plan": json.dumps(p, ensure_ascii=False)} for p in plans[at:end]])
        return len(keys)

    def _collection(self):
        try:
            return self.client.get_collection(collection_name(self.data), embedding_function=None)
        except Exception as exc:  # not found: a backend-specific error type
            raise ExemplarsUnavailableError(
                f"no plan exemplars for {self.data}: run `tandem prompts exemplars build --data {self.data}`"
            ) from exc

    def info(self) -> dict:
        """{"collection", "count", "source"} of the built collection."""
        collection = self._collection()
        with chroma_call("reading the plan exemplars"):
            metadata = collection.metadata or {}
            return {"collection": collection_name(self.data), "count": collection.count(),
                    "source": metadata.get("source", "")}  # fmt: skip

    def nearest(self, vector: np.ndarray, k: int) -> list[dict]:
        """The k exemplars nearest `vector`, nearest first, as few-shot examples {"abstract", "plan"}."""
        collection = self._collection()
        with chroma_call("retrieving plan exemplars"):
            found = collection.query(query_embeddings=[np.asarray(vector, np.float32).reshape(-1).tolist()],
                                     n_results=k, include=["documents", "metadatas"])  # fmt: skip
        return [{"abstract": doc, "plan": json.loads(meta["plan"])}
                for doc, meta in zip(found["documents"][0], found["metadatas"][0], strict=True)]  # fmt: skip
