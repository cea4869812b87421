"""Named training recipes: one name stands for every setting of a run, so `tandem train --recipe NAME`
reproduces it (seeded) and the checkpoint records the name beside the full configuration.

`sasrec-full-ce` is SASRec (Kang & McAuley 2018) trained as in "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?" (Klenitskiy & Vasilev, RecSys 2023): full softmax cross-entropy over all items,
every position of each training sequence a target, histories of up to 200 items, 2 blocks, hidden size 64,
dropout 0.2, Adam; with changes for a CPU and a time budget (about 2,000-4,000 optimiser steps, where the
original trains for tens of thousands):
- the item table starts from the semantic table of CDA4Rec Eq. 1 (PCA'd MiniLM of the item text), Adam at
  2e-3 with batches of 64 sequences (twice the steps per epoch of batch 128 at the same cost per epoch);
- the items a position has already read leave its softmax (`mask_history`), the candidates a history-masked
  ranking orders; validation, which picks the epoch, masks them too;
- the learning rate warms up for 50 steps and decays on a cosine to zero at the end of the budget;
- bfloat16 autocast for the matrix products (float32 weights), about 1.3x faster on an AVX-512 CPU.

`sasrec-full-ce@2` is what runs on ML-1M chose on validation (`evals/results/
sasrec_ml-1m_probes.json`, 10-minute budgets, then `sasrec_ml-1m.json`, 45 minutes): width 128 instead of 64
(on 2 CPU cores the full softmax over the catalogue, not the transformer, costs most of a step, so the wider
model costs about 5% more per epoch and learns much faster), batches of 128 sequences at lr 2e-3, dropout 0.2
(0.1 won the 10-minute runs but overfits by 20 minutes), no early stopping inside the budget, and a randomly
initialised item table (the semantic table of Eq. 1 is 64 wide; the device's item space need not be the
cloud's, since Tandem fuses scores, not embeddings).

`sasrec-full-ce@3` is `@2` with feed-forward layers 512 wide (4 x the width, as RecBole's SASRec
and transformers generally; the original SASRec's are the width): 45 minutes on ML-1M gave validation HR@10
0.3271 / NDCG@10 0.1884 against `@2`'s 0.3159 / 0.1819 (`evals/results/sasrec_ml-1m.json`), at about 15% more
time per epoch.

`sasrec-full-ce@4` (the default) is `@3` with 3 blocks instead of 2: validation HR@10 0.3350 / NDCG@10 0.1928 in
45 minutes (about 60 s per epoch), chosen on validation against `@3`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ground.errors import TandemError
from tools.training import TrainConfig

_FULL_CE: dict[str, Any] = {  # what every SASRec full-softmax recipe shares
    "encoder": "sasrec",
    "loss": "ce",
    "epochs": 400,
    "patience": 20,
    "mask_history": True,
    "valid_mask_seen": True,
    "schedule": "cosine",
    "warmup_steps": 50,
    "precision": "bf16",
    "time_budget_s": 45 * 60.0,
}
RECIPES: dict[str, dict[str, Any]] = {
    "sasrec-full-ce": {
        **_FULL_CE, "batch_size": 64, "lr": 2e-3, "semantic_init": True,
        "model": {"max_len": 200, "layers": 2, "heads": 2, "dropout": 0.2, "dim": 64},
    },
    "sasrec-full-ce@2": {  # no early stopping inside the budget: the cosine's last epochs are its best
        **_FULL_CE, "batch_size": 128, "lr": 2e-3, "semantic_init": False, "patience": 400,
        "model": {"max_len": 200, "layers": 2, "heads": 2, "dropout": 0.2, "dim": 128},
    },
    "sasrec-full-ce@3": {  # chosen on validation against @2 (evals/results/sasrec_ml-1m.json)
        **_FULL_CE, "batch_size": 128, "lr": 2e-3, "semantic_init": False, "patience": 400,
        "model": {"max_len": 200, "layers": 2, "heads": 2, "dropout": 0.2, "dim": 128, "ffn": 512},
    },
    "sasrec-full-ce@4": {  # chosen on validation against @3 (evals/results/sasrec_ml-1m.json)
        **_FULL_CE, "batch_size": 128, "lr": 2e-3, "semantic_init": False, "patience": 400,
        "model": {"max_len": 200, "layers": 3, "heads": 2, "dropout": 0.2, "dim": 128, "ffn": 512},
    },
}
DEFAULT_RECIPE = "sasrec-full-ce@4"


def recipe_config(name: str, **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of recipe `name`, with `overrides` (e.g. seed, threads, device, time_budget_s) on top."""
    if name not in RECIPES:
        raise TandemError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise TandemError(f"recipe {name}: unknown setting(s) {', '.join(sorted(unknown))}")
    spec = {**RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}, "recipe": name}
    spec["model"] = dict(spec.get("model", {}))
    return TrainConfig(**spec)
