"""Both agents without the graph: the request's main path for many users at once, for training and calibration.

The graph runs these same agent methods with branches, a cache and a boundary in between; where none of that
is needed (sampling LSC4Rec's re-request threshold, the cloud candidate pools of cooperative training, the
staleness samples of SCaLRec's calibrator), these helpers call them directly. They expect agents built for
rules (no language model), so that thousands of users take seconds, and they say so in what they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from rich.progress import track

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import EMPTY_SUMMARY, TextSpace
from agents.device.agent import DeviceAgent
from tools.data import EvalInstance
from tools.embeddings import embed_texts
from tools.fusion import Ranking
from tools.protocol import Abstract, Plan
from tools.semantic_head import (
    CUTS_PER_USER,
    SummaryCase,
    SummaryExamples,
    cached_examples,
    instance_cases,
    training_cases,
)
from tools.workspace import Workspace

SUMMARY_VERSION = 1  # of the rule summaries behind cached head examples (bump when the device's rules change)


def behaviour_abstract(device: DeviceAgent, history: np.ndarray) -> Abstract:
    """The abstract of a history with no query, written by the rules (CDA4Rec III-B without the SLM)."""
    return device.abstract("", history.tolist(), list(range(len(history))), use_model=False).abstract


def rank_request(
    device: DeviceAgent, cloud: CloudAgent, query: str, history: np.ndarray, timestamps: np.ndarray,
    seen: np.ndarray | None = None,
) -> tuple[Plan, Ranking]:
    """One request's main path: abstract, plan, Eq. 2-3 in the cloud, Eq. 4 and the rank step on the device.
    `seen`: the items the ranking leaves out (default: the history; an instance's `masked` when it was cut)."""
    abstract = device.abstract(query, history.tolist(), timestamps.tolist(), use_model=False).abstract
    plan = cloud.plan(abstract).plan
    answer = cloud.semantic(abstract, plan)
    structured = None
    if plan.uses_encoder and len(history):
        name, _ = device.resolve_encoder(plan.encoder)
        structured = device.structured_scores(name, device.encode(name, history).e_str)
    masked = history if seen is None else seen
    return plan, device.rank(answer.candidates, answer.scores, plan.beta, masked, structured)


def inconsistency_sample(
    device: DeviceAgent, cloud: CloudAgent, instances: Sequence[EvalInstance], size: int = 64, seed: int = 42
) -> list[float]:
    """LSC4Rec Eq. 11 for a seeded sample of (validation) instances, ranked exactly as a request is served."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(instances), size=min(size, len(instances)), replace=False)
    scores = []
    for n in picked.tolist():
        inst = instances[n]
        _, ranking = rank_request(device, cloud, inst.query, inst.history, inst.history_ts, inst.masked)
        scores.append(ranking.inconsistency)
    return scores


def behaviour_embeddings(device: DeviceAgent, cloud: CloudAgent, histories: Sequence[np.ndarray]) -> np.ndarray:
    """e_sem (CDA4Rec Eq. 2) the cloud computes from behaviour-only abstracts of these histories [N, d]."""
    abstracts = [behaviour_abstract(device, h) for h in histories]
    vectors = cloud.semantic_embeddings(abstracts, [0.0] * len(abstracts))  # one side: none has a query
    return np.stack(vectors) if vectors else np.zeros((0, cloud.no_query_side.space.dim), np.float32)


def candidate_pools(
    device: DeviceAgent, cloud: CloudAgent, train: dict[int, np.ndarray], progress: bool = True
) -> dict[int, np.ndarray]:
    """For every training user, the candidates the cloud returns for the behaviour-only abstract (Eq. 2-3),
    without the user's own items: the negatives of LSC4Rec 3.2.2's cooperative training."""
    users = [u for u, seq in train.items() if len(seq) >= 2]
    steps = track(users, description="cloud abstracts and plans") if progress else users
    abstracts = [behaviour_abstract(device, train[u]) for u in steps]
    plans = [cloud.plan(a).plan for a in abstracts]
    answers = cloud.semantic_batch(abstracts, plans)
    return {u: a.candidates[~np.isin(a.candidates, train[u])] for u, a in zip(users, answers, strict=True)}


def summary_examples(device: DeviceAgent, space: TextSpace, cases: Sequence[SummaryCase], label: str = "summaries",
                     progress: bool = True) -> SummaryExamples:  # fmt: skip
    """The semantic head's examples (`tools.semantic_head`): for each case, the behaviour summary the device writes
    for its history with no query (the rules, as `behaviour_abstract` but with the real timestamps), encoded by
    the cloud's text encoder, with the next item as the target. Only the summary text reaches the encoder."""
    steps = track(cases, description=f"abstracts ({label})") if progress else cases
    summaries = [device.abstract("", case.history.tolist(), case.timestamps.tolist(), use_model=False)
                 .abstract.behavior_summary.strip() or EMPTY_SUMMARY for case in steps]  # fmt: skip
    distinct = list(dict.fromkeys(summaries))
    vectors = embed_texts(distinct, progress=progress, encoder=space.semantics.encoder)
    where = {text: row for row, text in enumerate(distinct)}
    raw = vectors[[where[text] for text in summaries]] if summaries else np.zeros((0, 0), np.float32)
    targets = np.array([case.target for case in cases], dtype=np.int64)
    return SummaryExamples(raw.astype(np.float32), targets, [case.history for case in cases])


def head_examples(device: DeviceAgent, space: TextSpace, ws: Workspace, names: Sequence[str],
                  progress: bool = True) -> dict[str, SummaryExamples]:  # fmt: skip
    """The semantic head's training ("train"), validation ("valid") and test ("test") examples of a workspace,
    written once under `$TANDEM_HOME/semantic/` and read back on later runs. A validation or test example masks
    every item its user saw before the target (`EvalInstance.masked`, as `eval rec` does), not only the history
    its summary was written from; the encoders still read that history (the newest `max_len` of them)."""
    seed = ws.settings.seed
    instances = {"valid": ws.splits.valid, "test": ws.splits.test}
    cases = {"train": lambda: training_cases(ws.dataset, ws.splits, CUTS_PER_USER, seed),
             "valid": lambda: instance_cases(instances["valid"]), "test": lambda: instance_cases(instances["test"])}
    labels = {"train": "training users", "valid": "validation users", "test": "test users"}
    out = {}
    for name in names:
        key = f"{space.semantics.key}-summaries{SUMMARY_VERSION}-cuts{CUTS_PER_USER}-seed{seed}-{name}.npz"
        examples = cached_examples(ws.settings.home / "semantic" / key,
                                   lambda name=name: summary_examples(device, space, cases[name](), labels[name],
                                                                      progress))  # fmt: skip
        if name in instances:
            examples = replace(examples, seen=[inst.masked for inst in instances[name]])
        out[name] = examples
    return out
