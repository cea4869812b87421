"""Natural-language queries for MovieLens, which has none.

A query is generated from the target item's tags at one of three clarity levels, seeded per instance:
- clear: names the target's genres and decade ("a Crime Thriller from the 1990s"),
- vague: one genre in mood words ("something tense to watch"),
- none: the empty query.
A query never names the target's title: every candidate sentence is checked with `mentions_title` and a
sentence that would name it is replaced by the next template.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from .catalog import Item

Clarity = Literal["clear", "vague", "none"]
CLARITIES: tuple[Clarity, ...] = ("clear", "vague", "none")

MOODS = {
    "Action": "exciting, fast-paced", "Adventure": "adventurous", "Animation": "animated",
    "Children's": "family-friendly", "Comedy": "funny, light", "Crime": "gritty", "Documentary": "true-to-life",
    "Drama": "moving", "Fantasy": "magical", "Film-Noir": "dark, moody", "Horror": "scary",
    "Musical": "song-filled", "Mystery": "puzzling", "Romance": "romantic", "Sci-Fi": "futuristic",
    "Thriller": "tense", "War": "intense, historical", "Western": "frontier",
}  # fmt: skip
CLEAR_TEMPLATES = (
    "I'd like a {genres} movie from the {decade}.",
    "Recommend a {genres} film, ideally from the {decade}.",
    "Looking for {genres} movies made in the {decade}.",
)
CLEAR_NO_DECADE = ("I'd like a {genres} movie.", "Recommend a {genres} film.")
VAGUE_TEMPLATES = (
    "Something {mood} to watch tonight?",
    "In the mood for something {mood}.",
    "Any {mood} picks for me?",
)
FALLBACK = "Suggest a movie for tonight."


def normalise_title(title: str) -> str:
    """Title without a trailing year and with a trailing article moved back ("Usual Suspects, The")."""
    title = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()
    match = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|El|Das|Der|Die)$", title)
    return f"{match.group(2)} {match.group(1)}" if match else title


def mentions_title(text: str, title: str) -> bool:
    """True when `text` contains the title (either article order) as a whole phrase, case-insensitive."""
    for form in {title.strip(), normalise_title(title)}:
        if form and re.search(rf"(?<![\w']){re.escape(form)}(?![\w'])", text, flags=re.IGNORECASE):
            return True
    return False


def make_query(target: Item, seed: tuple[int, ...], clarity: Clarity | None = None) -> tuple[str, Clarity]:
    """A query for `target` at `clarity` (drawn uniformly when None); returns (query, clarity)."""
    rng = np.random.default_rng(list(seed))
    if clarity is None:
        clarity = CLARITIES[int(rng.integers(len(CLARITIES)))]
    if clarity == "none":
        return "", clarity
    genres = [t for t in target.tags if t in MOODS]
    decade = next((t for t in target.tags if t not in MOODS and t[:4].isdigit()), None)
    candidates = _clear_sentences(genres, decade, rng) if clarity == "clear" else _vague_sentences(genres, rng)
    for sentence in [*candidates, FALLBACK]:
        if not mentions_title(sentence, target.title):
            return sentence, clarity
    return "", "none"


def _clear_sentences(genres: list[str], decade: str | None, rng: np.random.Generator) -> list[str]:
    shown = genres[:2] if genres else ["classic"]
    joined = " ".join(shown)
    templates = list(CLEAR_TEMPLATES if decade else CLEAR_NO_DECADE)
    rng.shuffle(templates)
    return [t.format(genres=joined, decade=decade) for t in templates]


def _vague_sentences(genres: list[str], rng: np.random.Generator) -> list[str]:
    moods = [MOODS[g] for g in genres] or ["good"]
    mood = moods[int(rng.integers(len(moods)))]
    templates = list(VAGUE_TEMPLATES)
    rng.shuffle(templates)
    return [t.format(mood=mood) for t in templates]
