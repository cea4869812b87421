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
              or a number the computed facts print) are left alone.
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
from collections.abc import Iterable

from pydantic import BaseModel, Field

from ground.text import normalize_for_matching, replace_in_skeleton, skeleton
from tools.data.queries import mentions_title, normalise_title

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
INJECTION_RE = re.compile(
    r"[^.!?\n]*\b(?:ignore|disregard|forget|override)\b[^.!?\n]*\b(?:instruction|instructions|prompt|rules|above|"
    r"previous|everything)\b[^.!?\n]*[.!?]?|[^.!?\n]*\b(?:you are now|system prompt|act as|new instructions)\b"
    r"[^.!?\n]*[.!?]?",
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


class ScrubReport(BaseModel):
    """How many things of each category the scrubber removed."""

    counts: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: ScrubReport) -> ScrubReport:
        return ScrubReport(counts={c: self.counts.get(c, 0) + other.counts.get(c, 0) for c in CATEGORIES})


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


def _title_forms(title: str) -> set[str]:
    """A title in every form a text may use: as stored, article moved back, article dropped, without year."""
    bare = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()
    forms = {title.strip(), bare, normalise_title(bare)}
    article = re.match(r"^(?:The|A|An)\s+(.+)$", normalise_title(bare))
    if article and len(article.group(1)) > 3:
        forms.add(article.group(1))
    alias = re.match(r"^(.*?)\s*\((?:a\.k\.a\.\s*)?([^)]+)\)$", bare)
    if alias:
        forms |= {alias.group(1).strip(), alias.group(2).strip()}
    return {f for f in forms if f}


def _title_patterns(titles: Iterable[str], keep: set[str]) -> list[re.Pattern[str]]:
    forms = {form for title in titles for form in _title_forms(title) if form.casefold() not in keep}
    ordered = sorted(forms, key=len, reverse=True)
    return [re.compile(rf"(?<![\w']){re.escape(form)}(?![\w'])", re.IGNORECASE) for form in ordered]


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
    text: str, titles: Iterable[str] = (), item_ids: Iterable[int] = (), keep: Iterable[str] = ()
) -> tuple[str, ScrubReport]:
    """Remove e-mails, phones, URLs, names, history titles, history item ids and injected instructions."""
    text, titles = normalize_for_matching(text), [skeleton(normalize_for_matching(t)) for t in titles]
    counts = dict.fromkeys(CATEGORIES, 0)
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
    for pattern in _title_patterns(titles, keep_set):
        text, found = replace_in_skeleton(pattern, text, "[title]")  # look-alike letters count as Latin here
        counts["title"] += found

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
    return text, ScrubReport(counts=counts)


def audit_leakage(
    text: str, titles: Iterable[str] = (), item_ids: Iterable[int] = (), keep: Iterable[str] = ()
) -> LeakageAudit:
    """Score a text (an abstract) for identifiers that got through; uses the scrubber's own detectors."""
    text, titles = normalize_for_matching(text), [skeleton(normalize_for_matching(t)) for t in titles]
    folded = skeleton(text)  # titles are looked for with every look-alike letter folded
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
        if title.casefold() in keep_set or normalise_title(title).casefold() in keep_set:
            continue
        if mentions_title(folded, title) or any(
            p.search(folded) for p in _title_patterns([title], keep_set)
        ):
            counts["title"] += 1
            found.append(f"title:{title}")
    for start, end in _names(text):
        if text[start:end].casefold() not in keep_set:
            counts["name"] += 1
            found.append(f"name:{text[start:end]}")
    score = max(0.0, 1.0 - sum(counts[c] * WEIGHTS[c] for c in CATEGORIES))
    return LeakageAudit(counts=counts, found=found, score=round(score, 4))
