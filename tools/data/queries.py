"""Natural-language queries for MovieLens, which has none.

A query is generated from the target item's tags at one of three clarity levels, seeded per instance:
- clear: names the target's genres and decade ("a Crime Thriller from the 1990s"),
- vague: one genre in mood words ("something tense to watch"),
- none: the empty query.
A query never names the target's title: every candidate sentence is checked with `mentions_title` and a
sentence that would name it is replaced by the next template.

Query fidelity (the explicit axis of `tandem eval rec`, `fidelity_query`):
- exact: the generator above (clear or vague, from the target's own tags): an oracle hint;
- partial: one of the target's genres, and (seeded, half of the time) a genre the target lacks beside it;
- habit: built from the user's newest interactions only (`habit_query` never receives the target);
- none: the empty query.
Phrasings come from template families split into `dev` and `test` (`FAMILIES`). The rule planner's alias
table and every prompt may only be developed on dev families (tests/test_queries.py checks that no test
phrasing appears in either); evaluation on test and few-shot users uses the test families.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from .catalog import Item

Clarity = Literal["clear", "vague", "none"]
CLARITIES: tuple[Clarity, ...] = ("clear", "vague", "none")
Fidelity = Literal["exact", "partial", "habit", "none"]
FIDELITIES: tuple[Fidelity, ...] = ("exact", "partial", "habit", "none")
PhrasingSplit = Literal["dev", "test"]
PARTIAL_WRONG_SHARE = 0.5  # partial queries that also name a genre the target lacks
HABIT_WINDOW = 10  # habit queries read the newest interactions only
QUERIES_VERSION = 1  # bump when a generator or a family changes: cached eval plans are keyed by it

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


class PhrasingFamily(BaseModel):
    """One family of query phrasings: templates that name genres, templates in mood words, the mood words."""

    model_config = ConfigDict(frozen=True)

    name: str
    split: PhrasingSplit
    named: tuple[str, ...]  # {genres} and {decade}
    named_no_decade: tuple[str, ...]  # {genres}
    mood: tuple[str, ...]  # {mood}
    moods: dict[str, str]  # genre -> mood words
    fallback: str

    def mood_of(self, genre: str) -> str:
        return self.moods.get(genre, genre.lower())

    def phrasings(self) -> list[str]:
        """Every distinctive fixed piece of this family: mood words, the fallback, and the template fragments
        around placeholders that have two words or more (a lone "What" or "a" is not a phrasing)."""
        pieces = [*self.moods.values(), self.fallback.strip(" .,?!")]
        for template in (*self.named, *self.named_no_decade, *self.mood):
            fragments = [p.strip(" .,?!") for p in re.split(r"\{\w+\}", template)]
            pieces += [p for p in fragments if len(p.split()) >= 2]
        return list(dict.fromkeys(p for p in pieces if p))


FAMILIES: tuple[PhrasingFamily, ...] = (
    PhrasingFamily(name="dev-classic", split="dev", named=CLEAR_TEMPLATES, named_no_decade=CLEAR_NO_DECADE,
                   mood=VAGUE_TEMPLATES, moods=MOODS, fallback=FALLBACK),
    PhrasingFamily(
        name="test-casual", split="test",
        named=("Got any good {genres} flicks from the {decade}?", "Show me {genres} titles released in the {decade}."),
        named_no_decade=("Got any good {genres} flicks?", "Show me some {genres} titles."),
        mood=("Feeling like a {mood} evening.", "Point me to a {mood} pick, please."),
        moods={"Action": "high-octane", "Adventure": "globe-trotting", "Animation": "hand-drawn",
               "Children's": "all-ages", "Comedy": "hilarious", "Crime": "heist-and-mobster",
               "Documentary": "real-world", "Drama": "heartfelt", "Fantasy": "enchanted",
               "Film-Noir": "shadowy detective", "Horror": "creepy", "Musical": "sing-along",
               "Mystery": "whodunit", "Romance": "love-story", "Sci-Fi": "space-age",
               "Thriller": "edge-of-the-seat", "War": "battlefield", "Western": "cowboy"},
        fallback="Whatever you think I would enjoy.",
    ),
    PhrasingFamily(
        name="test-descriptive", split="test",
        named=("What {genres} stories from the {decade} would you suggest?",
               "Craving {genres} cinema of the {decade}."),
        named_no_decade=("What {genres} stories would you suggest?", "Craving {genres} cinema."),
        mood=("Craving something {mood} right now.", "What would you suggest that feels {mood}?"),
        moods={"Action": "explosive", "Adventure": "swashbuckling", "Animation": "toon-style",
               "Children's": "little-ones", "Comedy": "laugh-out-loud", "Crime": "underworld",
               "Documentary": "factual", "Drama": "tear-jerking", "Fantasy": "sword-and-sorcery",
               "Film-Noir": "hard-boiled", "Horror": "spine-chilling", "Musical": "show-tune",
               "Mystery": "clue-hunting", "Romance": "swoon-worthy", "Sci-Fi": "spaceship",
               "Thriller": "nail-biting", "War": "wartime", "Western": "gunslinger"},
        fallback="Surprise me with something.",
    ),
)  # fmt: skip


def families(split: PhrasingSplit) -> list[PhrasingFamily]:
    return [f for f in FAMILIES if f.split == split]


def normalise_title(title: str) -> str:
    """Title without a trailing year and with a trailing article moved back ("Usual Suspects, The")."""
    title = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()
    match = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|El|Das|Der|Die)$", title)
    return f"{match.group(2)} {match.group(1)}" if match else title


def could_contain(lowered_text: str | None, form: str) -> bool:
    """False only when `form` cannot match the text case-insensitively. For ASCII on both sides a case-insensitive
    match IS a substring of the lower-cased text (`lowered_text`, None when the text is not ASCII), and a substring
    test costs a fraction of a regex search; anything else is left to the regex (Unicode case rules differ)."""
    return lowered_text is None or not form.isascii() or form.lower() in lowered_text


def mentions_title(text: str, title: str) -> bool:
    """True when `text` contains the title (either article order) as a whole phrase, case-insensitive."""
    lowered = text.lower() if text.isascii() else None
    for form in {title.strip(), normalise_title(title)}:
        if not form or not could_contain(lowered, form):
            continue
        if re.search(rf"(?<![\w']){re.escape(form)}(?![\w'])", text, flags=re.IGNORECASE):
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


# ------------------------------------------------------------------------------------- fidelity levels


class FidelityQuery(BaseModel):
    """A generated query with how it was made."""

    text: str
    fidelity: Fidelity
    clarity: Clarity
    family: str


def genres_of(item: Item) -> list[str]:
    """An item's genre tags (its tags without the decade)."""
    return [t for t in item.tags if not _is_decade(t) and t != "Uncategorized"]


def _is_decade(tag: str) -> bool:
    return bool(re.fullmatch(r"\d{4}s", tag))


def _first_clean(sentences: Sequence[str], avoid: Sequence[str], fallback: str) -> str:
    """The first sentence naming none of the `avoid` titles (the family's fallback otherwise)."""
    for sentence in [*sentences, fallback]:
        if not any(mentions_title(sentence, title) for title in avoid):
            return sentence
    return ""


def _phrase(family: PhrasingFamily, genres: Sequence[str], decade: str | None, named: bool,
            rng: np.random.Generator) -> list[str]:  # fmt: skip
    """Candidate sentences (shuffled templates) naming `genres` directly or in the family's mood words."""
    if named:
        templates = list(family.named if decade else family.named_no_decade)
        rng.shuffle(templates)
        return [t.format(genres=" or ".join(genres) if len(genres) > 1 else genres[0], decade=decade)
                for t in templates]  # fmt: skip
    templates = list(family.mood)
    rng.shuffle(templates)
    mood = " or ".join(family.mood_of(g) for g in genres)
    return [t.format(mood=mood) for t in templates]


def exact_query(target: Item, family: PhrasingFamily, rng: np.random.Generator) -> tuple[str, Clarity]:
    """The `exact` level: the target's genres and decade (clear) or one target genre in mood words (vague)."""
    clarity: Clarity = "clear" if rng.random() < 0.5 else "vague"
    genres = genres_of(target) or ["classic"]
    if clarity == "clear":
        decade = next((t for t in target.tags if _is_decade(t)), None)
        sentences = _phrase(family, [" ".join(genres[:2])], decade, True, rng)
    else:
        sentences = _phrase(family, [genres[int(rng.integers(len(genres)))]], None, False, rng)
    return _first_clean(sentences, [target.title], family.fallback), clarity


def partial_query(target: Item, all_genres: Sequence[str], family: PhrasingFamily,
                  rng: np.random.Generator) -> tuple[str, Clarity]:  # fmt: skip
    """The `partial` level: one of the target's genres; half of the time (seeded) with a genre it lacks."""
    own = genres_of(target) or ["classic"]
    named = [own[int(rng.integers(len(own)))]]
    wrong = [g for g in all_genres if g not in target.tags]
    if wrong and rng.random() < PARTIAL_WRONG_SHARE:
        named.append(wrong[int(rng.integers(len(wrong)))])
        rng.shuffle(named)
    direct = bool(rng.random() < 0.5)
    sentences = _phrase(family, named, None, direct, rng)
    return _first_clean(sentences, [target.title], family.fallback), "clear" if direct else "vague"


def habit_query(recent: Sequence[Item], family: PhrasingFamily, rng: np.random.Generator) -> tuple[str, Clarity]:
    """The `habit` level: the most frequent genres (and decade) of the newest `HABIT_WINDOW` interactions.

    It is handed the history only, never the target, so it cannot leak it.
    """
    window = list(recent)[-HABIT_WINDOW:]
    if not window:
        return family.fallback, "vague"
    counts = Counter(g for item in window for g in genres_of(item))
    top = [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]] or ["classic"]
    decades = Counter(t for item in window for t in item.tags if _is_decade(t))
    decade = sorted(decades.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if decades else None
    named = bool(rng.random() < 0.5)
    genres = [" ".join(top)] if named else top[:1]
    sentences = _phrase(family, genres, decade if named else None, named, rng)
    return _first_clean(sentences, [item.title for item in window], family.fallback), "clear" if named else "vague"


def fidelity_query(fidelity: Fidelity, *, target: Item, recent: Sequence[Item], all_genres: Sequence[str],
                   split: PhrasingSplit, seed: tuple[int, ...]) -> FidelityQuery:  # fmt: skip
    """A query at `fidelity`, phrased by a (seeded) family of the `split` ones. `habit` never reads `target`."""
    rng = np.random.default_rng([*seed, FIDELITIES.index(fidelity)])
    pool = families(split)
    family = pool[int(rng.integers(len(pool)))]
    if fidelity == "none":
        return FidelityQuery(text="", fidelity=fidelity, clarity="none", family="-")
    if fidelity == "exact":
        text, clarity = exact_query(target, family, rng)
    elif fidelity == "partial":
        text, clarity = partial_query(target, all_genres, family, rng)
    else:
        text, clarity = habit_query(recent, family, rng)
    return FidelityQuery(text=text, fidelity=fidelity, clarity=clarity, family=family.name)
