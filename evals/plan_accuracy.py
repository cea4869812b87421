"""Downstream accuracy of plans: HR@10 / NDCG@10 of the lists the plans of a prompt produce.

The regular cases of the plan suite are validation users with their validation item (`evals.plan_suite`);
their frozen abstracts and each planner's plans go through the same steps `tandem eval rec` and the graph
use: the cloud's Eq. 2-3 (`CloudAgent.semantic_batch`) and the device's one rank step (`DeviceAgent.rank`,
Eq. 5-7), over the device encoders' scores (`evals.rec.run_pipeline`, first pass, no re-request). The target
is ranked against all items with the history masked; a target outside the candidates is a miss. Test items
are never used. The rule planner, reading the same frozen abstracts, is scored on the same users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.cloud.agent import CloudAgent
from agents.device.agent import DeviceAgent
from evals.plan_suite import PlanCase
from evals.rec import EvalSet, run_pipeline, structured_scores
from tools.protocol import Abstract, Plan

K = 10


class AccuracyBench:
    """The regular cases as evaluation instances, with the device encoders' scores computed once."""

    def __init__(self, device: DeviceAgent, cloud: CloudAgent, cases: Sequence[PlanCase]) -> None:
        self.device, self.cloud = device, cloud
        self.cases = [c for c in cases if c.target is not None]
        instances = [c.instance() for c in self.cases]
        self.evalset = EvalSet(instances, device.catalog.num_items)
        for name in ("SASRec", "SURGE"):
            if device.encoders.available(name):
                self.evalset.structured[name], self.evalset.encode_ms[name] = structured_scores(
                    device.encoders.get(name), instances)

    def keys(self) -> list[str]:
        return [c.key for c in self.cases]

    def ranks(self, abstracts: dict[str, dict], plans: dict[str, dict]) -> np.ndarray:
        """0-based rank of each case's validation item under these plans (num_items + 1 = not in the list)."""
        rows = np.arange(len(self.cases))
        frozen = [Abstract.model_validate(abstracts[c.key]) for c in self.cases]
        chosen = [self._runnable(Plan.model_validate(plans[c.key])) for c in self.cases]
        return run_pipeline(self.evalset, rows, frozen, chosen, self.cloud, self.device).ranks

    def _runnable(self, plan: Plan) -> Plan:
        """The plan with the encoder the device actually runs (`DeviceAgent.resolve_encoder`)."""
        if not plan.uses_encoder:
            return plan
        encoder, _ = self.device.resolve_encoder(plan.encoder)
        if encoder not in self.evalset.structured:
            encoder = "SASRec"
        return plan if encoder == plan.encoder else plan.model_copy(update={"encoder": encoder})


def per_user(ranks: np.ndarray, k: int = K) -> dict[str, np.ndarray]:
    """Per-user HR@k and NDCG@k (their means are `tools.metrics`' HR@k and NDCG@k), for paired intervals."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < k
    return {f"HR@{k}": hit.astype(np.float64), f"NDCG@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)}
