"""Benchmark the plan adapter (CDA4Rec Eq. 8) on held-out labelled validation users: `python -m
evals.bench_plan_adapter --data ml-100k`.

Protocol: the users the adapter's training held out (`state.json` `val_users`; the adapter never saw them), a
seeded sample of them, every labelled fidelity level of each (the rule-built abstract of `tandem plans label`,
frozen as the labels hold it), and their validation item (never a test item). Each planner plans each abstract;
every plan goes through the same pipeline as `tandem eval plans` (`evals.plan_accuracy.AccuracyBench`: the
cloud's Eq. 2-3, the device's one rank step, history masked, first pass), and regret is the NDCG@10 the plan
loses against the instance's hindsight target plan (the label's target point, `PlanPoint.plan_for`), paired
bootstrap 95% intervals over users (each user's mean over its fidelity levels).

Planners: the rule planner; the kNN learned planner over the TRAINING users' labels only (so it sees what the
adapter saw); the plan adapter (`plan_adapter@1` on the embedded Gemma with the GGUF LoRA, under the point
grammar; and, with `--free`, without a grammar: the raw parse rate); and on a smaller sample (`--llm-users`, the
base model is 5-10x slower per plan) the base model with the few-shot `plan_json@1` and with retrieved exemplars
(`plan_exemplars@1`, exemplars from the training users only, held in memory). Raw parse rate = share of plans
with status "parsed" (no repair). Wall-clock figures depend on the shared machine's load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from agents.cloud.agent import CloudAgent
from agents.cloud.neighbours import NeighbourPlanner
from evals.hindsight import exemplars_path
from evals.paired import paired_bootstrap
from evals.plan_accuracy import AccuracyBench, per_user
from evals.plan_suite import PlanCase
from graph.runtime import evaluation_agents, plan_adapter_file
from ground.files import write_json
from ground.settings import get_settings
from tools.checkpoints import file_digest
from tools.plan_adapter import ADAPTER_PROMPT, adapter_dir, labels_for, load_state
from tools.plan_schema import plan_to_compact
from tools.plan_space import PlanPoint
from tools.protocol import Abstract, Plan, PlanResult
from tools.workspace import Workspace

TARGET = "hindsight target"


def abstract_of(text: str) -> Abstract:
    """The frozen abstract back from its planning-prompt text (`Abstract.as_text`)."""
    query, _, summary = text.removeprefix("Query: ").partition(". Behavior: ")
    return Abstract(sanitized_query="" if query == "(none)" else query, behavior_summary=summary)


class TrainExemplars:
    """Few-shot exemplars from the training users' labels only, nearest by cosine (the same vectors and plans
    `tandem prompts exemplars build` puts in Chroma), so a held-out user never retrieves its own label."""

    def __init__(self, vectors: np.ndarray, abstracts: list[str], plans: list[dict]) -> None:
        self.vectors, self.abstracts, self.plans = vectors, abstracts, plans

    def __call__(self, vector: np.ndarray, k: int) -> list[dict]:
        order = np.argsort(-(self.vectors @ np.asarray(vector, np.float32)))[:k]
        return [{"abstract": self.abstracts[i], "plan": self.plans[i]} for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--users", type=int, default=40, help="held-out users for the adapter, rule and kNN")
    parser.add_argument("--llm-users", type=int, default=10, help="of those, users for the base-model prompts")
    parser.add_argument("--free", action="store_true", help="also run the adapter without a grammar")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    load_start = os.getloadavg()
    settings = get_settings()
    ws = Workspace(settings, args.data, progress=False)
    directory = adapter_dir(settings.models_dir, ws.dataset.name, ws.dataset.fingerprint())
    state = load_state(directory)
    gguf = plan_adapter_file(settings, ws)
    if state is None or gguf is None:
        raise SystemExit(f"no trained plan adapter at {directory}: `tandem train --planner --data {args.data}`")
    exemplars_file = exemplars_path(settings.home, ws.dataset.name)
    labels_file = labels_for(exemplars_file)
    lines = [json.loads(line) for line in labels_file.read_text().splitlines()]
    held = set(state.val_users)
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(sorted(held), size=min(args.users, len(held)), replace=False).tolist(), key=int)
    llm_users = set(users[: args.llm_users])
    chosen = [row for row in lines if row["key"].split(":", 1)[1] in set(users)]

    device, clouds = evaluation_agents(settings, ws)
    known = clouds["rule"].known_tags()
    with np.load(exemplars_file, allow_pickle=False) as data:
        keys = data["keys"].tolist()
        train_rows = np.array([i for i, k in enumerate(keys) if k.split(":", 1)[1] not in held])
        points = tuple(PlanPoint(float(a), int(t), int(n), str(e), float(b)) for a, t, n, e, b in
                       zip(data["alpha"], data["tag_count"], data["size"], data["encoder"], data["beta"],
                           strict=True))  # fmt: skip
        knn = NeighbourPlanner(data["vectors"][train_rows], data["scores"][train_rows], points, int(data["k"]),
                               f"hindsight-{data['key']}-train-users")  # fmt: skip
        by_key = {row["key"]: row for row in lines}
        exemplars = TrainExemplars(
            data["vectors"][train_rows], [by_key[keys[i]]["abstract"] for i in train_rows],
            [plan_to_compact(Plan.model_validate(by_key[keys[i]]["target"])) for i in train_rows])  # fmt: skip
    llm: CloudAgent = clouds["llm"]
    if llm.adapter_model is None:
        raise SystemExit("the cloud has no adapter model (is the cloud backend llamacpp?)")
    planners: dict[str, CloudAgent] = {
        "rule planner": clouds["rule"],
        "kNN (training users' labels)": replace(clouds["rule"], learned=knn),
        "plan adapter (plan_adapter@1, grammar)": replace(llm, plan_prompt=ADAPTER_PROMPT),
        "base few-shot (plan_json@1)": replace(llm, plan_prompt="plan_json@1"),
        "base + exemplars (plan_exemplars@1)": replace(llm, plan_prompt="plan_exemplars@1", exemplars=exemplars),
    }
    if args.free:
        planners["plan adapter (no grammar)"] = replace(llm, plan_prompt=ADAPTER_PROMPT, structured_output=False)
    base_only = {"base few-shot (plan_json@1)", "base + exemplars (plan_exemplars@1)"}

    valid = {ws.dataset.user_names[inst.user]: inst for inst in ws.splits.valid}
    cases = []
    for row in chosen:
        inst = valid[row["key"].split(":", 1)[1]]
        cases.append(PlanCase(case_id=row["key"], kind="regular", clarity=row["fidelity"], query="",
                              history=inst.history.tolist(), history_ts=inst.history_ts.tolist(),
                              target=int(inst.target), user=int(inst.user)))  # fmt: skip
    bench = AccuracyBench(device, clouds["rule"], cases)
    abstracts = {case.key: abstract_of(row["abstract"]) for case, row in zip(cases, chosen, strict=True)}
    targets = {case.key: PlanPoint(**row["target_point"]).plan_for(abstracts[case.key], known).model_dump()
               for case, row in zip(cases, chosen, strict=True)}  # fmt: skip
    results: dict[str, dict[str, PlanResult]] = {}
    seconds: dict[str, list[float]] = {}
    for name, cloud in planners.items():
        todo = [c for c, row in zip(cases, chosen, strict=True)
                if name not in base_only or row["key"].split(":", 1)[1] in llm_users]  # fmt: skip
        results[name], seconds[name] = {}, []
        for case in track(todo, description=name, console=console, transient=True):
            start = time.perf_counter()
            results[name][case.key] = cloud.plan(abstracts[case.key])
            seconds[name].append(time.perf_counter() - start)

    dumped = {k: a.model_dump() for k, a in abstracts.items()}
    target_ranks = dict(zip(bench.keys(), bench.ranks(dumped, targets), strict=True))
    user_of = {case.key: case.case_id.split(":", 1)[1] for case in cases}
    rows, per_user_out = {}, {}
    for name, planned in results.items():
        plans = {k: planned[k].plan.model_dump() if k in planned else targets[k] for k in bench.keys()}
        ranks = dict(zip(bench.keys(), bench.ranks(dumped, plans), strict=True))
        keys_here = [k for k in bench.keys() if k in planned]
        mine = per_user(np.array([ranks[k] for k in keys_here]))
        best = per_user(np.array([target_ranks[k] for k in keys_here]))
        by_user: dict[str, list[int]] = {}
        for i, k in enumerate(keys_here):
            by_user.setdefault(user_of[k], []).append(i)
        ulist = sorted(by_user, key=int)
        mine_u = np.array([mine["NDCG@10"][by_user[u]].mean() for u in ulist])
        best_u = np.array([best["NDCG@10"][by_user[u]].mean() for u in ulist])
        hr_u = np.array([mine["HR@10"][by_user[u]].mean() for u in ulist])
        regret = paired_bootstrap("NDCG@10", mine_u, best_u)  # delta = target - planner
        statuses = [planned[k].status for k in keys_here]
        fidelity_regret = {}
        for fid in ("none", "habit", "partial", "exact"):
            idx = [i for i, k in enumerate(keys_here) if k.startswith(fid + ":")]
            if idx:
                fidelity_regret[fid] = float((best["NDCG@10"][idx] - mine["NDCG@10"][idx]).mean())
        rows[name] = {
            "instances": len(keys_here), "users": len(ulist), "HR@10": float(hr_u.mean()),
            "NDCG@10": float(mine_u.mean()), "target NDCG@10": float(best_u.mean()),
            "regret NDCG@10": regret.model_dump(), "regret by fidelity": fidelity_regret,
            "raw parse rate": statuses.count("parsed") / len(statuses),
            "status counts": {s: statuses.count(s) for s in sorted(set(statuses))},
            "plan s p50": float(np.median(seconds[name])) if seconds[name] else None,
            "points": {p: sum(1 for k in keys_here if _label(planned[k]) == p)
                       for p in sorted({_label(planned[k]) for k in keys_here})} if "adapter" in name else None,
        }  # fmt: skip
        per_user_out[name] = {"users": ulist, "NDCG@10": mine_u.tolist(), "target": best_u.tolist()}
    # paired: adapter minus each other planner on the users both planned
    adapter = "plan adapter (plan_adapter@1, grammar)"
    versus = {}
    for name in rows:
        if name == adapter:
            continue
        common = [u for u in per_user_out[name]["users"] if u in set(per_user_out[adapter]["users"])]
        a = [per_user_out[name]["NDCG@10"][per_user_out[name]["users"].index(u)] for u in common]
        b = [per_user_out[adapter]["NDCG@10"][per_user_out[adapter]["users"].index(u)] for u in common]
        versus[name] = paired_bootstrap("NDCG@10", a, b).model_dump()  # delta = adapter - other

    table = Table(title=f"planners on held-out labelled validation users ({args.data}; validation item, history "
                        "masked, first pass; regret = hindsight target NDCG@10 - planner's, 95% CI over users)")
    for column in ("planner", "users", "inst.", "raw parse", "HR@10", "NDCG@10", "regret [95% CI]",
                   "adapter - this [95% CI]", "plan p50 s"):  # fmt: skip
        table.add_column(column, justify="left" if column == "planner" else "right")
    for name, row in rows.items():
        r = row["regret NDCG@10"]
        v = versus.get(name)
        table.add_row(name, str(row["users"]), str(row["instances"]), f"{row['raw parse rate']:.2f}",
                      f"{row['HR@10']:.3f}", f"{row['NDCG@10']:.3f}",
                      f"{r['delta']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]",
                      f"{v['delta']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" if v else "",
                      f"{row['plan s p50']:.2f}" if row["plan s p50"] is not None else "-")  # fmt: skip
    Console().print(table)
    shelf = device.encoders
    checkpoints = {}
    for enc in ("SASRec", "SURGE"):
        info = getattr(shelf.get(enc), "checkpoint_info", None) or {}
        if info.get("path"):
            checkpoints[enc] = file_digest(Path(info["path"]))[:16]
    result = {
        "bench": "plan_adapter", "data": args.data, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "command": f"python -m evals.bench_plan_adapter --data {args.data} --users {args.users} --llm-users "
                   f"{args.llm_users}" + (" --free" if args.free else ""),
        "adapter": {"gguf": str(gguf.name), "sha256": file_digest(gguf), "bytes": gguf.stat().st_size,
                    "steps": state.step, "train_seconds": round(state.seconds, 1), "stopped_by": state.stopped_by,
                    "data_digest": state.data_digest, "train_examples": state.train_examples,
                    "val_examples": state.val_examples, "val_users": len(state.val_users), "config": state.config,
                    "last_curve_point": state.curve[-1],
                    "adapter_dir_bytes": sum(p.stat().st_size for p in (directory / "adapter").rglob("*")
                                             if p.is_file())},  # fmt: skip
        "labels": {"file": str(labels_file), "sha256": file_digest(labels_file)[:16], "instances": len(lines)},
        "checkpoints": checkpoints, "base_gguf_sha256": file_digest(Path(llm.planner_model.model_path))[:16],
        "users": users, "llm_users": sorted(llm_users, key=int),
        "rows": rows, "adapter_minus": versus, "per_user": per_user_out,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_start": load_start,
                    "load_end": os.getloadavg()},
    }  # fmt: skip
    out = args.out or Path("evals/results") / f"plan_adapter_{args.data}.json"
    write_json(out, result)
    console.print(f"wrote {out} and {plot_result(result, out.with_suffix('.png'))}")


def plot_result(result: dict, path: Path) -> Path:
    """Each planner's regret against the hindsight target with its 95% interval (PNG beside the JSON)."""
    from matplotlib.figure import Figure  # deferred: only needed when the plot is written

    names = list(result["rows"])
    regrets = [result["rows"][n]["regret NDCG@10"] for n in names]
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.errorbar([r["delta"] for r in regrets], y, fmt="o",
                xerr=[[r["delta"] - r["low"] for r in regrets], [r["high"] - r["delta"] for r in regrets]])
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set_yticks(y, [f"{n} (n={result['rows'][n]['users']} users)" for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("NDCG@10 regret vs hindsight target (validation item; lower is better)")
    ax.set_title(f"plan adapter ({result['adapter']['steps']} steps) vs other planners, held-out users, "
                 f"{result['data']}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def _label(result: PlanResult) -> str:
    return PlanPoint.of_plan(result.plan).label


if __name__ == "__main__":
    main()
