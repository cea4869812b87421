"""Semantic tower benchmark: the cloud's Eq. 2 untrained (PCA) against trained semantic heads (Eq. 2 + Eq. 10).

Protocol: every test user of the data set, no query (the abstract is the device's behaviour summary of the
test history, written by the rules), the target ranked against ALL items by e_sem . e_i, the history masked
(the `eval rec` protocol). Rows: popularity (training counts), semantic alone with the PCA of Eq. 1 (today's
untrained Eq. 2), and semantic alone with a head trained by BPR with sampled negatives (CDA4Rec Eq. 10) and by
full softmax cross-entropy. Heads are trained on training users' summaries (`training_cases`: cut points inside
the training sequences, never a validation or test item) and their epoch is chosen on validation users; the
loss that `--install` puts where the cloud finds it is the one with the better validation NDCG@10, never the
test figure. Differences are paired bootstrap intervals over the test users.

Usage: python -m evals.bench_semantic --data ml-1m [--losses ce,bpr] [--minutes 10] [--install]
Writes evals/results/semantic_<data>.json and semantic_<data>.png (validation curves).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.cloud.semantic import TextSpace
from agents.device.encoders import EncoderShelf
from agents.pipeline import head_examples
from evals.rec import full_ranking_ranks
from graph.runtime import build_device
from ground.files import copy_file, write_json
from ground.settings import get_settings
from tools.checkpoints import file_digest
from tools.compute import configure_torch
from tools.curves import plot_training_curves
from tools.data import EvalInstance
from tools.device_store import DeviceStore
from tools.metrics import PopularityScorer, metrics_from_ranks, rank_differences
from tools.semantic_head import (
    CUTS_PER_USER,
    HeadConfig,
    SummaryHead,
    head_path,
    head_ranks,
    save_head,
    train_head,
)
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
PROTOCOL = ("all test users, no query (rule-written behaviour summary of the test history), full ranking by "
            "e_sem . e_i against all items, every item seen before the target masked; heads trained on training "
            "users' summaries, epoch and installed loss chosen on validation users; paired bootstrap over test "
            "users (2,000 resamples)")
console = Console()


def popularity_ranks(ws: Workspace, instances: list[EvalInstance]) -> np.ndarray:
    scores = PopularityScorer(ws.splits.train, ws.dataset.catalog.num_items).score_histories(
        [inst.history for inst in instances]).numpy()  # fmt: skip
    return full_ranking_ranks(scores, instances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m")
    parser.add_argument("--losses", default="ce,bpr", help="Heads to train: ce and/or bpr (CDA4Rec Eq. 10).")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training budget per head.")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--install", action="store_true", help="Save the validation-best head where the cloud "
                        "uses it (`tandem train --semantic` writes the same file).")  # fmt: skip
    args = parser.parse_args()
    configure_torch("cpu", args.threads)
    settings = get_settings()
    ws = Workspace(settings, args.data)
    device = build_device(settings, ws, EncoderShelf(settings.models_dir, ws.dataset), DeviceStore(":memory:"),
                          slm=None)  # fmt: skip
    started = time.perf_counter()
    examples = head_examples(device, TextSpace(ws.semantics), ws, ("train", "valid", "test"))
    train, valid, test = examples["train"], examples["valid"], examples["test"]
    test_instances = list(ws.splits.test)
    examples_s = time.perf_counter() - started
    table = ws.semantics.table

    ranks: dict[str, np.ndarray] = {"popularity": popularity_ranks(ws, test_instances)}
    pca_head = SummaryHead.from_pca(ws.semantics.pca, hidden=0)
    ranks["semantic alone, PCA (untrained Eq. 2)"] = head_ranks(pca_head, test, table)
    heads: dict[str, dict[str, Any]] = {}
    curves = {}
    for loss in args.losses.split(","):
        config = HeadConfig(loss=loss, epochs=args.epochs, minutes=args.minutes, seed=settings.seed)  # type: ignore[arg-type]
        console.print(f"training the semantic head with {loss} ({args.minutes:g} min budget)")
        result = train_head(train, valid, table, ws.semantics.pca, config)
        path = settings.models_dir / "semantic-heads" / f"{ws.semantics.key}-{loss}.pt"
        save_head(path, result, ws.semantics.key, {"dataset": ws.dataset.name, "training_examples": len(train)})
        name = f"semantic alone, head trained by {'BPR (Eq. 10)' if loss == 'bpr' else 'softmax CE'}"
        ranks[name] = head_ranks(result.head, test, table)
        curves[name] = result.history
        heads[loss] = {"row": name, "path": str(path), "sha256": file_digest(path), "config": vars(config),
                       "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                       "seconds": round(result.seconds, 1), "valid_best": result.best_valid,
                       "valid_untrained": result.initial_valid}  # fmt: skip
    chosen = max(heads, key=lambda loss: heads[loss]["valid_best"]["NDCG@10"]) if heads else None
    if chosen and args.install:
        target = head_path(settings.models_dir, ws.semantics.key)
        copy_file(heads[chosen]["path"], target)
        console.print(f"installed the {chosen} head (better validation NDCG@10) at {target}")

    rows = [{"method": name, "users": len(r), **metrics_from_ranks(r)} for name, r in ranks.items()]
    versus = {name: {"minus popularity": rank_differences(r, ranks["popularity"]),
                     "minus PCA": rank_differences(r, ranks["semantic alone, PCA (untrained Eq. 2)"])}
              for name, r in ranks.items() if name.startswith("semantic alone, head")}  # fmt: skip
    out = RESULTS / f"semantic_{ws.dataset.name}.json"
    plot = plot_training_curves(curves, out.with_suffix(".png"), f"semantic head on {ws.dataset.name}: validation "
                                "(no query, history masked, full ranking)", xlabel="minutes")  # fmt: skip
    write_json(out, {
        "data": ws.dataset.name, "protocol": PROTOCOL, "rows": rows, "differences": versus, "heads": heads,
        "installed": chosen if args.install else None, "chosen_on_validation": chosen,
        "examples": {"training": len(train), "cuts_per_user": CUTS_PER_USER, "validation": len(valid),
                     "test": len(test), "seconds": round(examples_s, 1)},
        "digests": {"item embeddings (Eq. 1)": file_digest(settings.embeddings_dir / f"{ws.semantics.key}.npz")},
        "plot": plot.name, "command": "python -m evals.bench_semantic " + " ".join(sys.argv[1:]),
    })  # fmt: skip
    shown = Table(title=f"semantic alone on {ws.dataset.name} ({PROTOCOL})")
    for column in ("method", "HR@10", "NDCG@10"):
        shown.add_column(column)
    for row in rows:
        shown.add_row(row["method"], f"{row['HR@10']:.4f}", f"{row['NDCG@10']:.4f}")
    console.print(shown)
    for name, diffs in versus.items():
        console.print(f"{name}: {diffs}")
    console.print(f"results: {out}; curves: {plot}")


if __name__ == "__main__":
    main()
