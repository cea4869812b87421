"""What a request asks for in the catalogue's terms: the one tag vocabulary, exclusions, year ranges, and the
parts the catalogue cannot answer.

The catalogue knows genres, release decades and (on the device) what the user watched. So a request is read
as:
- `include`: tags it names ("a funny sci-fi film" -> Comedy, Sci-Fi), through `TAG_ALIASES`;
- `exclude`: tags it names under a negation, in the phrasings people use: "not X", "no X", "anything but X",
  "nothing X", "except X", "other than X", "without X", "avoid X", "skip the X", "I don't want X", "non-X",
  "X-free", "X? no thanks", lists ("no horror or war"); "for adults" rules out Children's;
- a year range: "from the 1980s", "80s", "before 1990", "pre-1990", "after 1995", "since 1995",
  "between 1980 and 1995", "1980-1995", "in 1994";
- `unsupported`: people ("a Tom Hanks movie", "a Hitchcock thriller", "starring X", "directed by X") and
  plots ("about a dog who ...", "set in Paris"): the catalogue has no cast, crew or plot, so these parts are
  cut from the request the device serves (`served`) and named back to the user.
The rule planner reads query tags through the same functions (`tools.rule_planner.query_tags`), and the
device enforces the constraints: excluded tags are swapped out of the plan before retrieval and masked,
with the year range, in the rank step (`tools.fusion.rank_step`'s `allowed`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

# Words that name a known tag in a request; tags themselves always match (case-insensitive).
# Words that name a known tag in a query; tags themselves always match (case-insensitive). Developed on the
# `dev` query phrasing families only (tools/data/queries.py FAMILIES): tests/test_queries.py fails when a word
# here or in TAG_FORMS would decode a `test` family phrasing, the ones `tandem eval rec` measures with.
TAG_ALIASES: dict[str, str] = {
    "scifi": "Sci-Fi", "sci fi": "Sci-Fi", "science fiction": "Sci-Fi", "science-fiction": "Sci-Fi",
    "kids": "Children's", "children": "Children's", "childrens": "Children's", "family": "Children's",
    "noir": "Film-Noir", "film noir": "Film-Noir", "animated": "Animation", "cartoon": "Animation",
    "funny": "Comedy", "comedies": "Comedy", "scary": "Horror", "romantic": "Romance",
    "westerns": "Western", "musicals": "Musical", "thrillers": "Thriller", "documentaries": "Documentary",
    "war movie": "War", "mysteries": "Mystery", "adventurous": "Adventure", "magical": "Fantasy",
    "tense": "Thriller", "gritty": "Crime", "futuristic": "Sci-Fi", "moving": "Drama", "dramas": "Drama",
}  # fmt: skip
# Further forms that only ever mean the tag (plurals, adjectives); used with the aliases above.
TAG_FORMS: dict[str, str] = {
    "romances": "Romance", "rom-com": "Romance", "rom-coms": "Romance", "romcoms": "Romance", "romcom": "Romance",
    "love stories": "Romance",
    "love story": "Romance", "horrors": "Horror", "horror movies": "Horror", "slasher": "Horror",
    "cartoons": "Animation", "animation": "Animation", "action movies": "Action", "crime movies": "Crime",
    "comedic": "Comedy", "dramatic": "Drama", "fantasies": "Fantasy", "war movies": "War", "war films": "War",
    "adventures": "Adventure", "documentary": "Documentary", "mysterious": "Mystery", "musical": "Musical",
    "thrilling": "Thriller", "sci-fi": "Sci-Fi", "space opera": "Sci-Fi",
}  # fmt: skip

_DECADE_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                 "eighties": 80, "nineties": 90}  # fmt: skip
_DECADE = r"(?:(?:19|20)?\d0'?s|'\d0s|" + "|".join(_DECADE_WORDS) + ")"
_YEAR = r"(?:19|20)\d\d"
_WHEN = rf"(?:the\s+)?(?:{_DECADE}|{_YEAR})"

NEGATION_CUES = re.compile(  # longer cues first: alternatives are tried in order at each position
    r"\bnot\s+(?:in\s+the\s+mood|feeling|up)\s+for\b|"
    r"\b(?:anything|everything|something|whatever)\s+(?:but|except|other\s+than)\b|\bbut\s+not\b|\bexcept(?:\s+for)?\b"
    r"|\bexcluding\b|\bother\s+than\b|\bwithout(?:\s+any)?\b|\bavoid(?:ing)?\b|\bskip(?:ping)?\b|\bnothing\b"
    r"|\bnone\s+of\b|\bno\s+more\b|\bnot\b|\bno\b|\bnon\b|\bnever\b|\bminus\b|\bsick\s+of\b|\btired\s+of\b"
    r"|\b(?:don'?t|do\s+not|doesn'?t|does\s+not|won'?t|wouldn'?t|isn'?t|aren'?t)\s+(?:want|like|need|show|give\s+me"
    r"|recommend|suggest|be|include)?\b|\bhate\b|\bdislike\b|\brather\s+not\b|\bkeep\s+(?:away|clear)\s+from\b"
    r"|\bfree\s+(?:of|from)\b|\bsteer\s+clear\s+of\b|\bstay\s+away\s+from\b"
    r"|\bexclud(?:e|ing)\b|\b(?:can'?t|cannot|can\s+not)\s+(?:stand|bear|take)\b|\bdon'?t\s+care\s+for\b",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"(?:\s+|[,/&'\"-]|\b(?:a|an|any|the|more|too|much|many|really|so|very|of|kind\s+of|sort\s+of|or|and|nor|either"
    r"|neither|movies?|films?|flicks?|ones?|stuff|genre|type|kind|please|some|that'?s|that\s+is|which\s+is|is|are"
    r"|be|at\s+all|overly|especially|me|to|see|watch|with|for|anything|something|this\s+time|time|again|from|in|into"
    r"|set|made|released|about|another|other|too|any\s+more|anymore)\b|[a-z]+(?=\s+or\s))",
    re.IGNORECASE,
)
_LIST_FILLER = re.compile(r"(?:\s+|,|\b(?:or|and|nor)\b)", re.IGNORECASE)  # after a comma: a list only
ADULT_RE = re.compile(r"\b(?:for|aimed\s+at)\s+(?:adults|grown-?ups)\b|\bgrown-?up\s+(?:movies?|films?)\b",
                      re.IGNORECASE)
"""Asking for films for adults rules out the Children's tag (the catalogue's only audience label)."""
_FREE = re.compile(
    r"^(?:[\s-]*free\b|\s*[?!.,]?\s*(?:no\s+thanks|no\s+thank\s+you|(?:is|are)\s+(?:not|n't)\s+(?:my\s+thing|for\s+me)"
    r"|(?:isn'?t|aren'?t)\s+(?:my\s+thing|for\s+me)|(?:is|are)\s+out|not\s+for\s+me|please\s+no)\b)",
    re.IGNORECASE,
)
_RANGE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\bbetween\s+({_WHEN})\s+and\s+({_WHEN})", re.I), "between"),
    (re.compile(rf"\b(?:from\s+)?({_YEAR})\s*(?:-|–|to|until|till)\s*({_YEAR})\b", re.I), "between"),
    (re.compile(rf"\b(?:before|pre-?|prior\s+to|earlier\s+than|older\s+than)\s*({_WHEN})", re.I), "before"),
    (re.compile(rf"\b(?:until|up\s+to|through|no\s+later\s+than)\s+({_WHEN})", re.I), "until"),
    (re.compile(rf"\b(?:after|post-?|later\s+than|newer\s+than|more\s+recent\s+than)\s*({_WHEN})", re.I), "after"),
    (re.compile(rf"\b(?:since|from)\s+({_WHEN})\s+(?:on|onwards?|or\s+later|and\s+later)\b", re.I), "since"),
    (re.compile(rf"\bsince\s+({_WHEN})", re.I), "since"),
    (re.compile(rf"\b({_WHEN})\s+(?:or|and)\s+(?:later|newer|after)\b", re.I), "since"),
    (re.compile(rf"\b({_WHEN})\s+(?:or|and)\s+(?:earlier|older|before)\b", re.I), "until"),
)
_IN_YEAR = re.compile(rf"\b(?:in|from|of|released\s+in)\s+({_YEAR})\b(?!s)", re.I)
_PERSON_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?:starring|featuring|directed\s+by|written\s+by|by\s+director|with\s+actor|with\s+actress"
               r"|(?:an?\s+)?(?:actor|actress|director)|by|with)\s+((?:[A-Z][\w.'-]+)(?:\s+[A-Z][\w.'-]+){0,2})"),
    re.compile(r"\b((?:[A-Z][\w.-]+)(?:\s+[A-Z][\w.-]+){0,2})'s\s+(?:movies?|films?|work|classics?|best|latest)\b"),
    re.compile(r"(?<=\b[aA]\s)((?:[A-Z][\w.-]+)(?:\s+[A-Z][\w.-]+){0,2})\s+(?=(?:movie|film|flick|picture|classic"
               r"|comedy|drama|thriller|western|musical|horror|romance|mystery|documentary)s?\b)"),
    re.compile(r"(?<=\b[aA]n\s)((?:[A-Z][\w.-]+)(?:\s+[A-Z][\w.-]+){0,2})\s+(?=(?:movie|film|flick|picture|classic"
               r"|comedy|drama|thriller|western|musical|horror|romance|mystery|documentary)s?\b)"),
)
_PLOT = re.compile(
    r"\b(?:about|where|in\s+which|set\s+in|based\s+on|that\s+takes\s+place|whose\s+plot|with\s+a\s+plot|involving"
    r"|in\s+which)\b[^.;!?]*",
    re.IGNORECASE,
)
# Capitalised words that are not a person's name when they stand before "movie"/"film".
_NOT_PEOPLE = frozenset(
    "I A An The Any Some Good Great Funny New Old Classic Recent Short Long Light Dark Feel Family Kids Foreign "
    "Cult Big Little Nice Fun Scary Sad Happy Romantic Animated Silent Black White Hollywood Please Another "
    "Similar Different Second Third First Last Next Other Same Darker Older Newer Funnier Modern".split()
)


class RequestConstraints(BaseModel):
    """A request in the catalogue's terms (see the module docstring). Device-side: never crosses as such."""

    served: str = Field("", description="The request as the device serves it: unsupported parts cut.")
    include: list[str] = Field(default_factory=list, description="Tags named positively, in order of mention.")
    exclude: list[str] = Field(default_factory=list, description="Tags named under a negation.")
    year_from: int | None = Field(None, description="Earliest release year allowed (inclusive).")
    year_to: int | None = Field(None, description="Latest release year allowed (inclusive).")
    unsupported: list[str] = Field(default_factory=list, description="Parts naming people or plots, not used.")
    topic: str = Field("", description="What is asked for with the constraint phrases and unused parts taken out.")

    @property
    def filters(self) -> bool:
        """Whether anything restricts which items may be recommended."""
        return bool(self.exclude) or self.year_from is not None or self.year_to is not None

    def allows(self, tags: Sequence[str], year: int | None) -> bool:
        """Whether an item with these tags and year meets the constraints (unknown year: only without a range)."""
        if set(tags) & set(self.exclude):
            return False
        if self.year_from is None and self.year_to is None:
            return True
        if year is None:
            return False
        return (self.year_from is None or year >= self.year_from) and (self.year_to is None or year <= self.year_to)

    def rules_out(self, tag: str) -> bool:
        """Whether a plan may not retrieve from this tag: excluded, or a decade wholly outside the year range."""
        if tag in self.exclude:
            return True
        if not (len(tag) == 5 and tag[:4].isdigit() and tag.endswith("s")):
            return False
        start = int(tag[:4])
        return (self.year_from is not None and start + 9 < self.year_from) or (
            self.year_to is not None and start > self.year_to)

    def allowed_mask(self, catalog) -> np.ndarray:
        """[V + 1] booleans, True where item id i may be recommended (index 0 = padding, False)."""
        mask = np.zeros(catalog.num_items + 1, dtype=bool)
        for item in catalog.items:
            mask[item.item_id] = self.allows(item.tags, item.year)
        return mask

    def years_text(self) -> str:
        """The year range in words the parser reads back ("from the 1980s", "before 1990", ...), or ""."""
        lo, hi = self.year_from, self.year_to
        if lo is None and hi is None:
            return ""
        if lo is not None and hi is not None:
            if lo % 10 == 0 and hi == lo + 9:
                return f"from the {lo}s"
            return f"released in {lo}" if lo == hi else f"between {lo} and {hi}"
        return f"after {lo - 1}" if lo is not None else f"before {hi + 1}"

    def summary(self) -> str:
        """One line for the user: what the device enforces."""
        parts = []
        if self.exclude:
            parts.append("no " + ", ".join(self.exclude))
        if self.years_text():
            parts.append(self.years_text())
        return "; ".join(parts)


def _decade_of(text: str) -> int | None:
    """The first year of a decade written "1980s", "80s", "'80s" or "eighties" (None when not a decade)."""
    word = text.lower().strip().removeprefix("the").strip().replace("'", "")
    if word in _DECADE_WORDS:
        return 1900 + _DECADE_WORDS[word]
    match = re.fullmatch(r"((?:19|20)?)(\d)0s", word)
    if not match:
        return None
    century = match.group(1) or ("20" if match.group(2) == "0" else "19")
    return int(f"{century}{match.group(2)}0")


def _bounds(text: str) -> tuple[int, int]:
    """(first, last) year of a decade or a single year."""
    decade = _decade_of(text)
    if decade is not None:
        return decade, decade + 9
    year = int(re.search(r"\d{4}", text).group(0))
    return year, year


def tag_mentions(text: str, known_tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(tag, start, end) of every known tag the text names, directly or by an alias, longest match first."""
    known = set(known_tags)
    forms: dict[str, str] = {t.lower(): t for t in known if t != "Uncategorized"}
    for alias, tag in {**TAG_ALIASES, **TAG_FORMS}.items():
        if tag in known:
            forms.setdefault(alias, tag)
    taken: list[tuple[str, int, int]] = []
    for form in sorted(forms, key=len, reverse=True):
        for m in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", text, re.IGNORECASE):
            if not any(s < m.end() and m.start() < e for _, s, e in taken):
                taken.append((forms[form], m.start(), m.end()))
    for m in re.finditer(rf"(?<![\w-])(?:the\s+)?({_DECADE})(?!\w)", text, re.IGNORECASE):
        decade = _decade_of(m.group(1))
        tag = f"{decade}s" if decade else None
        if tag in known and not any(s < m.end() and m.start() < e for _, s, e in taken):
            taken.append((tag, m.start(1), m.end()))
    return sorted(taken, key=lambda t: t[1])


def _negated(text: str, mentions: list[tuple[str, int, int]]) -> tuple[set[int], list[tuple[int, int]]]:
    """Indexes of the mentions under a negation cue (a cue, then only fillers or other mentions), and the spans
    of those negations (cue to last negated mention)."""
    starts = {start: n for n, (_, start, _) in enumerate(mentions)}
    negated: set[int] = set()
    spans: list[tuple[int, int]] = []
    for cue in NEGATION_CUES.finditer(text):
        pos, last, listing = cue.end(), None, False
        single = cue.group(0).lower() == "non"  # "non-horror thriller": the prefix negates one word
        while pos < len(text):
            if pos in starts:
                negated.add(starts[pos])
                pos = last = mentions[starts[pos]][2]
                listing = False
                if single:
                    break
                continue
            listing = listing or text[pos] == ","
            filler = (_LIST_FILLER if listing else _FILLER).match(text, pos)
            if not filler or filler.end() == pos:
                break
            pos = filler.end()
        if last is not None:
            spans.append((cue.start(), last))
    for n, (_, start, end) in enumerate(mentions):
        free = _FREE.match(text[end:])
        if free:
            negated.add(n)
            spans.append((start, end + free.end()))
    return negated, spans


_LIKE = re.compile(r"\b(?:like|similar\s+to|in\s+the\s+vein\s+of|such\s+as)\s+an?\s+[^,;.!?]*?(?=\s+but\b|[,;.!?]|$)",
                   re.IGNORECASE)


def _year_range(text: str) -> tuple[int | None, int | None, list[tuple[int, int]]]:
    """(from, to, spans used) of the year phrases of a text; a decade inside "like a ..." is a likeness, not a range."""
    lo: int | None = None
    hi: int | None = None
    spans: list[tuple[int, int]] = [(m.start(), m.end()) for m in _LIKE.finditer(text)]
    likeness = len(spans)
    for pattern, kind in _RANGE_PATTERNS:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in spans):
                continue
            spans.append((m.start(), m.end()))
            first, last = _bounds(m.group(1))
            if kind == "between":
                lo, hi = first, _bounds(m.group(2))[1]
            elif kind == "before":
                hi = first - 1
            elif kind == "until":
                hi = last
            elif kind == "after":
                lo = last + 1
            else:
                lo = first
    for m in _IN_YEAR.finditer(text):
        if not any(s < m.end() and m.start() < e for s, e in spans):
            spans.append((m.start(), m.end()))
            lo = hi = int(m.group(1))
    return lo, hi, spans[likeness:]


def _unsupported(text: str, known_tags: Sequence[str]) -> list[tuple[int, int]]:
    """Spans naming people or plots (what the catalogue's metadata does not hold)."""
    spans: list[tuple[int, int]] = []
    tag_words = {t.lower() for t in known_tags} | set(TAG_ALIASES) | set(TAG_FORMS)
    for pattern in _PERSON_PATTERNS:
        for m in pattern.finditer(text):
            words = m.group(1).split()
            while words and (words[0] in _NOT_PEOPLE or words[0].lower() in tag_words):
                words.pop(0)
            while words and (words[-1] in _NOT_PEOPLE or words[-1].lower() in tag_words):
                words.pop()
            if not words or _decade_of(words[0]) or re.fullmatch(r"\d+", words[0]):
                continue
            name = " ".join(words)
            start = text.index(name, m.start(1))
            end = start + len(name) + (2 if text[start + len(name) :].startswith("'s") else 0)
            cue = m.start() if m.start() < m.start(1) and text[m.start() : start].strip() else start
            spans.append((cue, end))
    for m in _PLOT.finditer(text):
        cut = re.search(r"\s(?:but|not|no|from\s+the|before|after|and\s+not)\s", m.group(0))
        end = m.start() + cut.start() if cut else m.end()
        body = text[m.start() : end]
        if tag_mentions(body, known_tags) and not re.sub(r"\W+", " ", _strip_tags(body, known_tags)).strip():
            continue
        spans.append((m.start(), end))
    return _merge(spans)


def _strip_tags(text: str, known_tags: Sequence[str]) -> str:
    for _, start, end in reversed(tag_mentions(text, known_tags)):
        text = text[:start] + text[end:]
    return re.sub(r"\b(?:about|where|in which|set in|based on|a|an|the|movies?|films?)\b", " ", text, flags=re.I)


def parse_request(text: str, known_tags: Sequence[str]) -> RequestConstraints:
    """A request in the catalogue's terms: included and excluded tags, year range, unsupported parts."""
    text = text if isinstance(text, str) else ""
    lo, hi, year_spans = _year_range(text)
    cut = _unsupported(text, known_tags)
    used = year_spans + cut
    mentions = [m for m in tag_mentions(text, known_tags) if not any(s <= m[1] < e for s, e in used)]
    negated, negations = _negated(text, mentions)
    include, exclude = [], []
    for n, (tag, _, _) in enumerate(mentions):
        target = exclude if n in negated else include
        if tag not in target:
            target.append(tag)
    if ADULT_RE.search(text) and "Children's" in known_tags and "Children's" not in exclude:
        exclude.append("Children's")
    include = [t for t in include if t not in exclude]
    likeness = [(m.start(), m.end()) for m in _LIKE.finditer(text)]
    decades = [(tag, start, end) for n, (tag, start, end) in enumerate(mentions) if re.fullmatch(r"\d{4}s", tag)
               and n not in negated and not any(s <= start < e for s, e in likeness)]  # fmt: skip
    if decades and lo is None and hi is None:
        lo, hi = min(int(t[:4]) for t, _, _ in decades), max(int(t[:4]) for t, _, _ in decades) + 9
        for _, start, end in decades:
            lead = re.search(r"(?:\b(?:from|in|of|during|released\s+in)\s+)?(?:\bthe\s+)?$", text[:start], re.I)
            year_spans = [*year_spans, (lead.start() if lead else start, end)]
    served = text
    for start, end in reversed(cut):
        served = served[:start] + served[end:]
    served = re.sub(r"\s+([,.;!?])", r"\1", re.sub(r"\s{2,}", " ", served)).strip(" ,;")
    unsupported = [text[s:e].strip() for s, e in cut]
    topic = text
    for start, end in sorted(_merge(year_spans + cut + negations), reverse=True):
        topic = topic[:start] + " " + topic[end:]
    topic = re.sub(r"\s+([,.;!?])", r"\1", re.sub(r"\s{2,}", " ", topic)).strip(" ,;.-")
    topic = re.sub(r"(?:\s*[,;]\s*|\s+(?:but|and|or|from)\s*)+$", "", topic, flags=re.I).strip(" ,;")
    return RequestConstraints(served=served, include=include, exclude=exclude, year_from=lo, year_to=hi,
                              unsupported=unsupported, topic=topic)  # fmt: skip


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def unsupported_note(constraints: RequestConstraints) -> str | None:
    """The honest line for parts the catalogue cannot answer, or None."""
    if not constraints.unsupported:
        return None
    parts = ", ".join(f'"{p}"' for p in constraints.unsupported)
    return (f"not used: {parts}. Tandem knows genres, release decades and your viewing patterns, not cast, crew or "
            "plots; the rest of the request was served")  # fmt: skip
