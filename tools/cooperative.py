"""LSC4Rec 3.2.2 collaborative training: fine-tune the device encoder on the cloud's candidate lists.

At inference the device model only reorders the cloud's candidates, so what it must learn is to tell the
next item apart from the other items the cloud would retrieve for that user, not from random catalogue
items. Cooperative fine-tuning therefore replaces uniform negatives by negatives drawn from each user's
cloud candidate list (`agents.pipeline.candidate_pools`: the abstract the device would send, the rule plan,
Eq. 2 and Eq. 3 over the tag groups), with the pairwise loss of CDA4Rec Eq. 10:

    L = -sum_j log sigma(y_pos - y_j),   j ~ Uniform(C_u minus the user's own items)

or, with `loss="ce"`, the softmax cross-entropy of the positive against the same sampled candidates (the
objective the encoders were trained with, restricted to the items the device will actually order):

    L = -y_pos + log(exp(y_pos) + sum_j exp(y_j))

Training starts from the trained checkpoint, keeps the epoch with the best validation NDCG@10 (full
ranking), and stops early like `train_encoder`.

Whether the device then uses it is decided on the device's real criterion (`within_candidates`): on validation
users, the rank of the next item inside the cloud's candidate list for that user (history masked; a target the
cloud did not retrieve is a miss). The decision is written beside the checkpoints (`write_choice`) and the
encoder shelf follows it (`chosen_checkpoint`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from ground.files import write_json
from tools.checkpoints import file_digest
from tools.data import EvalInstance, Splits
from tools.encoders import SequentialEncoder, pad_left
from tools.metrics import evaluate, metrics_from_ranks
from tools.training import bpr_loss, pair_scores


@dataclass
class CooperativeResult:
    model: SequentialEncoder
    before: dict[str, float]
    best_valid: dict[str, float]
    best_epoch: int
    epochs_run: int
    seconds: float


def _pool_negatives(
    pools: list[np.ndarray], shape: tuple[int, int, int], num_items: int, rng: np.random.Generator
) -> torch.Tensor:
    """[B, T, K] negatives, row b drawn from pools[b] (uniform over the catalogue when a pool is empty)."""
    _, steps, k = shape
    out = np.empty(shape, dtype=np.int64)
    for b, pool in enumerate(pools):
        if len(pool):
            out[b] = pool[rng.integers(0, len(pool), size=(steps, k))]
        else:
            out[b] = rng.integers(1, num_items + 1, size=(steps, k))
    return torch.from_numpy(out)


def candidate_softmax_loss(user: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                           items: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy of each positive against its sampled candidates: user [N, d], positives [N], negatives
    [N, K] (item ids), items [V + 1, d]."""
    y_pos, y_neg = pair_scores(user, positives, negatives, items)
    logits = torch.cat([y_pos, y_neg.masked_fill(negatives == positives[:, None], float("-inf"))], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(positives), dtype=torch.long,
                                                                 device=logits.device))  # fmt: skip


def cooperative_finetune(
    model: SequentialEncoder,
    splits: Splits,
    pools: dict[int, np.ndarray],
    *,
    epochs: int = 5,
    patience: int = 2,
    lr: float = 2e-4,
    batch_size: int = 128,
    negatives: int = 4,
    loss: str = "bpr",
    seed: int = 42,
    time_budget_s: float | None = None,
    max_valid: int | None = 2000,
    progress: bool = True,
    criterion: Callable[[SequentialEncoder], dict[str, float]] | None = None,
) -> CooperativeResult:
    """Fine-tune `model` (in place, best epoch kept) with negatives from the cloud's candidate lists, by BPR
    (`loss="bpr"`, CDA4Rec Eq. 10) or softmax CE over the sampled candidates (`loss="ce"`).

    Epochs are chosen by `criterion` (metrics of a model; `within_candidates` for the device's own criterion),
    by default full-ranking validation metrics over the first `max_valid` validation users."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    valid = splits.valid[:max_valid] if max_valid else splits.valid
    criterion = criterion or (lambda m: evaluate(m, valid).metrics)
    before = criterion(model)
    best_state, best_valid, best_epoch, stale = copy.deepcopy(model.state_dict()), before, 0, 0
    users = [u for u in pools if len(splits.train[u]) >= 2]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    started, epochs_run = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(users))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        steps = track(batches, description=f"cooperative epoch {epoch}") if progress else batches
        for batch in steps:
            picked = [users[i] for i in batch]
            seqs = [splits.train[u] for u in picked]
            inputs = pad_left([s[:-1] for s in seqs], model.max_len)  # [B, L]
            targets = pad_left([s[1:] for s in seqs], model.max_len)  # [B, L]
            out = model.training_outputs(inputs)  # [B, T, d] (T = L per position, else 1)
            targets = targets[:, -out.shape[1] :]
            shape = (len(picked), out.shape[1], negatives)
            neg = _pool_negatives([pools[u] for u in picked], shape, model.item_emb.num_embeddings - 1, rng)
            keep = targets > 0  # [B, T]
            objective = bpr_loss if loss == "bpr" else candidate_softmax_loss
            value = objective(out[keep], targets[keep], neg[keep], model.item_emb.weight)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            with torch.no_grad():
                model.item_emb.weight[0].zero_()
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                break
        epochs_run = epoch
        model.eval()
        metrics = criterion(model)
        if metrics["NDCG@10"] > best_valid["NDCG@10"]:
            best_state, best_valid, best_epoch, stale = copy.deepcopy(model.state_dict()), metrics, epoch, 0
        else:
            stale += 1
        if stale >= patience or (time_budget_s is not None and time.perf_counter() - started > time_budget_s):
            break
    model.load_state_dict(best_state)
    model.eval()
    return CooperativeResult(model, before, best_valid, best_epoch, epochs_run, time.perf_counter() - started)


def within_candidates(model: SequentialEncoder, instances: Sequence[EvalInstance], pools: dict[int, np.ndarray],
                      batch_size: int = 256) -> dict[str, float]:  # fmt: skip
    """HR/NDCG@5/10 of the target ranked by the encoder among the cloud's candidates for its user (`pools`, the
    user's own items already removed); a target outside the candidates is a miss (rank = number of items)."""
    miss = model.item_emb.num_embeddings
    ranks = np.full(len(instances), miss, dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(instances), batch_size):
            part = instances[start : start + batch_size]
            scores = model.score_histories([inst.history for inst in part]).numpy()
            for row, inst in enumerate(part):
                pool = pools.get(inst.user, np.zeros(0, dtype=np.int64))
                if np.any(pool == inst.target):
                    mine = scores[row, pool]
                    ranks[start + row] = int((mine > scores[row, inst.target]).sum())
    return metrics_from_ranks(ranks)


def choice_path(checkpoint: Path) -> Path:
    """Where the cooperative decision for a checkpoint (`<encoder>-ce.pt`) is written: `<encoder>-choice.json`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem.rsplit("-", 1)[0] + "-choice.json")


def write_choice(checkpoint: Path, cooperative: Path, base: dict[str, float], tuned: dict[str, float],
                 users: int) -> dict:  # fmt: skip
    """Use the cooperative checkpoint when its NDCG@10 within the cloud's candidates beats the base one's. The
    decision names the base checkpoint's digest: it holds only while that base is the one installed."""
    use = "cooperative" if tuned["NDCG@10"] > base["NDCG@10"] else "base"
    record = {"use": use, "base": str(checkpoint), "base_digest": file_digest(checkpoint),
              "cooperative": str(cooperative), "validation_users": users,
              "criterion": "NDCG@10 of the validation item within the cloud's candidates (history masked)",
              "base_metrics": base, "cooperative_metrics": tuned}  # fmt: skip
    write_json(choice_path(checkpoint), record)
    return record


def cooperative_decision(checkpoint: Path) -> tuple[Path, bool] | None:
    """The cooperative checkpoint tuned from `checkpoint` and whether it won, or None when there is none: no
    readable decision, its file is missing, or the decision was made against another base checkpoint (a retrained
    or newly installed base makes the old decision stale)."""
    try:
        record = json.loads(choice_path(checkpoint).read_text())
    except (OSError, ValueError):
        return None
    cooperative, base = Path(record.get("cooperative", "")), Path(checkpoint)
    if not cooperative.is_file() or not base.is_file() or record.get("base_digest") != file_digest(base):
        return None
    return cooperative, record.get("use") == "cooperative"


def chosen_checkpoint(checkpoint: Path) -> Path:
    """The checkpoint the device uses for `checkpoint`'s encoder: the cooperative one when a current decision
    (`cooperative_decision`) says it won, else `checkpoint` itself."""
    decision = cooperative_decision(checkpoint)
    return decision[0] if decision is not None and decision[1] else Path(checkpoint)
