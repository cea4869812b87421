"""Deterministic scrubber and leakage audit for what leaves the device (CDA4Rec III-B).

The abstract a_u must carry intent and behaviour "without referencing specific items" and without
identifiers. Whatever the small model writes, `scrub` runs before the abstract crosses to the cloud.

What is removed (each replaced by a bracketed placeholder such as "[email]"):
- email     - addresses like name@host.tld
- phone     - 9 to 15 digits with phone punctuation (+, spaces, dots, dashes, parentheses)
- url       - http(s)://..., www...., and bare domains with a common TLD (example.com/path)
- name      - personal names in the patterns people use to introduce themselves or others: "my name is X",
              "I'm X" / "I am X" / "this is X" / "call me X" (X capitalised and not a common word),
              "Hi/Hello/Hey/Dear/Thanks X", titles ("Mr./Mrs./Ms./Dr. X"), "my wife/son/friend/... X",
              and a capitalised sign-off after a dash ("- Anna"). Names in free prose without one of these
              cues are NOT detected (no NER model on the device).
- title     - every history item's title, in either article order ("Usual Suspects, The" / "The Usual
              Suspects"), with or without its year, whole phrase, case-insensitive (as
              `tools.data.queries.mentions_title`). Titles that equal a `keep` term (e.g. a known tag,
              or a number the computed facts print) are left alone. A title made only of ordinary words
              ("Kids", "Heat", "Speed") counts only where it is written as a title: quoted, capitalised
              (and not just by starting a sentence), or right after a word that names a film ("like",
              "watched", "loved", ...), so "a movie my kids can watch" keeps "kids". With `descriptions`
              (title -> "an animated children's comedy from the 1990s", `tools.describe`), a title is
              replaced by its description instead of "[title]", so the request keeps its intent; the
              report lists each replacement (it stays on the device).
- item_id   - history item ids written as ids ("item 123", "id: 123", "#123", "item_id=123", "movie 123").
              Bare numbers are not touched: counts and years are not identifiers.
- injection - instructions aimed at the planner ("ignore the previous instructions ...", "you are now",
              "system prompt"): the sentence carrying them is dropped.

Both `scrub` and `audit_leakage` first normalise the text and the titles (`ground.text.normalize_for_matching`:
NFKC, zero-width and other invisible characters removed, look-alike letters folded in mixed-script words), and
titles are matched on the text's skeleton (every look-alike Cyrillic/Greek letter read as Latin), so a title
written `Т\u200bоу Ｓtory` is caught like `Toy Story`; the scrubbed text is the normalised one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from pydantic import BaseModel, Field

from ground.text import normalize_for_matching, skeleton
from tools.data.queries import could_contain, mentions_title, normalise_title

CATEGORIES: tuple[str, ...] = ("email", "phone", "url", "name", "title", "item_id", "injection")
# Cost of one leaked occurrence in the audit score (1.0 = nothing got through).
WEIGHTS: dict[str, float] = {
    "email": 0.5, "phone": 0.5, "url": 0.3, "name": 0.3, "title": 0.2, "item_id": 0.2, "injection": 0.2,
}  # fmt: skip

EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
URL_RE = re.compile(
    r"\b(?:https?://|www\.)[^\s()<>]*[^\s()<>.,;:!?'\"]"
    r"|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|edu|gov|co|uk|de|fr|info|biz|me|tv|ly)\b(?:/[^\s()<>]*[^\s()<>.,;:!?'\"])?",
    re.IGNORECASE,
)
PHONE_RE = re.compile(r"(?<![\w])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d[\d\s.-]{6,}\d(?![\w])")
ITEM_ID_RE = re.compile(
    r"\b(?:item|movie|film|id|item_id|itemid)\s*(?:id)?\s*(?:#|no\.?|number|[:=])?\s*(\d+)\b|#(\d+)\b", re.IGNORECASE
)
# A sentence that tells the model to drop its instructions or take another role. Anchored at sentence starts (the
# text's start or just after . ! ? or a newline): unanchored, the leading [^.!?\n]* was tried from every position
# of a sentence and backtracked over the rest of it (about 0.6 ms for a 200-character text); anchored, it finds the
# same spans (the earliest start of a match is always a sentence start) in about 17 us.
INJECTION_RE = re.compile(
    r"(?:^|(?<=[.!?\n]))(?:"
    r"[^.!?\n]*\b(?:ignore|disregard|forget|override)\b[^.!?\n]*\b(?:instruction|instructions|prompt|rules|above|"
    r"previous|everything)\b[^.!?\n]*[.!?]?|[^.!?\n]*\b(?:you are now|system prompt|act as|new instructions)\b"
    r"[^.!?\n]*[.!?]?)",
    re.IGNORECASE,
)
_CAP = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_NAME = rf"{_CAP}(?:\s+{_CAP})?"
NAME_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(rf"(?i:\bmy\s+name\s+is\s+)({_NAME})"),
    re.compile(rf"(?i:\b(?:i'm|i’m|i\s+am|this\s+is|call\s+me|it's)\s+)({_NAME})"),
    re.compile(rf"(?i:\b(?:hi|hello|hey|dear|thanks|thank\s+you|cheers|regards)\b[,!]?\s+)({_NAME})"),
    re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+({_NAME})"),
    re.compile(
        rf"(?i:\bmy\s+(?:wife|husband|son|daughter|friend|partner|boyfriend|girlfriend|brother|sister|mom|mum|dad|"
        rf"mother|father|kid|kids|boss|colleague)\s+)({_NAME})"
    ),
    re.compile(rf"(?:^|\s)[-–—~]\s*({_NAME})\s*$"),
)
# Capitalised words that follow "I'm"/"Hi" but are not names.
NOT_NAMES = frozenset(
    "Looking Not So Just Very Really Also Still Here There Back Bored Tired Interested Curious Sure Happy Sad Feeling "
    "In On At Into Up Down Going Trying Wondering Thinking Searching Hoping New Everyone All Guys Folks Team "
    "Sorry Again Glad Fine Ok Okay Good Great Well Please The A An Any Some Something Anything Nothing Tonight Today "
    "Yes No Maybe Can Could Would Should Will Want Need Like Love Hate Watching Done Ready Big Huge Mostly".split()
)


# Ordinary English words: a title made only of these (and articles) must be written as a title to count.
ORDINARY_WORDS = frozenset(
    "kids kid heat speed seven crash friday home alone love war fear game net rock money time life man men woman "
    "women girl girls boy boys child children family friends friend house night day days city world star wars "
    "fire water ice blue red black white green gold big little small old new young last first top gun hard "
    "fast good bad best dead living free fly run running wild secret secrets sleep sleepers dream dreams nine "
    "ten twelve three two one four five six eight beautiful true lies truth heart hearts king queen sister "
    "brother father mother son daughter husband wife school party road street fall falling down up out in on "
    "high low dark light shadow shadows sun moon sky space deep blood power story stories heaven hell angel "
    "angels devil ghost ghosts kiss touch spirit soul gone back under over fair funny scary crime drama comedy "
    "action adventure fantasy mystery horror romance musical western thriller music song songs dance dancing "
    "paper glass box door window bridge river sea island mountain trust hope faith sense sensibility twins "
    "nothing something everything anything nobody somebody everybody always never forever tonight today "
    "tomorrow yesterday now then again more less much many very really still even just only lost found "
    "stranger strangers company business office job work working jobs private public mad crazy lucky happy "
    "sad angry quiet silent loud sweet bitter rich poor strange normal nowhere somewhere everywhere here "
    "there".split()
)
ARTICLES = frozenset({"the", "a", "an", "of", "and", "to", "in", "on", "for", "with"})
TITLE_CUE_RE = re.compile(
    r"\b(?:like|liked|love|loved|watched|watch|saw|seen|see|enjoyed|rewatch|rewatched|than|as|called|titled"
    r"|named)\s+(?:the\s+)?[\"“‘']?$",
    re.IGNORECASE,
)


class ScrubReport(BaseModel):
    """How many things of each category the scrubber removed, and what replaced each title."""

    counts: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    replaced: list[tuple[str, str]] = Field(default_factory=list, description="(as written, replacement).")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: ScrubReport) -> ScrubReport:
        return ScrubReport(counts={c: self.counts.get(c, 0) + other.counts.get(c, 0) for c in CATEGORIES},
                           replaced=self.replaced + other.replaced)  # fmt: skip

    def lines(self) -> list[str]:
        """What was changed, one line each, for the user's screen (device side)."""
        out = [f'"{written}" -> "{new}"' for written, new in self.replaced]
        titles = self.counts.get("title", 0) - len(self.replaced)
        for category in CATEGORIES:
            n = titles if category == "title" else self.counts.get(category, 0)
            if n > 0:
                out.append(f"{n} {category.replace('_', ' ')}{'s' if n > 1 else ''} removed")
        return out


class LeakageAudit(BaseModel):
    """What got through in a text that should hold no identifiers: per-category counts and a score.

    score = max(0, 1 - sum(count * WEIGHTS[category])); 1.0 means nothing leaked.
    """

    counts: dict[str, int]
    found: list[str] = Field(default_factory=list, description="Category:text of each leak (kept on the device).")
    score: float

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())


@lru_cache(maxsize=65_536)
def _title_forms(title: str) -> frozenset[str]:
    """A title in every form a text may use: as stored, article moved back, article dropped, without year."""
    bare = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()
    forms = {title.strip(), bare, normalise_title(bare)}
    article = re.match(r"^(?:The|A|An)\s+(.+)$", normalise_title(bare))
    if article and len(article.group(1)) > 3:
        forms.add(article.group(1))
    alias = re.match(r"^(.*?)\s*\((?:a\.k\.a\.\s*)?([^)]+)\)$", bare)
    if alias:
        forms |= {alias.group(1).strip(), alias.group(2).strip()}
    return frozenset(f for f in forms if f)


@lru_cache(maxsize=65_536)
def _ordinary(form: str) -> bool:
    """A title form made only of ordinary words ("Kids", "Heat", "The Net"): it must be written as a title."""
    words = re.findall(r"[\w']+", form.lower())
    return bool(words) and all(w in ORDINARY_WORDS or w in ARTICLES for w in words) and not set(words) <= ARTICLES


def _written_as_title(text: str, start: int, end: int) -> bool:
    """Quoted, capitalised (not only by opening a sentence), or right after a word naming a film."""
    before, written, after = text[:start], text[start:end], text[end:]
    if before[-1:] in "\"“‘'" and after[:1] in "\"”’'" and before[-1:]:
        return True
    if TITLE_CUE_RE.search(before):
        return True
    significant = [w for w in re.findall(r"[\w']+", written) if w.lower() not in ARTICLES]
    if not significant or not all(w[0].isupper() for w in significant):
        return False
    opens_sentence = not before.strip() or before.rstrip()[-1] in ".!?\n"
    return not opens_sentence or not re.match(r"\s+(?:movies?|films?|shows?|stuff|flicks?|content)\b", after, re.I)


@lru_cache(maxsize=65_536)
def _matchable(title: str) -> str:
    """A title as the matchers compare it: normalised, every look-alike letter folded (`ground.text.skeleton`)."""
    return skeleton(normalize_for_matching(title))


@lru_cache(maxsize=32)
def _title_matchers(titles: tuple[str, ...], keep: frozenset[str]) -> list[tuple[str, str, bool]]:
    """(form, title, ordinary) for every form of every title, longest form first (memoised: one abstract scrubs
    several texts against the same history)."""
    found: dict[str, tuple[str, bool]] = {}
    for title in titles:
        for form in _title_forms(title):
            if form.casefold() not in keep:
                found.setdefault(form, (title, _ordinary(form)))
    ordered = sorted(found, key=len, reverse=True)
    return [(form, *found[form]) for form in ordered]


@lru_cache(maxsize=16_384)
def _form_pattern(form: str) -> re.Pattern[str]:
    """The whole-word pattern of one title form, compiled once (a history brings ~150 forms per scrub: more than
    `re`'s own cache of 512 holds across the few scrubs of one abstract)."""
    return re.compile(rf"(?<![\w']){re.escape(form)}(?![\w'])", re.IGNORECASE)


def _title_spans(text: str, titles: Iterable[str], keep: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, title) of every history title written in the text, without overlaps."""
    spans: list[tuple[int, int, str]] = []
    lowered = text.lower() if text.isascii() else None
    for form, title, ordinary in _title_matchers(tuple(titles), frozenset(keep)):
        if not could_contain(lowered, form):
            continue
        for m in _form_pattern(form).finditer(text):
            if any(s < m.end() and m.start() < e for s, e, _ in spans):
                continue
            if ordinary and not _written_as_title(text, m.start(), m.end()):
                continue
            spans.append((m.start(), m.end(), title))
    return sorted(spans)


def _names(text: str) -> list[tuple[int, int]]:
    spans = []
    for pattern in NAME_PATTERNS:
        for match in pattern.finditer(text):
            words = match.group(1).split()
            if words[0] in NOT_NAMES:
                continue
            while len(words) > 1 and words[-1] in NOT_NAMES:
                words.pop()
            start = match.start(1)
            spans.append((start, start + len(" ".join(words))))
    return spans


def scrub(
    text: str, titles: Iterable[str] = (), item_ids: Iterable[int] = (), keep: Iterable[str] = (),
    descriptions: Mapping[str, str] | None = None,
) -> tuple[str, ScrubReport]:
    """Remove e-mails, phones, URLs, names, history item ids and injected instructions; replace history titles by
    their descriptions (`descriptions`, title -> text) or "[title]". The text is normalised first (NFKC, invisible
    characters, look-alike letters), and titles are found on its skeleton, so disguised titles are caught."""
    text = normalize_for_matching(text)
    originals = {_matchable(t): t for t in titles}
    counts = dict.fromkeys(CATEGORIES, 0)
    replaced: list[tuple[str, str]] = []
    titles = list(originals)
    keep_set = {k.casefold() for k in keep}
    ids = {str(int(i)) for i in item_ids}

    def sub(pattern: re.Pattern[str], category: str, value: str, source: str) -> str:
        def repl(match: re.Match[str]) -> str:
            counts[category] += 1
            return value

        return pattern.sub(repl, source)

    text = sub(INJECTION_RE, "injection", " ", text)
    text = sub(EMAIL_RE, "email", "[email]", text)
    text = sub(URL_RE, "url", "[url]", text)

    def id_repl(match: re.Match[str]) -> str:
        number = match.group(1) or match.group(2)
        if number in ids:
            counts["item_id"] += 1
            return "[item]"
        return match.group(0)

    text = ITEM_ID_RE.sub(id_repl, text)
    folded = skeleton(text)  # same length as `text`: a span found here is at the same place in the text
    for start, end, title in reversed(_title_spans(folded, titles, keep_set)):
        counts["title"] += 1
        new = (descriptions or {}).get(originals.get(title, title)) or "[title]"
        if new != "[title]":
            replaced.insert(0, (text[start:end], new))
        article = re.search(r"\b(?:the|a|an)\s+$", text[:start], re.IGNORECASE) if new != "[title]" else None
        start = article.start() if article and new[:2] in ("a ", "an") else start
        text = text[:start] + new + text[end:]

    def phone_repl(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if 9 <= len(digits) <= 15:
            counts["phone"] += 1
            return "[phone]"
        return match.group(0)

    text = PHONE_RE.sub(phone_repl, text)
    for start, end in sorted(_names(text), reverse=True):
        if text[start:end].casefold() not in keep_set:
            counts["name"] += 1
            text = text[:start] + "[name]" + text[end:]
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text, ScrubReport(counts=counts, replaced=replaced)


def audit_leakage(
    text: str, titles: Iterable[str] = (), item_ids: Iterable[int] = (), keep: Iterable[str] = ()
) -> LeakageAudit:
    """Score a text (an abstract) for identifiers that got through; uses the scrubber's own detectors."""
    text, titles = normalize_for_matching(text), [_matchable(t) for t in titles]
    folded = skeleton(text)  # titles are looked for with every look-alike letter folded
    lowered = folded.lower() if folded.isascii() else None
    keep_set = {k.casefold() for k in keep}
    found: list[str] = []
    counts = dict.fromkeys(CATEGORIES, 0)
    for category, pattern in (("email", EMAIL_RE), ("url", URL_RE), ("injection", INJECTION_RE)):
        source = EMAIL_RE.sub(" ", text) if category == "url" else text
        for match in pattern.finditer(source):
            if match.group(0).strip():
                counts[category] += 1
                found.append(f"{category}:{match.group(0).strip()}")
    for match in PHONE_RE.finditer(text):
        if 9 <= len(re.sub(r"\D", "", match.group(0))) <= 15:
            counts["phone"] += 1
            found.append(f"phone:{match.group(0)}")
    ids = {str(int(i)) for i in item_ids}
    for match in ITEM_ID_RE.finditer(text):
        if (match.group(1) or match.group(2)) in ids:
            counts["item_id"] += 1
            found.append(f"item_id:{match.group(0)}")
    for title in titles:
        if not any(could_contain(lowered, form) for form in _title_forms(title)):
            continue  # no form of it is in the text: neither check below can match (they only read these forms)
        if title.casefold() in keep_set or normalise_title(title).casefold() in keep_set:
            continue
        ordinary = all(_ordinary(form) for form in _title_forms(title))
        if (not ordinary and mentions_title(folded, title)) or _title_spans(folded, [title], keep_set):
            counts["title"] += 1
            found.append(f"title:{title}")
    for start, end in _names(text):
        if text[start:end].casefold() not in keep_set:
            counts["name"] += 1
            found.append(f"name:{text[start:end]}")
    score = max(0.0, 1.0 - sum(counts[c] * WEIGHTS[c] for c in CATEGORIES))
    return LeakageAudit(counts=counts, found=found, score=round(score, 4))
