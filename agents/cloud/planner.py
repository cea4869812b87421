"""Cloud agent: strategy planning (CDA4Rec III-C, Fig. 4).

abstract + the domain's tag list -> `PlanResult`. The prompt is `plan_json@1` (compact JSON, few-shot),
`plan_exemplars@1` (the same, its few-shot examples the labelled abstracts nearest the request's, retrieved from the
plan exemplars), `plan_exemplars@2` (retrieved exemplars, the answer one plan-space point under the point grammar,
`tools.plan_point_answer`: about 25 tokens instead of 80, tags and weights the rule planner's),
`plan_exemplars@3` (the answer must be one of the retrieved points), `plan_exemplars@4` (no exemplar abstracts: the
few plan-space points with the best mean hindsight reward over the labelled abstracts nearest the request's, the
learned planner's own ranking, `agents.cloud.neighbours`; the answer one of them), `plan_adapter@1` (zero-shot,
for the LoRA plan adapter of Eq. 8: one plan-space point, under its own grammar)
or `plan@1` (the paper's line format); with `structured=True` the backend enforces the answer's JSON schema
through LangChain structured output (llama.cpp grammar, Ollama `format`, OpenAI `response_format`).
The answer goes through `tools.plan_parsing.resolve_plan`
(parse -> repair -> rule fallback); any model failure (unreachable server, timeout, context overflow)
falls back to the rule planner with the failure listed among the violations. The prompt's name@version
and the call's CallStats are recorded on the result. Without a model the rule planner plans (status "rule").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from agents.backends import generate, generate_structured
from agents.llm import LLMError, stats_of
from ground.settings import StructuredMethod
from prompts import PromptError, PromptTemplate, get_prompt
from tools.plan_parsing import Embed, resolve_plan
from tools.plan_point_answer import (
    EXEMPLARS_WHY,
    RANKING_WHY,
    WHY,
    PointAnswer,
    point_answer_schema,
    point_choice_schema,
    resolve_point_answer,
)
from tools.plan_schema import plan_json_schema
from tools.plan_space import PlanPoint
from tools.protocol import Abstract, PlanResult, Violation
from tools.rule_planner import rule_plan, signals_from_abstract

PLAN_PROMPT = "plan_json@1"
LINE_PLAN_PROMPT = "plan@1"
PLAN_FIELDS = {"plan_json": frozenset({"tags", "examples", "abstract"}), "plan": frozenset({"tags", "abstract"}),
               "plan_adapter": frozenset({"abstract"}), "plan_points": frozenset({"examples", "abstract"})}
EXEMPLAR_K = 3  # retrieved few-shot examples when the prompt's header does not say (`exemplar_k:`)
NEIGHBOUR_RANKING = "neighbour-ranking"  # header `exemplars:` of a prompt shown the neighbours' ranked plan points
Exemplars = Callable[[Abstract, int], list[dict]]
"""abstract, k -> the k labelled exemplars nearest to it, as few-shot examples {"abstract", "plan"}."""
Ranking = Callable[[Abstract, int], list[tuple[PlanPoint, float]]]
"""abstract, m -> the m plan-space points with the best mean hindsight reward over its nearest labelled abstracts,
best first, each with that mean (`NeighbourPlanner.ranked`)."""


def retrieves_exemplars(template: PromptTemplate) -> bool:
    """A prompt whose header says `exemplars: plan-exemplars` takes its few-shot examples from the exemplar
    collection (`tools.exemplar_index`), the k nearest to the request's abstract, instead of a fixed file; one
    whose header says `exemplars: neighbour-ranking` is shown the best points of the nearest labelled abstracts."""
    return bool(template.header.get("exemplars"))


def ranks_neighbours(template: PromptTemplate) -> bool:
    """The prompt's examples are the neighbours' ranked plan points (`Ranking`), not exemplar abstracts."""
    return template.header.get("exemplars") == NEIGHBOUR_RANKING


def example_point(example: dict) -> PointAnswer:
    """The plan-space point an example shows: a ranked point as it is, an exemplar's target plan as its point."""
    return example["point"] if "point" in example else PointAnswer.of_compact(example["plan"])


def needs_adapter(template: PromptTemplate) -> bool:
    """A prompt whose header says `adapter: plan-adapter` is written for the LoRA plan adapter (CDA4Rec Eq. 8):
    the cloud answers it with its adapter model when it has one (`CloudAgent.adapter_model`)."""
    return template.header.get("adapter") == "plan-adapter"


def output_format(template: PromptTemplate) -> str:
    """`json-line` (one JSON object, stop at the line end), `plan-point` (the plan adapter's one plan-space point,
    `tools.plan_point_answer`) or `lines` (the Fig. 4 module lines): the header's `output:`, else inferred (a
    prompt with few-shot examples answers in JSON lines)."""
    return template.header.get("output") or ("json-line" if "examples" in template.placeholders else "lines")


def format_examples(template: PromptTemplate, examples: Sequence[dict] | None = None) -> str:
    """Few-shot examples (the template's own, or `examples`) as completed "User abstract / Plan" pairs: the plan in
    compact JSON, or as its plan-space point when the prompt answers in points (`output: plan-point`); ranked
    neighbour points as one line each, "Plan with mean NDCG@10 <reward> for them: <point>"."""
    points = output_format(template) == "plan-point"
    shown = template.examples if examples is None else examples
    if ranks_neighbours(template):
        return "\n".join(f"Plan with mean NDCG@10 {ex['reward']:.3f} for them: {ex['point'].text()}" for ex in shown)

    def answer(plan: dict) -> str:
        if points:
            try:
                return PointAnswer.of_compact(plan).text()
            except ValueError as error:
                raise PromptError(f"{template.ref}: {error}") from None
        return json.dumps(plan, ensure_ascii=False)

    return "\n\n".join(f"User abstract: {ex['abstract']}\nPlan: {answer(ex['plan'])}" for ex in shown)


def retrieved_examples(template: PromptTemplate, abstract: Abstract, exemplars: Exemplars | None = None,
                       ranking: Ranking | None = None) -> list[dict]:  # fmt: skip
    """The prompt's k examples for this abstract (header `exemplar_k`): exemplars nearest first, or ranked points
    best first ({"point", "reward"}); reversed when the header says `exemplar_order: nearest-last` (a base model
    leans on the example just before the request)."""
    k = int(template.header.get("exemplar_k", EXEMPLAR_K))
    if ranks_neighbours(template):
        if ranking is None:
            raise PromptError(f"{template.ref} shows the nearest labelled abstracts' best plan points, and this "
                              "cloud has no hindsight labels: `tandem plans label --data <data>`")  # fmt: skip
        examples = [{"point": PointAnswer.of_point(point), "reward": reward} for point, reward in ranking(abstract, k)]
    elif exemplars is None:
        raise PromptError(f"{template.ref} retrieves its few-shot examples from plan exemplars, and this "
                          "cloud has none: `tandem prompts exemplars build --data <data>`")  # fmt: skip
    else:
        examples = exemplars(abstract, k)
    return examples[::-1] if template.header.get("exemplar_order") == "nearest-last" else examples


def prompt_examples(template: PromptTemplate, abstract: Abstract, exemplars: Exemplars | None,
                    ranking: Ranking | None = None) -> list[dict] | None:  # fmt: skip
    """The retrieved few-shot examples this prompt shows for this abstract, or None when it shows its own."""
    if "examples" not in template.placeholders or not retrieves_exemplars(template):
        return None
    return retrieved_examples(template, abstract, exemplars, ranking)


def render_plan_prompt(abstract: Abstract, known_tags: Sequence[str], prompt: str = PLAN_PROMPT,
                       exemplars: Exemplars | None = None, examples: list[dict] | None = None,
                       ranking: Ranking | None = None) -> str:  # fmt: skip
    """The filled planning prompt for this abstract (few-shot examples retrieved when the prompt asks for it,
    unless `examples` already holds them)."""
    template = get_prompt(prompt)
    values = {"tags": ", ".join(known_tags), "abstract": abstract.as_text()}
    values = {key: value for key, value in values.items() if key in template.placeholders}
    if "examples" in template.placeholders:
        shown = examples if examples is not None else prompt_examples(template, abstract, exemplars, ranking)
        values["examples"] = format_examples(template, shown)
    return template.render(**values)


def answer_schema(template: PromptTemplate, known_tags: Sequence[str], examples: list[dict] | None) -> dict:
    """The JSON schema the answer is held to: the compact plan, or one plan-space point; with the header
    `answer: one-of-exemplars`, one of the points of the retrieved examples (the model chooses, it cannot invent)."""
    if output_format(template) != "plan-point":
        return plan_json_schema(known_tags)
    if template.header.get("answer") == "one-of-exemplars" and examples:
        return point_choice_schema([example_point(example) for example in examples])
    return point_answer_schema()


def _why(template: PromptTemplate) -> str:
    """The explanation a point answer's plan carries: where the points the model chose from came from."""
    if ranks_neighbours(template):
        return RANKING_WHY
    return EXEMPLARS_WHY if retrieves_exemplars(template) else WHY


def plan_strategy(
    abstract: Abstract,
    known_tags: Sequence[str],
    llm: BaseChatModel | None,
    *,
    structured: bool = True,
    method: StructuredMethod = "json_schema",
    prompt: str = PLAN_PROMPT,
    max_tokens: int = 96,
    embed: Embed | None = None,
    exemplars: Exemplars | None = None,
    ranking: Ranking | None = None,
) -> PlanResult:
    """CDA4Rec III-C (Fig. 4): plan the four modules for this abstract (the rule planner when `llm` is None).

    With `structured`, the plan is asked for through LangChain's `with_structured_output(schema, method=method,
    include_raw=True)` (any backend, a stock chat model included); the raw text is parsed and repaired here.
    Never raises on model failure: the rule planner answers instead (status "fallback", the failure listed).
    """
    known = list(known_tags)
    signals = signals_from_abstract(abstract, known)
    if llm is None:
        return PlanResult(plan=rule_plan(signals, known), status="rule")
    template = get_prompt(prompt)
    examples = prompt_examples(template, abstract, exemplars, ranking)
    text = render_plan_prompt(abstract, known, prompt, examples=examples)
    form = output_format(template)
    stop = ["\n"] if form in ("json-line", "plan-point") else ["\nUser abstract:", "\n\n\n"]
    schema = answer_schema(template, known, examples)
    messages = [HumanMessage(text)]
    try:
        if structured:
            answer = generate_structured(llm, messages, schema, method=method, max_tokens=max_tokens, stop=stop)
        else:
            answer = generate(llm, messages, max_tokens=max_tokens, stop=stop)
    except LLMError as error:
        violation = Violation(field="model", code=type(error).__name__, message=str(error))
        return PlanResult(plan=rule_plan(signals, known), status="fallback", violations=[violation],
                          prompt=template.ref)  # fmt: skip
    stats = stats_of(answer)
    if form == "plan-point":
        return resolve_point_answer(str(answer.content), abstract, known, embed=embed, prompt=template.ref,
                                    stats=stats.model_dump() if stats else None,
                                    why=_why(template))  # fmt: skip
    return resolve_plan(
        str(answer.content), known, signals, embed=embed, prompt=template.ref,
        stats=stats.model_dump() if stats else None,
    )  # fmt: skip
