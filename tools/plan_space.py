"""The discretised plan space that hindsight labels, the oracle row and the learned planners search over.

A point fixes the numbers of a CDA4Rec Fig. 4 plan: alpha (Eq. 2), tag count and candidate size (Eq. 3),
encoder (Eq. 4) and beta (Eq. 5). The tags themselves and their weights are not searched: a point is made
into a plan for one abstract with the tags the rule planner prefers for it (query tags, then recent, then
long-term, then the catalogue's order) and the rule planner's weights (`tools.rule_planner.rule_tags`), as the
CDA4Rec Table IV settings of `tandem eval rec` are. What the grid holds, and why:
- alpha {0, 0.3, 0.6, 1}: without a query every alpha gives the same e_sem (the summary alone);
- tag counts {3, 5, 10, 20} x candidate sizes {500, 1000, 2000, 5000}: the whole allowed set of each;
- encoder x beta: SASRec and SURGE each with beta {0, 0.1, 0.3, 0.5}, and no encoder (beta 1 by definition,
  `tools.protocol.effective_beta`). Beta is dense near 0 because the structured encoder carries most of the
  signal on MovieLens (the rule planner's own beta was tuned to 0 / 0.3 on validation), and semantic-heavy
  fusion measured below beta 0.5 on a first probe of 72 fixed plans.
That is 4 x 16 x 9 = 576 points (144 distinct plans without a query). A first grid of 1,040 points (5 alphas,
6 betas per encoder) cost about 1 s per user on the shared 2-core machine: too slow to score every test user
for the oracle row in every fidelity level.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tools.protocol import CANDIDATE_SIZES, TAG_COUNTS, Abstract, Plan, effective_beta
from tools.rule_planner import rule_tags, signals_from_abstract, usable_tag_counts


@dataclass(frozen=True, order=True)
class PlanPoint:
    """The numbers of one plan: alpha (Eq. 2), tag count and candidate size (Eq. 3), encoder (Eq. 4), beta (Eq. 5)."""

    alpha: float
    tag_count: int
    candidate_size: int
    encoder: str
    beta: float

    @property
    def label(self) -> str:
        return (f"a{self.alpha:g}-k{self.tag_count}-n{self.candidate_size}-{self.encoder}-"
                f"b{effective_beta(self.encoder, self.beta):g}")  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)

    def plan_for(self, abstract: Abstract, known_tags: Sequence[str], why: str = "") -> Plan:
        """This point as a plan for `abstract`: the tags the rule planner prefers for it, its weights."""
        known = list(known_tags)
        count = min(self.tag_count, usable_tag_counts(known)[-1])
        tags = rule_tags(signals_from_abstract(abstract, known), known, count, self.candidate_size)
        why = why or f"plan space point {self.label}"
        return Plan.model_validate(
            {"alpha": self.alpha, "tag_count": count, "candidate_size": self.candidate_size, "tags": tags,
             "encoder": self.encoder, "beta": self.beta,
             "explanations": {"semantic": why, "retrieval": why, "structured": why, "ranking": why}},
            context={"known_tags": known},
        )  # fmt: skip

    @classmethod
    def of_plan(cls, plan: Plan) -> PlanPoint:
        """The numbers of any plan (its tags aside)."""
        return cls(plan.alpha, plan.tag_count, plan.candidate_size, plan.encoder, plan.beta)


@dataclass(frozen=True)
class PlanSpace:
    """A grid of plan points (see the module docstring for the default and its reasons)."""

    alphas: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0)
    tag_counts: tuple[int, ...] = TAG_COUNTS
    sizes: tuple[int, ...] = CANDIDATE_SIZES
    encoder_betas: tuple[tuple[str, float], ...] = (
        *(("SASRec", b) for b in (0.0, 0.1, 0.3, 0.5)),
        *(("SURGE", b) for b in (0.0, 0.1, 0.3, 0.5)),
        ("none", 1.0),
    )

    def points(self) -> list[PlanPoint]:
        """Every point, alpha outermost, then tag count, size, encoder and beta (a fixed order: reward tables
        are indexed by it)."""
        return [PlanPoint(a, k, n, e, b) for a in self.alphas for k in self.tag_counts for n in self.sizes
                for e, b in self.encoder_betas]  # fmt: skip

    def __len__(self) -> int:
        return len(self.alphas) * len(self.tag_counts) * len(self.sizes) * len(self.encoder_betas)

    @property
    def digest(self) -> str:
        """Identifies the grid: reward tables made over another grid are never mixed with this one's."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        betas = ", ".join(f"{e} {b:g}" for e, b in self.encoder_betas)
        return (f"alpha {{{', '.join(f'{a:g}' for a in self.alphas)}}} x tag count {{{_join(self.tag_counts)}}} x "
                f"candidate size {{{_join(self.sizes)}}} x encoder/beta {{{betas}}}: {len(self)} points; tags and "
                "weights as the rule planner prefers them for the abstract")  # fmt: skip


def _join(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


DEFAULT_SPACE = PlanSpace()
