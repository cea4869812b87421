"""Typed catalog and interaction log of a data set, re-indexed to dense ids (0 = padding)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from ground.errors import UnknownItemError, UnknownUserError


class Item(BaseModel):
    """One catalog item. `item_id` is dense, starting at 1 (0 is the padding id of the encoders)."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    title: str
    year: int | None
    tags: tuple[str, ...]

    def text(self) -> str:
        """The item's text(i) of CDA4Rec Eq. 1: title, year and tags in one line."""
        year = f" ({self.year})" if self.year else ""
        return f"{self.title}{year}. Tags: {', '.join(self.tags) or 'none'}."


def decade_tag(year: int | None) -> str | None:
    """Release decade as a tag ("1990s"), or None when the year is unknown."""
    return f"{year // 10 * 10}s" if year else None


@dataclass(frozen=True)
class Catalog:
    """All items, indexed by dense id: `catalog[item_id]`."""

    items: tuple[Item, ...]
    _by_id: dict[int, Item] = field(init=False, repr=False, compare=False)
    _members: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {item.item_id: item for item in self.items})
        members: dict[str, list[int]] = {}
        for item in self.items:
            for tag in item.tags:
                members.setdefault(tag, []).append(item.item_id)
        object.__setattr__(self, "_members", {t: np.array(ids, dtype=np.int64) for t, ids in members.items()})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item_id: int) -> Item:
        try:
            return self._by_id[int(item_id)]
        except KeyError:
            raise UnknownItemError(f"unknown item id {item_id} (catalog ids run 1..{len(self.items)})") from None

    @property
    def num_items(self) -> int:
        """Number of real items; embedding tables have num_items + 1 rows (row 0 = padding)."""
        return len(self.items)

    def tags(self) -> list[str]:
        """Every tag, genres first (alphabetical), then decades (chronological)."""
        genres = sorted(t for t in self._members if not _is_decade(t))
        decades = sorted(t for t in self._members if _is_decade(t))
        return genres + decades

    def items_with_tag(self, tag: str) -> list[Item]:
        return [self._by_id[i] for i in self.tag_members(tag).tolist()]

    def tag_members(self, tag: str) -> np.ndarray:
        """Ids of the items carrying `tag` (empty for an unknown tag)."""
        return self._members.get(tag, np.empty(0, dtype=np.int64))


def _is_decade(tag: str) -> bool:
    return len(tag) == 5 and tag[:4].isdigit() and tag.endswith("s")


@dataclass(frozen=True)
class Dataset:
    """A catalog plus each user's time-ordered interactions.

    `sequences[u]` and `timestamps[u]` are aligned int arrays for dense user id u (0..num_users-1);
    `user_names[u]` is the id in the source files ("196", "1m_1").
    """

    name: str
    catalog: Catalog
    user_names: tuple[str, ...]
    sequences: tuple[np.ndarray, ...]
    timestamps: tuple[np.ndarray, ...]

    @property
    def num_users(self) -> int:
        return len(self.user_names)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def user_index(self, name: str) -> int:
        """Dense id of a user given by its source id (or by its dense id as a string)."""
        lookup = {n: i for i, n in enumerate(self.user_names)}
        if name in lookup:
            return lookup[name]
        raise UnknownUserError(
            f"unknown user {name!r} in {self.name} (ids look like {self.user_names[0]!r}..{self.user_names[-1]!r})"
        )

    def fingerprint(self) -> str:
        """Short, stable identity of the data (used to refuse checkpoints/indexes built on other data)."""
        digest = hashlib.sha256(self.name.encode())
        digest.update(f"{self.catalog.num_items}:{self.num_users}:{self.num_interactions}".encode())
        for item in self.catalog.items[:50]:
            digest.update(item.title.encode())
        return digest.hexdigest()[:16]
