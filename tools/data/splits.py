"""Leave-one-out splits with held-out users, as in CDA4Rec IV-A.

- 10% of users (seeded) are held out entirely: never trained on; they form the few-shot set, where the
  last interaction is the target and everything before it is the history.
- For every other user: last interaction = test target, second-to-last = validation target, the rest =
  training sequence. Histories handed to a model are cut to the newest `max_len` items; a full ranking masks
  every item the user saw before the target (`EvalInstance.masked`), older ones too, as the device masks its
  whole stored history and as the published protocol does.
- Users with fewer than 3 interactions cannot be split and only contribute training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .catalog import Dataset
from .queries import Clarity, make_query

SplitName = Literal["valid", "test", "fewshot"]


@dataclass(frozen=True)
class EvalInstance:
    """One evaluation case: predict `target` for `user` from `history` (oldest first, <= max_len)."""

    user: int
    history: np.ndarray
    history_ts: np.ndarray
    target: int
    split: SplitName
    query: str
    clarity: Clarity
    older: np.ndarray | None = None
    """Items seen before `history` begins (the history was cut to `max_len`); None when nothing was cut."""

    @property
    def masked(self) -> np.ndarray:
        """Every item the user interacted with before the target: what a ranking leaves out."""
        return self.history if self.older is None else np.concatenate([self.older, self.history])


@dataclass(frozen=True)
class Splits:
    train: dict[int, np.ndarray]
    valid: list[EvalInstance]
    test: list[EvalInstance]
    fewshot: list[EvalInstance]
    heldout_users: frozenset[int]
    max_len: int

    def training_items(self, user: int) -> set[int]:
        return set(self.train.get(user, np.empty(0, dtype=np.int64)).tolist())


def heldout_users(num_users: int, fraction: float, seed: int) -> frozenset[int]:
    rng = np.random.default_rng(seed)
    count = int(round(num_users * fraction))
    return frozenset(rng.choice(num_users, size=count, replace=False).tolist()) if count else frozenset()


def leave_one_out(dataset: Dataset, seed: int = 42, max_len: int = 200, fewshot_fraction: float = 0.1) -> Splits:
    """Split `dataset` as described in the module docstring; queries are generated per instance (seeded)."""
    heldout = heldout_users(dataset.num_users, fewshot_fraction, seed)
    train: dict[int, np.ndarray] = {}
    valid, test, fewshot = [], [], []
    catalog = dataset.catalog
    for user, (seq, ts) in enumerate(zip(dataset.sequences, dataset.timestamps, strict=True)):
        if user in heldout:
            if len(seq) >= 2:
                fewshot.append(_instance(user, seq, ts, len(seq) - 1, "fewshot", catalog, seed, max_len))
            continue
        if len(seq) < 3:
            train[user] = seq
            continue
        train[user] = seq[:-2]
        valid.append(_instance(user, seq, ts, len(seq) - 2, "valid", catalog, seed, max_len))
        test.append(_instance(user, seq, ts, len(seq) - 1, "test", catalog, seed, max_len))
    return Splits(train, valid, test, fewshot, heldout, max_len)


def _instance(user, seq, ts, position, split, catalog, seed, max_len) -> EvalInstance:
    start = max(0, position - max_len)
    target = int(seq[position])
    query, clarity = make_query(catalog[target], seed=(seed, user, position))
    older = np.unique(seq[:start]) if start else None
    return EvalInstance(user, seq[start:position], ts[start:position], target, split, query, clarity, older)
