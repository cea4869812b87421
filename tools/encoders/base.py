"""The shared interface of the device's structured encoders (CDA4Rec Eq. 4 and Eq. 6).

Every encoder f_loc maps a user's item sequence to one user embedding in the SAME space as the item
table, so a score is a dot product with an item embedding. Shapes, documented once here:

- `seqs`      int64 [B, L]: item ids, oldest -> newest, LEFT-padded with 0 (padding id), L <= max_len.
- `forward(seqs) -> [B, d]`: the user embedding e_u^str read at the newest position (CDA4Rec Eq. 4).
- `training_outputs(seqs) -> [B, T, d]`: what the training loss scores. Models with `per_position = True`
  (SASRec, Caser) give one causal output per position (T = L, output t predicts item t + 1); the others
  (SURGE) give only the newest position (T = 1).
- `full_scores(user [B, d]) -> [B, num_items + 1]`: dot products with every item (CDA4Rec Eq. 6); column 0
  is the padding id and is set to -inf.
- `candidate_scores(user [B, d], items [B, C] or [C]) -> [B, C]`: the same, for a candidate list only.
- `calculate_loss(inputs, targets, objective) -> scalar`: `targets` [B, T] holds the next item for every
  output (0 = no target); the objective (BPR of CDA4Rec Eq. 10, or softmax cross-entropy) is chosen once
  by the trainer and passed in. An objective with `excludes_history = True` also receives `exclude`
  [N, V + 1]: the items each output has already seen in its input (`history_mask`), never its target.
- `encode(histories)`: numpy histories of any length -> [B, d], in eval mode, without gradients.

The item table has num_items + 1 rows (row 0 = padding = zeros, `padding_idx=0`); it is initialised from
the PCA'd semantic item table of CDA4Rec Eq. 1 when one is given, and trained with the encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

# An objective scores user outputs [N, d] against their positive item ids [N] with the item table [V + 1, d]
# (and, when it `excludes_history`, the keyword `exclude` [N, V + 1] of items already seen by each output).
Objective = Callable[..., Tensor]


def history_mask(inputs: Tensor, targets: Tensor, keep: Tensor, num_items: int) -> Tensor:
    """[N, V + 1] bool, one row per kept output (row-major order of `keep`): True for the items that output has
    already read in `inputs`, except its own target. inputs [B, L], targets and keep [B, T] (T = L: output t read
    inputs[:, : t + 1]; T = 1: it read them all).

    An item's first position in each row decides it: item i is seen by output t when it first occurs at or
    before t, so no [B, L, V] one-hot is built.
    """
    b, length = inputs.shape
    width = targets.shape[1]
    first = torch.full((b, num_items + 1), length, dtype=torch.int16, device=inputs.device)  # [B, V + 1]
    positions = torch.arange(length, dtype=torch.int16, device=inputs.device).expand(b, length)  # [B, L]
    first.scatter_reduce_(1, inputs, positions, reduce="amin")
    read_up_to = torch.arange(length - width, length, dtype=torch.int16, device=inputs.device)  # [T]
    seen = first.unsqueeze(1) <= read_up_to.view(1, -1, 1)  # [B, T, V + 1]
    mask = seen[keep]  # [N, V + 1]
    mask[torch.arange(len(mask), device=mask.device), targets[keep]] = False
    return mask


def pad_left(histories: Sequence[np.ndarray], max_len: int) -> Tensor:
    """Newest `max_len` items of each history, left-padded with 0 to the longest kept length: int64 [B, L]."""
    kept = [np.asarray(h, dtype=np.int64)[-max_len:] if max_len > 0 else np.empty(0, np.int64) for h in histories]
    width = max(1, max((len(h) for h in kept), default=1))
    out = np.zeros((len(kept), width), dtype=np.int64)
    for row, h in enumerate(kept):
        if len(h):
            out[row, width - len(h) :] = h
    return torch.from_numpy(out)


class SequentialEncoder(nn.Module):
    """Base class of SASRec, SURGE and Caser: item table, scoring, loss and numpy-friendly encoding."""

    name: ClassVar[str] = "encoder"
    per_position: ClassVar[bool] = False

    def __init__(self, num_items: int, dim: int, max_len: int, item_table: np.ndarray | None = None) -> None:
        super().__init__()
        self.num_items = num_items
        self.dim = dim
        self.max_len = max_len
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)  # [V + 1, d]
        if item_table is not None:
            if item_table.shape != (num_items + 1, dim):
                raise ValueError(f"item table is {item_table.shape}, expected {(num_items + 1, dim)}")
            with torch.no_grad():
                self.item_emb.weight.copy_(torch.from_numpy(np.asarray(item_table, dtype=np.float32)))
                self.item_emb.weight[0].zero_()
        else:
            nn.init.normal_(self.item_emb.weight, std=0.05)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

    # -- what each model defines -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (without the item table), saved beside checkpoints to rebuild the model."""
        return {"num_items": self.num_items, "dim": self.dim, "max_len": self.max_len}

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, d]
        raise NotImplementedError

    def training_outputs(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, T, d]
        return self.forward(seqs).unsqueeze(1)

    # -- shared ---------------------------------------------------------------------------------------
    def calculate_loss(self, inputs: Tensor, targets: Tensor, objective: Objective) -> Tensor:
        """Training loss over every output that has a target (CDA4Rec Eq. 10 or softmax CE)."""
        out = self.training_outputs(inputs)  # [B, T, d]
        keep = targets > 0  # [B, T]
        if getattr(objective, "excludes_history", False):
            exclude = history_mask(inputs, targets, keep, self.num_items)
            return objective(out[keep], targets[keep], self.item_emb.weight, exclude=exclude)
        return objective(out[keep], targets[keep], self.item_emb.weight)

    def full_scores(self, user: Tensor) -> Tensor:
        """CDA4Rec Eq. 6 against every item: [B, d] -> [B, V + 1], padding column = -inf (on `user`'s device)."""
        weight = self.item_emb.weight
        scores = user.to(weight.device) @ weight.T  # [B, V + 1]
        scores[:, 0] = float("-inf")
        return scores.to(user.device)

    def candidate_scores(self, user: Tensor, items: Tensor) -> Tensor:
        """CDA4Rec Eq. 6 for candidates only: user [B, d], items [C] or [B, C] -> [B, C] (on `user`'s device)."""
        weight = self.item_emb.weight
        cand = self.item_emb(items.to(weight.device))  # [C, d] or [B, C, d]
        on_model = user.to(weight.device)
        scores = on_model @ cand.T if cand.dim() == 2 else torch.einsum("bd,bcd->bc", on_model, cand)
        return scores.to(user.device)

    @torch.no_grad()
    def encode(self, histories: Sequence[np.ndarray] | Tensor) -> Tensor:
        """CDA4Rec Eq. 4 for numpy histories (oldest first, any length) or a padded [B, L] tensor -> [B, d].

        The model may sit on a GPU; the result comes back on the input's device (the CPU for numpy histories).
        """
        was_training = self.training
        self.eval()
        seqs = histories[:, -self.max_len :] if isinstance(histories, Tensor) else pad_left(histories, self.max_len)
        user = self.forward(seqs.to(self.item_emb.weight.device)).to(seqs.device)
        self.train(was_training)
        return user

    @torch.no_grad()
    def score_histories(self, histories: Sequence[np.ndarray]) -> Tensor:
        """Full-ranking scores [B, V + 1] on the CPU for a batch of histories (what `tools.metrics.evaluate` calls)."""
        return self.full_scores(self.encode(histories))

    @staticmethod
    def reverse_positions(length: int, device: torch.device | None = None) -> Tensor:
        """Learned-position index of each column of a left-padded [B, L] batch: newest item = 0: [L]."""
        return torch.arange(length - 1, -1, -1, device=device)
