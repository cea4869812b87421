"""The tables of `tandem eval rec`, computed from cached plans and the device encoders (see `evals.rec`).

`RecEval.run` produces one JSON-ready dict: for each query fidelity level (`none`, then `habit`, `partial`,
`exact`: see `tools.data.queries`) and for a researcher's queries file, the main table on all test users
(rule planner) with the leak-controlled baselines, the like-for-like table on the language-model sample
(both planners), the ablations (CDA4Rec Table IV/V), HR@10 by history length, the few-shot users cut to
their first 3, 5 and 10 interactions (CDA4Rec RQ4), and the accuracy of LSC4Rec's re-request at several
cloud loads. Every Tandem-vs-baseline difference carries a paired bootstrap 95% interval over users
(`tools.metrics.paired_bootstrap`), and the meta block records the SHA-256 of every model file used.
Plans are cached per prompt version and query mode (`evals.rec_plans`), so a rerun only re-scores.
"""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace
from agents.device.agent import DeviceAgent
from evals.digests import model_digests
from evals.rec import (
    ABLATIONS,
    FIXED_ALPHA,
    FIXED_BETA,
    FUSION_BASELINE,
    TAG_BASELINE,
    EvalSet,
    PipelineRun,
    RowResult,
    fire_at_load,
    fixed_fusion_ranks,
    fixed_plan,
    full_ranking_ranks,
    planned,
    planning_ms,
    query_tag_ranks,
    rank_instances,
    run_pipeline,
    static_answers,
    structured_scores,
)
from evals.rec_headroom import headroom
from evals.rec_plans import PlannedCase, PlanSetting, instance_key, plan_instances, seeded_sample
from evals.rec_queries import QueryFile, fidelity_mode, load_query_file, with_fidelity
from ground.settings import Settings
from prompts import get_prompt
from tools.checkpoints import load_encoder
from tools.cooperative import cooperative_decision
from tools.data import EvalInstance, Fidelity
from tools.data.queries import PhrasingSplit
from tools.metrics import PopularityScorer, paired_bootstrap
from tools.protocol import Abstract
from tools.tag_index import RETRIEVAL_VERSION
from tools.workspace import Workspace

SWEEP_LOADS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
PROTOCOL = ("leave-one-out test split; target ranked against ALL items (full ranking); every item the "
            "user saw before the target masked for every method (older than the encoder's max_len too); HR@k / "
            "NDCG@k with one relevant item; Eq. 3 retrieval "
            f"v{RETRIEVAL_VERSION} (tools.tag_index.fill_shares)")  # fmt: skip
HEADLINE_ORDER: tuple[Fidelity, ...] = ("none", "habit", "partial", "exact")
FEWSHOT_LENGTHS = (3, 5, 10)
COMPARED = ("HR@10", "NDCG@10")
FIDELITY_TEXT = {
    "none": "none: no query (empty)",
    "habit": "habit: a query built from the user's 10 newest interactions, never from the target",
    "partial": "partial: one of the target's genres, half of the time beside a genre the target lacks",
    "exact": "exact: the target's own genres and decade, or one of its genres in mood words (an oracle hint)",
}


@dataclass(frozen=True)
class RecEvalConfig:
    llm_users: int = 300
    fidelities: tuple[Fidelity, ...] = ("none", "habit", "partial", "exact")
    llm_fidelities: tuple[str, ...] | None = None  # levels with a language-model sample (None = all levels)
    phrasing: PhrasingSplit = "test"  # template families of the generated queries
    queries_file: Path | None = None
    load: float = 0.1
    seed: int = 42
    fewshot: bool = True
    bootstrap_samples: int = 2000
    max_users: int | None = None  # a seeded sample of test users, for a quick look (None = all of them)
    headroom: bool = True  # the oracle-plan ceiling and the learned planner's rows (`evals.rec_headroom`)


def fewshot_prefixes(dataset, heldout: frozenset[int], length: int) -> list[EvalInstance]:
    """Held-out users cut to their first `length` interactions; the next one is the target (CDA4Rec RQ4)."""
    out = []
    for user in sorted(heldout):
        seq, ts = dataset.sequences[user], dataset.timestamps[user]
        if len(seq) > length:
            out.append(EvalInstance(user, seq[:length], ts[:length], int(seq[length]), f"fewshot{length}", "",
                                    "none"))  # fmt: skip
    return out


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
        """Popularity, SASRec alone, SURGE alone, semantic alone, LSC4Rec-style static pipeline (all rows), and
        with a query the two leak controls, which see exactly the query Tandem sees."""
        inst = evalset.instances
        popularity = PopularityScorer(self.ws.splits.train, self.catalog.num_items)
        pop = popularity.score_histories([i.history for i in inst]).numpy()
        rows = [RowResult("popularity", "-", full_ranking_ranks(pop, inst), 0.0)]
        shelf = self.device.encoders
        for name in ("SASRec", "SURGE"):
            ranks = full_ranking_ranks(evalset.structured[name], inst)
            decision = cooperative_decision(shelf.base_path(name)) if shelf.follow_cooperative else None
            tuned = decision is not None and decision[1]  # the cooperative copy won on validation and is in use
            rows.append(RowResult(f"{name} alone", "-", ranks, evalset.encode_ms[name],
                                  notes="cooperatively tuned checkpoint (LSC4Rec 3.2.2)" if tuned else ""))
            if decision is not None:  # the table shows both: the base one, or the tuned one that lost
                other, label = (shelf.base_path(name), f"{name} alone, before cooperative tuning") if tuned else (
                    decision[0], f"{name} alone, cooperatively tuned (lost on validation, not used)")
                scores, _ = structured_scores(load_encoder(other, self.ws.dataset), inst)
                rows.append(RowResult(label, "-", full_ranking_ranks(scores, inst), evalset.encode_ms[name]))
        if mode != "none":
            ranks, named = query_tag_ranks(evalset, abstracts, self.catalog, self.device)
            rows.append(RowResult(TAG_BASELINE, "-", ranks, evalset.encode_ms["SASRec"], 0.0,
                                  f"query named >= 1 known tag for {named:.0%} of users; rule planner's parser"))
            ranks = fixed_fusion_ranks(evalset, abstracts, self.cloud, self.device)
            rows.append(RowResult(FUSION_BASELINE, "-", ranks, evalset.encode_ms["SASRec"], 1.0,
                                  f"whole catalog, alpha {FIXED_ALPHA:g}, beta {FIXED_BETA:g}, no planner"))
        rows.append(self.semantic_alone(self.cloud, abstracts, inst, "semantic alone (alpha 0.5)",
                                        self.cloud.describe_semantics()))
        for label, cloud in self.earlier_clouds.items():  # what each trained part adds: the same row without it
            rows.append(self.semantic_alone(cloud, abstracts, inst, f"semantic alone, {label}", label))
        static = [fixed_plan(a, self.known, alpha=0.5, size=1000, tag_count=20, encoder="SASRec", beta=0.5,
                             label="LSC4Rec static") for a in abstracts]  # fmt: skip
        answers = static_answers(self.cloud, abstracts)
        run = rank_instances(evalset, np.arange(len(inst)), static, answers, self.device)
        rows.append(RowResult("LSC4Rec-style static pipeline", "-", run.ranks, float(run.ms.mean()), 1.0,
                              "top 1,000 by e_sem, SASRec rerank, beta 0.5, no planning"))  # fmt: skip
        return rows

    def pipeline(self, evalset: EvalSet, rows: np.ndarray, cases: dict[str, PlannedCase],
                 cloud: CloudAgent | None = None) -> PipelineRun:  # fmt: skip
        abstracts, plans = planned(cases, evalset, rows)
        run = run_pipeline(evalset, rows, abstracts, plans, cloud or self.cloud, self.device)
        run.ms += planning_ms(cases, evalset, rows)
        return run

    def tandem(
        self, evalset: EvalSet, rows: np.ndarray, setting: PlanSetting, name: str, cloud: CloudAgent | None = None
    ) -> tuple[RowResult, PipelineRun, dict[str, PlannedCase]]:
        """Tandem with the plans of `setting`, plus LSC4Rec's re-request at the configured load; Eq. 2-3 by `cloud`
        (default: the evaluation's own).

        Returns the row, the first pass (before any re-request) and the plans it used.
        """
        cases = self.plans(evalset, rows, setting)
        first = self.pipeline(evalset, rows, cases, cloud)
        fired = fire_at_load(first.inconsistency, self.config.load)
        ranks, ms = first.ranks.copy(), first.ms.copy()
        if fired.any():
            recent = replace(setting, recent_only=True)
            again = self.pipeline(evalset, rows[fired], self.plans(evalset, rows[fired], recent), cloud)
            ranks[fired], ms[fired] = again.ranks, ms[fired] + again.ms
        row = RowResult(name, setting.planner, ranks, float(ms.mean()), 1.0 + float(fired.mean()),
                        f"re-request at load {self.config.load:g}")  # fmt: skip
        return row, first, cases

    @staticmethod
    def semantic_alone(cloud: CloudAgent, abstracts: list[Abstract], instances: list[EvalInstance], name: str,
                       notes: str) -> RowResult:  # fmt: skip
        """e_sem (alpha 0.5) of `cloud` scored against every item of the item table of its side."""
        e_sem = cloud.semantic_embeddings(abstracts, [0.5] * len(abstracts))
        scores = np.stack([cloud.side(a).space.table @ v for a, v in zip(abstracts, e_sem, strict=True)]) \
            if abstracts else np.zeros((0, 1), np.float32)
        ranks = full_ranking_ranks(scores, instances)
        return RowResult(name, "-", ranks, 0.0, cloud_calls=1.0, notes=notes)

    def earlier_semantics(self, evalset: EvalSet, rows: np.ndarray, setting: PlanSetting) -> list[RowResult]:
        """Tandem again with each earlier e_sem (`earlier_clouds`), the same plans: what each trained part adds,
        paired; none when Eq. 2 is untrained."""
        return [self.tandem(evalset, rows, setting, f"Tandem, {label}", cloud)[0]
                for label, cloud in self.earlier_clouds.items()]  # fmt: skip

    @cached_property
    def earlier_clouds(self) -> dict[str, CloudAgent]:
        """The evaluation's cloud with the e_sem deployed before each trained part, each with its own text memo: with
        a behaviour side (`tools.encoder_space`), every abstract in the text space; with a semantic head, the
        untrained Eq. 2 (the PCA) in the text space; untrained, none."""
        space, out = self.cloud.space, {}
        if self.cloud.behaviour is not None:
            out[f"text space only ({space.describe()})"] = replace(self.cloud, behaviour=None)
        if space.head is not None:
            plain = TextSpace(self.ws.semantics, precision=space.precision)
            out["untrained Eq. 2 (PCA)"] = replace(self.cloud, behaviour=None, space=plain)
        return out

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
        recent = replace(setting, recent_only=True)
        again = self.pipeline(evalset, rows, self.plans(evalset, rows, recent))
        points = []
        for load in SWEEP_LOADS:
            fired = fire_at_load(first.inconsistency, load)
            ranks = np.where(fired, again.ranks, first.ranks)
            metrics = RowResult("", "", ranks, 0.0).metrics()
            points.append({"target_load": load, "rerequest_rate": float(fired.mean()),
                           "cloud_requests_per_request": 1.0 + float(fired.mean()), **metrics})  # fmt: skip
        return points

    def differences(self, tandem: RowResult, others: list[RowResult], rows: np.ndarray | None = None) -> list[dict]:
        """Tandem minus each other row, per user (paired), with a seeded bootstrap 95% interval per metric.

        `rows` restricts the other rows to the users Tandem was run on (the language-model sample)."""
        out = []
        for other in others:
            entry: dict = {"tandem": f"{tandem.name} ({tandem.planner})", "versus": other.name,
                           "versus_planner": other.planner}  # fmt: skip
            for metric in COMPARED:
                diff = paired_bootstrap(tandem.per_user(metric), other.per_user(metric, rows),
                                        samples=self.config.bootstrap_samples, seed=self.config.seed)  # fmt: skip
                entry[metric] = {"diff": diff.diff, "low": diff.low, "high": diff.high, "users": diff.users}
            out.append(entry)
        return out

    # -- the whole run ------------------------------------------------------------------------------
    def run(self) -> dict:
        ws = self.ws
        cfg = self.config
        self.console.print("[bold]scoring the device encoders on the test and few-shot users[/]")
        chosen = seeded_sample(ws.splits.test, cfg.max_users, cfg.seed) if cfg.max_users else ws.splits.test
        test = self.evalset(chosen)
        sample = seeded_sample(test.instances, cfg.llm_users, cfg.seed) if cfg.llm_users else []
        sample_rows = test.subset({instance_key(i) for i in sample})
        all_rows = np.arange(len(test.instances))
        report: dict = {"meta": self.meta(test, len(sample_rows)), "modes": {}}
        short = {}
        if cfg.fewshot and ws.splits.heldout_users:
            for length in FEWSHOT_LENGTHS:
                instances = fewshot_prefixes(ws.dataset, ws.splits.heldout_users, length)
                if instances:
                    short[length] = self.evalset(instances)
        for fidelity in [f for f in HEADLINE_ORDER if f in cfg.fidelities]:
            self.console.print(f"[bold]query fidelity: {fidelity}[/]")
            mode = fidelity_mode(fidelity, cfg.phrasing)
            instances, families = with_fidelity(test.instances, fidelity, ws.dataset, cfg.seed, cfg.phrasing)
            few = {n: s.with_instances(with_fidelity(s.instances, fidelity, ws.dataset, cfg.seed, cfg.phrasing)[0])
                   for n, s in short.items()}  # fmt: skip
            llm = cfg.llm_fidelities is None or fidelity in cfg.llm_fidelities
            body = self.run_mode(test.with_instances(instances), all_rows, sample_rows if llm else all_rows[:0],
                                 mode, few)  # fmt: skip
            report["modes"][fidelity] = {"fidelity": fidelity, "query": FIDELITY_TEXT[fidelity],
                                         "phrasing": cfg.phrasing, "families": dict(Counter(families)),
                                         "example_query": instances[0].query, **body}  # fmt: skip
        if cfg.queries_file is not None:
            report["modes"]["file"] = self.run_file(load_query_file(cfg.queries_file, ws.dataset, ws.splits))
            report["meta"]["queries_file"] = {k: report["modes"]["file"][k] for k in ("path", "sha256", "lines")}
        return report

    def run_file(self, queries: QueryFile) -> dict:
        """The tables for a researcher's queries file (its users, its queries, its targets)."""
        self.console.print(f"[bold]queries file: {queries.path}[/]")
        evalset = self.evalset(queries.instances)
        rows = np.arange(len(evalset.instances))
        sample = seeded_sample(evalset.instances, self.config.llm_users, self.config.seed)
        sample_rows = evalset.subset({instance_key(i) for i in sample})
        body = self.run_mode(evalset, rows, sample_rows if self.config.llm_users else rows[:0], queries.mode, {})
        return {"fidelity": "file", "query": f"queries file {queries.path} (SHA-256 {queries.sha256})",
                "path": str(queries.path), "sha256": queries.sha256, "lines": len(queries.instances),
                "example_query": queries.instances[0].query, **body}  # fmt: skip

    def run_mode(self, test: EvalSet, all_rows: np.ndarray, sample_rows: np.ndarray, mode: str,
                 fewshot: dict[int, EvalSet]) -> dict:  # fmt: skip
        rule = PlanSetting("rule", mode)
        rule_cases = self.plans(test, all_rows, rule)
        abstracts, _ = planned(rule_cases, test, all_rows)
        base = self.baselines(test, mode, abstracts)
        tandem_rule, first, _ = self.tandem(test, all_rows, rule, "Tandem")
        main = [*base, tandem_rule]
        out: dict = {"main": [r.as_row() for r in main], "differences": {}}
        out["differences"]["main"] = self.differences(tandem_rule, base)
        raw_rule, _, _ = self.tandem(test, all_rows, PlanSetting("rule", mode, raw_input=True), "Tandem w/o AG")
        controls = [r for r in base if r.name in (TAG_BASELINE, FUSION_BASELINE)]
        lsc = next(r for r in base if r.name.startswith("LSC4Rec"))
        ablation = [tandem_rule, *controls, lsc, raw_rule, *self.earlier_semantics(test, all_rows, rule),
                    *self.ablations(test, all_rows, abstracts)]  # fmt: skip
        out["ablation"] = [r.as_row() for r in ablation]
        out["differences"]["ablation"] = self.differences(tandem_rule, ablation[1 + len(controls) + 1 :])
        buckets = test.bucket_rows()
        out["buckets"] = {r.name: {b: {"users": int(m.sum()), **r.metrics(m)} for b, m in buckets.items()}
                          for r in [*base, tandem_rule]}  # fmt: skip
        out["sweep"] = self.sweep(test, all_rows, rule, first)
        extra: list[RowResult] = []
        if self.config.headroom:
            out["headroom"], extra = headroom(self, test, all_rows, mode, abstracts, tandem_rule, base)
        if len(sample_rows):
            out["sample"] = self.sample_table(test, sample_rows, mode, [*main, *extra])
        if fewshot:
            out["fewshot"] = {}
            for length, evalset in fewshot.items():
                rows = np.arange(len(evalset.instances))
                cases = self.plans(evalset, rows, rule)
                few_abstracts, _ = planned(cases, evalset, rows)
                few_base = self.baselines(evalset, mode, few_abstracts)
                few_tandem = self.tandem(evalset, rows, rule, "Tandem")[0]
                out["fewshot"][str(length)] = {"users": len(rows),
                                               "rows": [r.as_row() for r in [*few_base, few_tandem]],
                                               "differences": self.differences(few_tandem, few_base)}  # fmt: skip
        return out

    def sample_table(self, test: EvalSet, rows: np.ndarray, mode: str, main: list[RowResult]) -> dict:
        """Like-for-like on the language-model sample: every main row restricted to it, plus Tandem (LLM)."""
        table = [r.as_row(rows) for r in main]
        llm = PlanSetting("llm", mode)
        tandem_llm, _, cases = self.tandem(test, rows, llm, "Tandem")
        table.append(tandem_llm.as_row())
        differences = self.differences(tandem_llm, main, rows)
        if mode != "none":
            raw, _, _ = self.tandem(test, rows, PlanSetting("llm", mode, raw_input=True), "Tandem w/o AG")
            table.append(raw.as_row())
            differences += self.differences(tandem_llm, [raw])
        statuses = [c.status for c in cases.values()]
        tokens = [c.plan_tokens for c in cases.values() if c.plan_tokens is not None]
        return {
            "rows": table,
            "differences": differences,
            "plan_status": {s: statuses.count(s) for s in ("parsed", "repaired", "fallback")},
            "abstract_s_p50": float(np.median([c.abstract_s for c in cases.values()])),
            "plan_s_p50": float(np.median([c.plan_s for c in cases.values()])),
            "plan_tokens_mean": float(np.mean(tokens)) if tokens else None,
            "distinct_plans": len({str(sorted(c.plan.items())) for c in cases.values()}),
        }

    def language_models(self) -> dict[str, str]:
        """Backend and model of each role, and the text encoder of Eq. 1-2, as the report names them."""
        roles = {role: self.settings.model_spec(role).label() for role in ("device", "cloud")}
        encoder = self.settings.embedding_spec().label()
        if self.cloud.space.precision != "fp32":  # Eq. 2's request texts (the item table is float32)
            encoder += f" (requests in {self.cloud.space.precision})"
        return roles | {"text encoder": encoder}

    def prompts(self) -> dict[str, str]:
        """The prompts of the language-model sample (name@version#digest) and what else its plans depend on: the
        plan adapter (CDA4Rec Eq. 8) or the labels behind retrieved exemplars, when the plan prompt uses them."""
        out = {"abstract": get_prompt(self.device.abstract_prompt).ident}
        llm = self.clouds.get("llm")
        if llm is not None:
            out["plan"] = get_prompt(llm.plan_prompt).ident
            for name, source in (("plan adapter", llm.adapter_source()), ("exemplars", llm.exemplar_source())):
                if source:
                    out[name] = source
        return out

    def digests(self, with_language_models: bool) -> dict[str, dict[str, str]]:
        """SHA-256 of every model file behind the numbers (`evals.digests.model_digests`)."""
        return model_digests(self.settings, self.ws, self.device, with_language_models)

    def meta(self, test: EvalSet, sample_users: int) -> dict:
        ws = self.ws
        cfg = self.config
        return {
            "data": ws.dataset.name,
            "protocol": PROTOCOL,
            "test_users": len(test.instances),
            "all_test_users": len(ws.splits.test),
            "fewshot_users": len(ws.splits.fewshot),
            "fewshot_lengths": list(FEWSHOT_LENGTHS),
            "llm_sample_users": sample_users,
            "seed": cfg.seed,
            "load": cfg.load,
            "fidelities": [f for f in HEADLINE_ORDER if f in cfg.fidelities],
            "phrasing": f"{cfg.phrasing} template families (tools/data/queries.py FAMILIES)",
            "bootstrap": f"paired bootstrap over users, {cfg.bootstrap_samples} resamples, seed {cfg.seed}, "
                         "95% percentile interval",
            "leak_controls": {TAG_BASELINE: "items carrying more of the tags the query names first (the rule "
                                            "planner's parser on the same abstract), SASRec order within",
                              FUSION_BASELINE: f"e_sem (alpha {FIXED_ALPHA:g}) over the whole catalog fused with "
                                               f"SASRec at beta {FIXED_BETA:g}, no planner"},
            "planners": {"main, ablation, buckets, sweep, fewshot": "rule planner (every user)",
                         "sample": "rule planner and language-model planner on the same seeded sample"},
            "language_models": self.language_models(),
            "prompts": self.prompts(),
            "encoders": {name: getattr(self.device.encoders.get(name), "checkpoint_info", None)
                         for name in ("SASRec", "SURGE")},  # fmt: skip
            "digests": self.digests(with_language_models=sample_users > 0),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU only",
        }
