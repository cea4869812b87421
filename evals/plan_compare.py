"""`tandem eval plans --compare A B`: two planning prompts, one invocation, the same frozen inputs, a verdict.

What keeps the comparison honest:
- both prompts plan the same cases from the same frozen abstracts (written once by the device, reused), so
  a difference can only come from the prompt;
- both are run fresh in this invocation, alternating which goes first case by case, so neither side's
  latency comes from another run on a differently loaded machine (nothing is read from earlier results);
- a case counts as changed only when the plan's decisions changed (alpha, tags, sizes, encoder, beta);
- the verdict compares validity, decision tips and downstream accuracy with paired bootstrap intervals and
  says "no significant difference" when no interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.progress import track
from rich.table import Table

from agents.cloud.agent import CloudAgent
from evals.paired import PairedDelta, paired_bootstrap
from evals.plan_suite import PlanCase
from evals.plans import CaseScore, FrozenAbstract, score_plan, tip_share

VERDICT_METRICS = ("valid as written", "tips followed (raw)", "HR@10", "NDCG@10")


def run_compare(
    a: CloudAgent, b: CloudAgent, suite: Sequence[PlanCase], frozen: dict[str, FrozenAbstract], progress: bool = True
) -> tuple[list[CaseScore], list[CaseScore]]:
    """Both prompts on every case, fresh, alternating which plans first (A first on even cases)."""
    out_a, out_b = [], []
    cases = list(enumerate(suite))
    for n, case in track(cases, description=f"{a.plan_prompt} vs {b.plan_prompt}") if progress else cases:
        if n % 2 == 0:
            out_a.append(score_plan(a, case, frozen[case.key]))
            out_b.append(score_plan(b, case, frozen[case.key]))
        else:
            out_b.append(score_plan(b, case, frozen[case.key]))
            out_a.append(score_plan(a, case, frozen[case.key]))
    return out_a, out_b


def changed_plans(a: Sequence[CaseScore], b: Sequence[CaseScore]) -> list[tuple[str, str]]:
    """Cases whose plan decisions differ between the two runs: (case, what changed)."""
    by_key = {s.case_key: s for s in b}
    changes = []
    for old in a:
        new = by_key.get(old.case_key)
        if new is None or old.decisions() == new.decisions():
            continue
        before, after = old.decisions(), new.decisions()
        fields = [f"{k} {_short(before.get(k))} -> {_short(after.get(k))}" for k in before
                  if before.get(k) != after.get(k)]  # fmt: skip
        changes.append((old.case_id, "; ".join(fields)))
    return changes


def _short(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def case_metrics(scores: Sequence[CaseScore]) -> dict[str, np.ndarray]:
    """Per-case values of the plan-level metrics (NaN where a metric does not apply)."""
    tips = [tip_share(s) for s in scores]
    return {
        "valid as written": np.array([float(s.status == "parsed") for s in scores]),
        "tips followed (raw)": np.array([np.nan if t is None else t for t in tips], dtype=np.float64),
        "plan latency (s)": np.array([np.nan if s.latency_s is None else s.latency_s for s in scores]),
    }


def paired_deltas(a: dict[str, np.ndarray], b: dict[str, np.ndarray], seed: int = 0) -> list[PairedDelta]:
    """b - a for every metric both sides have, with paired bootstrap intervals."""
    return [paired_bootstrap(name, a[name], b[name], seed=seed) for name in a if name in b]


def verdict(a_ref: str, b_ref: str, deltas: Sequence[PairedDelta]) -> str:
    """One line: which prompt is better on which metric (intervals excluding 0), or no significant difference."""
    judged = [d for d in deltas if d.metric in VERDICT_METRICS]
    better_b = [d for d in judged if d.significant and d.delta > 0]
    better_a = [d for d in judged if d.significant and d.delta < 0]
    level = "95% paired bootstrap"
    if not better_a and not better_b:
        names = ", ".join(d.metric for d in judged)
        return f"verdict: no significant difference between {a_ref} and {b_ref} ({names}; {level})"
    parts = []
    for ref, found in ((b_ref, better_b), (a_ref, better_a)):
        if found:
            parts.append(f"{ref} better on " + ", ".join(f"{d.metric} ({b_ref} - {a_ref} {d.text()})" for d in found))
    same = [d.metric for d in judged if not d.significant]
    if same:
        parts.append("no significant difference on " + ", ".join(same))
    return "verdict: " + "; ".join(parts) + f" ({level})"


def delta_table(title: str, a_ref: str, b_ref: str, deltas: Sequence[PairedDelta]) -> Table:
    """Metric, A, B, B - A with its interval, and the number of paired cases."""
    table = Table(title=title)
    for column in ("metric", a_ref, b_ref, f"{b_ref} - {a_ref} [95% CI]", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for d in deltas:
        mark = " *" if d.significant else ""
        table.add_row(d.metric, f"{d.a:.3f}", f"{d.b:.3f}", d.text() + mark, str(d.n))
    return table
