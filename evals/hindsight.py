"""Hindsight labels (`tandem plans label`): every plan of the discretised space, scored for every labelled user.

Who is labelled: the VALIDATION instance of every training user (the second-to-last item is the target; the
test item is never read), once per query fidelity level, with queries phrased by the `dev` template families
(the `test` families stay unseen for `eval rec`). Each instance's abstract is the device's rule-built abstract
(scrubbed query + computed facts), as the rule planner's plans in `eval rec` use.

What is kept, under `$TANDEM_HOME/hindsight/<data>/<key>/` (the key digests the plan space, the encoder
checkpoints, the item embeddings and the rule and query versions, so nothing is mixed across them):
- `ranks-<fidelity>-<first>-<end>.npz`: the reward table, the validation item's 0-based rank under every point
  (the plan executor, `tools.plan_executor`, through the one rank step) and under the rule planner's own plan,
  written a chunk of users at a time (an interrupted run resumes at the first missing chunk);
- `selection.json`: how the generalising target was chosen, measured on validation leave-one-user-out;
- `labels.jsonl`: one line per labelled instance (abstract text, target plan JSON, reward summary), for people;
- `exemplars.npz` (and a copy at `$TANDEM_HOME/hindsight/<data>/exemplars.npz`): what the learned planners load.

The target. A single instance's argmax is noise (one item; hundreds of points tie at 0). The target of an
instance is the point with the best mean reward over its k nearest labelled abstracts of OTHER users (cosine in
the cloud's text space, pooled over fidelity levels: a planner cannot tell an exact query from a habit one), with
k chosen on validation leave-one-user-out among `K_CHOICES`, beside the alternatives it has to beat: the per-user
argmax carried over from the nearest neighbour, the best point per facts bucket, one best fixed point, and the
rule planner. Neither the instance nor its user's other fidelity levels (the same history and validation item:
the nearest neighbours of all, until version 2) are ever among its neighbours or in its bucket's sums, so the
score of a target is what a planner that had never seen the user would get.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agents.cloud.agent import CloudAgent
from agents.cloud.neighbours import abstract_vectors, neighbour_choice, selection_scores
from agents.device.agent import DeviceAgent
from evals.plan_pieces import executor_for, instance_pieces
from evals.rec import EvalSet, planned, structured_scores
from evals.rec_plans import PlanSetting, plan_instances
from evals.rec_queries import fidelity_mode, with_fidelity
from ground.files import write_json, write_text
from tools.checkpoints import file_digest
from tools.data import Fidelity
from tools.data.queries import QUERIES_VERSION
from tools.exemplar_index import exemplars_path, hindsight_dir
from tools.metrics import paired_bootstrap, per_user
from tools.plan_space import DEFAULT_SPACE, PlanSpace
from tools.protocol import Abstract
from tools.rule_planner import RULES_VERSION, rule_tags, signals_from_abstract
from tools.tag_index import RETRIEVAL_VERSION
from tools.workspace import Workspace

HINDSIGHT_VERSION = 3  # 2: targets chosen leave-one-USER-out (a user's fidelity levels share its validation item);
# 3: rewards mask every item seen before the validation item, not only the newest max_len (`EvalInstance.masked`)
FIDELITIES: tuple[Fidelity, ...] = ("none", "habit", "partial", "exact")
PHRASING = "dev"  # labels are made on development phrasings; evaluation uses the test families
K_CHOICES = (5, 10, 25, 50, 100, 200, 400)
CHUNK = 64
ENCODERS = ("SASRec", "SURGE")


class LabelLine(BaseModel):
    """One labelled instance, as a prompt engineer reads it."""

    key: str
    fidelity: str
    abstract: str
    target: dict
    target_point: dict
    reward: dict


@dataclass
class LabelSet:
    """The pooled reward table of every labelled instance, with what the targets are derived from."""

    keys: list[str]
    fidelities: list[str]
    abstracts: list[Abstract]
    ranks: np.ndarray  # [M, P] validation item's rank under every point
    rule_ranks: np.ndarray  # [M] under the rule planner's plan
    vectors: np.ndarray  # [M, d] unit abstract vectors
    miss: int


def label_key(device: DeviceAgent, cloud: CloudAgent, space: PlanSpace) -> str:
    """What the reward tables depend on: plan space, checkpoints, item embeddings and semantic head (the cloud's
    text space), rule, query and retrieval (Eq. 3) versions."""
    parts = [f"v{HINDSIGHT_VERSION}", space.digest, cloud.semantic_key, f"rules{RULES_VERSION}", f"q{QUERIES_VERSION}"]
    parts.append(f"eq3-{RETRIEVAL_VERSION}")  # Eq. 3 as retrieved (`tools.tag_index.fill_shares`)
    for name in ENCODERS:
        info = getattr(device.encoders.get(name), "checkpoint_info", None) or {}
        parts.append(file_digest(Path(info["path"])) if info.get("path") else "untrained")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


class Labeller:
    """Scores the plan space for the validation instances of one data set, resumably, then derives targets."""

    def __init__(self, ws: Workspace, device: DeviceAgent, cloud: CloudAgent, home: Path,
                 space: PlanSpace = DEFAULT_SPACE, console: Console | None = None, progress: bool = True,
                 max_users: int | None = None) -> None:  # fmt: skip
        self.ws, self.device, self.cloud, self.space = ws, device, cloud, space
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.points = space.points()
        self.known = ws.dataset.catalog.tags()
        self.key = label_key(device, cloud, space)
        self.dir = hindsight_dir(home, ws.dataset.name) / self.key
        self.plans_dir = home / "evals" / "plans"
        self.instances = ws.splits.valid[:max_users] if max_users else ws.splits.valid
        self.base = EvalSet(list(self.instances), ws.dataset.catalog.num_items)

    def chunk_path(self, fidelity: str, chunk: int) -> Path:
        """A chunk's file names its users (a run over fewer users never passes for a whole chunk)."""
        end = min((chunk + 1) * CHUNK, len(self.instances))
        return self.dir / f"ranks-{fidelity}-{chunk * CHUNK:05d}-{end:05d}.npz"

    def _chunks(self) -> list[tuple[str, int]]:
        count = -(-len(self.instances) // CHUNK)
        return [(f, c) for f in FIDELITIES for c in range(count)]

    # -- the reward tables ------------------------------------------------------------------------------
    def score(self) -> None:
        """Write every missing chunk of the reward tables (a progress bar over users)."""
        todo = [(f, c) for f, c in self._chunks() if not self.chunk_path(f, c).is_file()]
        done_users = sum(min(CHUNK, len(self.instances) - c * CHUNK) for f, c in self._chunks()) - sum(
            min(CHUNK, len(self.instances) - c * CHUNK) for f, c in todo)  # fmt: skip
        if not todo:
            self.console.print(f"reward tables: all {len(self._chunks())} chunks already scored ({self.dir})")
            return
        if not self.base.structured:
            for name in ENCODERS:
                self.base.structured[name], self.base.encode_ms[name] = structured_scores(
                    self.device.encoders.get(name), self.instances)  # fmt: skip
        executor = executor_for(self.base, self.ws.dataset.catalog)
        total = len(self.instances) * len(FIDELITIES)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=self.console, disable=not self.progress) as bar:
            task = bar.add_task(f"hindsight labels, {len(self.points)} plans each", total=total, completed=done_users)
            for fidelity in FIDELITIES:
                chunks = [c for f, c in todo if f == fidelity]
                if not chunks:
                    continue
                evalset, abstracts, rule_plans = self._planned(fidelity)
                for chunk in chunks:
                    rows = np.arange(chunk * CHUNK, min((chunk + 1) * CHUNK, len(self.instances)))
                    bar.update(task, description=f"hindsight labels, fidelity {fidelity}, users {rows[0]}-{rows[-1]}")
                    chunk_abstracts = [abstracts[r] for r in rows.tolist()]
                    pieces = instance_pieces(evalset, rows, chunk_abstracts, self.cloud,
                                             self.space.alphas)  # fmt: skip
                    ranks = np.empty((len(rows), len(self.points)), dtype=np.int32)
                    rule = np.empty(len(rows), dtype=np.int32)
                    for n, (p, abstract, row) in enumerate(zip(pieces, chunk_abstracts, rows.tolist(), strict=True)):
                        signals = signals_from_abstract(abstract, self.known)
                        ranks[n] = executor.rank_points(p, self.points, lambda k, s, g=signals: rule_tags(
                            g, self.known, k, s))  # fmt: skip
                        rule[n] = executor.rank(p, rule_plans[row])
                        bar.advance(task)
                    _save_npz(self.chunk_path(fidelity, chunk), users=rows, ranks=ranks, rule_ranks=rule)

    def _planned(self, fidelity: Fidelity) -> tuple[EvalSet, list[Abstract], list]:
        """The fidelity's instances (dev phrasings), their rule abstracts and rule plans (cached like eval rec's)."""
        instances, _ = with_fidelity(self.instances, fidelity, self.ws.dataset, self.ws.settings.seed, PHRASING)
        evalset = self.base.with_instances(instances) if self.base.structured else EvalSet(instances,
                                                                                           self.base.num_items)
        setting = PlanSetting("rule", fidelity_mode(fidelity, PHRASING))
        cases = plan_instances(self.device, self.cloud, instances, setting, self.ws.dataset.name, self.plans_dir,
                               progress=False)  # fmt: skip
        abstracts, plans = planned(cases, evalset, np.arange(len(instances)))
        return evalset, abstracts, plans

    # -- the pooled table -------------------------------------------------------------------------------
    def load(self) -> LabelSet:
        keys, fidelities, abstracts, ranks, rules = [], [], [], [], []
        for fidelity in FIDELITIES:
            _, fid_abstracts, _ = self._planned(fidelity)
            for f, chunk in self._chunks():
                if f != fidelity:
                    continue
                with np.load(self.chunk_path(f, chunk)) as data:
                    users = data["users"].tolist()
                    ranks.append(data["ranks"])
                    rules.append(data["rule_ranks"])
                keys += [f"{fidelity}:{self.ws.dataset.user_names[self.instances[u].user]}" for u in users]
                fidelities += [fidelity] * len(users)
                abstracts += [fid_abstracts[u] for u in users]
        vectors = abstract_vectors(abstracts, self.cloud.space)
        return LabelSet(keys, fidelities, abstracts, np.concatenate(ranks), np.concatenate(rules), vectors,
                        self.base.num_items + 1)  # fmt: skip


# ------------------------------------------------------------------------------------------- targets


def leave_one_out_neighbours(vectors: np.ndarray, count: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The `count` nearest other rows of every row [M, count], nearest first: never the row itself, and with
    `groups` (each row's user) never a row of the same group. A user is labelled at every fidelity level against
    one validation item, so its other rows would hand a row its own reward (as a near neighbour: same facts)."""
    similarity = vectors @ vectors.T
    if groups is None:
        np.fill_diagonal(similarity, -np.inf)
        count = min(count, len(vectors) - 1)
    else:
        groups = np.asarray(groups)
        similarity[groups[:, None] == groups[None, :]] = -np.inf
        count = min(count, len(vectors) - int(np.unique(groups, return_counts=True)[1].max()))
    part = np.argpartition(-similarity, count - 1, axis=1)[:, :count]
    order = np.argsort(-np.take_along_axis(similarity, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def facts_bucket(abstract: Abstract) -> str:
    """Query or not, density (sparse / moderate / dense) and recency: the facts a rule planner reads."""
    facts = abstract.facts
    density = facts.density if facts else "sparse"
    recent = "recent" if facts and facts.recent_30d >= 10 else "not recent"
    return f"{'query' if abstract.sanitized_query.strip() else 'no query'}, {density}, {recent}"


def label_users(keys: Sequence[str]) -> np.ndarray:
    """The user of each labelled instance (keys are "<fidelity>:<user>")."""
    return np.array([key.split(":", 1)[1] for key in keys])


def derive(labels: LabelSet) -> dict[str, np.ndarray]:
    """Each target derivation's chosen point per labelled instance, chosen without the rewards of the instance's
    user (its own row and its rows at the other fidelity levels, which share its validation item)."""
    scores = selection_scores(labels.ranks, labels.miss)
    users = label_users(labels.keys)
    neighbours = leave_one_out_neighbours(labels.vectors, max(K_CHOICES), users)
    out: dict[str, np.ndarray] = {"per-user argmax of the nearest neighbour": scores[neighbours[:, 0]].argmax(axis=1)}
    for k in K_CHOICES:
        out[f"kNN mean, k={k}"] = np.array([neighbour_choice(scores, neighbours[u, :k]) for u in range(len(scores))])
    buckets = [facts_bucket(a) for a in labels.abstracts]
    chosen = np.empty(len(scores), dtype=np.int64)
    for bucket in set(buckets):
        rows = np.array([n for n, b in enumerate(buckets) if b == bucket])
        total = scores[rows].sum(axis=0)
        for row in rows.tolist():
            chosen[row] = int(np.argmax(total - scores[rows[users[rows] == users[row]]].sum(axis=0)))
    out["best point per facts bucket"] = chosen
    total = scores.sum(axis=0)
    out["one best fixed point"] = np.array([int(np.argmax(total - scores[users == users[u]].sum(axis=0)))
                                            for u in range(len(scores))])  # fmt: skip
    return out


def selection_report(labels: LabelSet, derived: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Validation leave-one-out score of each derivation (the instance's own reward under the derived point),
    beside the rule planner and the per-instance argmax (an upper bound), with paired intervals vs the rule."""
    rows = np.arange(len(labels.ranks))
    rule = labels.rule_ranks
    table = {"rule planner": rule, "own argmax (upper bound, uses the instance's own item)":
             labels.ranks[rows, selection_scores(labels.ranks, labels.miss).argmax(axis=1)]}  # fmt: skip
    table |= {name: labels.ranks[rows, chosen] for name, chosen in derived.items()}
    out = {}
    for name, ranks in table.items():
        entry: dict = {m: float(per_user(ranks, m).mean()) for m in ("NDCG@10", "HR@10")}
        if name != "rule planner":
            for metric in ("NDCG@10", "HR@10"):
                d = paired_bootstrap(per_user(ranks, metric), per_user(rule, metric), seed=seed)
                entry[f"{metric} - rule"] = {"diff": d.diff, "low": d.low, "high": d.high}
        entry["per_fidelity_NDCG@10"] = {f: float(per_user(ranks[np.array(labels.fidelities) == f], "NDCG@10").mean())
                                         for f in FIDELITIES}  # fmt: skip
        out[name] = entry
    return out


def choose_derivation(report: dict) -> str:
    """The kNN derivation with the best validation leave-one-out NDCG@10 (the ones a planner can use)."""
    candidates = [name for name in report if name.startswith("kNN mean")]
    return max(candidates, key=lambda name: report[name]["NDCG@10"])


def write_labels(labeller: Labeller, labels: LabelSet, derived: dict[str, np.ndarray], report: dict,
                 chosen: str, home: Path) -> dict:  # fmt: skip
    """labels.jsonl (for people), exemplars.npz (for the planners, also copied beside the key folders),
    selection.json; returns the summary."""
    points = labeller.points
    scores = selection_scores(labels.ranks, labels.miss)
    target = derived[chosen]
    k = int(chosen.rsplit("=", 1)[1])
    lines = []
    for m, (key, fidelity, abstract) in enumerate(zip(labels.keys, labels.fidelities, labels.abstracts, strict=True)):
        point = points[int(target[m])]
        row = labels.ranks[m]
        best = int(scores[m].argmax())
        lines.append(LabelLine(
            key=key, fidelity=fidelity, abstract=abstract.as_text(),
            target=point.plan_for(abstract, labeller.known, f"hindsight target: {chosen}").model_dump(),
            target_point=point.as_dict(),
            reward={"target_rank": int(row[target[m]]),
                    "target_ndcg10": float(per_user(row[[target[m]]], "NDCG@10")[0]),
                    "rule_rank": int(labels.rule_ranks[m]),
                    "rule_ndcg10": float(per_user(labels.rule_ranks[[m]], "NDCG@10")[0]),
                    "own_best_rank": int(row[best]), "own_best_point": points[best].label,
                    "points_with_hit_at_10": int((row < 10).sum()), "points": len(points)},
        ))  # fmt: skip
    write_text(labeller.dir / "labels.jsonl", "".join(line.model_dump_json() + "\n" for line in lines))
    arrays = {"vectors": labels.vectors, "scores": scores, "k": np.array(k),
              "alpha": np.array([p.alpha for p in points]), "tag_count": np.array([p.tag_count for p in points]),
              "size": np.array([p.candidate_size for p in points]), "encoder": np.array([p.encoder for p in points]),
              "beta": np.array([p.beta for p in points]), "keys": np.array(labels.keys),
              "abstracts": np.array([a.as_text() for a in labels.abstracts]),
              "targets": np.asarray(target, dtype=np.int32), "key": np.array(labeller.key)}  # fmt: skip
    _save_npz(labeller.dir / "exemplars.npz", **arrays)
    _save_npz(exemplars_path(home, labeller.ws.dataset.name), **arrays)
    summary = {
        "data": labeller.ws.dataset.name, "key": labeller.key, "space": labeller.space.describe(),
        "labelled": {"instances": len(labels.keys), "users": len(labeller.instances),
                     "fidelities": list(FIDELITIES), "phrasing": PHRASING,
                     "split": "validation (second-to-last item); test items never read"},
        "reward": "NDCG@10 of the validation item (full ranking, history masked); ties broken by the untruncated NDCG",
        "neighbours": "cosine of the rule abstracts' text in the cloud's text space, pooled over fidelity levels, "
                      "leave-one-user-out (no instance of the same user: its fidelity levels share one validation "
                      "item)",
        "selection": report, "chosen": chosen, "k": k,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "loadavg": list(os.getloadavg()),
    }  # fmt: skip
    write_json(labeller.dir / "selection.json", summary)
    return summary


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically (a chunk is either complete or absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def run_labels(ws: Workspace, device: DeviceAgent, cloud: CloudAgent, home: Path, console: Console,
               progress: bool = True, max_users: int | None = None) -> tuple[dict, Path]:  # fmt: skip
    """Score, derive, select and write; returns the summary and the folder."""
    labeller = Labeller(ws, device, cloud, home, console=console, progress=progress, max_users=max_users)
    console.print(f"plan space: {labeller.space.describe()}")
    console.print(f"labelling {len(labeller.instances)} validation users x {len(FIDELITIES)} fidelity levels "
                  f"({PHRASING} phrasings) into {labeller.dir}")  # fmt: skip
    labeller.score()
    labels = labeller.load()
    derived = derive(labels)
    report = selection_report(labels, derived, seed=ws.settings.seed)
    chosen = choose_derivation(report)
    return write_labels(labeller, labels, derived, report, chosen, home), labeller.dir
