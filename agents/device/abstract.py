"""Device agent: abstract generation (CDA4Rec III-B, Fig. 3) from the raw query and the local history.

Abstract generation turns the raw query and the local history (titles, tags, times) into
`Abstract(sanitized_query, behavior_summary)`, the only user description that crosses to the cloud:
1. the raw query is scrubbed and cut to `MAX_QUERY_CHARS`; the newest `PROMPT_HISTORY_ITEMS` history items
   are described (title, year, tags, date) in the Fig. 3 prompt;
2. the SLM completes the prompt. With `abstract@2` (default) the sanitized query is prefilled with the
   deterministic scrub and the summary is started from the computed density and top tag ("a dense
   history that leans to drama"), so the model only continues the summary; with `abstract@1` it writes
   both lines and its rewrite is used only when it keeps a content word of the query. Output that is
   degenerate, echoes a history line or copies the few-shot example is rejected (a 270M base model does
   all three);
3. the summary ALWAYS ends with computed facts (interaction count, span, recency, top and recent tags:
   `BehaviorFacts.to_text`), so the planner sees sparsity and recency even when the SLM writes poorly;
4. both fields pass `tools.scrub.scrub` (PII, every history title and id, injected instructions) and a
   leakage audit is attached to the result.
Any model failure falls back to the deterministic parts (scrubbed query + facts), recorded in `notes`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, ConfigDict, Field

from agents.backends import generate
from agents.llm import CallStats, LLMError, stats_of
from ground.errors import UnknownItemError
from prompts import get_prompt
from tools.data.catalog import Catalog
from tools.describe import describe
from tools.protocol import Abstract, BehaviorFacts
from tools.scrub import LeakageAudit, ScrubReport, audit_leakage, scrub

ABSTRACT_PROMPT = "abstract@2"
# What the code fills in, per abstract prompt version (@1: the SLM writes both lines; @2: it continues a
# summary whose sanitized query and density are prefilled).
ABSTRACT_FIELDS = {
    "abstract@1": frozenset({"query", "history"}),
    "abstract@2": frozenset({"query", "history", "sanitized", "density", "lead"}),
}
MAX_QUERY_CHARS = 500
MAX_SANITIZED_CHARS = 300
MAX_SUMMARY_CHARS = 300
PROMPT_HISTORY_ITEMS = 10
DAY = 86_400
_STOPWORDS = frozenset(
    "a an the and or for with from that this some something any anything movie movies film films please like want "
    "would could watch tonight to of in on me my i i'd im is are be it".split()
)


class HistoryEntry(BaseModel):
    """One local interaction with its item description (CDA4Rec III-B: descriptions are put in the prompt)."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    title: str
    year: int | None = None
    tags: tuple[str, ...] = ()
    timestamp: int = Field(description="Unix seconds.")

    def describe(self) -> str:
        year = f" ({self.year})" if self.year else ""
        date = datetime.fromtimestamp(self.timestamp, tz=UTC).strftime("%Y-%m-%d")
        return f"- {self.title}{year} [{', '.join(self.tags)}] {date}"


class AbstractResult(BaseModel):
    """Device-side record of one abstract generation; only `abstract` crosses to the cloud."""

    abstract: Abstract
    facts: BehaviorFacts
    source: Literal["slm", "partial", "rules"] = Field(description="How much of the SLM output was used.")
    scrubbed: ScrubReport
    audit: LeakageAudit
    stats: CallStats | None = None
    slm_text: str = ""
    notes: list[str] = Field(default_factory=list)

    @property
    def replaced(self) -> list[str]:
        """What the scrubber changed in the query before it crossed, one line each (shown to the user)."""
        return self.scrubbed.lines()


# ---------------------------------------------------------------------------------------------- history


def history_from_ids(
    item_ids: Sequence[int], timestamps: Sequence[int], catalog: Catalog
) -> tuple[list[HistoryEntry], list[int]]:
    """History entries for known item ids (oldest first) and the ids the catalog does not know."""
    entries, unknown = [], []
    for item_id, ts in zip(item_ids, timestamps, strict=True):
        try:
            item = catalog[int(item_id)]
        except UnknownItemError:
            unknown.append(int(item_id))
            continue
        entries.append(HistoryEntry(item_id=item.item_id, title=item.title, year=item.year, tags=item.tags,
                                    timestamp=int(ts)))  # fmt: skip
    return entries, unknown


def compute_facts(history: Sequence[HistoryEntry], now: int | None = None) -> BehaviorFacts:
    """Interaction count, span, recency and top tags of a history (`now` defaults to its newest time)."""
    if not history:
        return BehaviorFacts(interactions=0, span_days=0, recent_30d=0, days_since_last=0)
    times = sorted(h.timestamp for h in history)
    newest = times[-1]
    ordered = sorted(history, key=lambda h: h.timestamp)

    def top(entries: Sequence[HistoryEntry], k: int) -> list[str]:
        counts = Counter(t for h in entries for t in h.tags if t != "Uncategorized")
        return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    return BehaviorFacts(
        interactions=len(history), span_days=(newest - times[0]) // DAY,
        recent_30d=sum(t >= newest - 30 * DAY for t in times),
        days_since_last=max(0, ((now if now is not None else newest) - newest) // DAY),
        top_tags=top(ordered, 3), recent_tags=top(ordered[-10:], 2),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- abstract


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "..."


_GREETING_RE = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good\s+(?:morning|evening|afternoon))\b[^,.!?]*[,.!?]\s*"
    r"|\b(?:i'm|i am|my name is|this is|call me)\s+\[name\]\s*[,.!]?\s*"
    r"|\[(?:email|phone|url)\][,;]?\s*",
    re.IGNORECASE,
)


def tidy_query(text: str) -> str:
    """Drop greetings and the self-introductions the scrubber left as placeholders ("Hi, I'm [name],")."""
    text = _GREETING_RE.sub("", text)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    return re.sub(r"^[\s,.;:!?]+", "", " ".join(text.split())).strip(" ,;")


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z'-]{2,}", text.lower()) if w not in _STOPWORDS}


def degenerate(text: str, min_words: int = 3) -> bool:
    """True for output a base model produces when it loses the thread: too short, or mostly repetition."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < min_words:
        return True
    if len(set(words)) / len(words) < 0.4:
        return True
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return bool(trigrams) and Counter(trigrams).most_common(1)[0][1] >= 3


def copied(text: str, prompt: str) -> bool:
    """True when the output repeats the prompt (a base model copying its few-shot example)."""
    norm = " ".join(text.lower().split())
    return len(norm) >= 12 and norm in " ".join(prompt.lower().split())


def parse_abstract_completion(text: str) -> tuple[str, str]:
    """(sanitized query, behavioural summary) from the SLM's completion of the Fig. 3 prompt."""
    first, _, rest = text.partition("\n")
    match = re.search(r"Behaviou?ral summary:\s*(.+)", rest, re.IGNORECASE)
    summary = match.group(1).strip() if match else ""
    return first.strip().strip('"'), summary.split("\n")[0].strip()


def generate_abstract(
    query: str,
    history: Sequence[HistoryEntry],
    llm: BaseChatModel | None,
    *,
    known_tags: Sequence[str] = (),
    unknown_ids: Sequence[int] = (),
    now: int | None = None,
    max_tokens: int = 48,
    prompt: str = ABSTRACT_PROMPT,
) -> AbstractResult:
    """CDA4Rec III-B (Fig. 3): raw query + local history -> scrubbed `Abstract` with computed facts."""
    notes = [f"{len(unknown_ids)} unknown item ids skipped"] if unknown_ids else []
    query = query if isinstance(query, str) else ""
    titles = [h.title for h in history]
    ids = [h.item_id for h in history] + [int(i) for i in unknown_ids]
    described = {h.title: describe(h.tags, h.year) for h in history}  # a named title keeps its intent
    if len(query) > MAX_QUERY_CHARS:
        notes.append(f"query cut from {len(query)} to {MAX_QUERY_CHARS} characters")
    clean_query, report = scrub(query[: MAX_QUERY_CHARS * 2], titles, ids, descriptions=described)
    clean_query = _cut(tidy_query(clean_query), MAX_QUERY_CHARS)
    facts = compute_facts(history, now)

    slm_query, slm_summary, raw, stats = "", "", "", None
    template = get_prompt(prompt)
    prefilled = "sanitized" in template.placeholders
    if llm is not None:
        recent = list(history)[-PROMPT_HISTORY_ITEMS:]
        values = {"query": clean_query or "(none)",
                  "history": "\n".join(h.describe() for h in recent) or "(no interactions)"}  # fmt: skip
        density = facts.density
        lead = facts.top_tags[0].lower() if facts.top_tags else "no genre in particular"
        if prefilled:
            values |= {"sanitized": _cut(clean_query, MAX_SANITIZED_CHARS) or "(none)", "density": density,
                       "lead": lead}  # fmt: skip
        text = template.render(**values)
        stop = ["\n"] if prefilled else ["\n\n", "\nQuery:"]
        try:
            answer = generate(llm, [HumanMessage(text)], max_tokens=max_tokens, stop=stop)
            raw, stats = str(answer.content), stats_of(answer)
            if prefilled:
                continuation = raw.split("\n")[0].rstrip()
                listing = re.search(r"\d{4}-\d{2}-\d{2}|^\s*[-\[(]", continuation)  # echoed a history line
                ok = continuation.strip() and not listing
                slm_summary = f"a {density} history that leans to {lead}{continuation}" if ok else ""
            else:
                slm_query, slm_summary = parse_abstract_completion(raw)
            slm_query = "" if copied(slm_query, text) else slm_query
            slm_summary = "" if copied(slm_summary, text) or copied(raw.strip(), text) else slm_summary
        except LLMError as error:
            notes.append(f"SLM failed, rules only: {error}")

    used = 0
    sanitized = ""
    if clean_query:
        overlap = _content_words(slm_query) & _content_words(clean_query)
        if slm_query and overlap and len(slm_query) <= MAX_SANITIZED_CHARS and not degenerate(slm_query, 2):
            sanitized, used = slm_query, used + 1
        else:
            sanitized = _cut(clean_query, MAX_SANITIZED_CHARS)
            if llm is not None and not prefilled:
                notes.append("SLM query rewrite unusable: kept the scrubbed query")
    summary = ""
    if slm_summary and not degenerate(slm_summary):
        summary, used = _cut(slm_summary, MAX_SUMMARY_CHARS), used + 1
    elif llm is not None:
        notes.append("SLM summary unusable: facts only")
    sanitized, r1 = scrub(sanitized, titles, ids, descriptions=described)
    summary, r2 = scrub(summary, titles, ids)
    facts_text = facts.to_text()
    keep = set(known_tags) | set(re.findall(r"\d+", facts_text)) | set(facts.top_tags + facts.recent_tags)
    summary, r3 = scrub(f"{summary} {facts_text}".strip(), titles, ids, keep=keep)
    abstract = Abstract(sanitized_query=sanitized, behavior_summary=summary, prompt=template.ref)
    audit = audit_leakage(abstract.as_text(), titles, ids, keep=keep)
    expected = 1 if prefilled or not clean_query else 2
    source = "rules" if used == 0 else ("slm" if used == expected else "partial")
    return AbstractResult(
        abstract=abstract, facts=facts, source=source, scrubbed=report.merge(r1).merge(r2).merge(r3), audit=audit,
        stats=stats, slm_text=raw, notes=notes,
    )  # fmt: skip
