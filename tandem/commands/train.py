"""`tandem train`: train a device encoder (CDA4Rec Eq. 4) with Eq. 10 or softmax CE and save a checkpoint.

Registered in `tandem/cli.py`; heavy imports are deferred into the command (see `tandem.cli`). Plain
training hands off to `tools.training.train_encoder`; `--chord` trains CHORD's hypernetworks (`tools.chord`)
and `--cooperative` fine-tunes on cloud candidates (`tools.cooperative`) against the saved checkpoint.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from ground.errors import TandemError
from ground.settings import get_settings
from tandem.views import labelled, safe

COOPERATIVE_VALID_USERS = 2000  # validation users the cooperative decision is made on
COOPERATIVE_NEGATIVES = 4  # candidates sampled per position at least (--negatives raises it)


class EncoderChoice(StrEnum):
    sasrec = "sasrec"
    surge = "surge"
    caser = "caser"


class LossChoice(StrEnum):
    bpr = "bpr"
    ce = "ce"


class SemanticSpace(StrEnum):
    text = "text"
    encoder = "encoder"


def train(
    encoder: Annotated[EncoderChoice, typer.Option("--encoder", "-e", help="Device encoder to train.")] = (
        EncoderChoice.sasrec
    ),
    data: Annotated[str, typer.Option("--data", "-d", help="Data set name (ml-100k, ml-1m) or a MovieLens folder.")] = (
        "ml-100k"
    ),
    loss: Annotated[LossChoice, typer.Option(help="bpr = CDA4Rec Eq. 10, sampled negatives; ce = full softmax.")] = (
        LossChoice.ce
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping on validation NDCG@10).")] = 50,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without validation gain before stopping.")] = 5,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch.")] = 128,
    negatives: Annotated[int, typer.Option(min=1, help="Sampled negatives per positive (bpr only).")] = 1,
    minutes: Annotated[float | None, typer.Option(help="Stop after this much training time.")] = None,
    recipe: Annotated[str | None, typer.Option(help="A named recipe (e.g. sasrec-full-ce@4) setting every option "
                                               "above; --minutes, --threads and --device still apply.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch CPU threads (default: every available core; "
                                                "setting torch_threads).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: setting torch_device).")] = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint path; default <home>/models/<data>-<fp>/...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint at the output path.")] = False,
    chord: Annotated[bool, typer.Option(help="Train CHORD's profiler + hypernetworks for the trained encoder.")] = (
        False
    ),
    cooperative: Annotated[bool, typer.Option(
        help="LSC4Rec 3.2.2: fine-tune the trained encoder with negatives from the cloud's candidate lists "
        "(--loss: bpr = Eq. 10, ce = softmax over the sampled candidates; --negatives per position, at least 4).")] = (
        False
    ),
    planner: Annotated[bool, typer.Option(
        "--planner", help="CDA4Rec Eq. 8: train the LoRA plan adapter of the cloud's Gemma on the hindsight labels "
        "(`tandem plans label`); --minutes is the time budget, --resume continues it.")] = False,
    steps: Annotated[int | None, typer.Option(min=1, help="--planner: stop after this many optimizer steps.")] = None,
    semantic: Annotated[bool, typer.Option(
        "--semantic", help="CDA4Rec Eq. 2 + Eq. 10: train the cloud's semantic head (behaviour summary -> item "
        "space) on training users' abstracts; --loss, --epochs, --patience, --lr, --negatives, --minutes apply.")] = (
        False
    ),
    space: Annotated[SemanticSpace, typer.Option(
        help="--semantic: the item space e_sem is trained into: text = Eq. 1's item table (the semantic head); "
        "encoder = the trained SASRec's item table (the semantic tower, used by the cloud under semantic_space "
        "auto).")] = SemanticSpace.text,
) -> None:
    """Train SASRec, SURGE or Caser on the leave-one-out training split, save the best checkpoint and plot its
    validation curve (a PNG beside the checkpoint)."""
    from tools.checkpoints import default_checkpoint  # deferred: loads PyTorch (see `tandem.cli`)
    from tools.compute import DEVICE_CHOICES, resolve_device
    from tools.curves import plot_training_curves
    from tools.metrics import evaluate
    from tools.recipes import recipe_config
    from tools.training import TrainConfig, train_encoder
    from tools.workspace import Workspace

    console = Console()
    settings = get_settings()
    device = device or settings.torch_device
    if device not in DEVICE_CHOICES:
        raise TandemError(f"unknown --device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    resolve_device(device)  # a missing GPU is an error before the data loads
    threads = threads or settings.torch_threads
    ws = Workspace(settings, data)
    if planner:
        _train_planner(ws, minutes, steps, threads, resume, console)
        return
    if semantic:
        from tools.compute import configure_torch
        from tools.semantic_head import HeadConfig

        configure_torch("cpu", threads)
        config = HeadConfig(loss=loss.value, epochs=epochs, patience=patience, lr=lr,
                            negatives=negatives if loss is LossChoice.bpr else HeadConfig.negatives, minutes=minutes,
                            seed=settings.seed)  # fmt: skip
        (_train_tower if space is SemanticSpace.encoder else _train_semantic)(ws, config, out, console)
        return
    if chord:
        _train_chord(ws, encoder.value, minutes or 5.0, threads, console)
        return
    if cooperative:
        _train_cooperative(ws, encoder.value, loss.value, negatives, epochs, patience, minutes, console)
        return
    if recipe:
        config = recipe_config(recipe, seed=settings.seed, threads=threads, device=device,
                               time_budget_s=minutes * 60 if minutes else None)  # fmt: skip
    else:
        config = TrainConfig(
            encoder=encoder.value, loss=loss.value, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size,
            negatives=negatives, seed=settings.seed, threads=threads, device=device,
            time_budget_s=minutes * 60 if minutes else None,
            model={"max_len": settings.max_seq_len} if encoder is not EncoderChoice.surge else {},
        )  # fmt: skip
    path = out or default_checkpoint(settings.models_dir, config.encoder, ws.dataset, config.loss)
    table = ws.semantics.table if config.semantic_init else None
    result = train_encoder(ws.dataset, ws.splits, config, item_table=table, checkpoint=path,
                           init_from=path if resume else None)  # fmt: skip
    masked = evaluate(result.model, ws.splits.test, mask_seen=True)
    console.print(
        f"[green]{config.encoder}[/] ({config.loss}{', recipe ' + recipe if recipe else ''}) best epoch "
        f"{result.best_epoch}/{result.epochs_run} ({result.stopped_by}), {result.seconds_per_epoch:.1f} s/epoch, "
        f"{result.threads} threads on {result.device}"
    )
    console.print(f"test: {masked.line()}", highlight=False)
    shown = "history masked" if config.valid_mask_seen else "seen items kept"
    curve = plot_training_curves({recipe or f"{config.encoder}-{config.loss}": result.history},
                                 path.with_suffix(".curve.png"), f"{config.encoder} on {ws.dataset.name}: validation "
                                 f"({shown}, full ranking)")  # fmt: skip
    console.print(safe(f"checkpoint: {path}"))
    console.print(safe(f"validation curve: {curve}"))


def _train_planner(ws, minutes: float | None, steps: int | None, threads: int | None, resume: bool,
                   console: Console) -> None:
    """CDA4Rec Eq. 8: LoRA plan adapter on the newest hindsight labels of the data set, served as a GGUF LoRA."""
    from agents.llm import gguf_path  # deferred: loads llama.cpp's bindings
    from evals.hindsight import exemplars_path
    from tools.checkpoints import file_digest
    from tools.plan_adapter import AdapterConfig, adapter_dir, labels_for, train_plan_adapter

    settings = ws.settings
    labels = labels_for(exemplars_path(settings.home, ws.dataset.name))
    directory = adapter_dir(settings.models_dir, ws.dataset.name, ws.dataset.fingerprint())
    default = AdapterConfig()
    config = AdapterConfig(seed=settings.seed, threads=threads or default.threads, max_steps=steps or default.max_steps,
                           time_budget_s=minutes * 60 if minutes else None)  # fmt: skip
    if minutes is None and steps is None:
        raise TandemError("--planner needs a budget: --minutes M and/or --steps N")
    console.print(safe(f"plan adapter on {labels} -> {directory}"))
    result = train_plan_adapter(labels, gguf_path(settings), directory, config, resume=resume,
                                log=lambda text: console.print(safe(text)),
                                title=f"plan adapter on {ws.dataset.name} (LoRA r={config.rank})")  # fmt: skip
    last = result.state.curve[-1]
    console.print(labelled("plan adapter: ", f"{result.state.step} steps, {result.state.seconds / 60:.1f} min "
                           f"({result.state.stopped_by}); validation users: answer loss {last['val_loss']:.3f}, "
                           f"exact match {last['val_exact']:.2f}", "green"))  # fmt: skip
    console.print(safe(f"llama.cpp adapter: {result.gguf} ({result.gguf.stat().st_size / 1e6:.1f} MB, sha256 "
                       f"{file_digest(result.gguf)[:12]})"))  # fmt: skip
    console.print(safe(f"validation curve: {directory / 'curve.png'}"))


def _summary_examples(ws):
    """The summary examples a semantic head or tower trains on (training and validation users' rule abstracts,
    `agents.pipeline.head_examples`), the encoder shelf, and the record saved with what is trained on them. The
    device is built in the text space: what is about to be trained must not be needed to build it."""
    from agents.cloud.semantic import TextSpace  # deferred: loads the agents
    from agents.device.encoders import EncoderShelf
    from agents.pipeline import head_examples
    from graph.runtime import build_device
    from tools.device_store import DeviceStore
    from tools.semantic_head import CUTS_PER_USER

    settings = ws.settings.model_copy(update={"semantic_space": "text"})
    shelf = EncoderShelf(settings.models_dir, ws.dataset)
    device = build_device(settings, ws, shelf, DeviceStore(":memory:"), slm=None)
    examples = head_examples(device, TextSpace(ws.semantics), ws, ("train", "valid"))
    train, valid = examples["train"], examples["valid"]
    data = {"dataset": ws.dataset.name, "fingerprint": ws.dataset.fingerprint(), "training_examples": len(train),
            "cuts_per_user": CUTS_PER_USER, "validation_users": len(valid)}  # fmt: skip
    return shelf, train, valid, data


def _saved_with_curve(console: Console, what: str, path: Path, loss: str, history: list, data_name: str) -> None:
    """Print where a semantic head or tower was saved, and plot its validation curve beside it."""
    from tools.curves import plot_training_curves

    curve = plot_training_curves({f"semantic {what} ({loss})": history}, path.with_suffix(".curve.png"),
                                 f"semantic {what} on {data_name}: validation (no query, history masked)")
    console.print(safe(f"{what}: {path}"))
    console.print(safe(f"validation curve: {curve}"))


def _train_semantic(ws, config, out: Path | None, console: Console) -> None:
    """CDA4Rec Eq. 2 trained with Eq. 10 (or CE): the cloud's semantic head, saved where the cloud looks for it."""
    from tools.semantic_head import head_path, save_head, train_head

    _, train, valid, data = _summary_examples(ws)
    result = train_head(train, valid, ws.semantics.table, ws.semantics.pca, config)
    path = out or head_path(ws.settings.models_dir, ws.semantics.key)
    save_head(path, result, ws.semantics.key, data)
    console.print(labelled("semantic head: ", f"{config.loss}, best epoch {result.best_epoch} of {len(result.history)} "
                           f"in {result.seconds:.0f} s on {len(train)} training summaries", "green"))  # fmt: skip
    console.print(f"validation, no query, history masked: NDCG@10 {result.initial_valid['NDCG@10']:.4f} (PCA, "
                  f"untrained Eq. 2) -> {result.best_valid['NDCG@10']:.4f}; HR@10 {result.initial_valid['HR@10']:.4f}"
                  f" -> {result.best_valid['HR@10']:.4f}")  # fmt: skip
    _saved_with_curve(console, "head", path, config.loss, result.history, ws.dataset.name)


def _train_tower(ws, config, out: Path | None, console: Console) -> None:
    """CDA4Rec Eq. 2 trained into the device encoder's item table (`tools.encoder_space`): the semantic tower, with a
    copy of SASRec's item table, saved where the cloud looks for it."""
    from tools.checkpoints import file_digest
    from tools.encoder_space import save_tower, tower_path, train_summary_tower
    from tools.fused_tower import item_table

    shelf, train, valid, data = _summary_examples(ws)
    table = item_table(shelf.get("SASRec"))
    encoder_digest = file_digest(shelf.path("SASRec"))
    result = train_summary_tower(train, valid, table, config)
    fitted = result.fitted
    path = out or tower_path(ws.settings.models_dir, ws.semantics.key)
    data |= {"encoder": "SASRec", "encoder_checkpoint": str(shelf.path("SASRec"))}
    save_tower(path, result, table, ws.semantics.key, encoder_digest, data)
    console.print(labelled("semantic tower: ", f"{config.loss}, best epoch {fitted.best_epoch} of "
                           f"{len(fitted.history)} in {fitted.seconds:.0f} s on {len(train)} training summaries, "
                           f"into SASRec {encoder_digest[:12]}'s item table", "green"))  # fmt: skip
    console.print(f"validation, no query, history masked: NDCG@10 {fitted.best_valid['NDCG@10']:.4f}, "
                  f"HR@10 {fitted.best_valid['HR@10']:.4f}")  # fmt: skip
    _saved_with_curve(console, "tower", path, config.loss, fitted.history, ws.dataset.name)


def _train_chord(ws, encoder: str, minutes: float, threads: int | None, console: Console) -> None:
    """CHORD 3.2-3.4 against the frozen, trained encoder checkpoint; saved beside it."""
    from tools.checkpoints import default_checkpoint, load_encoder  # deferred: loads PyTorch
    from tools.chord import ChordConfig, default_chord_checkpoint, save_chord, train_chord

    if encoder == "surge":
        raise TandemError("CHORD quantizes SASRec or Caser (the CHORD paper's backbones); choose one of those")
    model = load_encoder(default_checkpoint(ws.settings.models_dir, encoder, ws.dataset, "ce"), ws.dataset)
    config = ChordConfig(steps=100_000, time_budget_s=minutes * 60, threads=threads, seed=ws.settings.seed)
    result = train_chord(model, ws.splits.train, config, log=console.log)
    path = save_chord(default_chord_checkpoint(ws.settings.models_dir, encoder, ws.dataset), result.chord, model)
    console.print(labelled(f"CHORD for {encoder}: ", f"{result.steps} steps in {result.seconds:.0f} s "
                           f"({result.stopped_by}); checkpoint: {path}", "green"))  # fmt: skip


def _train_cooperative(ws, encoder: str, loss: str, negatives: int, epochs: int, patience: int, minutes: float | None,
                       console: Console) -> None:  # fmt: skip
    """LSC4Rec 3.2.2 on the trained checkpoint; the result is saved as <encoder>-coop.pt beside it, and the device
    uses it from then on only when it ranks validation items better within the cloud's candidates."""
    from agents.device.encoders import EncoderShelf  # deferred: loads the agents
    from agents.pipeline import candidate_pools
    from graph.runtime import build_cloud, build_device
    from tools.checkpoints import default_checkpoint, load_encoder, save_checkpoint
    from tools.cooperative import cooperative_finetune, within_candidates, write_choice
    from tools.device_store import DeviceStore
    from tools.metrics import evaluate
    from tools.training import TrainConfig, TrainResult

    base_path = default_checkpoint(ws.settings.models_dir, encoder, ws.dataset, "ce")
    model = load_encoder(base_path, ws.dataset)
    shelf = EncoderShelf(ws.settings.models_dir, ws.dataset, follow_cooperative=False)
    device = build_device(ws.settings, ws, shelf, DeviceStore(":memory:"), slm=None)
    cloud = build_cloud(ws.settings, ws, shelf, "rule", exact=True)
    pools = candidate_pools(device, cloud, ws.splits.train)
    console.print(f"cloud candidate lists: {len(pools)} users, mean {np.mean([len(p) for p in pools.values()]):.0f}")
    valid = ws.splits.valid[:COOPERATIVE_VALID_USERS]
    valid_pools = candidate_pools(device, cloud, {inst.user: inst.history for inst in valid})
    base = within_candidates(model, valid, valid_pools)
    result = cooperative_finetune(model, ws.splits, pools, epochs=min(epochs, 10), patience=min(patience, 3),
                                  time_budget_s=minutes * 60 if minutes else None, seed=ws.settings.seed,
                                  loss=loss, negatives=max(negatives, COOPERATIVE_NEGATIVES),
                                  criterion=lambda m: within_candidates(m, valid, valid_pools))  # fmt: skip
    path = default_checkpoint(ws.settings.models_dir, encoder, ws.dataset, "coop")
    summary = TrainResult(model, result.best_valid, result.best_epoch, result.epochs_run,
                          result.seconds / max(1, result.epochs_run), [], path)  # fmt: skip
    save_checkpoint(path, model, ws.dataset, TrainConfig(encoder=encoder, loss=loss), summary)
    tuned = within_candidates(model, valid, valid_pools)
    choice = write_choice(base_path, path, base, tuned, len(valid))
    test = evaluate(model, ws.splits.test, mask_seen=True)
    console.print(f"best epoch {result.best_epoch} of {result.epochs_run} (epoch 0 = unchanged), chosen within the "
                  "cloud's candidates")  # fmt: skip
    console.print(f"within the cloud's candidates ({len(valid)} validation users): NDCG@10 {base['NDCG@10']:.4f} -> "
                  f"{tuned['NDCG@10']:.4f}, HR@10 {base['HR@10']:.4f} -> {tuned['HR@10']:.4f}; the device uses the "
                  f"{choice['use']} checkpoint")  # fmt: skip
    console.print(f"test (cooperative, history masked): {test.line()}", highlight=False)
    console.print(safe(f"checkpoint: {path}"))
