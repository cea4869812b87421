"""Fusion benchmark: CDA4Rec Eq. 5 trained jointly against Tandem's score fusion and the encoder alone (issue 14).

Protocol: every test user of the data set, no query (the abstract is the device's rule-written behaviour summary
of the test history), the target ranked against ALL items (no candidate retrieval: what fusion itself gives),
every item seen before the target masked (the `eval rec` protocol). Rows:

- popularity; the device encoder alone (the checkpoint `eval rec` loads, e_str . e_i);
- semantic alone with the installed semantic head (PCA item space, `tandem train --semantic`);
- score fusion as the rank step does it (`tools.fusion.fuse_scores`: min-max of each side over the catalogue,
  beta-weighted), the installed head's e_sem with the encoder's scores, beta chosen on validation;
- Eq. 5 trained jointly (`tools.fused_tower`): e_u = beta * g(abstract) + (1 - beta) * e_str scored against the
  encoder's item table, g trained on training users' summaries with each loss and beta; (loss, beta) chosen on
  validation NDCG@10;
- semantic alone in the encoder's item space: g alone (`tools.encoder_space.train_summary_tower`, the tower the
  cloud deploys with `tandem train --semantic --space encoder`).

Everything is chosen on validation users; the test rows of the choices carry paired bootstrap intervals over the
test users. The results file records the digests of the encoder checkpoint, the semantic head and the item
embeddings.

Usage: python -m evals.bench_fusion --data ml-1m [--losses ce,bpr] [--betas 0.1,0.3,0.5] [--minutes 4]
Writes evals/results/fusion_<data>.json and fusion_<data>.png (validation curves of the towers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agents.cloud.semantic import TextSpace
from agents.device.encoders import EncoderShelf
from agents.pipeline import head_examples
from evals.bench_semantic import popularity_ranks
from evals.rec import full_ranking_ranks
from graph.runtime import build_device
from ground.files import write_json
from ground.settings import get_settings
from tools.checkpoints import file_digest
from tools.compute import configure_torch
from tools.curves import plot_training_curves
from tools.data import EvalInstance
from tools.device_store import DeviceStore
from tools.encoder_space import train_summary_tower
from tools.fused_tower import item_table, train_tower, with_structured
from tools.fusion import fuse_scores
from tools.metrics import metrics_from_ranks, rank_differences
from tools.semantic_head import HeadConfig, SummaryHead, head_path, head_ranks, read_head
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
TODAY = "semantic alone (the cloud's e_sem today, PCA item space)"
PROTOCOL = ("all test users, no query (rule-written behaviour summary of the test history), full ranking against "
            "all items (no retrieval), every item seen before the target masked, as in `eval rec`; "
            "every loss, beta and epoch chosen on validation users; paired bootstrap over test users (2,000 "
            "resamples)")
console = Console()


def score_fusion_ranks(semantic: np.ndarray, structured: np.ndarray, beta: float,
                       instances: list[EvalInstance]) -> np.ndarray:  # fmt: skip
    """The rank step's fusion (`fuse_scores`, min-max per user over the catalogue) ranked against all items."""
    fused = np.full(semantic.shape, -np.inf)
    for row in range(len(semantic)):
        fused[row, 1:] = fuse_scores(semantic[row, 1:], structured[row, 1:], beta)
    return full_ranking_ranks(fused, instances)


def _scores(vectors: np.ndarray, table: np.ndarray) -> np.ndarray:
    return vectors.astype(np.float64) @ table.astype(np.float64).T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m")
    parser.add_argument("--losses", default="ce,bpr", help="losses of the Eq. 5 tower: ce and/or bpr (Eq. 10)")
    parser.add_argument("--betas", default="0.1,0.3,0.5", help="beta values (the plan space's) for both fusions")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per tower")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch("cpu", args.threads)
    settings = get_settings()
    ws = Workspace(settings, args.data)
    shelf = EncoderShelf(settings.models_dir, ws.dataset)
    device = build_device(settings, ws, shelf, DeviceStore(":memory:"), slm=None)
    encoder, encoder_path = shelf.get("SASRec"), shelf.path("SASRec")
    started = time.perf_counter()
    examples = head_examples(device, TextSpace(ws.semantics), ws, ("train", "valid", "test"))
    fused = {name: with_structured(part, encoder) for name, part in examples.items()}
    prep_s = time.perf_counter() - started
    instances = {"valid": list(ws.splits.valid), "test": list(ws.splits.test)}
    betas = [float(b) for b in args.betas.split(",")]
    table, encoder_table = ws.semantics.table, item_table(encoder)
    head_file = head_path(settings.models_dir, ws.semantics.key)  # the cloud's e_sem today: its head, else the PCA
    head = read_head(head_file, ws.semantics.key)[0] if head_file.is_file() \
        else SummaryHead.from_pca(ws.semantics.pca, hidden=0)
    ranks: dict[str, dict[str, np.ndarray]] = {"valid": {}, "test": {}}
    for part in ("valid", "test"):
        structured = _scores(fused[part].raw[:, examples[part].raw.shape[1]:], encoder_table)  # e_str . e_i (Eq. 6)
        ranks[part]["popularity"] = popularity_ranks(ws, instances[part])
        ranks[part]["encoder alone"] = full_ranking_ranks(structured, instances[part])
        semantic = _scores(head.project(examples[part].raw), table)
        ranks[part][TODAY] = full_ranking_ranks(semantic, instances[part])
        for beta in betas:
            ranks[part][f"score fusion, beta {beta:g}"] = score_fusion_ranks(semantic, structured, beta,
                                                                           instances[part])  # fmt: skip

    towers: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for loss in args.losses.split(","):
        for beta in [*betas, 1.0]:
            config = HeadConfig(loss=loss, epochs=args.epochs, minutes=args.minutes, seed=settings.seed)  # type: ignore[arg-type]
            if beta < 1:
                name, parts = f"Eq. 5 tower ({loss}), beta {beta:g}", fused
                result = train_tower(fused["train"], fused["valid"], encoder, beta, config)
            else:  # g alone: the cloud's semantic tower of `tools.encoder_space`, as `tandem train` fits it
                name, parts = f"semantic alone, encoder item space ({loss})", examples
                result = train_summary_tower(examples["train"], examples["valid"], encoder_table, config)
            ranks["test"][name] = head_ranks(result.tower, parts["test"], encoder_table)
            ranks["valid"][name] = head_ranks(result.tower, parts["valid"], encoder_table)
            curves[name] = result.fitted.history
            towers[name] = {"loss": loss, "beta": beta, "best_epoch": result.fitted.best_epoch,
                            "epochs_run": len(result.fitted.history), "seconds": round(result.fitted.seconds, 1),
                            "valid_start": result.fitted.initial_valid, "config": vars(config)}  # fmt: skip

    def chosen(prefix: str) -> str:
        names = [n for n in ranks["valid"] if n.startswith(prefix)]
        return max(names, key=lambda n: metrics_from_ranks(ranks["valid"][n])["NDCG@10"])

    choice = {"score fusion": chosen("score fusion"), "Eq. 5 tower": chosen("Eq. 5 tower"),
              "semantic alone, encoder item space": chosen("semantic alone, encoder item space")}  # fmt: skip
    test = ranks["test"]
    tower, fusion, alone = choice["Eq. 5 tower"], choice["score fusion"], choice["semantic alone, encoder item space"]
    pairs = [(tower, "encoder alone"), (tower, fusion), (fusion, "encoder alone"), (alone, "popularity"),
             (alone, TODAY)]
    differences = {f"{a} minus {b}": rank_differences(test[a], test[b]) for a, b in pairs}
    rows = [{"method": name, "chosen_on_validation": name in choice.values(), "users": len(test[name]),
             "valid": metrics_from_ranks(ranks["valid"][name]), "test": metrics_from_ranks(test[name])}
            for name in test]  # fmt: skip
    out = args.out or RESULTS / f"fusion_{ws.dataset.name}.json"
    plot = plot_training_curves(curves, out.with_suffix(".png"), f"Eq. 5 towers on {ws.dataset.name}: validation "
                                "(no query, history masked, full ranking)", xlabel="minutes")  # fmt: skip
    write_json(out, {
        "data": ws.dataset.name, "protocol": PROTOCOL, "rows": rows, "chosen_on_validation": choice,
        "differences": differences, "towers": towers,
        "examples": {"training": len(examples["train"]), "validation": len(examples["valid"]),
                     "test": len(examples["test"]), "seconds": round(prep_s, 1)},
        "digests": {"encoder (SASRec)": {"path": str(encoder_path), "sha256": file_digest(encoder_path)},
                    "semantic head": {"path": str(head_file), "sha256": file_digest(head_file)}
                    if head_file.is_file() else "none installed: the PCA of Eq. 1 (untrained Eq. 2)",
                    "item embeddings (Eq. 1)": file_digest(settings.embeddings_dir / f"{ws.semantics.key}.npz")},
        "machine": f"{torch.get_num_threads()} torch threads, CPU",
        "plot": plot.name,
        "command": "python -m evals.bench_fusion " + " ".join(sys.argv[1:] if argv is None else argv),
    })  # fmt: skip
    shown = Table(title=f"fusion on {ws.dataset.name} ({PROTOCOL})")
    for column in ("method", "chosen", "valid NDCG@10", "test HR@10", "test NDCG@10"):
        shown.add_column(column)
    for row in rows:
        shown.add_row(row["method"], "yes" if row["chosen_on_validation"] else "", f"{row['valid']['NDCG@10']:.4f}",
                      f"{row['test']['HR@10']:.4f}", f"{row['test']['NDCG@10']:.4f}")  # fmt: skip
    console.print(shown)
    for name, diff in differences.items():
        console.print(f"{name}: {diff}")
    console.print(f"results: {out}; curves: {plot}")


if __name__ == "__main__":
    main()
