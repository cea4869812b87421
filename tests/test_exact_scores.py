"""Eq. 3's float64 scores are the same for an item wherever they are computed (`tools.exact_scores`), so the cloud's
exact index, the device's compact-wire reader and the plan executor cut tag groups identically, duplicates too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.exact_scores import exact_scores
from tools.plan_executor import InstancePieces, PlanExecutor
from tools.tag_index import ExactTagIndex


def test_an_items_score_depends_only_on_its_row_and_the_query() -> None:
    """Two identical rows score the same bit for bit at any positions, and as the row scored alone (a BLAS
    matrix-vector product misses this for about 1 in 100 such tables)."""
    rng = np.random.default_rng(0)
    for _ in range(600):
        n, d = int(rng.integers(5, 400)), int(rng.choice([16, 64, 100]))
        table = rng.standard_normal((n, d)).astype(np.float32)
        query = rng.standard_normal(d).astype(np.float32)
        i, j = rng.choice(n, 2, replace=False)
        table[j] = table[i]
        everything = exact_scores(table, np.arange(n), query)
        assert everything[i] == everything[j]
        assert exact_scores(table, np.array([j]), query)[0] == everything[j]
        some = np.sort(rng.choice(n, int(rng.integers(2, n)), replace=False))
        assert np.array_equal(exact_scores(table, some, query), everything[some])
    assert exact_scores(table, np.zeros(0, dtype=np.int64), query).shape == (0,)


@dataclass
class Groups:
    members: dict[str, np.ndarray]
    num_items: int

    def tags(self) -> list[str]:
        return list(self.members)

    def tag_members(self, tag: str) -> np.ndarray:
        return self.members[tag]


def test_the_index_and_the_plan_executor_cut_a_group_between_duplicates_alike() -> None:
    """Many items listed twice (the same embedding under two ids) and tag groups cut at every size: the exact index
    and the executor retrieve the same candidates, ties going to the lower id in both."""
    rng = np.random.default_rng(1)
    num_items, dim = 300, 64
    table = rng.standard_normal((num_items + 1, dim)).astype(np.float32)
    for a, b in rng.choice(np.arange(1, num_items + 1), size=(60, 2), replace=False):
        table[b] = table[a]
    groups = Groups({f"t{k}": np.sort(rng.choice(np.arange(1, num_items + 1), 120, replace=False)) for k in range(3)},
                    num_items)  # fmt: skip
    index, executor = ExactTagIndex(groups, table), PlanExecutor(groups.members, num_items)
    for trial in range(200):  # the old BLAS matrix-vector scores fail this loop
        query = rng.standard_normal(dim).astype(np.float32)
        pieces = InstancePieces({0.5: query}, table, {}, np.zeros(0, dtype=np.int64), target=1)
        for size in range(1, 121):
            tags = {"t0": size} if size % 7 else {"t0": size, "t1": size // 2 + 1, "t2": 3}
            ids, scores = index.retrieve_ids(query, tags)
            mine, my_scores = executor.candidates(pieces, 0.5, tags)
            assert np.array_equal(np.sort(ids), mine), (trial, size)
            assert np.array_equal(scores[np.argsort(ids)], my_scores)
