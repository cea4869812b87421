"""`tandem models`: which language model each role uses and which text encoder builds the item space.

With `--probe` each one is checked the cheap way (`agents.backends.probe_model`: the GGUF file is there or the
server answers; `tools.text_encoders.probe_encoder`: the endpoint embeds one short text), and the command
exits 1 when any is not ready, so a script can wait for its servers. Registered in `tandem/cli.py`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ground.settings import get_settings
from tandem.views import JsonOption, print_json, safe


def models(
    probe: Annotated[bool, typer.Option("--probe", help="Check that each model and endpoint is ready.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The device SLM, the cloud LLM and the text encoder of Eq. 1-2: backend, model, server (and readiness)."""
    from agents.backends import chat_model, probe_model  # deferred: LangChain's clients take a second to import
    from tools.text_encoders import probe_encoder, resolve_text_precision, text_encoder_for

    settings = get_settings()
    rows: list[dict[str, Any]] = []
    for role in ("device", "cloud"):
        spec = settings.model_spec(role)
        row = {"role": f"{role} language model", "backend": spec.backend, "model": spec.model, "url": spec.url or "",
               "structured": spec.structured}  # fmt: skip
        if probe:
            answer = probe_model(chat_model(settings, role, timeout_s=5.0))
            row |= {"ok": answer["ok"], "error": answer.get("error", "")}
        rows.append(row)
    rows.append(plan_adapter_row(settings))
    embedding = settings.embedding_spec()
    row = {"role": "text encoder (Eq. 1-2)", "backend": embedding.backend, "model": embedding.model,
           "url": embedding.url or "", "structured": "-"}  # fmt: skip
    if embedding.backend == "local":  # the request-time precision of Eq. 2 (the item table is float32)
        row["request_precision"] = resolve_text_precision(settings.text_precision)
        row["model"] = f"{embedding.model} (requests in {row['request_precision']})"
    if probe:
        answer = probe_encoder(text_encoder_for(embedding, timeout_s=5.0), embedding)
        row |= {"ok": answer["ok"], "error": answer.get("error", ""), "dim": answer.get("dim")}
    rows.append(row)
    rows.append(semantic_head_row(settings))

    if as_json:
        print_json(rows)
    else:
        table = Table(title="models")
        columns = ["role", "backend", "model", "url", "structured"] + (["ready"] if probe else [])
        for column in columns:
            table.add_column(column)
        for row in rows:
            ready = ("yes" if row["ok"] else f"no: {row['error']}") if probe else None
            table.add_row(*(safe(row[c]) for c in columns[:5]), *([safe(ready, "green" if row["ok"] else "red")]
                                                                  if probe else []))  # fmt: skip
        Console().print(table)
    if probe and not all(row["ok"] for row in rows):
        raise typer.Exit(1)


def plan_adapter_row(settings) -> dict[str, Any]:
    """Which plans the embedded cloud model writes: "plan adapter <digest>" per data set that has a trained one
    (`tandem train --planner`, CDA4Rec Eq. 8, used automatically), else "base model" (few-shot prompts)."""
    from tools.plan_adapter import ADAPTER_DIR, ADAPTER_GGUF, adapter_digest

    found = sorted(settings.models_dir.glob(f"*/{ADAPTER_DIR}/{ADAPTER_GGUF}"))
    if settings.model_spec("cloud").backend != "llamacpp":
        model = "not used: the cloud model is not the embedded one"
    elif found:
        model = "; ".join(f"plan adapter {adapter_digest(path)} ({path.parent.parent.name})" for path in found)
    else:
        model = "base model (no plan adapter: `tandem train --planner`)"
    return {"role": "cloud plan adapter (Eq. 8)", "backend": "llamacpp LoRA" if found else "-", "model": model,
            "url": "", "structured": "plan-point" if found else "-", "ok": True, "error": ""}


def semantic_head_row(settings) -> dict[str, Any]:
    """How the cloud maps behaviour summaries into the item space (Eq. 2): "semantic head <digest>" per item space
    that has a trained one (`tandem train --semantic`, used automatically), else the PCA of Eq. 1."""
    from tools.checkpoints import file_digest
    from tools.encoder_space import TOWER_GLOB
    from tools.semantic_head import HEAD_GLOB

    found = sorted(settings.models_dir.glob(HEAD_GLOB))
    if not settings.semantic_head:
        model = "off (TANDEM_SEMANTIC_HEAD=false): the PCA of Eq. 1"
    elif found:
        model = "; ".join(f"semantic head {file_digest(path)[:12]} ({path.stem.removeprefix('semantic-head-')})"
                          for path in found)  # fmt: skip
    else:
        model = "PCA of Eq. 1 (no semantic head: `tandem train --semantic`)"
    towers = sorted(settings.models_dir.glob(TOWER_GLOB))
    if towers and settings.semantic_space != "text":  # e_sem in the encoder's item space (`tools.encoder_space`)
        model = "; ".join(f"semantic tower {file_digest(path)[:12]} into SASRec's item table "
                          f"({path.stem.removeprefix('semantic-tower-')})" for path in towers)  # fmt: skip
    return {"role": "cloud semantic head (Eq. 2 + 10)", "backend": "torch" if found or towers else "-",
            "model": model,
            "url": "", "structured": "-", "ok": True, "error": ""}
