"""SCaLRec on real data: how much a stale cloud semantic embedding costs, what calibration wins back, and how
often the reliability estimate's "reliable" verdict is right (issue 14).

    python -m evals.bench_staleness --data ml-100k --ks 1,3,5,10

For every validation user (whose history is longer than the largest k), the cloud's e_sem (CDA4Rec Eq. 2,
from the rule-written behaviour abstract, `agents.pipeline.behaviour_embeddings`) is computed three ways:
fresh (from the whole validation history), cached (from the history as it was k interactions ago: the cache
written then) and calibrated (the cached one moved by SCaLRec's on-device calibrator with the k newer items,
`tools.calibration`). Each ranks the validation target by Eq. 3's score against all items, the user's history
masked (semantic alone, no query). Reported per k: HR@10 / NDCG@10, the target's mean percentile (a finer
measure where HR@10 is tiny), paired bootstrap 95% intervals (cached - fresh, calibrated - cached) over users,
and the reliability policy's verdict on the cache against the truth "the cache ranks the target no more than
`tolerance` percentile below the fresh embedding". The min-reliability threshold is then scanned on these
validation users (never test) and the one with the best balanced accuracy is reported. Validation users are
the calibrator's and threshold's own choice set: the test split is not touched.
Results: `evals/results/staleness_<data>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.device.encoders import EncoderShelf
from agents.pipeline import behaviour_embeddings
from evals.digests import model_digests
from graph.runtime import build_cloud, build_device
from ground.settings import Settings
from tools.calibration import percentile_ranks
from tools.checkpoints import calibrator_path, file_digest
from tools.device_store import DeviceStore
from tools.metrics import metrics_from_ranks, paired_bootstrap, per_user, seen_mask, target_ranks
from tools.workspace import Workspace

RESULTS_DIR = Path(__file__).parent / "results"
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.50, 0.96, 0.05))


def semantic_ranks(
    e_sem: np.ndarray, table: np.ndarray, seen: list[np.ndarray], targets: np.ndarray
) -> np.ndarray:
    """0-based rank of each target under e_sem . e_i against all items, the items each user saw masked: [N]."""
    scores = torch.from_numpy(np.asarray(e_sem, np.float32) @ table.T)  # [N, V + 1]
    return target_ranks(scores, torch.from_numpy(targets), seen_mask(seen, scores.shape[1])).numpy()


def target_percentile(e_sem: np.ndarray, table: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Share of catalog items the embedding scores below each user's target (1 = top): [N]."""
    return np.array([percentile_ranks(e, np.array([t]), table)[0] for e, t in zip(e_sem, targets, strict=True)])


def _interval(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = paired_bootstrap(a, b, seed=0)
    return {"diff": round(diff.diff, 4), "low": round(diff.low, 4), "high": round(diff.high, 4)}


def run(data: str, ks: list[int], tolerance: float, out: Path) -> dict[str, Any]:
    settings = Settings()
    ws = Workspace(settings, data, progress=False)
    shelf = EncoderShelf(settings.models_dir, ws.dataset)
    device = build_device(settings, ws, shelf, DeviceStore(":memory:"), slm=None)
    cloud = build_cloud(settings, ws, shelf, "rule", exact=True)
    side = cloud.no_query_side  # where behaviour-only e_sem lives
    table = side.space.table
    behaviour = side is cloud.behaviour
    calibrator_model = device.behaviour_calibrator if behaviour else device.calibrator
    policy = device.behaviour_policy if behaviour else device.policy
    instances = [inst for inst in ws.splits.valid if len(inst.history) > max(ks) + 2]
    histories = [np.asarray(inst.history, dtype=np.int64) for inst in instances]
    targets = np.array([inst.target for inst in instances], dtype=np.int64)
    masked = [np.asarray(inst.masked, dtype=np.int64) for inst in instances]  # every item seen before the target
    print(f"{len(instances)} validation users; calibrator: {calibrator_model is not None}", flush=True)
    fresh = behaviour_embeddings(device, cloud, histories)
    fresh_ranks = semantic_ranks(fresh, table, masked, targets)
    fresh_pct = target_percentile(fresh, table, targets)
    rows = []
    for k in ks:
        cached = behaviour_embeddings(device, cloud, [h[:-k] for h in histories])
        calibrated = (np.stack([calibrator_model.calibrate(e, h[-k:], table) for e, h in zip(cached, histories,
                      strict=True)]) if calibrator_model is not None else cached)  # fmt: skip
        verdicts = [policy.judge(e, h[-k:], table) for e, h in zip(cached, histories, strict=True)]
        reliability = np.array([v.reliability for v in verdicts])
        ranks = {"fresh": fresh_ranks, "cached": semantic_ranks(cached, table, masked, targets),
                 "calibrated": semantic_ranks(calibrated, table, masked, targets)}  # fmt: skip
        pct = {"fresh": fresh_pct, "cached": target_percentile(cached, table, targets),
               "calibrated": target_percentile(calibrated, table, targets)}  # fmt: skip
        good = pct["cached"] >= pct["fresh"] - tolerance  # the truth the verdict should predict
        reliable = np.array([v.reliable for v in verdicts])
        scan = []
        for threshold in THRESHOLDS:
            said = reliability >= threshold
            tpr = float((said & good).sum() / max(1, good.sum()))
            tnr = float((~said & ~good).sum() / max(1, (~good).sum()))
            scan.append({"min_reliability": threshold, "reliable_rate": round(float(said.mean()), 3),
                         "precision": round(float((said & good).sum() / max(1, said.sum())), 3),
                         "balanced_accuracy": round((tpr + tnr) / 2, 3)})  # fmt: skip
        best = max(scan, key=lambda row: row["balanced_accuracy"])
        row = {
            "k": k,
            "users": len(instances),
            **{f"{name}": {**{m: round(v, 4) for m, v in metrics_from_ranks(r).items()},
                           "target_percentile": round(float(pct[name].mean()), 4)} for name, r in ranks.items()},
            "cached_minus_fresh": {"NDCG@10": _interval(per_user(ranks["cached"], "NDCG@10"),
                                                        per_user(ranks["fresh"], "NDCG@10")),
                                   "target_percentile": _interval(pct["cached"], pct["fresh"])},
            "calibrated_minus_cached": {"NDCG@10": _interval(per_user(ranks["calibrated"], "NDCG@10"),
                                                             per_user(ranks["cached"], "NDCG@10")),
                                        "target_percentile": _interval(pct["calibrated"], pct["cached"])},
            "cache_good_rate": round(float(good.mean()), 3),
            "verdict": {"policy": {"min_reliability": policy.min_reliability, "max_new": policy.max_new},
                        "reliable_rate": round(float(reliable.mean()), 3),
                        "reliable_right": round(float(good[reliable].mean()), 3) if reliable.any() else None,
                        "unreliable_right": round(float((~good[~reliable]).mean()), 3) if (~reliable).any() else None},
            "threshold_scan": scan,
            "best_threshold": best,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps({key: v for key, v in row.items() if key != "threshold_scan"}), flush=True)
    calibrator = calibrator_path(settings.models_dir, side.space.key)
    results = {
        "data": data,
        "fingerprint": ws.dataset.fingerprint(),
        "protocol": "validation users (never test); semantic alone (Eq. 3 score), no query, full ranking against "
        "all items, every item the user saw before the target masked; cache written k interactions before the "
        "validation target",
        "tolerance": tolerance,
        "calibrator": {"path": str(calibrator), "digest": file_digest(calibrator) if calibrator.is_file() else None},
        "space": side.space.describe(),
        "digests": model_digests(settings, ws, device, with_language_models=False),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ks", default="1,3,5,10", help="how many interactions ago the cache was written")
    parser.add_argument("--tolerance", type=float, default=0.02, help="percentile drop a good cache may have")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    run(args.data, ks, args.tolerance, args.out or RESULTS_DIR / f"staleness_{args.data}.json")


if __name__ == "__main__":
    main()
