"""What a choice prompt puts before the model, measured on validation only: `python -m evals.plan_options --data D`.

`plan_exemplars@3` shows the model the target points of the 3 labelled abstracts nearest the request's and lets it
answer one of them; `plan_exemplars@4` shows the 3 best points of the kNN planner's ranking (mean hindsight reward
over the k nearest labelled abstracts, `agents.cloud.neighbours`). Which set of options is worth choosing from can
be measured without a language model and without a test item: for every labelled validation instance
(`tandem plans label`), build each prompt's three options from OTHER users' labels only (an @3 neighbour's target
is derived again without the instance's user, as `evals.hindsight.derive` derives targets) and score them by the
instance's own hindsight reward on its validation item (NDCG@10; the selection score's 1e-6 tie-break does not
show at four decimals). Reported per prompt: the option a base model leans on (the one shown last: @3's nearest
exemplar, @4's best point), a uniform choice among the three, the best and the worst of them; paired bootstrap
intervals over users (each user's mean over its fidelity levels). It measures the options, not the model.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from evals.hindsight import label_users, leave_one_out_neighbours
from ground.files import write_json
from ground.settings import get_settings
from tools.checkpoints import file_digest
from tools.exemplar_index import exemplars_path
from tools.metrics import paired_bootstrap

OPTIONS = 3
SPARE = 8  # neighbours fetched beyond k, so k remain after another user's rows are dropped
console = Console()


def _without(row_neighbours: np.ndarray, users: np.ndarray, user: str, k: int) -> np.ndarray:
    """The first k of a row's neighbours that are not rows of `user`."""
    return row_neighbours[users[row_neighbours] != user][:k]


def option_points(scores: np.ndarray, vectors: np.ndarray, users: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Each prompt's options per instance [M, 3], in the order shown to the model (the one it leans on last)."""
    neighbours = leave_one_out_neighbours(vectors, k + SPARE, users)
    ranking, exemplars = [], []
    for u in track(range(len(scores)), description="options", console=console, transient=True):
        mine = neighbours[u, :k]
        ranking.append(np.argsort(-scores[mine].mean(axis=0), kind="stable")[:OPTIONS][::-1])  # best last
        targets = [int(np.argmax(scores[_without(neighbours[j], users, users[u], k)].mean(axis=0)))
                   for j in mine[:OPTIONS]]  # fmt: skip
        exemplars.append(np.array(targets[::-1]))  # nearest last
    return {"plan_exemplars@3": np.array(exemplars), "plan_exemplars@4": np.array(ranking)}


def per_user_mean(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Each user's mean over its fidelity levels, users in sorted order."""
    names, index = np.unique(users, return_inverse=True)
    return np.bincount(index, weights=values, minlength=len(names)) / np.bincount(index, minlength=len(names))


def run(data: str, out: Path) -> dict:
    path = exemplars_path(get_settings().home, data)
    if not path.is_file():
        raise SystemExit(f"no hindsight labels at {path}: run `tandem plans label --data {data}`")
    with np.load(path, allow_pickle=False) as saved:
        scores, vectors = saved["scores"].astype(np.float64), saved["vectors"]
        users, k, key = label_users([str(s) for s in saved["keys"]]), int(saved["k"]), str(saved["key"])
    rows = np.arange(len(scores))[:, None]
    options = option_points(scores, vectors, users, k)
    summary: dict[str, dict[str, float]] = {}
    leaned: dict[str, np.ndarray] = {}
    for prompt, chosen in options.items():
        rewards = scores[rows, chosen]  # [M, 3]
        leaned[prompt] = per_user_mean(rewards[:, -1], users)
        summary[prompt] = {"option shown last": float(rewards[:, -1].mean()), "uniform choice": float(rewards.mean()),
                           "best of the three": float(rewards.max(axis=1).mean()),
                           "worst of the three": float(rewards.min(axis=1).mean())}  # fmt: skip
    uniform = {p: per_user_mean(scores[rows, c].mean(axis=1), users) for p, c in options.items()}
    last = paired_bootstrap(leaned["plan_exemplars@4"], leaned["plan_exemplars@3"])
    even = paired_bootstrap(uniform["plan_exemplars@4"], uniform["plan_exemplars@3"])
    result = {
        "data": data, "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "labels": {"key": key, "file": str(path), "sha256": file_digest(path), "k": k, "instances": len(scores),
                   "users": len(np.unique(users))},
        "options": summary,
        "@4 minus @3, option shown last": {"diff": last.diff, "low": last.low, "high": last.high},
        "@4 minus @3, uniform choice": {"diff": even.diff, "low": even.low, "high": even.high},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }  # fmt: skip
    write_json(out, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path("evals/results") / f"plan_options_{args.data}.json"
    result = run(args.data, out)
    key = result["labels"]["key"]
    table = Table(title=f"options offered, validation NDCG@10 on the instance's own item (labels {key})")
    for column in ("prompt", "shown last", "uniform", "best of 3", "worst of 3"):
        table.add_column(column, justify="left" if column == "prompt" else "right")
    for prompt, row in result["options"].items():
        table.add_row(prompt, *(f"{v:.4f}" for v in row.values()))
    console.print(table)
    for name in ("@4 minus @3, option shown last", "@4 minus @3, uniform choice"):
        d = result[name]
        console.print(f"{name}: {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (paired over users)")
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
