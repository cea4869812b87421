"""SYNTHETIC catalogues and users for the scale benchmark: for measuring COST only, never accuracy.

MovieLens has 3,706 items; real catalogues have 10^5-10^6. `generate` makes a catalogue of any size that
behaves like a real one where cost is concerned, and nothing else:
- tags with a long-tailed (Zipf, exponent `zipf`) popularity: tag of rank r is drawn with probability
  proportional to r^-zipf, each item carries 1-6 of them (about 2.7 on average, as ML-1M's 9,898
  memberships over 3,706 items);
- item embeddings in the real item space of CDA4Rec Eq. 1: each is the mean of its tags' centroids (each
  centroid the mean of a few real items) mixed with one real item and a little noise, so their geometry
  (norms, spread, the intrinsic dimension an HNSW graph sees) is that of the real table;
- users whose histories follow the catalogue: each favours 1-3 tags (drawn by popularity) and picks items
  from them with a Zipf popularity inside each tag; their query vector is the mean of their newest items.

Nothing here has real titles, real users or ground truth: recall is measured against exact search on the
same synthetic data, never against a held-out item. Seeded: the same arguments give the same world.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tools.embeddings import PCA, ItemSemantics

MAX_TAGS_PER_ITEM = 6


@dataclass(frozen=True)
class SyntheticCatalog:
    """The tag groups of a synthetic catalogue (the `TagGroups` an index is built from); ids run 1..num_items."""

    name: str
    num_items: int
    tag_names: tuple[str, ...]
    members: dict[str, np.ndarray]

    def tags(self) -> list[str]:
        return list(self.tag_names)

    def tag_members(self, tag: str) -> np.ndarray:
        return self.members.get(tag, np.empty(0, dtype=np.int64))

    @property
    def memberships(self) -> int:
        return int(sum(len(m) for m in self.members.values()))


@dataclass(frozen=True)
class SyntheticWorld:
    """A synthetic catalogue, its item table in the real item space, and synthetic users (SYNTHETIC: cost only)."""

    catalog: SyntheticCatalog
    semantics: ItemSemantics  # table [V + 1, d] (row 0 = padding), the real data's PCA for text queries
    histories: tuple[np.ndarray, ...]  # item ids of each user, oldest first
    favourite_tags: tuple[tuple[str, ...], ...]

    def queries(self, newest: int = 20) -> np.ndarray:
        """One query vector per user [U, d]: the mean of the embeddings of the user's newest items."""
        table = self.semantics.table
        return np.stack([table[h[-newest:]].mean(axis=0) for h in self.histories]).astype(np.float32)

    def plan(self, user: int, tag_count: int, candidate_size: int) -> dict[str, int]:
        """A plan's tag dictionary for `user` (see `plan_for`); the catalogue's tags are stored most popular first."""
        return plan_for(self.favourite_tags[user], self.catalog.tag_names, tag_count, candidate_size)


def plan_for(preferred: Sequence[str], popular: Sequence[str], tag_count: int, candidate_size: int) -> dict[str, int]:
    """A plan's tag dictionary as the rule planner builds one: the user's preferred tags (most frequent first),
    then the catalogue's most popular ones, with `candidate_size` split evenly over the `tag_count` tags."""
    chosen = list(dict.fromkeys(preferred))[:tag_count]
    for tag in popular:
        if len(chosen) >= tag_count:
            break
        if tag not in chosen:
            chosen.append(tag)
    share, extra = divmod(candidate_size, len(chosen))
    return {tag: share + (1 if i < extra else 0) for i, tag in enumerate(chosen)}


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Probabilities proportional to rank^-exponent, rank 1..n."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def generate(
    num_items: int,
    base: ItemSemantics,
    *,
    num_tags: int = 256,
    num_users: int = 200,
    zipf: float = 1.0,
    seed: int = 0,
    chunk: int = 200_000,
) -> SyntheticWorld:
    """A seeded synthetic world of `num_items` items with embeddings in `base`'s item space (see module doc)."""
    rng = np.random.default_rng(seed)
    real = base.table[1:]
    dim = real.shape[1]
    names = tuple(f"synthetic-tag-{rank:04d}" for rank in range(num_tags))
    popularity = zipf_weights(num_tags, zipf)
    centroids = np.stack([real[rng.choice(len(real), 8, replace=False)].mean(axis=0) for _ in range(num_tags)])
    noise = 0.05 * real.std(axis=0)

    table = np.zeros((num_items + 1, dim), dtype=np.float32)
    member_lists: list[list[np.ndarray]] = [[] for _ in range(num_tags)]
    for start in range(0, num_items, chunk):
        n = min(chunk, num_items - start)
        ids = np.arange(start + 1, start + n + 1, dtype=np.int64)
        drawn = rng.choice(num_tags, size=(n, MAX_TAGS_PER_ITEM), p=popularity)  # [n, 6]
        carried = 1 + np.minimum(rng.poisson(1.7, size=n), MAX_TAGS_PER_ITEM - 1)  # [n] tags per item
        keep = np.arange(MAX_TAGS_PER_ITEM)[None, :] < carried[:, None]  # [n, 6]
        first = np.ones_like(keep)  # a tag drawn twice for one item counts once
        for k in range(1, MAX_TAGS_PER_ITEM):
            first[:, k] = (drawn[:, :k] != drawn[:, k : k + 1]).all(axis=1)
        keep &= first
        mix = (centroids[drawn] * keep[..., None]).sum(axis=1) / keep.sum(axis=1, keepdims=True)  # [n, d]
        anchor = real[rng.integers(0, len(real), size=n)]  # [n, d]
        table[ids] = 0.5 * mix + 0.5 * anchor + noise * rng.standard_normal((n, dim))
        rows, cols = np.nonzero(keep)
        tags_of = drawn[rows, cols]
        order = np.argsort(tags_of, kind="stable")
        bounds = np.searchsorted(tags_of[order], np.arange(num_tags + 1))
        for tag in range(num_tags):
            member_lists[tag].append(ids[rows[order[bounds[tag] : bounds[tag + 1]]]])
    members = {names[t]: np.sort(np.concatenate(parts)) for t, parts in enumerate(member_lists)}
    members = {tag: ids for tag, ids in members.items() if len(ids)}
    catalog = SyntheticCatalog(f"synthetic-{num_items}", num_items, tuple(t for t in names if t in members), members)

    histories, favourites = [], []
    for _ in range(num_users):
        favourite = [catalog.tag_names[t] for t in
                     rng.choice(len(catalog.tag_names), size=rng.integers(1, 4), p=_renorm(popularity, catalog))]
        length = int(np.clip(rng.lognormal(np.log(60), 0.8), 5, 500))
        picks = []
        for _ in range(length):
            group = catalog.members[favourite[rng.integers(len(favourite))]]
            rank = min(int(rng.zipf(1.3)) - 1, len(group) - 1)  # popular items of the tag first
            picks.append(group[(rank * 7919) % len(group)])  # a fixed scatter of popularity over the group
        histories.append(np.asarray(picks, dtype=np.int64))
        favourites.append(tuple(favourite))
    pca = PCA(base.pca.mean, base.pca.components)
    semantics = ItemSemantics(table, pca, f"{catalog.name}-seed{seed}-zipf{zipf:g}-tags{num_tags}-SYNTHETIC")
    return SyntheticWorld(catalog, semantics, tuple(histories), tuple(favourites))


def _renorm(popularity: np.ndarray, catalog: SyntheticCatalog) -> np.ndarray:
    """Tag popularity restricted to the tags that ended up with members (all of them, at any useful size)."""
    kept = np.array([int(name.rsplit("-", 1)[1]) for name in catalog.tag_names])
    weights = popularity[kept]
    return weights / weights.sum()
