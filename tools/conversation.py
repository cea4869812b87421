"""A chat that converses: each turn is resolved against the conversation, on the device, into a standalone request.

Pure functions over a `Conversation` (pydantic, saved with the chat's LangGraph thread):
- `resolve(conversation, said, catalog)` reads one utterance against the conversation and returns the
  standalone request it means (shown to the user before it is planned), the items the device ranks toward
  (`seeds`) and leaves out (`avoid`), and the conversation as it will be once the turn is answered;
- `record(conversation, shown)` remembers the list the turn showed (what "the second one" refers to next);
- `like(conversation, item_id)` makes a liked item a seed; `start_over` drops everything.

What an utterance can do (read in this order):
1. "start over" / "forget all that" / "new search": drop the topic, constraints and seeds first;
2. references to the last list: "the second one", "#3", "number 2", "the last one", "that one" (the item
   referenced last, else the first shown). Under a negation ("not that one", "no, not the third") the item
   is turned down (`avoid`, never shown again); otherwise ("more like the second one") it becomes a seed,
   and the request gains its description ("like a comedy from the 1990s": tags and decade, never a title);
3. refinements: "older" / "newer" move the year range a decade beyond the last list's median year;
   "funnier", "darker", "scarier", "lighter", "more romantic", ... add (and for "darker", rule out) tags, which
   go with the topic;
   "any decade" drops the year range; "X is fine" / "allow X" drops an exclusion;
4. what remains is parsed like any request (`tools.constraints.parse_request`): excluded tags and a year
   range join or replace the conversation's; a positively named tag lifts its exclusion. When content words
   remain ("a western"), they are a new topic (refinements and referenced seeds go with the old one;
   exclusions and years persist until dropped); otherwise the topic carries over ("same but 1980s").
The standalone request is written so that `parse_request` reads the same constraints back from it, which is
how the graph enforces them (excluded tags swapped out of the plan and masked with the years in the rank
step); seeds reach the rank step as item ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import median
from typing import Literal

from pydantic import BaseModel, Field

from tools.constraints import RequestConstraints, parse_request, unsupported_note
from tools.data import Catalog
from tools.describe import describe

SeedKind = Literal["liked", "referenced"]
MAX_SEEDS = 5
MAX_TURNS = 50

ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10}  # fmt: skip
_ORDINAL = r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|\d{1,2}(?:st|nd|rd|th)"
_NOUN = r"(?:one|film|movie|title|pick|result|suggestion)"
REFERENCE_RE = re.compile(
    rf"\bthe\s+({_ORDINAL})(?:\s+{_NOUN})?\b|\b({_ORDINAL})\s+{_NOUN}\b|(?:#|\bnumber\s+|\bno\.\s*)(\d{{1,2}})\b"
    rf"|\b(?:that|this)\s+{_NOUN}\b|\bthat\b(?=\s*[.!?]*\s*$)",
    re.IGNORECASE,
)
NEGATIVE_BEFORE = re.compile(
    r"(?:\bnot|\bno|\bnever|\bwithout|\bexcept|\bother\s+than|\b(?:anything|everything)\s+but|\binstead\s+of"
    r"|\bhate|\bdislike|\bdon'?t\s+(?:like"
    r"|want|show)|\bdidn'?t\s+like|\bskip|\bdrop|\bremove|\bnot\s+like)[\s,]*(?:\w+[\s,]+){0,2}$",
    re.IGNORECASE,
)
START_OVER_RE = re.compile(r"\b(?:start\s+(?:over|again|afresh)|forget\s+(?:all\s+)?(?:that|it|everything)|new\s+search"
                           r"|from\s+scratch|clear\s+everything)\b[\s,.;:!-]*", re.IGNORECASE)  # fmt: skip
ANY_DECADE_RE = re.compile(r"\b(?:any|whatever|every)\s+(?:decade|year|era|period|time)s?\b|\bdon'?t\s+care\s+(?:about|"
                           r"for)\s+the\s+(?:year|decade|era)s?\b|\bwhenever\b", re.IGNORECASE)  # fmt: skip
ALLOW_RE = re.compile(r"\b(?:allow|include|with|ok\s+with|okay\s+with|fine\s+with)\s+([\w' -]+?)\s+"
                      r"(?:again|too|after\s+all)\b|\b([\w'-]+(?:\s+[\w'-]+)?)\s+(?:is|are)\s+(?:fine|ok|okay|allowed)(?:\s+again)?\b",
                      re.IGNORECASE)  # fmt: skip
OLDER_RE = re.compile(r"\b(?:older|earlier|less\s+recent|more\s+classic|classics?|vintage)\b", re.IGNORECASE)
NEWER_RE = re.compile(r"\b(?:newer|more\s+recent|recent|later|modern|fresher|latest)\b", re.IGNORECASE)
# Mood refinements: words -> (tags to add, tags to rule out). Tags the catalogue lacks are skipped.
MOODS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    r"funnier|more\s+funny|more\s+fun|lighter|more\s+light[- ]hearted|happier|sillier": (("Comedy",), ()),
    r"darker|grittier|more\s+serious|bleaker|grimmer": (("Crime", "Thriller"), ("Comedy", "Children's", "Animation",
                                                                                "Musical")),
    r"scarier|creepier|more\s+scary|more\s+frightening": (("Horror",), ("Children's",)),
    r"more\s+romantic|sweeter": (("Romance",), ()),
    r"more\s+exciting|more\s+action|faster|more\s+thrilling": (("Action", "Thriller"), ()),
    r"more\s+(?:family|kid)[- ]friendly|for\s+the\s+(?:whole\s+)?family|tamer": (("Children's",), ("Horror",)),
}  # fmt: skip
_GENERIC = frozenset(
    "a an the some any anything something one ones film films movie movies please same but and again instead now "
    "then ok okay just only also more less like similar to me us give show recommend suggest want would i'd "
    "what how about maybe perhaps still this that those these them it stuff thing things kind sort of for "
    "with please thanks thank you yes no not really very so too bit little lot lots rather".split()
)


class Seed(BaseModel):
    """An item the device ranks toward: liked with /like, or referenced ("more like the second one")."""

    item_id: int
    kind: SeedKind


class Turn(BaseModel):
    """One turn: what the user said, the standalone request it became, and the list it showed."""

    said: str
    request: str
    shown: list[int] = Field(default_factory=list)


class Conversation(BaseModel):
    """What a chat remembers between turns (device side; saved with the chat's thread)."""

    topic: str = Field("", description="What is being asked for, without constraint phrases.")
    moods: list[str] = Field(default_factory=list, description="Tags added by refinements (funnier -> Comedy).")
    exclude: list[str] = Field(default_factory=list, description="Tags ruled out until the user drops them.")
    mood_exclude: list[str] = Field(default_factory=list, description="Tags a refinement ruled out (darker -> no "
                                    "Comedy); they go with the topic.")  # fmt: skip
    year_from: int | None = None
    year_to: int | None = None
    seeds: list[Seed] = Field(default_factory=list)
    avoid: list[int] = Field(default_factory=list, description="Items turned down: never shown again.")
    focus: int | None = Field(None, description='The item referenced last ("that one").')
    shown: list[int] = Field(default_factory=list, description="The last list shown, best first.")
    turns: list[Turn] = Field(default_factory=list)

    @property
    def seed_ids(self) -> list[int]:
        return [s.item_id for s in self.seeds]

    @property
    def ruled_out(self) -> list[str]:
        """Every excluded tag: the user's own, then the refinements'."""
        return [*dict.fromkeys([*self.exclude, *self.mood_exclude])]


class Resolution(BaseModel):
    """One utterance read against the conversation."""

    said: str = Field("", description="The utterance as typed.")
    request: str = Field(description="The standalone request, as the graph will receive it.")
    seeds: list[int] = Field(default_factory=list)
    avoid: list[int] = Field(default_factory=list)
    conversation: Conversation = Field(description="The conversation once this turn is answered (before record).")
    notes: list[str] = Field(default_factory=list, description="What the device understood, for the screen.")


def start_over() -> Conversation:
    """A conversation with nothing in it."""
    return Conversation()


def like(conversation: Conversation, item_id: int) -> Conversation:
    """A liked item becomes a seed (the newest seeds are kept, at most `MAX_SEEDS`)."""
    seeds = [s for s in conversation.seeds if s.item_id != item_id] + [Seed(item_id=item_id, kind="liked")]
    return conversation.model_copy(update={"seeds": seeds[-MAX_SEEDS:], "focus": item_id})


def record(conversation: Conversation, said: str, request: str, shown: Sequence[int]) -> Conversation:
    """Remember the turn and the list it showed."""
    turns = [*conversation.turns, Turn(said=said, request=request, shown=list(shown))][-MAX_TURNS:]
    return conversation.model_copy(update={"shown": list(shown), "turns": turns})


def _referenced(match: re.Match[str], conversation: Conversation) -> int | None:
    """The item id a reference names in the last list (None when the list has no such position)."""
    shown = conversation.shown
    word = (match.group(1) or match.group(2) or match.group(3) or "").lower()
    if not word:  # "that one", "this film": the item referenced last, else the first shown
        return conversation.focus if conversation.focus is not None else (shown[0] if shown else None)
    if word == "last":
        return shown[-1] if shown else None
    position = ORDINALS.get(word) or int(re.match(r"\d+", word).group(0))
    return shown[position - 1] if 1 <= position <= len(shown) else None


def _years_of(items: Sequence[int], catalog: Catalog) -> list[int]:
    return [catalog[i].year for i in items if catalog[i].year]


def _catalog_years(catalog: Catalog) -> tuple[int, int]:
    years = [item.year for item in catalog.items if item.year]
    return min(years), max(years)


def _content_left(text: str) -> bool:
    return any(w not in _GENERIC for w in re.findall(r"[a-z][a-z'-]*", text.lower()))


def render(conversation: Conversation, catalog: Catalog) -> str:
    """The conversation's standalone request, in words `parse_request` reads back to the same constraints."""
    parts = [conversation.topic or "something"]
    referenced = [s.item_id for s in conversation.seeds if s.kind == "referenced"]
    if referenced:
        parts.append("like " + " and ".join(describe(catalog[i].tags, catalog[i].year) for i in referenced))
    moods = [t for t in conversation.moods if t not in conversation.ruled_out]
    if moods:
        parts.append("leaning to " + " and ".join(moods))
    if conversation.ruled_out:
        parts.append("not " + " or ".join(conversation.ruled_out))
    years = RequestConstraints(year_from=conversation.year_from, year_to=conversation.year_to).years_text()
    if years:
        parts.append(years)
    return ", ".join(parts)


def resolve(conversation: Conversation, said: str, catalog: Catalog) -> Resolution:
    """Read one utterance against the conversation (see the module docstring)."""
    tags = catalog.tags()
    conv = conversation.model_copy(deep=True)
    notes: list[str] = []
    text = said.strip()

    if START_OVER_RE.search(text):
        conv = start_over().model_copy(update={"shown": conversation.shown, "turns": conversation.turns})
        text = START_OVER_RE.sub(" ", text).strip()
        notes.append("started over: topic, constraints and seeds dropped")

    # 2. references to the last list
    for match in list(REFERENCE_RE.finditer(text))[::-1]:
        item_id = _referenced(match, conv)
        if item_id is None:
            if match.group(1) or match.group(2) or match.group(3):
                notes.append(f'"{match.group(0)}" names no item of the last list ({len(conv.shown)} shown)')
            continue
        item = catalog[item_id]
        if NEGATIVE_BEFORE.search(text[: match.start()]):
            conv.avoid = [*dict.fromkeys([*conv.avoid, item_id])]
            conv.seeds = [s for s in conv.seeds if s.item_id != item_id]
            notes.append(f"turned down: {item.title} ({item.year})")
            start = NEGATIVE_BEFORE.search(text[: match.start()]).start()
        else:
            conv.seeds = [s for s in conv.seeds if s.item_id != item_id]
            conv.seeds = [*conv.seeds, Seed(item_id=item_id, kind="referenced")][-MAX_SEEDS:]
            conv.avoid = [i for i in conv.avoid if i != item_id]
            notes.append(f"ranking toward: {item.title} ({item.year})")
            start = match.start()
        conv.focus = item_id
        text = (text[:start] + " " + text[match.end() :]).strip()

    # 3. refinements
    if ANY_DECADE_RE.search(text):
        conv.year_from = conv.year_to = None
        text = ANY_DECADE_RE.sub(" ", text)
        notes.append("year range dropped")
    for match in ALLOW_RE.finditer(text):
        lifted = parse_request(match.group(1) or match.group(2), tags).include
        conv.exclude = [t for t in conv.exclude if t not in lifted]
        conv.mood_exclude = [t for t in conv.mood_exclude if t not in lifted]
        if lifted:
            notes.append("allowed again: " + ", ".join(lifted))
    text = ALLOW_RE.sub(" ", text)
    shown_years = _years_of(conv.shown, catalog)
    first_year, last_year = _catalog_years(catalog)
    if OLDER_RE.search(text):
        middle = int(median(shown_years)) if shown_years else last_year
        conv.year_to = max(first_year, middle // 10 * 10 - 1)
        conv.year_from = None if conv.year_from is None or conv.year_from > conv.year_to else conv.year_from
        text = OLDER_RE.sub(" ", text)
    if NEWER_RE.search(text):
        middle = int(median(shown_years)) if shown_years else first_year
        start = middle // 10 * 10 + 10
        conv.year_from = start if start <= last_year else min(middle + 1, last_year)
        conv.year_to = None if conv.year_to is None or conv.year_to < conv.year_from else conv.year_to
        text = NEWER_RE.sub(" ", text)
    for pattern, (add, rule_out) in MOODS.items():
        if re.search(rf"\b(?:{pattern})\b", text, re.IGNORECASE):
            conv.moods = [*dict.fromkeys([*conv.moods, *[t for t in add if t in tags]])]
            conv.exclude = [t for t in conv.exclude if t not in add]
            conv.mood_exclude = [t for t in conv.mood_exclude if t not in add]
            conv.mood_exclude = [*dict.fromkeys([*conv.mood_exclude, *[t for t in rule_out if t in tags]])]
            text = re.sub(rf"\b(?:{pattern})\b", " ", text, flags=re.IGNORECASE)

    # 4. what remains, read like any request
    parsed = parse_request(text, tags)
    if parsed.year_from is not None or parsed.year_to is not None:
        conv.year_from, conv.year_to = parsed.year_from, parsed.year_to
    conv.exclude = [t for t in conv.exclude if t not in parsed.include]
    conv.mood_exclude = [t for t in conv.mood_exclude if t not in parsed.include]
    conv.exclude = [*dict.fromkeys([*conv.exclude, *parsed.exclude])]
    conv.moods = [t for t in conv.moods if t not in parsed.exclude]
    note = unsupported_note(parsed)
    if note:
        notes.append(note)
    if _content_left(parsed.topic):
        conv.topic = parsed.topic
        conv.moods, conv.mood_exclude = [], []
        conv.seeds = [s for s in conv.seeds if s.kind == "liked"]
    request = render(conv, catalog)
    referenced = [s.item_id for s in conv.seeds if s.kind == "referenced"]  # asked for more like it, not it again
    return Resolution(said=said, request=request, seeds=conv.seed_ids, avoid=[*conv.avoid, *referenced],
                      conversation=conv, notes=notes)  # fmt: skip
