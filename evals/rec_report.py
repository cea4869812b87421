"""Markdown report, plots and rich tables of `tandem eval rec` (from the dict `RecEval.run` returns)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from evals.jsonl import write_json, write_text

METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def markdown_rows(rows: list[dict]) -> list[str]:
    head = ["method", "planner", "users", *METRICS, "ms / request", "cloud requests / request", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["planner"], str(r["users"]), *(f"{r[m]:.4f}" for m in METRICS),
                 f"{r['ms_per_request']:.1f}", f"{r['cloud_calls_per_request']:.2f}", r.get("notes", "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_report(report: dict, plots: dict[str, str], command: str) -> str:
    meta = report["meta"]
    out = [f"# Tandem recommendation eval: {meta['data']}", "",
           f"Command: `{command}`", "",
           f"Protocol: {meta['protocol']}. {meta['test_users']} test users, {meta['fewshot_users']} few-shot "
           f"(held-out) users, language-model sample {meta['llm_sample_users']} users (seed {meta['seed']}).", "",
           f"Planners: {'; '.join(f'{k}: {v}' for k, v in meta['planners'].items())}. Language models: "
           f"{', '.join(f'{k} {v}' for k, v in meta['language_models'].items())}. {meta['machine']}.", ""]  # fmt: skip
    for name, info in (meta.get("encoders") or {}).items():
        if info:
            valid = ", ".join(f"{k} {v:.4f}" for k, v in info.get("best_valid", {}).items())
            out.append(f"- {name} checkpoint: best epoch {info.get('best_epoch')}, validation {valid or 'n/a'}")
    out.append("")
    for body in report["modes"].values():
        out += [f"## Queries: {body['query']}", "", f"### Overall, rule planner, all {meta['test_users']} users", ""]
        out += markdown_rows(body["main"]) + [""]
        if "sample" in body:
            sample = body["sample"]
            out += [f"### Like for like on the language-model sample ({meta['llm_sample_users']} users)", "",
                    "Baseline rows and the rule-planner Tandem are the rows above restricted to the sample; "
                    "'Tandem' with planner llm is the device SLM writing the abstract and the cloud LLM planning.",
                    ""]  # fmt: skip
            out += markdown_rows(sample["rows"]) + [""]
            out.append(f"Language-model plans: {sample['plan_status']} (parsed / repaired / fallback); "
                       f"{sample['distinct_plans']} distinct plans; abstract p50 {sample['abstract_s_p50']:.2f} s, "
                       f"plan p50 {sample['plan_s_p50']:.2f} s.")  # fmt: skip
            out.append("")
        out += ["### Ablation (CDA4Rec Tables IV and V), rule planner, all test users", ""]
        out += markdown_rows(body["ablation"]) + [""]
        out += ["### HR@10 by history length", "", "| method | " + " | ".join(
            f"{b} ({v['users']} users)" for b, v in next(iter(body["buckets"].values())).items()) + " |"]  # fmt: skip
        out.append("|---|" + "---|" * len(next(iter(body["buckets"].values()))))
        for method, buckets in body["buckets"].items():
            out.append(f"| {method} | " + " | ".join(f"{v['HR@10']:.4f}" for v in buckets.values()) + " |")
        out.append("")
        if "fewshot" in body:
            out += [f"### Few-shot: {meta['fewshot_users']} held-out users never trained on", ""]
            out += markdown_rows(body["fewshot"]) + [""]
        out += ["### Accuracy against cloud request rate (LSC4Rec Eq. 12 re-request), rule planner", "",
                "| target load | re-request rate | cloud requests / request | HR@10 | NDCG@10 |",
                "|---|---|---|---|---|"]
        for p in body["sweep"]:
            out.append(f"| {p['target_load']:g} | {p['rerequest_rate']:.3f} | {p['cloud_requests_per_request']:.3f} "
                       f"| {p['HR@10']:.4f} | {p['NDCG@10']:.4f} |")  # fmt: skip
        out.append("")
    for title, path in plots.items():
        out += [f"![{title}]({path})", ""]
    return "\n".join(out)


def write_plots(report: dict, out_dir: Path, stem: str) -> dict[str, str]:
    """HR@10 by history bucket, the ablation bars, accuracy vs cloud request rate (PNG); returns title -> file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    modes = report["modes"]
    mode = "query" if "query" in modes else next(iter(modes))
    body = modes[mode]

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    methods = list(body["buckets"])
    buckets = list(next(iter(body["buckets"].values())))
    width = 0.8 / len(methods)
    for n, method in enumerate(methods):
        values = [body["buckets"][method][b]["HR@10"] for b in buckets]
        ax.bar([i + n * width for i in range(len(buckets))], values, width, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(buckets))], buckets)
    ax.set_ylabel("HR@10 (full ranking)")
    ax.set_title(f"{report['meta']['data']}: HR@10 by history length ({mode} mode)")
    ax.legend(fontsize=7)
    files["HR@10 by history length"] = _save(fig, out_dir / f"{stem}_buckets.png")

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    names = [r["method"] for r in body["ablation"]]
    ax.barh(names[::-1], [r["HR@10"] for r in body["ablation"]][::-1], color="tab:blue")
    ax.set_xlabel("HR@10 (full ranking)")
    ax.set_title(f"{report['meta']['data']}: ablations ({mode} mode, rule planner)")
    files["Ablations"] = _save(fig, out_dir / f"{stem}_ablation.png")

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, mode_body in modes.items():
        xs = [p["cloud_requests_per_request"] for p in mode_body["sweep"]]
        ax.plot(xs, [p["HR@10"] for p in mode_body["sweep"]], marker="o", label=f"{name} mode")
    ax.set_xlabel("cloud requests per recommendation request")
    ax.set_ylabel("HR@10 (full ranking)")
    ax.set_title(f"{report['meta']['data']}: accuracy vs cloud request rate")
    ax.legend()
    files["Accuracy vs cloud request rate"] = _save(fig, out_dir / f"{stem}_requests.png")
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def rich_table(report: dict, mode: str) -> Table:
    body = report["modes"][mode]
    table = Table(title=f"{report['meta']['data']} ({body['query']}): full ranking, history masked")
    for column in ("method", "planner", "users", *METRICS, "ms/req"):
        table.add_column(column, justify="left" if column in ("method", "planner") else "right")
    rows = body["main"] + [r for r in body.get("sample", {}).get("rows", []) if r["planner"] == "llm"]
    for r in rows:
        table.add_row(r["method"], r["planner"], str(r["users"]), *(f"{r[m]:.4f}" for m in METRICS),
                      f"{r['ms_per_request']:.1f}")  # fmt: skip
    return table


def write_report(report: dict, results_dir: Path, reports_dir: Path, command: str) -> tuple[Path, Path]:
    """Write evals/results/rec_<data>.json and evals/reports/rec_<data>.md (+ PNGs) atomically."""
    stem = f"rec_{report['meta']['data']}"
    json_path = results_dir / f"{stem}.json"
    write_json(json_path, report)
    plots = write_plots(report, reports_dir, stem)
    md_path = reports_dir / f"{stem}.md"
    write_text(md_path, markdown_report(report, plots, command))
    return json_path, md_path
