"""Plan schema, parser, validation, repair and rule fallback (CDA4Rec III-C, Fig. 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tools.plan_parsing import PlanParseError, PlanValidationError, nearest_tag, parse_plan, resolve_plan
from tools.plan_schema import plan_json_schema, plan_to_compact
from tools.protocol import CANDIDATE_SIZES, TAG_COUNTS, Abstract, BehaviorFacts, Plan, PlanError
from tools.rule_planner import PlanSignals, allocate, rule_plan, signals_from_abstract

TAGS = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "Uncategorized", "War",
    "Western", "1920s", "1930s", "1940s", "1950s", "1960s", "1970s", "1980s", "1990s",
]  # fmt: skip
DENSE = BehaviorFacts(interactions=80, span_days=200, recent_30d=15, days_since_last=1,
                      top_tags=["Drama", "Comedy", "1990s"], recent_tags=["Comedy", "Romance"])  # fmt: skip
SPARSE = BehaviorFacts(interactions=8, span_days=3, recent_30d=8, days_since_last=400,
                       top_tags=["Thriller", "Crime"], recent_tags=["Thriller"])  # fmt: skip
CLEAR = PlanSignals(clarity="clear", query_tags=["Comedy", "1990s"], facts=DENSE)
PAPER_LINES = """Semantic User Modeling - {query: 0.7, behavior: 0.3}
Candidate Retrieval - {Comedy: 300, Drama: 150, 1990s: 50}
Structured User Modeling - {SASRec}
Final Ranking - {semantic: 0.6, structured: 0.4}
Explanation - {The query is clear and the history dense and recent.}"""
COMPACT = {"a": 0.7, "n": 1000, "t": {"Comedy": 3, "Drama": 2, "1990s": 1}, "e": "SASRec", "b": 0.6, "w": "clear"}


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic character-trigram embedding: cheap stand-in for MiniLM in property tests."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, hash(padded[i : i + 3]) % 64] += 1.0
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


def codes(result) -> set[str]:
    return {f"{v.field}.{v.code}" for v in result.violations}


def assert_valid(plan: Plan) -> None:
    assert 0.0 <= plan.alpha <= 1.0 and 0.0 <= plan.beta <= 1.0
    assert plan.tag_count in TAG_COUNTS and len(plan.tags) == plan.tag_count
    assert plan.candidate_size in CANDIDATE_SIZES and sum(plan.tags.values()) == plan.candidate_size
    assert set(plan.tags) <= set(TAGS) and min(plan.tags.values()) >= 1
    assert plan.encoder in ("SASRec", "SURGE", "none")
    assert all(getattr(plan.explanations, m) for m in ("semantic", "retrieval", "structured", "ranking"))


# ------------------------------------------------------------------ parsing


def test_compact_json_is_parsed_and_weights_become_counts() -> None:
    result = resolve_plan(json.dumps(COMPACT), TAGS, CLEAR, embed=fake_embed)
    assert result.status == "parsed" and not result.violations
    assert result.plan.tags == {"Comedy": 500, "Drama": 333, "1990s": 167}
    assert result.plan.alpha == 0.7 and result.plan.encoder == "SASRec" and result.plan.beta == 0.6
    assert_valid(result.plan)


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(COMPACT) + "\n```",
        "Sure! Here is the plan:\n" + json.dumps(COMPACT) + "\nHope this helps.",
        json.dumps(COMPACT, indent=2),
    ],
)
def test_json_in_fences_or_prose(text: str) -> None:
    assert resolve_plan(text, TAGS, CLEAR, embed=fake_embed).status == "parsed"


def test_paper_line_format_is_parsed() -> None:
    plan = parse_plan(PAPER_LINES, TAGS)
    assert plan.alpha == 0.7 and plan.beta == 0.6 and plan.encoder == "SASRec"
    assert plan.tags == {"Comedy": 300, "Drama": 150, "1990s": 50} and plan.candidate_size == 500
    assert plan.explanations.semantic.startswith("The query is clear")


def test_line_format_roundtrip() -> None:
    plan = rule_plan(CLEAR, TAGS)
    again = parse_plan(plan.to_lines(), TAGS)
    assert again.tags == plan.tags and again.encoder == plan.encoder
    assert again.alpha == pytest.approx(plan.alpha) and again.beta == pytest.approx(plan.beta)


def test_long_names_and_module_keys() -> None:
    long = {"alpha": 0.4, "candidate_size": 500, "tags": {"Drama": 200, "War": 200, "1940s": 100},
            "encoder": "SURGE", "beta": 0.3, "explanations": {"semantic": "s", "retrieval": "r",
            "structured": "m", "ranking": "f"}}  # fmt: skip
    assert parse_plan(json.dumps(long), TAGS).explanations.structured == "m"
    modules = {"Semantic User Modeling": {"query": 0.8, "behavior": 0.2},
               "Candidate Retrieval": {"Horror": 100, "Thriller": 300, "1980s": 100},
               "Structured User Modeling": "None", "Final Ranking": {"semantic": 1.0, "structured": 0.0},
               "Explanation": "scary"}  # fmt: skip
    plan = parse_plan(json.dumps(modules), TAGS)
    assert plan.encoder == "none" and plan.beta == 1.0 and plan.alpha == 0.8


def test_near_json_is_accepted() -> None:
    text = "{'a': 0.5, n: 2000, t: {'Drama': 2, 'Comedy': 1, 'War': 1,}, e: 'SURGE', b: 0.5, w: 'ok',}"
    assert resolve_plan(text, TAGS, CLEAR, embed=fake_embed).status == "parsed"


# ------------------------------------------------------------------ bad model output


@pytest.mark.parametrize("text", ["", "   \n", "I am a language model and cannot plan.", "}}}{{{", "[1, 2, 3]"])
def test_unparseable_output_falls_back_to_rules(text: str) -> None:
    result = resolve_plan(text, TAGS, CLEAR, embed=fake_embed)
    assert result.status == "fallback" and "output.unparseable" in codes(result)
    assert_valid(result.plan)
    with pytest.raises(PlanParseError):
        parse_plan(text, TAGS)


def test_truncated_json_is_repaired() -> None:
    text = json.dumps(COMPACT)[:-25]  # cut inside the explanation and before beta
    result = resolve_plan(text, TAGS, CLEAR, embed=fake_embed)
    assert result.status in ("parsed", "repaired")
    assert result.plan.tags == {"Comedy": 500, "Drama": 333, "1990s": 167}


def test_truncated_early_falls_back() -> None:
    result = resolve_plan('{"a": 0.7, "n": 1000, "t": {"Dra', TAGS, CLEAR, embed=fake_embed)
    assert result.status == "fallback" and "plan.incomplete" in codes(result)


def test_out_of_range_values_are_repaired_and_named() -> None:
    text = PAPER_LINES.replace("query: 0.7, behavior: 0.3", "query: 1.7").replace("Comedy: 300", "Comedy: 333")
    result = resolve_plan(text, TAGS, CLEAR, embed=fake_embed)
    assert result.status == "repaired"
    assert {"alpha.range", "candidate_size.not_allowed"} <= codes(result)
    assert result.plan.alpha == 1.0 and result.plan.candidate_size == 500
    assert_valid(result.plan)


def test_disallowed_sizes_are_snapped_and_counts_renormalised() -> None:
    bad = {"alpha": 0.5, "tag_count": 4, "candidate_size": 1500, "encoder": "SASRec", "beta": 0.5,
           "tags": {"Drama": 700, "Comedy": 500, "War": 200, "Horror": 50}, "explanation": "x"}  # fmt: skip
    result = resolve_plan(json.dumps(bad), TAGS, CLEAR, embed=fake_embed)
    assert result.status == "repaired"
    assert {"tag_count.not_allowed", "candidate_size.not_allowed", "tags.sum"} <= codes(result)
    assert result.plan.tag_count in (3, 5) and result.plan.candidate_size in (1000, 2000)
    assert_valid(result.plan)


def test_unknown_tags_map_to_nearest_known_tag() -> None:
    lines = PAPER_LINES.replace("Comedy: 300, Drama: 150, 1990s: 50", "comedies: 300, sci fi: 150, Nineties: 50")
    result = resolve_plan(lines, TAGS, CLEAR, embed=fake_embed)
    assert result.status == "repaired" and "tags.unknown_tag" in codes(result)
    assert set(result.plan.tags) == {"Comedy", "Sci-Fi", "1990s"}


def test_unknown_tag_by_real_embedding() -> None:
    assert nearest_tag("spooky ghosts", TAGS) == "Horror"
    assert nearest_tag("outer space adventure with aliens", TAGS) in {"Sci-Fi", "Adventure"}


def test_unknown_encoder_and_encoder_none() -> None:
    result = resolve_plan(PAPER_LINES.replace("{SASRec}", "{GRU4Rec}"), TAGS, CLEAR, embed=fake_embed)
    assert result.status == "repaired" and "encoder.unknown" in codes(result)
    none = resolve_plan(PAPER_LINES.replace("{SASRec}", "{None}"), TAGS, CLEAR, embed=fake_embed)
    assert none.plan.encoder == "none" and none.plan.beta == 1.0 and "beta.no_encoder" in codes(none)


def test_strict_parse_names_every_violation() -> None:
    bad = {"a": 1.5, "n": 700, "t": {"Kung Fu": 2}, "e": "GRU", "b": -1}
    with pytest.raises(PlanValidationError) as info:
        parse_plan(json.dumps(bad), TAGS)
    named = {f"{v.field}.{v.code}" for v in info.value.violations}
    assert {"alpha.range", "beta.range", "encoder.unknown", "tags.unknown_tag", "candidate_size.not_allowed",
            "tag_count.not_allowed", "explanations.missing"} <= named  # fmt: skip
    assert isinstance(info.value, PlanError)


def test_plan_model_rejects_inconsistent_plans() -> None:
    good = rule_plan(CLEAR, TAGS).model_dump()
    Plan.model_validate(good, context={"known_tags": TAGS})
    for change in ({"candidate_size": 2000}, {"tag_count": 5}, {"alpha": 1.2}, {"encoder": "GRU"},
                   {"tags": {"Nope": 250, "Drama": 125, "War": 125}}, {"extra": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            Plan.model_validate({**good, **change}, context={"known_tags": TAGS})


def test_no_encoder_always_means_semantics_only() -> None:
    good = rule_plan(CLEAR, TAGS).model_dump()
    assert good["beta"] != 1.0
    assert Plan.model_validate({**good, "encoder": "none"}).beta == 1.0


# ------------------------------------------------------------------ rule planner (Fig. 4 tips)


def test_rules_clear_dense_recent_is_compact_and_query_heavy() -> None:
    plan = rule_plan(CLEAR, TAGS)
    assert plan.tag_count == 3 and plan.candidate_size == 500 and plan.encoder == "SASRec"
    assert plan.alpha >= 0.5 and list(plan.tags)[:2] == ["Comedy", "1990s"]


def test_rules_vague_sparse_is_broad_and_semantic_heavy() -> None:
    plan = rule_plan(PlanSignals(clarity="vague", facts=SPARSE), TAGS)
    assert plan.tag_count >= 10 and plan.candidate_size >= 2000 and plan.beta >= 0.6


def test_rules_no_query_and_tiny_history() -> None:
    tiny = BehaviorFacts(interactions=2, span_days=0, recent_30d=2, days_since_last=0)
    plan = rule_plan(PlanSignals(clarity="none", facts=tiny), TAGS)
    assert plan.alpha == 0.0 and plan.encoder == "none" and plan.beta == 1.0 and plan.candidate_size == 5000
    assert rule_plan(PlanSignals(clarity="none"), TAGS).encoder == "none"  # no facts at all


def test_long_spread_out_history_gets_surge() -> None:
    old = BehaviorFacts(interactions=300, span_days=900, recent_30d=2, days_since_last=60, top_tags=["Drama"])
    assert rule_plan(PlanSignals(clarity="vague", facts=old), TAGS).encoder == "SURGE"


def test_signals_from_abstract() -> None:
    summary = "likes comedies. " + DENSE.to_text()
    signals = signals_from_abstract(abstract("a funny sci-fi film from the 80s", summary), TAGS)
    assert signals.clarity == "clear" and {"Sci-Fi", "Comedy", "1980s"} <= set(signals.query_tags)
    assert signals.facts == DENSE
    assert signals_from_abstract(abstract("", "no facts here"), TAGS).clarity == "none"
    assert signals_from_abstract(abstract("surprise me", summary), TAGS).clarity == "vague"


def abstract(query: str, summary: str) -> Abstract:
    return Abstract(sanitized_query=query, behavior_summary=summary)


def test_too_few_known_tags_is_a_clear_error() -> None:
    with pytest.raises(PlanError):
        rule_plan(CLEAR, ["Drama", "Comedy"])


def test_compact_schema_is_small_and_enumerates_known_tags() -> None:
    from llama_cpp import LlamaGrammar

    schema = plan_json_schema(TAGS)
    assert set(schema["properties"]) == {"a", "n", "t", "e", "b", "w"}
    assert set(schema["properties"]["t"]["properties"]) == set(TAGS)
    assert schema["properties"]["t"]["additionalProperties"] is False
    LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    compact = plan_to_compact(rule_plan(CLEAR, TAGS))
    assert parse_plan(json.dumps(compact), TAGS).tag_count == 3


# ------------------------------------------------------------------ properties

facts_strategy = st.builds(
    BehaviorFacts,
    interactions=st.integers(0, 5000), span_days=st.integers(0, 5000), recent_30d=st.integers(0, 500),
    days_since_last=st.integers(0, 5000), top_tags=st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    recent_tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
)  # fmt: skip
signals_strategy = st.builds(
    PlanSignals, clarity=st.sampled_from(["clear", "vague", "none"]),
    query_tags=st.lists(st.sampled_from(TAGS), max_size=3, unique=True), facts=st.none() | facts_strategy,
)  # fmt: skip
KEYS = ["a", "n", "t", "e", "b", "w", "k", "alpha", "beta", "tags", "encoder", "candidate_size", "tag_count",
        "explanation", "Semantic User Modeling", "Final Ranking", "junk"]  # fmt: skip
values = st.recursive(
    st.none() | st.booleans() | st.integers(-10_000, 10_000) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(TAGS + ["SASRec", "SURGE", "none", "GRU", "0.5", "70%"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(TAGS + ["x", "query"]), inner,
                                                                  max_size=6),
    max_leaves=12,
)  # fmt: skip


@st.composite
def near_json(draw: st.DrawFn) -> str:
    """A plan-like JSON object, then damaged: cut short, quotes swapped, braces dropped, prose around it."""
    obj = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
    text = json.dumps(obj, allow_nan=True)
    damage = draw(st.sampled_from(["none", "cut", "quotes", "brace", "prose", "fence"]))
    if damage == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "quotes":
        text = text.replace('"', "'")
    elif damage == "brace":
        text = text.replace("}", "", 1)
    elif damage == "prose":
        text = draw(st.text(max_size=30)) + text + draw(st.text(max_size=30))
    elif damage == "fence":
        text = f"```json\n{text}\n```"
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=400) | near_json(), signals=signals_strategy)
def test_property_any_text_gives_a_valid_plan_or_a_named_error(text: str, signals: PlanSignals) -> None:
    result = resolve_plan(text, TAGS, signals, embed=fake_embed)
    assert result.status in ("parsed", "repaired", "fallback")
    assert_valid(result.plan)
    if result.status != "parsed":
        assert result.violations
    try:
        assert_valid(parse_plan(text, TAGS))
    except (PlanParseError, PlanValidationError):
        pass


@settings(max_examples=100, deadline=None)
@given(total=st.sampled_from(CANDIDATE_SIZES),
       weights=st.dictionaries(st.sampled_from(TAGS), st.floats(0, 1e6), min_size=1, max_size=20))  # fmt: skip
def test_property_allocate_sums_to_total(total: int, weights: dict[str, float]) -> None:
    counts = allocate(total, weights)
    assert sum(counts.values()) == total and min(counts.values()) >= 1 and set(counts) == set(weights)


@settings(max_examples=100, deadline=None)
@given(facts=facts_strategy)
def test_property_facts_roundtrip(facts: BehaviorFacts) -> None:
    assert BehaviorFacts.from_text("Some summary. " + facts.to_text()) == facts
