"""Plans for `tandem eval rec`: abstract + plan per evaluation instance, cached by planner and prompt version.

Each instance is planned the way a request would be (CDA4Rec III-B, III-C): the device writes the scrubbed
abstract, the cloud plans from it. Three ways of planning:
- `rule`: rule-built abstract (computed facts only) and the rule planner (fast, every user);
- `llm`: the device SLM writes the abstract and the cloud LLM plans (seconds per user, so a seeded sample);
- `knn`: rule-built abstract and the learned planner without a language model (`agents.cloud.neighbours`);
- `raw` input (the "w/o AG" ablation of CDA4Rec Table V): the planner gets the raw query and the raw recent
  history (titles, tags) instead of the abstract, with the facts computed from that raw history (the rule
  planner reads those; without them it would plan for 0 interactions and the row would measure a parsing
  accident instead of the abstract). Evaluation only: the graph never sends raw data.
And two scopes: the whole history, or the newest interactions only (LSC4Rec's re-request, Eq. 12).

Every planned case is appended to a JSON-lines file named after data set, split, planner, input, scope,
query mode and the prompt versions, so a rerun (or a run interrupted half way) only plans what is missing,
and a new prompt version is a new file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel
from rich.progress import track

from agents.cloud.agent import CloudAgent
from agents.device.abstract import compute_facts, history_from_ids
from agents.device.agent import RECENT_WINDOW, DeviceAgent
from evals.jsonl import JsonlAppender, read_jsonl
from prompts import get_prompt
from tools.data import EvalInstance
from tools.protocol import Abstract
from tools.rule_planner import RULES_VERSION

PlannerKind = Literal["rule", "llm", "knn"]
QueryMode = str  # "none", or the query source: a fidelity level ("habit-q1") or a queries file ("file-<sha>")
RAW_HISTORY_ITEMS = 20  # raw-input ablation: the newest items, as the abstract prompt shows them


class PlannedCase(BaseModel):
    """One instance's abstract and plan, with how long each took."""

    key: str
    abstract: dict
    plan: dict
    status: str
    abstract_s: float
    plan_s: float
    plan_tokens: int | None = None


@dataclass(frozen=True)
class PlanSetting:
    """How instances are planned: planner, input (abstract or raw), scope and query mode."""

    planner: PlannerKind
    query_mode: QueryMode
    raw_input: bool = False
    recent_only: bool = False

    def label(self) -> str:
        parts = [self.planner, "raw" if self.raw_input else "abstract", self.query_mode]
        return "-".join(parts + (["recent"] if self.recent_only else []))

    def file_name(self, data: str, split: str, prompts: Sequence[str], learned: str = "") -> str:
        versions = "-".join(p.replace("@", "v") for p in prompts) if self.planner == "llm" else f"rules{RULES_VERSION}"
        if self.planner == "knn":  # the learned planner's plans are keyed by its labels (`NeighbourPlanner.source`)
            versions = f"{learned}-rules{RULES_VERSION}"
        return f"{data}-{split}-{self.label()}-{versions}.jsonl"


def instance_key(inst: EvalInstance) -> str:
    return f"{inst.split}:{inst.user}"


def query_of(inst: EvalInstance, mode: QueryMode) -> str:
    """The instance's query under `mode`: empty for "none", else the query the eval put on the instance."""
    return "" if mode == "none" else inst.query


def raw_abstract(query: str, history: Sequence[int], timestamps: Sequence[int], catalog) -> Abstract:
    """The "w/o AG" input: raw query and raw recent titles with tags, nothing scrubbed or summarised, plus the
    facts sentence computed from the raw history (what a rule planner reads in place of a summary)."""
    items = [catalog[int(i)] for i in list(history)[-RAW_HISTORY_ITEMS:]]
    listing = "; ".join(f"{it.title} ({', '.join(it.tags)})" for it in items) or "no interactions"
    facts = compute_facts(history_from_ids(list(history), list(timestamps), catalog)[0])
    return Abstract(sanitized_query=query, behavior_summary=f"watched: {listing}. {facts.to_text()}",
                    prompt="raw-input")  # fmt: skip


def plan_instance(device: DeviceAgent, cloud: CloudAgent, inst: EvalInstance, setting: PlanSetting) -> PlannedCase:
    """Abstract then plan for one instance, as the device and the cloud would produce them.

    `cloud` plans with the setting's planner (a language model, or none for the rules).
    """
    query = query_of(inst, setting.query_mode)
    history, stamps = inst.history.tolist(), inst.history_ts.tolist()
    if setting.recent_only:
        history, stamps = history[-RECENT_WINDOW:], stamps[-RECENT_WINDOW:]
    start = time.perf_counter()
    if setting.raw_input:
        abstract = raw_abstract(query, history, stamps, device.catalog)
    else:
        abstract = device.abstract(query, history, stamps, use_model=setting.planner == "llm").abstract
    abstract_s = time.perf_counter() - start
    start = time.perf_counter()
    result = cloud.plan(abstract)
    plan_s = time.perf_counter() - start
    tokens = (result.stats or {}).get("completion_tokens")
    return PlannedCase(key=instance_key(inst), abstract=abstract.model_dump(), plan=result.plan.model_dump(),
                       status=result.status, abstract_s=abstract_s, plan_s=plan_s, plan_tokens=tokens)  # fmt: skip


def plan_instances(
    device: DeviceAgent, cloud: CloudAgent, instances: Sequence[EvalInstance], setting: PlanSetting, data: str,
    cache_dir: Path, progress: bool = True,
) -> dict[str, PlannedCase]:
    """Plans for `instances` under `setting`, reading the cache and planning (and appending) the rest."""
    split = instances[0].split if instances else "none"
    prompts = [get_prompt(p).key for p in (device.abstract_prompt, cloud.plan_prompt)]  # keyed by digest: an edit
    learned = cloud.learned.source if cloud.learned is not None else ""
    if setting.planner == "llm" and cloud.exemplar_source():
        prompts.append(cloud.exemplar_source())  # keyed by the labels behind the retrieved examples
    if setting.planner == "llm" and cloud.adapter_source():
        prompts.append(cloud.adapter_source())  # keyed by the adapter's digest: a retrained one plans afresh
    path = cache_dir / setting.file_name(data, split, prompts, learned)  # never reuses plans of the old text
    done = {case.key: case for case in read_jsonl(path, PlannedCase)}
    todo = [inst for inst in instances if instance_key(inst) not in done]
    if todo:
        steps = track(todo, description=f"plans {setting.label()} ({len(done)} cached)") if progress else todo
        with JsonlAppender(path) as out:
            for inst in steps:
                case = plan_instance(device, cloud, inst, setting)
                out.write(case)
                done[case.key] = case
    return {instance_key(inst): done[instance_key(inst)] for inst in instances}


def seeded_sample(instances: Sequence[EvalInstance], size: int, seed: int) -> list[EvalInstance]:
    """A seeded sample of `size` instances (all of them when there are fewer), in their original order."""
    if size >= len(instances):
        return list(instances)
    picked = np.sort(np.random.default_rng(seed).choice(len(instances), size=size, replace=False))
    return [instances[i] for i in picked.tolist()]
