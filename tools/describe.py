"""An item described by what the catalogue knows about it (tags and decade), never by its title.

"Toy Story" (1995; Animation, Children's, Comedy) -> "an animated children's comedy from the 1990s". The
privacy rewrite (`tools.scrub`) puts this in place of a history title named in a query, and the chat's
references ("more like the second one") use it, so a request keeps its intent without naming an item.
The words are the ones the rule planner reads back as tags (`tools.constraints.TAG_ALIASES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

# Genres said as an adjective before the noun.
ADJECTIVES: dict[str, str] = {"Animation": "animated", "Romance": "romantic", "Film-Noir": "noir"}
# Genres that can be the head noun, in the order one is chosen when several are present.
HEADS: dict[str, str] = {
    "Comedy": "comedy", "Drama": "drama", "Thriller": "thriller", "Western": "western", "Musical": "musical",
    "Documentary": "documentary", "Mystery": "mystery", "Horror": "horror film", "War": "war film",
}  # fmt: skip
# Genres said as a noun modifier ("a sci-fi thriller", "a children's comedy").
MODIFIERS: dict[str, str] = {
    "Children's": "children's", "Action": "action", "Adventure": "adventure", "Crime": "crime", "Sci-Fi": "sci-fi",
    "Fantasy": "fantasy", "War": "war", "Horror": "horror",
}  # fmt: skip


def _is_decade(tag: str) -> bool:
    return len(tag) == 5 and tag[:4].isdigit() and tag.endswith("s")


def describe(tags: Sequence[str], year: int | None = None) -> str:
    """"an animated children's comedy from the 1990s": genres as adjective, modifiers and head noun, then decade."""
    return _describe(tuple(tags), year)


@lru_cache(maxsize=65_536)
def _describe(tags: tuple[str, ...], year: int | None) -> str:  # a request describes its whole history
    genres = [t for t in tags if not _is_decade(t) and t != "Uncategorized"]
    head_tag = next((t for t in HEADS if t in genres), None)
    adjectives = [ADJECTIVES[t] for t in genres if t in ADJECTIVES]
    modifiers = [MODIFIERS.get(t, t.lower()) for t in genres if t != head_tag and t not in ADJECTIVES]
    words = [*adjectives, *modifiers, HEADS[head_tag] if head_tag else "film"]
    decade = f"{year // 10 * 10}s" if year else next((t for t in tags if _is_decade(t)), None)
    text = " ".join(words) + (f" from the {decade}" if decade else "")
    return ("an " if text[0] in "aeiou" else "a ") + text
