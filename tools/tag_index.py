"""Chroma tag collections: one collection per tag, plus one of tag descriptions (CDA4Rec III-E).

An item sits in the collection of every tag it carries, stored with its semantic embedding (Eq. 1), and
collections use inner-product space, so a query returns items by e_sem . e_i (Eq. 3).

Builds are atomic and idempotent. Each build writes a fresh set of collections under a new build id and
only then points the data set's manifest collection at them; readers look at the manifest alone, so an
interrupted build leaves collections no reader will ever use (the next build deletes them). Building
again with the same data and embeddings is a no-op unless forced.

The same code runs against an embedded PersistentClient and a Chroma server (`chroma run`, HttpClient).
Chroma's default embedding function would download a model, so every collection is created with
`embedding_function=None` and always receives Tandem's own vectors.

Three backends answer the same `TagRetriever` contract, chosen by the `index_backend` setting
(`choose_backend`): exact search in memory (`ExactTagIndex`), Chroma embedded and Chroma server (`TagIndex`
over a PersistentClient or an HttpClient). `retrieve_many` answers many requests in as few calls as the
backend allows: exact search scores every request against every item in one matrix product; Chroma queries
each tag collection once with the embeddings of every request that asked for that tag.

Every backend (and the plan executor of the evaluations) retrieves each group's `fill_shares` of the plan's
N_i: a group smaller than its N_i gives all it holds and its unused share goes to the plan's other groups.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlparse

import numpy as np

from ground.errors import DependencyUnavailableError, IndexMissingError, TandemError, UnknownTagError
from tools.embeddings import ItemSemantics
from tools.exact_scores import exact_scores

# one build thread: HNSW inserts in a fixed order, so a rebuilt index answers exactly as before (several
# threads interleave insertions and move the odd item at a cut-off: the flaky pinned requests of issue 16)
HNSW_CONFIG = {"hnsw": {"space": "ip", "ef_construction": 200, "ef_search": 200, "max_neighbors": 32, "num_threads": 1}}
ADD_BATCH = 5000  # items per Chroma `add` (capped by the client's own maximum batch size)

# Below this many items `index_backend = "auto"` retrieves by exact search in memory, from it on by Chroma.
# From `python -m evals.bench_scale` (evals/results/scale.json, retrieval.crossover["all plan shapes"]): averaged
# over every plan shape (geometric mean of p50 over 3-20 tags x 500-5000 candidates, Chroma counted only where its
# recall@N holds 0.95), exact beat Chroma at 3.7k, 100k and 1M items (1M: 20 tags p50 19-22 ms vs 47-76 ms, where
# Chroma's recall also fell to 0.93-0.98), and the fitted curves cross at 3.5M items, rounded down here. Chroma
# wins single shapes earlier (10 tags x 500-1000 at 1M, by 10-15%), which is why the average decides.
EXACT_BELOW_ITEMS = 3_000_000

# Eq. 3 as retrieved: 1 = each group's N_i as asked (capped at the group's size); 2 = `fill_shares` (a small
# group's unused share goes to the other groups); 3 = scores by `tools.exact_scores` (an item's float64 score no
# longer depends on its position in a BLAS product, so duplicates tie everywhere). Reward tables and oracle caches
# are keyed by it.
RETRIEVAL_VERSION = 3

Backend = Literal["exact", "chroma"]
Plans = Sequence[Mapping[str, int]]
Ranked = tuple[np.ndarray, np.ndarray]  # candidate ids [C] and their scores e_sem . e_i [C], best first


def choose_backend(setting: str, num_items: int, chroma_url: str | None) -> Backend:
    """The retrieval backend for `setting` (auto, exact or chroma) and a catalogue of `num_items` items.

    `auto`: Chroma when a Chroma server is configured (`chroma_url`: an operator's explicit choice of a shared
    index), else exact search below the measured crossover `EXACT_BELOW_ITEMS` and embedded Chroma from it on.
    """
    if setting in ("exact", "chroma"):
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise TandemError(f"unknown index backend {setting!r}; choose auto, exact or chroma")
    if chroma_url:
        return "chroma"
    return "exact" if num_items < EXACT_BELOW_ITEMS else "chroma"


class TagGroups(Protocol):
    """What an index is built from: the tag list and each tag's member item ids (a `Catalog`, or a synthetic
    catalogue of the scale benchmark)."""

    @property
    def num_items(self) -> int: ...

    def tags(self) -> list[str]: ...

    def tag_members(self, tag: str) -> np.ndarray: ...


class ChromaUnavailableError(DependencyUnavailableError):
    """The Chroma server cannot be reached, or Chroma (embedded or server) failed on a call."""

    dependency = "chroma"


def chroma_client(url: str | None, path: Path):
    """An HttpClient for `url` (a running `chroma run`), else a PersistentClient at `path`."""
    import chromadb  # deferred: Chroma takes a second to import, and exact retrieval does without it
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or 8000,
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
            client.heartbeat()
        except Exception as exc:  # the client raises several transport error types
            raise ChromaUnavailableError(f"Chroma server at {url} is unreachable: {type(exc).__name__}") from exc
        return client
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


@contextmanager
def chroma_call(what: str) -> Iterator[None]:
    """Any failure of Chroma inside the block (a stopped server, an embedded database error) becomes one
    `ChromaUnavailableError` naming what was being done; Tandem's own errors pass through unchanged."""
    try:
        yield
    except TandemError:
        raise
    except Exception as exc:  # the client raises many transport and backend error types
        raise ChromaUnavailableError(f"Chroma failed during {what}: {type(exc).__name__}") from exc


def slug(tag: str) -> str:
    """A Chroma-safe collection-name part for a tag ("Children's" -> "children-s")."""
    return re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-") or "tag"


def tag_description(tag: str) -> str:
    """The text embedded for a tag in the tag-description collection."""
    if re.fullmatch(r"\d{4}s", tag):
        return f"Movies released in the {tag}."
    return f"{tag} movies: films in the {tag} genre."


@dataclass(frozen=True)
class Candidate:
    """A retrieved item with its best inner-product score and the tag groups that returned it."""

    item_id: int
    score: float
    tags: tuple[str, ...]


@dataclass(frozen=True)
class BuildReport:
    built: bool
    build_id: str
    tags: int
    memberships: int
    seconds: float


class TagRetriever(Protocol):
    """What the cloud agent retrieves candidates from (CDA4Rec Eq. 3): Chroma, or exact search in memory."""

    def tags(self) -> list[str]: ...

    def retrieve_ids(self, query: np.ndarray, tag_counts: Mapping[str, int]) -> Ranked: ...

    def retrieve_many(self, queries: np.ndarray, plans: Plans) -> list[Ranked]: ...


def _split(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """`total` split over the keys in proportion to `weights` (largest remainder; ties to the earlier key)."""
    mass = sum(weights.values())
    raw = {key: total * w / mass for key, w in weights.items()}
    out = {key: int(r) for key, r in raw.items()}
    order = sorted(raw, key=lambda key: -(raw[key] - out[key]))  # stable: earlier keys first on a tie
    for key in order[: total - sum(out.values())]:
        out[key] += 1
    return out


def fill_shares(tag_counts: Mapping[str, int], sizes: Mapping[str, int]) -> dict[str, int]:
    """CDA4Rec Eq. 3's N_i as retrieved: each group's share of the plan's N = sum N_i, water-filled.

    A group holding fewer items than its N_i gives all it holds, and the share it cannot use goes to the plan's
    groups that still have items, in proportion to their N_i, until N is placed or every group is exhausted. So a
    plan retrieves the N it asks for whenever its groups hold that many (items in several groups still count
    once in the merged list); before this, a small group's unused share was lost and 20 tags x 5,000 candidates
    retrieved about 2,000 of ML-1M's 3,706 items. Groups with N_i = 0 stay empty."""
    want = {tag: max(int(n), 0) for tag, n in tag_counts.items()}
    shares = {tag: min(n, int(sizes[tag])) for tag, n in want.items()}
    while True:
        spare = sum(want.values()) - sum(shares.values())
        room = {tag: want[tag] for tag in shares if want[tag] > 0 and shares[tag] < sizes[tag]}
        if spare <= 0 or not room:
            return shares
        for tag, extra in _split(spare, room).items():
            shares[tag] = min(int(sizes[tag]), shares[tag] + extra)


def _as_arrays(found: list[Candidate]) -> Ranked:
    ids = np.fromiter((c.item_id for c in found), dtype=np.int64, count=len(found))
    scores = np.fromiter((c.score for c in found), dtype=np.float64, count=len(found))
    return ids, scores


@dataclass
class TagIndex:
    """The tag collections of one data set in one Chroma database."""

    client: object
    dataset: str
    _manifest: dict | None = field(default=None, init=False, repr=False)
    _collections: dict[str, object] = field(default_factory=dict, init=False, repr=False)

    @property
    def manifest_name(self) -> str:
        return f"tandem-{self.dataset}-manifest"

    def _prefix(self, build_id: str) -> str:
        return f"tandem-{self.dataset}-{build_id}-"

    # -- building -------------------------------------------------------------------------------------

    def build(
        self,
        catalog: TagGroups,
        semantics: ItemSemantics,
        force: bool = False,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> BuildReport:
        """Write every tag collection and the tag descriptions, then switch the manifest to them."""
        start = time.perf_counter()
        current = self._read_manifest()
        if current and current["key"] == semantics.key and not force and self._complete(current):
            return BuildReport(False, current["build_id"], len(current["tags"]), current["memberships"], 0.0)
        build_id = uuid.uuid4().hex[:8]
        prefix = self._prefix(build_id)
        tags = catalog.tags()
        collections: dict[str, str] = {}
        memberships = 0
        size = min(ADD_BATCH, getattr(self.client, "get_max_batch_size", lambda: ADD_BATCH)())
        for done, tag in enumerate(tags):
            items = catalog.tag_members(tag)
            name = prefix + slug(tag)
            collection = self.client.create_collection(name, configuration=HNSW_CONFIG, embedding_function=None)
            for at in range(0, len(items), size):
                batch = items[at : at + size].tolist()
                collection.add(
                    ids=[str(item_id) for item_id in batch],
                    embeddings=semantics.table[batch],
                    metadatas=[{"item_id": item_id} for item_id in batch],
                )
            collections[tag] = name
            memberships += len(items)
            if on_progress:
                on_progress(tag, done + 1, len(tags) + 1)
        tag_collection = self.client.create_collection(
            prefix + "tag-descriptions", configuration={"hnsw": {"space": "ip"}}, embedding_function=None
        )
        tag_collection.add(
            ids=tags,
            embeddings=semantics.project_texts([tag_description(t) for t in tags]).tolist(),
            documents=[tag_description(t) for t in tags],
        )
        if on_progress:
            on_progress("tag descriptions", len(tags) + 1, len(tags) + 1)
        counts = {tag: len(catalog.tag_members(tag)) for tag in tags}
        manifest = {
            "build_id": build_id,
            "key": semantics.key,
            "tags": collections,
            "counts": counts,
            "tag_collection": prefix + "tag-descriptions",
            "memberships": memberships,
        }
        self._write_manifest(manifest)
        self._drop_other_builds(build_id)
        self._manifest, self._collections = manifest, {}
        return BuildReport(True, build_id, len(tags), memberships, time.perf_counter() - start)

    def _complete(self, manifest: dict) -> bool:
        """Every collection the manifest names exists and holds the counted items."""
        try:
            return all(
                self.client.get_collection(name).count() == manifest["counts"][tag]
                for tag, name in manifest["tags"].items()
            )
        except Exception:  # a missing collection raises a backend-specific error
            return False

    def _read_manifest(self) -> dict | None:
        try:
            metadata = self.client.get_collection(self.manifest_name).metadata or {}
        except Exception:  # not found: NotFoundError (embedded) or a transport error subclass (server)
            return None
        return json.loads(metadata["manifest"]) if "manifest" in metadata else None

    def _write_manifest(self, manifest: dict) -> None:
        collection = self.client.get_or_create_collection(self.manifest_name, embedding_function=None)
        collection.modify(metadata={"manifest": json.dumps(manifest)})

    def _drop_other_builds(self, keep: str) -> None:
        stem = f"tandem-{self.dataset}-"
        for collection in self.client.list_collections():
            name = collection if isinstance(collection, str) else collection.name
            if name.startswith(stem) and name != self.manifest_name and not name.startswith(self._prefix(keep)):
                self.client.delete_collection(name)

    # -- reading --------------------------------------------------------------------------------------

    def manifest(self, expected_key: str | None = None) -> dict:
        """The active build's manifest; IndexMissingError when there is none or it is for other data."""
        if self._manifest is None:
            self._manifest = self._read_manifest()
        if self._manifest is None:
            raise IndexMissingError(f"no tag index for {self.dataset}: run `tandem index build --data {self.dataset}`")
        if expected_key and self._manifest["key"] != expected_key:
            raise IndexMissingError(
                f"the tag index for {self.dataset} was built from other embeddings: run `tandem index build --force`"
            )
        return self._manifest

    def tags(self) -> list[str]:
        return list(self.manifest()["tags"])

    def _collection(self, name: str):
        if name not in self._collections:
            with chroma_call("opening a collection"):
                self._collections[name] = self.client.get_collection(name, embedding_function=None)
        return self._collections[name]

    def health(self) -> dict[str, dict[str, object]]:
        """Whether Chroma answers and the index is usable: {"chroma": {...}, "index": {...}}, each with "ok"."""
        report: dict[str, dict[str, object]] = {}
        try:
            with chroma_call("the health check"):
                if hasattr(self.client, "heartbeat"):
                    self.client.heartbeat()
                self.client.get_collection(self.manifest_name)
            report["chroma"] = {"ok": True}
        except ChromaUnavailableError as exc:
            report["chroma"] = {"ok": False, "error": str(exc)}
        try:
            report["index"] = {"ok": True, "tags": len(self.manifest()["tags"])}
        except TandemError as exc:
            report["index"] = {"ok": False, "error": str(exc)}
        return report

    def retrieve(self, query: np.ndarray, tag_counts: Mapping[str, int]) -> list[Candidate]:
        """CDA4Rec Eq. 3: the top-N_i items of each tag group by e_sem . e_i, merged without duplicates.

        An item found in several groups keeps its (identical) score and lists every group that returned it.
        Results are sorted by score, best first. Each group gives its `fill_shares` of the plan's N_i.
        """
        return self.retrieve_candidates(np.asarray(query, dtype=np.float32).reshape(1, -1), [tag_counts])[0]

    def retrieve_candidates(self, queries: np.ndarray, plans: Plans) -> list[list[Candidate]]:
        """`retrieve` for B requests (queries [B, d]): one Chroma call per distinct tag, carrying the query
        embeddings of every request that asked for that tag (Chroma queries one collection per call)."""
        manifest = self.manifest()
        unknown = sorted({tag for plan in plans for tag in plan if tag not in manifest["tags"]})
        if unknown:
            known = ", ".join(manifest["tags"])
            raise UnknownTagError(f"unknown tag(s) {', '.join(map(repr, unknown))}; known: {known}")
        vectors = np.asarray(queries, dtype=np.float32).reshape(len(plans), -1)
        asks: dict[str, list[tuple[int, int]]] = {}
        for row, plan in enumerate(plans):
            for tag, n in fill_shares(plan, manifest["counts"]).items():
                if n > 0:
                    asks.setdefault(tag, []).append((row, n))
        found: list[dict[int, tuple[float, list[str]]]] = [{} for _ in plans]
        for tag, wanted in asks.items():
            with chroma_call(f"retrieval from the {tag} collection"):
                result = self._collection(manifest["tags"][tag]).query(
                    query_embeddings=vectors[[row for row, _ in wanted]],
                    n_results=max(n for _, n in wanted),
                    include=["distances"],
                )
            for (row, n), ids, distances in zip(wanted, result["ids"], result["distances"], strict=True):
                merged = found[row]
                for raw_id, distance in zip(ids[:n], distances[:n], strict=True):
                    item_id = int(raw_id)
                    if item_id in merged:
                        merged[item_id][1].append(tag)
                    else:
                        merged[item_id] = (1.0 - float(distance), [tag])
        return [
            [Candidate(item_id, score, tuple(tags)) for item_id, (score, tags) in
             sorted(merged.items(), key=lambda kv: (-kv[1][0], kv[0]))]
            for merged in found
        ]  # fmt: skip

    def retrieve_ids(self, query: np.ndarray, tag_counts: Mapping[str, int]) -> Ranked:
        """CDA4Rec Eq. 3 as arrays: candidate ids [C] and their scores e_sem . e_i [C], best first."""
        return _as_arrays(self.retrieve(query, tag_counts))

    def retrieve_many(self, queries: np.ndarray, plans: Plans) -> list[Ranked]:
        """`retrieve_ids` for B requests (queries [B, d]), batched per tag collection."""
        return [_as_arrays(found) for found in self.retrieve_candidates(queries, plans)]

    def nearest_tags(self, query: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k tags whose descriptions are closest to `query` (inner product), best first."""
        manifest = self.manifest()
        k = min(k, len(manifest["tags"]))
        with chroma_call("the nearest-tag search"):
            result = self._collection(manifest["tag_collection"]).query(
                query_embeddings=[np.asarray(query, dtype=np.float32).reshape(-1).tolist()],
                n_results=k,
                include=["distances"],
            )
        return [(tag, 1.0 - float(d)) for tag, d in zip(result["ids"][0], result["distances"][0], strict=True)]


@dataclass(frozen=True)
class ExactTagIndex:
    """Eq. 3 by exact inner product over the catalog's tag groups in memory (no Chroma).

    The reference `TagIndex` is measured against (recall@N, speed), what the evaluations retrieve from when
    thousands of users are scored at once, and the default backend below the measured crossover
    (`EXACT_BELOW_ITEMS`); Chroma's HNSW matches it at recall@N 0.99995 on ML-1M (evals/results/index_ml-1m.json).
    """

    catalog: TagGroups
    table: np.ndarray  # [V + 1, d], the item semantic table of Eq. 1

    def tags(self) -> list[str]:
        return self.catalog.tags()

    def _check(self, plans: Plans) -> None:
        unknown = sorted({tag for plan in plans for tag in plan if not len(self.catalog.tag_members(tag))})
        if unknown:
            raise UnknownTagError(f"unknown tag(s) {', '.join(map(repr, unknown))}; known: {', '.join(self.tags())}")

    @cached_property
    def _error_bound(self) -> float:
        """An upper bound on |float32 - exact| of e_sem . e_i per unit norm of e_sem: gamma_d * max ||e_i||
        (the standard bound on a float32 dot product of length d)."""
        dim = self.table.shape[1]
        return 2.0 * dim * float(np.finfo(np.float32).eps) * float(np.linalg.norm(self.table, axis=1).max())

    def _group_top(self, scores: np.ndarray, query: np.ndarray, tag: str, count: int) -> np.ndarray:
        """The top-N_i ids of one tag group, best first (ties: lower id first), by e_sem . e_i in float64.

        `scores` [V + 1] are float32 and round differently in a matrix product over many requests than in a
        matrix-vector one, so they only narrow the group: every item within the float32 error bound of the N_i-th
        score is rescored exactly, and the cut is made on the exact scores. A request's candidates are then the
        same whether it was scored alone or in a batch."""
        members = self.catalog.tag_members(tag)
        if count < len(members):
            group = scores[members]
            cut = np.partition(group, len(group) - count)[len(group) - count]  # the N_i-th largest
            margin = self._error_bound * float(np.linalg.norm(query))
            members = members[group >= cut - margin]
        exact = exact_scores(self.table, members, query)
        return members[np.lexsort((members, -exact))[:count]]

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Each tag group's size (for `fill_shares`)."""
        return {tag: len(self.catalog.tag_members(tag)) for tag in self.tags()}

    def _tops(self, scores: np.ndarray, query: np.ndarray, tag_counts: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Each tag group's top ids, best first (Eq. 3, `fill_shares` of N_i), given every item's e_sem . e_i."""
        shares = fill_shares(tag_counts, self.sizes)
        return {tag: self._group_top(scores, query, tag, n) for tag, n in shares.items() if n > 0}

    def _merge(self, query: np.ndarray, tops: dict[str, np.ndarray]) -> Ranked:
        ids = np.unique(np.concatenate(list(tops.values()))) if tops else np.zeros(0, dtype=np.int64)
        exact = exact_scores(self.table, ids, query)
        order = np.lexsort((ids, -exact))
        return ids[order], exact[order]

    def retrieve_ids(self, query: np.ndarray, tag_counts: Mapping[str, int]) -> Ranked:
        return self.retrieve_many(np.asarray(query).reshape(1, -1), [tag_counts])[0]

    def retrieve_many(self, queries: np.ndarray, plans: Plans, chunk: int = 64) -> list[Ranked]:
        """Eq. 3 for B requests: the scores of every item for `chunk` requests at a time in one matrix product
        E_I Q^T [V + 1, chunk], then each request's tag groups cut from its column."""
        self._check(plans)
        vectors = np.asarray(queries, dtype=np.float32).reshape(len(plans), -1)
        answers: list[Ranked] = []
        for start in range(0, len(plans), chunk):
            block = self.table @ vectors[start : start + chunk].T  # [V + 1, chunk]
            for row, (column, plan) in enumerate(zip(block.T, plans[start : start + chunk], strict=True)):
                scores = np.ascontiguousarray(column)
                answers.append(self._merge(vectors[start + row], self._tops(scores, vectors[start + row], plan)))
        return answers

    def health(self) -> dict[str, dict[str, object]]:
        """Exact search uses no Chroma; the index is the catalogue's tag groups in memory."""
        return {"chroma": {"ok": True, "used": False}, "index": {"ok": True, "tags": len(self.tags())}}

    def retrieve(self, query: np.ndarray, tag_counts: Mapping[str, int]) -> list[Candidate]:
        """The same candidates as `retrieve_ids`, each with the tag groups that returned it (like `TagIndex`)."""
        self._check([tag_counts])
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        groups: dict[int, list[str]] = {}
        tops = self._tops(self.table @ vector, vector, tag_counts)
        for tag, top in tops.items():
            for item_id in top.tolist():
                groups.setdefault(item_id, []).append(tag)
        ids, exact = self._merge(query, tops)
        pairs = zip(ids.tolist(), exact.tolist(), strict=True)
        return [Candidate(item, score, tuple(groups[item])) for item, score in pairs]

    def top(self, query: np.ndarray, n: int) -> Ranked:
        """The n best items of the whole catalog, ignoring tags (LSC4Rec's tag-free cloud retrieval)."""
        scores = self.table[1:] @ np.asarray(query, dtype=np.float32).reshape(-1)
        ids = np.argsort(-scores, kind="stable")[:n] + 1
        return ids.astype(np.int64), scores[ids - 1].astype(np.float64)
