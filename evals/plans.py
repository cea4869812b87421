"""`tandem eval plans`: score a planning prompt over a fixed, seeded suite (`evals.plan_suite`).

For every case the device SLM writes the abstract ONCE (audited for leakage) and it is frozen: stored under
the abstract prompt's digest and reused by every planning prompt, so a plan's score never depends on the
small model regenerating the summary. The cloud LLM then plans with the chosen prompt, and the plan is scored
on what the model itself wrote, before repair:
- validity: parsed as written / needed repair / fell back to the rules, and every violated constraint by name;
- agreement with CDA4Rec's decision tips (Fig. 4), each a named check where relevant, on the raw decisions
  (a decision the model did not make fails its tip); tips after repair are reported separately;
- latency and tokens of the planning call; the abstract's leakage audit.
Results are appended to a JSON-lines file whose name carries the data set, the planning prompt's
name@version AND digest, the abstract prompt's, the output mode and the models, so an interrupted run
resumes, and an edited prompt file is a new file: its old results are never reused, and the run says so.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import track
from rich.table import Table

from agents.cloud.agent import CloudAgent
from agents.device.agent import DeviceAgent
from evals.jsonl import JsonlAppender, read_jsonl
from evals.plan_suite import PlanCase, build_suite
from prompts import get_prompt
from tools.plan_parsing import raw_decisions
from tools.protocol import Abstract

__all__ = ["PlanCase", "build_suite", "CaseScore", "FrozenAbstract", "score_case", "summarise"]


class FrozenAbstract(BaseModel):
    """One case's abstract, written once by the device and reused by every planning prompt."""

    case_key: str
    abstract: dict[str, Any]
    interactions: int = Field(description="Known interactions (the facts the tips depend on).")
    source: str
    leakage_score: float
    leaks: list[str]
    abstract_s: float


class CaseScore(BaseModel):
    """The plan eval's verdict on one case under one planning prompt."""

    case_id: str
    case_key: str = ""
    kind: str
    prompt: str
    digest: str = ""
    structured: bool
    status: str
    violations: list[str] = Field(description="field:code of each violation of the raw output, before repair")
    repairs: list[str] = Field(default_factory=list, description="field:code of each change repair made on top")
    tips: dict[str, bool] = Field(description="Each applicable decision tip, followed by the raw output or not.")
    tips_repaired: dict[str, bool] = Field(default_factory=dict, description="The same tips on the final plan.")
    leakage_score: float
    leaks: list[str]
    latency_s: float | None
    tokens: int | None
    timed_out: bool = Field(False, description="The planning call hit its timeout (a loaded machine, not the prompt).")
    plan: dict[str, Any]
    raw_text: str = ""
    abstract: dict[str, Any]

    def decisions(self) -> dict[str, Any]:
        """The plan's decisions (everything but the explanations): what "the plan changed" compares."""
        return {k: v for k, v in self.plan.items() if k != "explanations"}


Tip = tuple[Callable[[PlanCase, int], bool], Callable[[dict], bool]]
TIPS: dict[str, Tip] = {
    # name: (when it applies (case, known interactions), what the plan must do) -- CDA4Rec Fig. 4 tips
    "sparse history -> broad scope": (
        lambda c, n: n < 10, lambda p: p["candidate_size"] >= 2000 or p["tag_count"] >= 10),
    "sparse history -> semantic-heavy": (lambda c, n: n < 10, lambda p: p["beta"] >= 0.6 or p["encoder"] == "none"),
    "dense history + clear query -> compact scope": (
        lambda c, n: n >= 50 and c.clarity == "clear", lambda p: p["candidate_size"] <= 1000),
    "clear query -> query-weighted": (lambda c, n: c.clarity == "clear" and c.kind != "adversarial",
                                      lambda p: p["alpha"] >= 0.5),
    "no query -> behaviour-weighted": (lambda c, n: not c.query.strip(), lambda p: p["alpha"] <= 0.5),
    "dense history -> structured encoder": (lambda c, n: n >= 50, lambda p: p["encoder"] != "none"),
}  # fmt: skip


def _follows(rule: Callable[[dict], bool], decisions: dict[str, Any] | None) -> bool:
    """A tip on raw decisions: a decision missing, unreadable or out of range fails it."""
    if decisions is None:
        return False
    try:
        return bool(rule(decisions))
    except (TypeError, KeyError):
        return False


def score_tips(case: PlanCase, interactions: int, decisions: dict[str, Any] | None) -> dict[str, bool]:
    return {name: _follows(rule, decisions) for name, (applies, rule) in TIPS.items() if applies(case, interactions)}


# ------------------------------------------------------------------------------------------ frozen inputs


def model_label(model: BaseChatModel | None) -> str:
    """A short name for a chat model (part of every cache key: another model is another result)."""
    if model is None:
        return "rules"
    name = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    return str(name).replace("/", "_").replace(":", "_")


def freeze_one(device: DeviceAgent, case: PlanCase) -> FrozenAbstract:
    start = time.perf_counter()
    written = device.abstract(case.query, case.history, case.history_ts)
    return FrozenAbstract(case_key=case.key, abstract=written.abstract.model_dump(),
                          interactions=written.facts.interactions, source=written.source,
                          leakage_score=written.audit.score, leaks=[f.split(":", 1)[0] for f in written.audit.found],
                          abstract_s=time.perf_counter() - start)  # fmt: skip


def abstracts_path(out: Path, data: str, device: DeviceAgent) -> Path:
    key = get_prompt(device.abstract_prompt).key
    return out / "abstracts" / f"{data}-{key}-{model_label(device.abstract_model)}.jsonl"


def freeze_abstracts(
    device: DeviceAgent, suite: list[PlanCase], path: Path, console: Console | None = None, progress: bool = True
) -> dict[str, FrozenAbstract]:
    """Each case's abstract, written once per (abstract prompt digest, device model) and read back after."""
    done = {a.case_key: a for a in read_jsonl(path, FrozenAbstract)}
    todo = [case for case in suite if case.key not in done]
    if console is not None:
        key = get_prompt(device.abstract_prompt).key
        console.print(_rerun_note(path, key, f"abstracts {device.abstract_prompt}", len(suite) - len(todo),
                                  len(todo)), highlight=False, soft_wrap=True)  # fmt: skip
    if todo:
        with JsonlAppender(path) as out:
            for case in track(todo, description="abstracts") if progress else todo:
                frozen = freeze_one(device, case)
                out.write(frozen)
                done[case.key] = frozen
    return {case.key: done[case.key] for case in suite}


# ------------------------------------------------------------------------------------------ scoring


def score_plan(cloud: CloudAgent, case: PlanCase, frozen: FrozenAbstract) -> CaseScore:
    """Plan one frozen abstract with the cloud agent's planner and prompt, scored before and after repair."""
    result = cloud.plan(Abstract.model_validate(frozen.abstract))
    plan = result.plan.model_dump()
    decisions, raw_violations = raw_decisions(result.raw_text, cloud.known_tags())
    if result.status == "fallback" and any(v.field == "model" for v in result.violations):
        raw_violations = [v for v in result.violations if v.field == "model"]  # the call itself failed
    raw_codes = [f"{v.field}:{v.code}" for v in raw_violations]
    final_codes = [f"{v.field}:{v.code}" for v in result.violations]
    stats = result.stats or {}
    template = get_prompt(cloud.plan_prompt)
    return CaseScore(
        case_id=case.case_id, case_key=case.key, kind=case.kind, prompt=template.ref, digest=template.digest,
        structured=cloud.structured_output, status=result.status, violations=raw_codes,
        repairs=[c for c in final_codes if c not in raw_codes], tips=score_tips(case, frozen.interactions, decisions),
        tips_repaired=score_tips(case, frozen.interactions, plan), leakage_score=frozen.leakage_score,
        leaks=frozen.leaks, latency_s=stats.get("latency_s"), tokens=stats.get("completion_tokens"), plan=plan,
        timed_out=bool(stats.get("timed_out")) or any(v.code == "LLMTimeoutError" for v in result.violations),
        raw_text=result.raw_text, abstract=frozen.abstract,
    )  # fmt: skip


def score_case(device: DeviceAgent, cloud: CloudAgent, case: PlanCase) -> CaseScore:
    """Abstract (device SLM) -> plan (the cloud agent's planner, prompt and output mode) -> scores."""
    return score_plan(cloud, case, freeze_one(device, case))


def results_path(out: Path, data: str, device: DeviceAgent, cloud: CloudAgent) -> Path:
    """One file per (data, planning prompt digest and the exemplars it retrieves, abstract prompt digest, output
    mode, models)."""
    plan, abstract = get_prompt(cloud.plan_prompt).key, get_prompt(device.abstract_prompt).key
    for source in (cloud.exemplar_source(), cloud.adapter_source()):
        plan = f"{plan}-{source}" if source else plan
    mode = "structured" if cloud.structured_output else "free"
    models = f"{model_label(cloud.planner_model)}-{model_label(device.abstract_model)}"
    return out / "runs" / f"{data}-{plan}-{abstract}-{mode}-{models}.jsonl"


def read_scores(path: Path) -> list[CaseScore]:
    """Every complete line of a results file (a line cut short by an interruption is skipped)."""
    return read_jsonl(path, CaseScore)


def _rerun_note(path: Path, key: str, what: str, reused: int, todo: int) -> str:
    """What a run reuses and what it recomputes; names the earlier texts of the same name@version, if any.

    `key` is the prompt's name-vVERSION-digest as it appears in the file name.
    """
    stem, digest = key.rsplit("-", 1)
    before, _, after = path.name.partition(key)
    pattern = re.compile(re.escape(before + stem + "-") + r"([0-9a-f]{12})" + re.escape(after) + "$")
    older = sorted({m.group(1) for p in path.parent.glob(f"{before}{stem}-*") if p != path
                    and (m := pattern.match(p.name)) and m.group(1) != digest})  # fmt: skip
    if reused and not todo:
        return f"{what} #{digest}: all {reused} cases already done with this exact text (reused)"
    if reused:
        return f"{what} #{digest}: {reused} cases already done with this exact text (reused), {todo} to go"
    if older:
        old = ", ".join(f"#{d}" for d in older)
        return (f"{what} #{digest}: the text changed since the last run ({old}); earlier results are not "
                f"reused: running all {todo} cases")  # fmt: skip
    return f"{what} #{digest}: no earlier results for this text: running all {todo} cases"


def run_plan_eval(
    cloud: CloudAgent, suite: list[PlanCase], frozen: dict[str, FrozenAbstract], path: Path,
    console: Console | None = None, progress: bool = True,
) -> list[CaseScore]:
    """Score every case not yet in `path` (results of this exact prompt text), appending one line each."""
    done = {s.case_key: s for s in read_scores(path)}
    todo = [case for case in suite if case.key not in done]
    if console is not None:
        key = get_prompt(cloud.plan_prompt).key
        note = _rerun_note(path, key, cloud.plan_prompt, len(suite) - len(todo), len(todo))
        console.print(note, highlight=False, soft_wrap=True)
    if todo:
        with JsonlAppender(path) as out:
            for case in track(todo, description=cloud.plan_prompt) if progress else todo:
                score = score_plan(cloud, case, frozen[case.key])
                out.write(score)
                done[case.key] = score
    return [done[c.key] for c in suite]


# ------------------------------------------------------------------------------------------ summaries


def tip_share(score: CaseScore, repaired: bool = False) -> float | None:
    """Share of this case's applicable tips followed (None when none applies)."""
    tips = score.tips_repaired if repaired else score.tips
    return float(np.mean(list(tips.values()))) if tips else None


def summarise(scores: list[CaseScore]) -> dict[str, float]:
    """Validity (raw), violation counts, tips (raw, then after repair), leakage, latency and tokens."""
    n = max(1, len(scores))
    row: dict[str, float] = {}
    status = Counter(s.status for s in scores)
    row["valid as written (parsed)"] = status["parsed"] / n
    for name in ("repaired", "fallback"):
        row[f"status: {name}"] = status[name] / n
    for violation, count in sorted(Counter(v for s in scores for v in s.violations).items()):
        row[f"violation: {violation}"] = count
    for tip in TIPS:
        verdicts = [s.tips[tip] for s in scores if tip in s.tips]
        if verdicts:
            row[f"tip: {tip}"] = float(np.mean(verdicts))
    shares = [x for x in (tip_share(s) for s in scores) if x is not None]
    repaired = [x for x in (tip_share(s, repaired=True) for s in scores) if x is not None]
    row["tips followed, raw (mean)"] = float(np.mean(shares)) if shares else float("nan")
    row["tips followed, after repair (mean)"] = float(np.mean(repaired)) if repaired else float("nan")
    row["leakage score (mean, 1 = clean)"] = float(np.mean([s.leakage_score for s in scores])) if scores else 0.0
    latencies = [s.latency_s for s in scores if s.latency_s is not None]
    row["plan latency p50 (s)"] = float(np.median(latencies)) if latencies else float("nan")
    tokens = [s.tokens for s in scores if s.tokens is not None]
    row["plan tokens (mean)"] = float(np.mean(tokens)) if tokens else float("nan")
    row["plan calls timed out"] = float(sum(s.timed_out for s in scores))
    return row


def comparison_table(columns: dict[str, list[CaseScore]], title: str = "plan eval") -> Table:
    """Metrics as rows, one column per prompt version."""
    summaries = {name: summarise(scores) for name, scores in columns.items()}
    metrics = list(dict.fromkeys(m for s in summaries.values() for m in s))
    table = Table(title=f"{title}: " + " vs ".join(columns))
    table.add_column("metric")
    for name, scores in columns.items():
        table.add_column(f"{name} ({len(scores)} cases)", justify="right")
    for metric in metrics:
        cells = []
        for summary in summaries.values():
            value = summary.get(metric)
            whole = metric.startswith("violation") or metric.endswith("timed out")
            cells.append("-" if value is None else f"{value:.0f}" if whole else f"{value:.2f}")
        table.add_row(metric, *cells)
    return table
