"""Markdown report, plots and rich tables of `tandem eval rec` (from the dict `RecEval.run` returns)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from ground.files import write_json, write_text

METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def markdown_rows(rows: list[dict]) -> list[str]:
    head = ["method", "planner", "users", *METRICS, "ms / request", "cloud requests / request", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["planner"], str(r["users"]), *(f"{r[m]:.4f}" for m in METRICS),
                 f"{r['ms_per_request']:.1f}", f"{r['cloud_calls_per_request']:.2f}", r.get("notes", "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


PROTOCOL_SHORT = "full ranking, leave-one-out, history masked"


def _ci(entry: dict) -> str:
    return f"{entry['diff']:+.4f} [{entry['low']:+.4f}, {entry['high']:+.4f}]"


def markdown_differences(differences: list[dict], title: str) -> list[str]:
    """Paired Tandem-minus-row differences with their bootstrap intervals, one line per compared row."""
    if not differences:
        return []
    lines = [f"{title}: Tandem minus the row, mean over the same users, paired bootstrap 95% interval "
             "(an interval that excludes 0 is a difference the users support).", "",
             "| Tandem | versus | HR@10 difference [95% CI] | NDCG@10 difference [95% CI] |",
             "|---|---|---|---|"]  # fmt: skip
    for d in differences:
        versus = d["versus"] + (f" ({d['versus_planner']})" if d["versus_planner"] not in ("-", "") else "")
        lines.append(f"| {d['tandem']} | {versus} | {_ci(d['HR@10'])} | {_ci(d['NDCG@10'])} |")
    return lines + [""]


def headline(report: dict) -> list[str]:
    """Tandem against the strongest rows, per fidelity (none first, then habit), with intervals."""
    out = ["## Headline (rule planner, every evaluated user; " + PROTOCOL_SHORT + ")", "",
           "| fidelity | Tandem HR@10 | Tandem NDCG@10 | vs | HR@10 difference [95% CI] "
           "| NDCG@10 difference [95% CI] |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    keep = ("SASRec alone", "SASRec + query tags", "semantic + SASRec fixed fusion", "LSC4Rec-style static pipeline")
    for name, body in report["modes"].items():
        tandem = next(r for r in body["main"] if r["method"] == "Tandem")
        for d in body["differences"]["main"]:
            if d["versus"] in keep:
                out.append(f"| {name} | {tandem['HR@10']:.4f} | {tandem['NDCG@10']:.4f} | {d['versus']} | "
                           f"{_ci(d['HR@10'])} | {_ci(d['NDCG@10'])} |")  # fmt: skip
    out.append("")
    for name, body in report["modes"].items():
        out.append(f"- `{name}`: " + "; ".join(verdict(d) for d in body["differences"]["main"]) + ".")
    return out + [""]


HEADROOM_ROWS = (("oracle", "oracle plan"), ("knn", "learned (kNN, no LLM)"), ("rule", "rule planner"),
                 ("fixed", "best fixed plan (validation)"), ("-", "SASRec alone"))


def _headroom_cell(rows: list[dict], planner: str) -> str:
    row = next((r for r in rows if r["planner"] == planner), None)
    return f"{row['HR@10']:.4f} / {row['NDCG@10']:.4f}" if row else "-"


def headroom_headline(report: dict) -> list[str]:
    """Oracle vs learned vs rule vs fixed plans, per fidelity (HR@10 / NDCG@10), with the learned planner's
    paired intervals: the planning headroom in one table."""
    modes = {name: body for name, body in report["modes"].items() if body.get("headroom")}
    if not modes:
        return []
    out = ["## Headroom: oracle vs learned vs rule vs fixed plans (HR@10 / NDCG@10; " + PROTOCOL_SHORT + ")", "",
           "The oracle picks, per user, the best of the plan space's points WITH the test item: an upper bound, "
           "not a claim. The learned planner (no language model) plans from the nearest labelled validation "
           "abstracts (`tandem plans label`); the best fixed plan is the one point best on validation. v1-v7 are "
           "CDA4Rec Table IV's fixed settings (range over the seven).", "",
           "| fidelity | " + " | ".join(label for _, label in HEADROOM_ROWS) + " | v1-v7 HR@10 (min-max) |",
           "|---|" + "---|" * (len(HEADROOM_ROWS) + 1)]  # fmt: skip
    for name, body in modes.items():
        rows = body["headroom"]["rows"]
        cells = [_headroom_cell(rows, planner) for planner, _ in HEADROOM_ROWS]
        fixed = [r["HR@10"] for r in body["ablation"] if r["method"].startswith("w/o SP")]
        span = f"{min(fixed):.4f}-{max(fixed):.4f}" if fixed else "-"
        out.append(f"| {name} | " + " | ".join(cells) + f" | {span} |")
    out.append("")
    for name, body in modes.items():
        clauses = [learned_verdict(d) for d in body["headroom"]["differences"] if d["tandem"].endswith("(knn)")]
        if clauses:
            out.append(f"- `{name}`: " + "; ".join(clauses) + ".")
    return out + [""]


def learned_verdict(difference: dict) -> str:
    """One clause for the learned planner against a row, on HR@10 and NDCG@10."""
    parts = []
    for metric in COMPARED_METRICS:
        entry = difference[metric]
        word = "below" if entry["high"] < 0 else "above" if entry["low"] > 0 else "level with"
        parts.append(f"{metric} {word} ({_ci(entry)})")
    versus = difference["versus"] + (f" ({difference['versus_planner']})" if difference["versus_planner"] not in
                                     ("-", "") else "")  # fmt: skip
    return f"learned vs {versus}: " + ", ".join(parts)


COMPARED_METRICS = ("HR@10", "NDCG@10")


def headroom_section(body: dict, tag: str) -> list[str]:
    head = body["headroom"]
    out = [f"### Headroom, {tag} ({PROTOCOL_SHORT})", "",
           f"Plan space: {head['space']}." + (f" Learned planner: {head.get('learned_distinct_plans')} distinct "
           f"plans; best fixed point on validation: {head.get('fixed_point')}." if "fixed_point" in head else ""),
           ""]  # fmt: skip
    out += markdown_rows(head["rows"]) + [""]
    out += markdown_differences(head["differences"], f"Paired differences, headroom ({tag})")
    return out


def verdict(difference: dict, metric: str = "HR@10") -> str:
    """One plain clause: is Tandem above, below or level with the row on `metric`, by its interval."""
    entry = difference[metric]
    if entry["high"] < 0:
        word = "Tandem is BELOW"
    elif entry["low"] > 0:
        word = "Tandem is above"
    else:
        word = "no difference the users support between Tandem and"
    return f"{word} {difference['versus']} ({metric} {_ci(entry)})"


def markdown_report(report: dict, plots: dict[str, str], command: str) -> str:
    meta = report["meta"]
    out = [f"# Tandem recommendation eval: {meta['data']}", "",
           f"Command: `{command}`", "",
           f"Protocol: {meta['protocol']}. {meta['test_users']} test users, {meta['fewshot_users']} few-shot "
           f"(held-out) users, also cut to their first {', '.join(map(str, meta['fewshot_lengths']))} "
           f"interactions; language-model sample {meta['llm_sample_users']} users (seed {meta['seed']}).", "",
           "Queries: MovieLens has none, so query information is an explicit axis, one section per fidelity "
           f"level, headline first ({', '.join(meta['fidelities']) or 'none generated'}). Generated queries use the "
           f"{meta['phrasing']}: phrasings no planner rule or prompt was developed on. Every table with a query "
           "carries two leak controls that see the same query: "
           + "; ".join(f"**{k}**: {v}" for k, v in meta["leak_controls"].items()) + ".", "",
           f"Differences: {meta['bootstrap']}.", "",
           f"Planners: {'; '.join(f'{k}: {v}' for k, v in meta['planners'].items())}. Language models: "
           f"{', '.join(f'{k} {v}' for k, v in meta['language_models'].items())}. Prompts: "
           f"{', '.join(f'{k} {v}' for k, v in meta.get('prompts', {}).items()) or '-'}. "
           f"{meta['machine']}.", ""]  # fmt: skip
    if meta.get("queries_file"):
        q = meta["queries_file"]
        out += [f"Queries file: `{q['path']}`, SHA-256 `{q['sha256']}`, {q['lines']} queries.", ""]
    for name, info in (meta.get("encoders") or {}).items():
        if info:
            valid = ", ".join(f"{k} {v:.4f}" for k, v in info.get("best_valid", {}).items())
            out.append(f"- {name} checkpoint: best epoch {info.get('best_epoch')}, validation {valid or 'n/a'}")
    out += ["", "Models behind these numbers (SHA-256):", "", "| model | file | SHA-256 |", "|---|---|---|"]
    for name, d in (meta.get("digests") or {}).items():
        out.append(f"| {name} | `{Path(d['path']).name}` | `{d['sha256']}` |")
    out.append("")
    out += headline(report)
    out += headroom_headline(report)
    for body in report["modes"].values():
        tag = f"fidelity `{body['fidelity']}`"
        out += [f"## Queries: {body['query']}", ""]
        if body.get("example_query"):
            out += [f"Example query (first user): \"{body['example_query']}\". "
                    + (f"Phrasing families: {body['families']}." if body.get("families") else ""), ""]  # fmt: skip
        out += [f"### Overall, {tag}, rule planner, all {_users(body)} users ({PROTOCOL_SHORT})", ""]
        out += markdown_rows(body["main"]) + [""]
        out += markdown_differences(body["differences"]["main"], f"Paired differences ({tag})")
        if body.get("headroom"):
            out += headroom_section(body, tag)
        if "sample" in body:
            sample = body["sample"]
            out += [f"### Like for like on the language-model sample ({meta['llm_sample_users']} users), {tag} "
                    f"({PROTOCOL_SHORT})", "",
                    "Baseline rows and the rule-planner Tandem are the rows above restricted to the sample; "
                    "'Tandem' with planner llm is the device SLM writing the abstract and the cloud LLM planning.",
                    ""]  # fmt: skip
            out += markdown_rows(sample["rows"]) + [""]
            out += markdown_differences(sample.get("differences", []), f"Paired differences, sample ({tag})")
            out.append(f"Language-model plans: {sample['plan_status']} (parsed / repaired / fallback); "
                       f"{sample['distinct_plans']} distinct plans; abstract p50 {sample['abstract_s_p50']:.2f} s, "
                       f"plan p50 {sample['plan_s_p50']:.2f} s.")  # fmt: skip
            out.append("")
        out += [f"### Ablation (CDA4Rec Tables IV and V), {tag}, rule planner, all test users ({PROTOCOL_SHORT})", "",
                "'Tandem w/o AG': the planner reads the raw query and the raw history (titles, tags, and the facts "
                "computed from that raw history) instead of the device's abstract; e_sem embeds the raw text.", ""]
        out += markdown_rows(body["ablation"]) + [""]
        out += markdown_differences(body["differences"]["ablation"], f"Paired differences, ablation ({tag})")
        first = next(iter(body["buckets"].values()))
        out += [f"### HR@10 by history length, {tag} ({PROTOCOL_SHORT})", "",
                "| method | " + " | ".join(f"{b} ({v['users']} users)" for b, v in first.items()) + " |"]
        out.append("|---|" + "---|" * len(first))
        for method, buckets in body["buckets"].items():
            out.append(f"| {method} | " + " | ".join(f"{v['HR@10']:.4f}" for v in buckets.values()) + " |")
        out.append("")
        if body.get("fewshot"):
            out += fewshot_table(body["fewshot"], tag, meta)
        out += [f"### Accuracy against cloud request rate (LSC4Rec Eq. 12 re-request), {tag}, rule planner", "",
                "| target load | re-request rate | cloud requests / request | HR@10 | NDCG@10 |",
                "|---|---|---|---|---|"]
        for p in body["sweep"]:
            out.append(f"| {p['target_load']:g} | {p['rerequest_rate']:.3f} | {p['cloud_requests_per_request']:.3f} "
                       f"| {p['HR@10']:.4f} | {p['NDCG@10']:.4f} |")  # fmt: skip
        out.append("")
    for title, path in plots.items():
        out += [f"![{title}]({path})", ""]
    return "\n".join(out)


def _users(body: dict) -> int:
    return next(r["users"] for r in body["main"] if r["method"] == "Tandem")


def fewshot_table(fewshot: dict, tag: str, meta: dict) -> list[str]:
    """Held-out users cut to their first n interactions (CDA4Rec RQ4): HR@10 / NDCG@10 per n, then intervals."""
    lengths = list(fewshot)
    out = [f"### Few-shot users with short histories (CDA4Rec RQ4), {tag} ({PROTOCOL_SHORT})", "",
           f"The {meta['fewshot_users']} held-out users were never trained on; each is cut to its first n "
           "interactions and the next one is the target.", "",
           "| method | " + " | ".join(f"HR@10 (n={n}, {fewshot[n]['users']} users) | NDCG@10 (n={n})" for n in lengths)
           + " |", "|---|" + "---|---|" * len(lengths)]  # fmt: skip
    methods = [r["method"] for r in fewshot[lengths[0]]["rows"]]
    for method in methods:
        cells = []
        for n in lengths:
            row = next(r for r in fewshot[n]["rows"] if r["method"] == method)
            cells += [f"{row['HR@10']:.4f}", f"{row['NDCG@10']:.4f}"]
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    out.append("")
    for n in lengths:
        out += markdown_differences(fewshot[n]["differences"], f"Paired differences, first {n} interactions ({tag})")
    return out


def write_plots(report: dict, out_dir: Path, stem: str) -> dict[str, str]:
    """HR@10 by history bucket, the ablation bars, accuracy vs cloud request rate (PNG); returns title -> file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    modes = report["modes"]
    mode = next((m for m in modes if m != "none"), next(iter(modes)))
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
    ax.set_title(f"{report['meta']['data']}: HR@10 by history length (fidelity {mode})")
    ax.legend(fontsize=7)
    files["HR@10 by history length"] = _save(fig, out_dir / f"{stem}_buckets.png")

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    names = [r["method"] for r in body["ablation"]]
    ax.barh(names[::-1], [r["HR@10"] for r in body["ablation"]][::-1], color="tab:blue")
    ax.set_xlabel("HR@10 (full ranking)")
    ax.set_title(f"{report['meta']['data']}: ablations (fidelity {mode}, rule planner)")
    files["Ablations"] = _save(fig, out_dir / f"{stem}_ablation.png")

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, mode_body in modes.items():
        xs = [p["cloud_requests_per_request"] for p in mode_body["sweep"]]
        ax.plot(xs, [p["HR@10"] for p in mode_body["sweep"]], marker="o", label=f"fidelity {name}")
    ax.set_xlabel("cloud requests per recommendation request")
    ax.set_ylabel("HR@10 (full ranking)")
    ax.set_title(f"{report['meta']['data']}: accuracy vs cloud request rate")
    ax.legend()
    files["Accuracy vs cloud request rate"] = _save(fig, out_dir / f"{stem}_requests.png")
    with_headroom = {name: b for name, b in modes.items() if b.get("headroom")}
    if with_headroom:
        fig = Figure(figsize=(9, 4))
        ax = fig.subplots()
        width = 0.8 / len(HEADROOM_ROWS)
        for n, (planner, label) in enumerate(HEADROOM_ROWS):
            values = [next((r["HR@10"] for r in b["headroom"]["rows"] if r["planner"] == planner), 0.0)
                      for b in with_headroom.values()]  # fmt: skip
            ax.bar([i + n * width for i in range(len(values))], values, width, label=label)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(with_headroom))], list(with_headroom))
        ax.set_ylabel("HR@10 (full ranking)")
        ax.set_title(f"{report['meta']['data']}: planning headroom by query fidelity (oracle = upper bound)")
        ax.legend(fontsize=7)
        files["Planning headroom"] = _save(fig, out_dir / f"{stem}_headroom.png")
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def rich_table(report: dict, mode: str) -> Table:
    body = report["modes"][mode]
    table = Table(title=f"{report['meta']['data']}, fidelity {body['fidelity']}: {PROTOCOL_SHORT}")
    for column in ("method", "planner", "users", *METRICS, "ms/req"):
        table.add_column(column, justify="left" if column in ("method", "planner") else "right")
    rows = body["main"] + [r for r in body.get("sample", {}).get("rows", []) if r["planner"] == "llm"]
    for r in rows:
        table.add_row(r["method"], r["planner"], str(r["users"]), *(f"{r[m]:.4f}" for m in METRICS),
                      f"{r['ms_per_request']:.1f}")  # fmt: skip
    return table


def rounded(value, digits: int = 5):
    """The report with every float rounded to `digits` decimals (keeps the results file small and readable)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def write_report(report: dict, results_dir: Path, reports_dir: Path, command: str) -> tuple[Path, Path]:
    """Write evals/results/rec_<data>.json and evals/reports/rec_<data>.md (+ PNGs) atomically."""
    report = rounded(report)  # the report is rendered from exactly what the results file holds
    stem = f"rec_{report['meta']['data']}"
    json_path = results_dir / f"{stem}.json"
    write_json(json_path, report)
    plots = write_plots(report, reports_dir, stem)
    md_path = reports_dir / f"{stem}.md"
    write_text(md_path, markdown_report(report, plots, command))
    return json_path, md_path
