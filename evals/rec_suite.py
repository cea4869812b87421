"""The tables of `tandem eval rec`, computed from cached plans and the device encoders (see `evals.rec`).

`run_rec_eval` produces one JSON-ready dict: for each query mode (generated queries, and none) the main
table on all test users (rule planner), the like-for-like table on the language-model sample (both
planners), the ablations (CDA4Rec Table IV/V), HR@10 by history length, the few-shot users, and the
accuracy of LSC4Rec's re-request at several cloud loads. Plans are cached per prompt version
(`evals.rec_plans`), so a rerun only re-scores.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console

from agents.cloud.agent import CloudAgent
from agents.device.agent import DeviceAgent
from evals.rec import (
    ABLATIONS,
    EvalSet,
    PipelineRun,
    RowResult,
    fire_at_load,
    fixed_plan,
    full_ranking_ranks,
    planned,
    planning_ms,
    rank_instances,
    run_pipeline,
    static_answers,
    structured_scores,
)
from evals.rec_plans import PlannedCase, PlanSetting, instance_key, plan_instances, query_of, seeded_sample
from ground.settings import Settings
from tools.data import EvalInstance
from tools.metrics import PopularityScorer
from tools.protocol import Abstract
from tools.workspace import Workspace

SWEEP_LOADS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
PROTOCOL = ("leave-one-out test split; target ranked against ALL items (full ranking); the user's history "
            "masked for every method; HR@k / NDCG@k with one relevant item")  # fmt: skip


@dataclass(frozen=True)
class RecEvalConfig:
    llm_users: int = 300
    modes: tuple[str, ...] = ("query", "none")
    llm_modes: tuple[str, ...] | None = None  # query modes with a language-model sample (None = all modes)
    load: float = 0.1
    seed: int = 42
    fewshot: bool = True


class RecEval:
    """One evaluation run over a data set: the agents' own steps, the trained encoders, the plan cache."""

    def __init__(
        self,
        settings: Settings,
        ws: Workspace,
        device: DeviceAgent,
        clouds: dict[str, CloudAgent],
        config: RecEvalConfig,
        console: Console | None = None,
        progress: bool = True,
    ) -> None:
        self.settings, self.ws, self.device, self.clouds = settings, ws, device, clouds
        self.config = config
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.catalog = ws.dataset.catalog
        self.known = self.catalog.tags()
        self.cache_dir = settings.home / "evals" / "plans"
        self.cloud = clouds["rule"]  # Eq. 2-3 do not depend on the planner; only `plan` does

    # -- inputs -------------------------------------------------------------------------------------
    def evalset(self, instances: list[EvalInstance]) -> EvalSet:
        evalset = EvalSet(list(instances), self.catalog.num_items)
        for name in ("SASRec", "SURGE"):
            encoder = self.device.encoders.get(name)
            evalset.structured[name], evalset.encode_ms[name] = structured_scores(encoder, instances)
        return evalset

    def plans(self, evalset: EvalSet, rows: np.ndarray, setting: PlanSetting) -> dict[str, PlannedCase]:
        instances = [evalset.instances[r] for r in rows.tolist()]
        cloud = self.clouds[setting.planner]
        return plan_instances(self.device, cloud, instances, setting, self.ws.dataset.name, self.cache_dir,
                              progress=self.progress)  # fmt: skip

    # -- rows ---------------------------------------------------------------------------------------
    def baselines(self, evalset: EvalSet, mode: str, abstracts: list[Abstract]) -> list[RowResult]:
        """Popularity, SASRec alone, SURGE alone, semantic alone, LSC4Rec-style static pipeline (all rows)."""
        inst = evalset.instances
        popularity = PopularityScorer(self.ws.splits.train, self.catalog.num_items)
        pop = popularity.score_histories([i.history for i in inst]).numpy()
        rows = [RowResult("popularity", "-", full_ranking_ranks(pop, inst), 0.0)]
        for name in ("SASRec", "SURGE"):
            ranks = full_ranking_ranks(evalset.structured[name], inst)
            rows.append(RowResult(f"{name} alone", "-", ranks, evalset.encode_ms[name]))
        e_sem = self.cloud.semantic_embeddings(abstracts, [0.5] * len(abstracts))
        semantic = e_sem @ self.ws.semantics.table.T
        rows.append(RowResult("semantic alone (alpha 0.5)", "-", full_ranking_ranks(semantic, inst), 0.0,
                              cloud_calls=1.0))  # fmt: skip
        static = [fixed_plan(a, self.known, alpha=0.5, size=1000, tag_count=20, encoder="SASRec", beta=0.5,
                             label="LSC4Rec static") for a in abstracts]  # fmt: skip
        answers = static_answers(self.cloud, abstracts)
        run = rank_instances(evalset, np.arange(len(inst)), static, answers, self.device)
        rows.append(RowResult("LSC4Rec-style static pipeline", "-", run.ranks, float(run.ms.mean()), 1.0,
                              "top 1,000 by e_sem, SASRec rerank, beta 0.5, no planning"))  # fmt: skip
        return rows

    def pipeline(self, evalset: EvalSet, rows: np.ndarray, cases: dict[str, PlannedCase]) -> PipelineRun:
        abstracts, plans = planned(cases, evalset, rows)
        run = run_pipeline(evalset, rows, abstracts, plans, self.cloud, self.device)
        run.ms += planning_ms(cases, evalset, rows)
        return run

    def tandem(
        self, evalset: EvalSet, rows: np.ndarray, setting: PlanSetting, name: str
    ) -> tuple[RowResult, PipelineRun, dict[str, PlannedCase]]:
        """Tandem with the plans of `setting`, plus LSC4Rec's re-request at the configured load.

        Returns the row, the first pass (before any re-request) and the plans it used.
        """
        cases = self.plans(evalset, rows, setting)
        first = self.pipeline(evalset, rows, cases)
        fired = fire_at_load(first.inconsistency, self.config.load)
        ranks, ms = first.ranks.copy(), first.ms.copy()
        if fired.any():
            recent = PlanSetting(setting.planner, setting.query_mode, setting.raw_input, recent_only=True)
            again = self.pipeline(evalset, rows[fired], self.plans(evalset, rows[fired], recent))
            ranks[fired], ms[fired] = again.ranks, ms[fired] + again.ms
        row = RowResult(name, setting.planner, ranks, float(ms.mean()), 1.0 + float(fired.mean()),
                        f"re-request at load {self.config.load:g}")  # fmt: skip
        return row, first, cases

    def ablations(self, evalset: EvalSet, rows: np.ndarray, abstracts: list[Abstract]) -> list[RowResult]:
        """CDA4Rec Table IV settings v1-v7 (fixed plans, no planning, no re-request)."""
        out = []
        for label, setting in ABLATIONS.items():
            plans = [fixed_plan(a, self.known, label=label, **setting) for a in abstracts]
            run = run_pipeline(evalset, rows, abstracts, plans, self.cloud, self.device)
            described = (f"alpha {setting['alpha']:g}, {{{setting['size']}, {setting['tag_count']}}}, "
                         f"{setting['encoder']}, beta {setting['beta']:g}")  # fmt: skip
            out.append(RowResult(f"w/o SP {label}", "fixed", run.ranks, float(run.ms.mean()), 1.0, described))
        return out

    def sweep(self, evalset: EvalSet, rows: np.ndarray, setting: PlanSetting, first: PipelineRun) -> list[dict]:
        """HR@10 / NDCG@10 against the share of requests that go back to the cloud (LSC4Rec Eq. 12)."""
        recent = PlanSetting(setting.planner, setting.query_mode, recent_only=True)
        again = self.pipeline(evalset, rows, self.plans(evalset, rows, recent))
        points = []
        for load in SWEEP_LOADS:
            fired = fire_at_load(first.inconsistency, load)
            ranks = np.where(fired, again.ranks, first.ranks)
            metrics = RowResult("", "", ranks, 0.0).metrics()
            points.append({"target_load": load, "rerequest_rate": float(fired.mean()),
                           "cloud_requests_per_request": 1.0 + float(fired.mean()), **metrics})  # fmt: skip
        return points

    # -- the whole run ------------------------------------------------------------------------------
    def run(self) -> dict:
        ws = self.ws
        cfg = self.config
        self.console.print("[bold]scoring the device encoders on the test and few-shot users[/]")
        test = self.evalset(ws.splits.test)
        sample = seeded_sample(test.instances, cfg.llm_users, cfg.seed) if cfg.llm_users else []
        sample_rows = test.subset({instance_key(i) for i in sample})
        all_rows = np.arange(len(test.instances))
        report: dict = {"meta": self.meta(test, len(sample_rows)), "modes": {}}
        fewshot = self.evalset(ws.splits.fewshot) if cfg.fewshot and ws.splits.fewshot else None
        for mode in cfg.modes:
            self.console.print(f"[bold]query mode: {mode}[/]")
            report["modes"][mode] = self.run_mode(test, all_rows, sample_rows, mode, fewshot)
        return report

    def run_mode(self, test: EvalSet, all_rows: np.ndarray, sample_rows: np.ndarray, mode: str,
                 fewshot: EvalSet | None) -> dict:  # fmt: skip
        rule = PlanSetting("rule", mode)
        rule_cases = self.plans(test, all_rows, rule)
        abstracts, _ = planned(rule_cases, test, all_rows)
        base = self.baselines(test, mode, abstracts)
        tandem_rule, first, _ = self.tandem(test, all_rows, rule, "Tandem")
        main = [*base, tandem_rule]
        out: dict = {"query": "generated query per instance" if mode == "query" else "no query (empty)"}
        out["main"] = [r.as_row() for r in main]
        raw_rule, _, _ = self.tandem(test, all_rows, PlanSetting("rule", mode, raw_input=True), "Tandem w/o AG")
        ablation = [tandem_rule, next(r for r in base if r.name.startswith("LSC4Rec")), raw_rule,
                    *self.ablations(test, all_rows, abstracts)]  # fmt: skip
        out["ablation"] = [r.as_row() for r in ablation]
        buckets = test.bucket_rows()
        out["buckets"] = {r.name: {b: {"users": int(m.sum()), **r.metrics(m)} for b, m in buckets.items()}
                          for r in [*base, tandem_rule]}  # fmt: skip
        out["sweep"] = self.sweep(test, all_rows, rule, first)
        if len(sample_rows) and mode in (self.config.llm_modes or self.config.modes):
            out["sample"] = self.sample_table(test, sample_rows, mode, main)
        if fewshot is not None:
            rows = np.arange(len(fewshot.instances))
            cases = self.plans(fewshot, rows, rule)
            few_abstracts, _ = planned(cases, fewshot, rows)
            few_rows = [*self.baselines(fewshot, mode, few_abstracts), self.tandem(fewshot, rows, rule, "Tandem")[0]]
            out["fewshot"] = [r.as_row() for r in few_rows]
        return out

    def sample_table(self, test: EvalSet, rows: np.ndarray, mode: str, main: list[RowResult]) -> dict:
        """Like-for-like on the language-model sample: every main row restricted to it, plus Tandem (LLM)."""
        table = [r.as_row(rows) for r in main]
        llm = PlanSetting("llm", mode)
        tandem_llm, _, cases = self.tandem(test, rows, llm, "Tandem")
        table.append(tandem_llm.as_row())
        if mode == "query":
            raw, _, _ = self.tandem(test, rows, PlanSetting("llm", mode, raw_input=True), "Tandem w/o AG")
            table.append(raw.as_row())
        statuses = [c.status for c in cases.values()]
        tokens = [c.plan_tokens for c in cases.values() if c.plan_tokens is not None]
        return {
            "rows": table,
            "plan_status": {s: statuses.count(s) for s in ("parsed", "repaired", "fallback")},
            "abstract_s_p50": float(np.median([c.abstract_s for c in cases.values()])),
            "plan_s_p50": float(np.median([c.plan_s for c in cases.values()])),
            "plan_tokens_mean": float(np.mean(tokens)) if tokens else None,
            "distinct_plans": len({str(sorted(c.plan.items())) for c in cases.values()}),
        }

    def language_models(self) -> dict[str, str]:
        """Backend and model of each role, as the report names them."""
        return {role: self.settings.model_spec(role).label() for role in ("device", "cloud")}

    def meta(self, test: EvalSet, sample_users: int) -> dict:
        ws = self.ws
        return {
            "data": ws.dataset.name,
            "protocol": PROTOCOL,
            "test_users": len(test.instances),
            "fewshot_users": len(ws.splits.fewshot),
            "llm_sample_users": sample_users,
            "seed": self.config.seed,
            "load": self.config.load,
            "planners": {"main, ablation, buckets, sweep, fewshot": "rule planner (every user)",
                         "sample": "rule planner and language-model planner on the same seeded sample"},
            "language_models": self.language_models(),
            "encoders": {name: getattr(self.device.encoders.get(name), "checkpoint_info", None)
                         for name in ("SASRec", "SURGE")},  # fmt: skip
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU only",
            "example_query": query_of(test.instances[0], "query"),
        }
