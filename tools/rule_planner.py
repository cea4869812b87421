"""Rule planner: the paper's planning tips applied deterministically (CDA4Rec III-C, Fig. 4 "Tips").

It is the fallback when the cloud model's plan cannot be parsed or repaired, and the source of defaults
when a partial plan needs a missing decision filled in. It reads only what crosses the device->cloud
boundary: the sanitized query and the behavioural summary, whose computed-facts sentence
(`BehaviorFacts.to_text`) it parses back into numbers.

The tips, as rules:
- Semantic User Modeling: a clear query gets a high alpha; a dense, recent history pulls alpha down
  towards the behaviour summary; no query -> alpha 0.
- Candidate Retrieval: clear query + dense recent history -> compact scope (3 tags, 500 items); vague
  query or sparse history -> broad scope (10-20 tags, 2000-5000 items). Movies are a static domain, so
  the middle of the table leans compact.
- Structured User Modeling: too few interactions (< 5) -> none; dense and recent -> SASRec (clear
  sequential pattern); long but spread out -> SURGE (complex transitions); otherwise SASRec.
- Final Ranking: clear query and sparse history -> semantic-heavy beta; dense recent history -> structured-
  heavy; no query -> structured-heavy (the behaviour summary alone is a weak semantic signal); no encoder
  -> beta 1. The beta values were set on the ML-100K validation split (`tandem eval rec` machinery, full
  ranking): with queries beta 0.3 beat 0.5 (HR@10 0.278 vs 0.265) and 0 (0.233); without a query beta 0
  beat 0.1 / 0.3 / 0.5 (0.160 / 0.153 / 0.131 / 0.097). Test splits were not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from tools.protocol import (
    DENSE_FROM,
    SPARSE_BELOW,
    TAG_COUNTS,
    Abstract,
    BehaviorFacts,
    Plan,
    PlanError,
    effective_beta,
)

Clarity = Literal["clear", "vague", "none"]

RECENT_FROM = 10
ENCODER_MIN = 5
RULES_VERSION = 2  # bump when a rule changes: cached rule plans (evals) are keyed by it

# Words that name a known tag in a query; tags themselves always match (case-insensitive). Developed on the
# `dev` query phrasing families only (tools/data/queries.py FAMILIES): tests/test_queries.py fails when an
# alias here would decode a `test` family phrasing, the ones `tandem eval rec` measures with.
TAG_ALIASES: dict[str, str] = {
    "scifi": "Sci-Fi", "sci fi": "Sci-Fi", "science fiction": "Sci-Fi", "science-fiction": "Sci-Fi",
    "kids": "Children's", "children": "Children's", "childrens": "Children's", "family": "Children's",
    "noir": "Film-Noir", "film noir": "Film-Noir", "animated": "Animation", "cartoon": "Animation",
    "funny": "Comedy", "comedies": "Comedy", "scary": "Horror", "romantic": "Romance",
    "westerns": "Western", "musicals": "Musical", "thrillers": "Thriller", "documentaries": "Documentary",
    "war movie": "War", "mysteries": "Mystery", "adventurous": "Adventure", "magical": "Fantasy",
    "tense": "Thriller", "gritty": "Crime", "futuristic": "Sci-Fi", "moving": "Drama", "dramas": "Drama",
}  # fmt: skip


class PlanSignals(BaseModel):
    """What the planner reads from an abstract: query clarity, tags the query names, and the history facts."""

    clarity: Clarity
    query_tags: list[str] = Field(default_factory=list)
    facts: BehaviorFacts | None = None

    @property
    def interactions(self) -> int:
        return self.facts.interactions if self.facts else 0

    @property
    def dense(self) -> bool:
        return self.interactions >= DENSE_FROM

    @property
    def sparse(self) -> bool:
        return self.interactions < SPARSE_BELOW

    @property
    def recent(self) -> bool:
        return bool(self.facts and self.facts.recent_30d >= RECENT_FROM)

    def preferred_tags(self, known_tags: list[str]) -> list[str]:
        """Tags in planning priority: named by the query, recent, long-term, then the catalog order."""
        known = set(known_tags)
        ordered: list[str] = []
        recent = self.facts.recent_tags if self.facts else []
        top = self.facts.top_tags if self.facts else []
        for tag in [*self.query_tags, *recent, *top, *known_tags]:
            if tag in known and tag not in ordered and tag != "Uncategorized":
                ordered.append(tag)
        ordered += [t for t in known_tags if t not in ordered]
        return ordered


def query_tags(query: str, known_tags: list[str]) -> list[str]:
    """Known tags a query names, directly ("Comedy", "1990s") or by a common alias ("sci-fi", "90s")."""
    text = query.lower()
    found: list[str] = []
    for tag in known_tags:
        if re.search(rf"(?<![\w-]){re.escape(tag.lower())}(?![\w-])", text) and tag not in found:
            found.append(tag)
    for alias, tag in TAG_ALIASES.items():
        if tag in known_tags and tag not in found and re.search(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", text):
            found.append(tag)
    for match in re.finditer(r"(?<![\w'])'?(\d0)'?s\b", text):
        decade = f"19{match.group(1)}s"
        if decade in known_tags and decade not in found:
            found.append(decade)
    return found


def signals_from_abstract(abstract: Abstract, known_tags: list[str]) -> PlanSignals:
    """What the planner reads from an abstract. Clarity: empty query -> none; names a known tag -> clear; else vague."""
    query = abstract.sanitized_query.strip()
    tags = query_tags(query, known_tags)
    clarity: Clarity = "none" if not query else ("clear" if tags else "vague")
    return PlanSignals(clarity=clarity, query_tags=tags, facts=abstract.facts)


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` items over tags in proportion to `weights` (largest remainder, every tag >= 1)."""
    if not weights:
        return {}
    clean = {tag: max(float(w), 0.0) for tag, w in weights.items()}
    mass = sum(clean.values()) or float(len(clean))
    if sum(clean.values()) == 0:
        clean = dict.fromkeys(clean, 1.0)
    spare = total - len(clean)
    raw = {tag: spare * w / mass for tag, w in clean.items()}
    counts = {tag: 1 + int(r) for tag, r in raw.items()}
    left = total - sum(counts.values())
    order = sorted(raw, key=lambda t: (-(raw[t] - int(raw[t])), list(raw).index(t)))
    for tag in order[:left]:
        counts[tag] += 1
    return counts


def rule_decisions(signals: PlanSignals) -> dict[str, float | int | str]:
    """The tips as a table: alpha, tag count, candidate size, encoder and beta for these signals."""
    n = signals.interactions
    if n < ENCODER_MIN:
        encoder = "none"
    elif signals.recent:
        encoder = "SASRec"
    elif n >= DENSE_FROM:
        encoder = "SURGE"
    else:
        encoder = "SASRec"
    dense_recent = signals.dense and signals.recent
    if signals.clarity == "clear":
        alpha, k, size, beta = (0.6, 3, 500, 0.3) if dense_recent else (0.85, 5, 1000, 0.8) if signals.sparse else (
            0.7, 5, 1000, 0.4)
    elif signals.clarity == "vague":
        alpha, k, size, beta = (0.4, 5, 1000, 0.3) if dense_recent else (0.6, 10, 2000, 0.7) if signals.sparse else (
            0.5, 10, 2000, 0.3)
    else:
        alpha, k, size = (0.0, 10, 2000) if signals.dense else (0.0, 20, 5000)
        beta = 0.6 if signals.sparse else 0.0
    beta = effective_beta(encoder, beta)
    return {"alpha": alpha, "tag_count": k, "candidate_size": size, "encoder": encoder, "beta": beta}


def rule_tags(signals: PlanSignals, known_tags: list[str], tag_count: int, candidate_size: int) -> dict[str, int]:
    """Weighted tags: query tags weigh 3, the history's tags 2, fillers 1 (CDA4Rec Fig. 4 tag weights)."""
    chosen = signals.preferred_tags(known_tags)[:tag_count]
    history = set((signals.facts.top_tags + signals.facts.recent_tags) if signals.facts else [])
    weights = {tag: 3.0 if tag in signals.query_tags else 2.0 if tag in history else 1.0 for tag in chosen}
    return allocate(candidate_size, weights)


def rule_explanations(signals: PlanSignals, decisions: dict[str, float | int | str]) -> dict[str, str]:
    """Short rationales per module, stating the signal each decision rests on."""
    density = "dense" if signals.dense else "sparse" if signals.sparse else "moderate"
    recency = "recent" if signals.recent else "not recent"
    return {
        "semantic": f"{signals.clarity} query and {density} history: query weight {decisions['alpha']}.",
        "retrieval": (
            f"{signals.clarity} intent with {density}, {recency} behaviour: {decisions['tag_count']} tags, "
            f"{decisions['candidate_size']} candidates."
        ),
        "structured": f"{signals.interactions} interactions, {recency}: encoder {decisions['encoder']}.",
        "ranking": f"semantic weight {decisions['beta']} for a {signals.clarity} query and {density} history.",
    }


def usable_tag_counts(known_tags: Sequence[str]) -> list[int]:
    """The allowed tag counts a catalog with these tags can fill; an error when it cannot fill the smallest."""
    usable = [k for k in TAG_COUNTS if k <= len(known_tags)]
    if not usable:
        raise PlanError(f"only {len(known_tags)} known tags: a plan needs at least {TAG_COUNTS[0]}")
    return usable


def rule_plan(signals: PlanSignals, known_tags: Sequence[str]) -> Plan:
    """The rule planner's plan for these signals (the Fig. 4 tips above)."""
    decisions = rule_decisions(signals)
    decisions["tag_count"] = min(int(decisions["tag_count"]), usable_tag_counts(known_tags)[-1])
    tags = rule_tags(signals, list(known_tags), int(decisions["tag_count"]), int(decisions["candidate_size"]))
    return Plan.model_validate(
        {**decisions, "tags": tags, "explanations": rule_explanations(signals, decisions)},
        context={"known_tags": list(known_tags)},
    )
