"""Export of a data set and its exact leave-one-out split as RecBole atomic files and a RecBole config.

RecBole (Zhao et al., CIKM 2021) splits a sequential data set with `eval_args.split = {LS: valid_and_test}`:
per user, ordered by the time field, the last interaction is the test target, the second-to-last the
validation target and the rest the training sequence. That is Tandem's split (`tools.data.splits`) for every
user it evaluates, so the export writes:

- `<name>.inter`: `user_id:token item_id:token timestamp:float` for the users Tandem splits. The timestamp is
  the interaction's position in the user's sequence (0, 1, ...), so RecBole's sort reproduces Tandem's order
  exactly, ties of the original clock included. The users Tandem holds out (the few-shot 10%) are left out:
  Tandem never trains or tests on them. Users with fewer than 3 interactions, which Tandem only trains on,
  are left out too (RecBole would make them test users); `manifest.json` counts both.
- `<name>.item`: every catalog item (`item_id:token movie_title:token_seq`), so both rank the same items.
- `<name>.yaml`: the RecBole config of the split (LS valid_and_test, time order, full ranking, history of
  up to `max_len` items, HR@10 / NDCG@10) and, when given, of SASRec as a Tandem recipe sets it up
  (`recbole_sasrec`; `tandem data export` writes the default recipe's).

`read_recbole_split` rebuilds the split from the files the way RecBole's LS split reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Dataset
from .splits import Splits


@dataclass(frozen=True)
class RecBoleExport:
    folder: Path
    name: str
    users: int
    interactions: int
    items: int
    skipped_heldout: int
    skipped_short: int

    @property
    def config(self) -> Path:
        return self.folder / f"{self.name}.yaml"


def recbole_sasrec(model: Mapping[str, Any], lr: float) -> dict[str, Any]:
    """RecBole 1.2's SASRec settings for a Tandem SASRec architecture (`model`, as a recipe or a checkpoint's
    config holds it) and learning rate: full softmax CE (no sampled negatives), the same width, feed-forward width
    (`ffn`, the width when unset), blocks, heads and dropout (RecBole's hidden and attention dropout both)."""
    dim, dropout = int(model.get("dim", 64)), float(model.get("dropout", 0.2))
    return {
        "loss_type": "CE", "train_neg_sample_args": None, "hidden_size": dim,
        "inner_size": int(model.get("ffn") or dim), "n_layers": int(model.get("layers", 2)),
        "n_heads": int(model.get("heads", 2)), "hidden_dropout_prob": dropout, "attn_dropout_prob": dropout,
        "hidden_act": "gelu", "learning_rate": float(lr),
    }  # fmt: skip


def _yaml_value(value: Any) -> str:
    return "~" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def recbole_config(name: str, folder: Path, max_len: int, seed: int, sasrec: Mapping[str, Any] | None = None,
                   recipe: str = "") -> str:  # fmt: skip
    """RecBole config (YAML) for the exported split: sequential, leave-one-out by time, full ranking; with
    `sasrec` (`recbole_sasrec`), the model settings too."""
    model = [f"# SASRec as Tandem's recipe {recipe or '(unnamed)'} builds it. RecBole batches prefixes (one target",
             "# each) where Tandem batches whole sequences (every position a target).",
             *(f"{key}: {_yaml_value(value)}" for key, value in (sasrec or {}).items())] if sasrec else []  # fmt: skip
    return "\n".join([
        f"# Tandem's leave-one-out split of {name} (tandem data export --format recbole).",
        f"data_path: {folder.parent}",
        f"dataset: {name}",
        "USER_ID_FIELD: user_id",
        "ITEM_ID_FIELD: item_id",
        "TIME_FIELD: timestamp",
        "load_col:",
        "  inter: [user_id, item_id, timestamp]",
        "  item: [item_id]",
        "eval_args:",
        "  split: {LS: valid_and_test}",
        "  order: TO",
        "  group_by: user",
        "  mode: full",
        f"MAX_ITEM_LIST_LENGTH: {max_len}",
        "metrics: [Hit, NDCG]",
        "topk: [10]",
        "valid_metric: NDCG@10",
        f"seed: {seed}",
        *model,
        "",
    ])  # fmt: skip


def export_recbole(
    dataset: Dataset, splits: Splits, out: Path, seed: int = 42, name: str | None = None,
    sasrec: Mapping[str, Any] | None = None, recipe: str = "",
) -> RecBoleExport:
    """Write `<out>/<name>/` (atomic files + config) for `splits`; `name` defaults to "tandem-<data>"; `sasrec`
    (`recbole_sasrec` of recipe `recipe`) adds the model's settings to the config."""
    name = name or f"tandem-{dataset.name}"
    folder = Path(out).resolve() / name
    folder.mkdir(parents=True, exist_ok=True)
    tested = {inst.user for inst in splits.test}
    lines, interactions = ["user_id:token\titem_id:token\ttimestamp:float"], 0
    for user, seq in enumerate(dataset.sequences):
        if user not in tested:
            continue
        lines.extend(f"{user}\t{int(item)}\t{position}" for position, item in enumerate(seq))
        interactions += len(seq)
    _write(folder / f"{name}.inter", "\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq"]
    items.extend(f"{item.item_id}\t{item.title.replace(chr(9), ' ')}" for item in dataset.catalog.items)
    _write(folder / f"{name}.item", "\n".join(items) + "\n")
    _write(folder / f"{name}.yaml", recbole_config(name, folder, splits.max_len, seed, sasrec, recipe))
    short = sum(1 for user in range(dataset.num_users) if user not in splits.heldout_users and user not in tested)
    report = RecBoleExport(folder, name, len(tested), interactions, len(dataset.catalog.items),
                           len(splits.heldout_users), short)  # fmt: skip
    manifest = {"data": dataset.name, "fingerprint": dataset.fingerprint(), "seed": seed, "max_len": splits.max_len,
                "users": report.users, "interactions": interactions, "items": report.items,
                "skipped_heldout_users": report.skipped_heldout, "skipped_short_users": short}  # fmt: skip
    _write(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return report


def read_recbole_split(folder: Path, name: str) -> tuple[dict[int, np.ndarray], dict[int, int], dict[int, int]]:
    """(train sequences, validation targets, test targets) by user, read from `<name>.inter` as RecBole's LS
    valid_and_test split does: order each user's rows by the time field, test = last, validation = second-to-last."""
    rows: dict[int, list[tuple[float, int]]] = {}
    with open(Path(folder) / f"{name}.inter", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        u, i, t = (header.index(f) for f in ("user_id:token", "item_id:token", "timestamp:float"))
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            rows.setdefault(int(parts[u]), []).append((float(parts[t]), int(parts[i])))
    train, valid, test = {}, {}, {}
    for user, events in rows.items():
        ordered = [item for _, item in sorted(events)]
        train[user] = np.array(ordered[:-2], dtype=np.int64)
        valid[user], test[user] = ordered[-2], ordered[-1]
    return train, valid, test


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
