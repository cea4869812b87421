"""The plan adapter (CDA4Rec III-I, Eq. 8): LoRA on the cloud's language model, trained on hindsight targets.

Eq. 8 fine-tunes the planner Theta_l on (abstract, plan) pairs with the language-model loss of the plan tokens.
Here the pairs are the hindsight labels (`tandem plans label`, `evals.hindsight`): the abstract the cloud sees and
the plan-space point with the best mean validation reward among its neighbours, written compactly
(`tools.plan_point_answer`). The model is the packaged Gemma 3 270M, loaded with transformers from the GGUF the
runtime serves (dequantised to float32); the adapter is LoRA (`peft`) on every attention and MLP projection.
Prompt = the zero-shot `plan_adapter@1` prompt with the abstract, answer = the point's JSON text; the loss is
the cross-entropy of the answer tokens only (`answer_loss`), computed on the answer positions alone (the
262k-word output layer is never applied to prompt positions).

Validation is by user: a seeded share of the labelled users is held out (all their fidelity levels), and the
curve records their answer loss and exact-match rate (every answer token the argmax under teacher forcing, i.e.
greedy decoding writes the target). Test items are never read: the labels come from validation items only.

Checkpoints (`<models>/<data>-<fingerprint>/plan-adapter/`): `adapter/` (peft), `optimizer.pt`, `state.json`
(step, seconds, data digest, order seed, config, curve), `curve.png`, and after training `plan-adapter.gguf`
(`tools.lora_gguf`), the file the runtime serves. Resuming reloads adapter + optimizer + step; the data order is
a function of (seed, epoch), so it resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ground.errors import TandemError
from prompts import get_prompt
from tools.checkpoints import file_digest
from tools.compute import machine_threads

ADAPTER_PROMPT = "plan_adapter@1"
ADAPTER_DIR = "plan-adapter"
ADAPTER_GGUF = "plan-adapter.gguf"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE = -100


class AdapterError(TandemError):
    """Missing labels, a missing base model or an unreadable adapter checkpoint."""


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA and optimisation settings of one plan-adapter run."""

    rank: int = 8
    alpha: float = 16.0
    lr: float = 4e-4
    batch_size: int = 8
    eval_every: int = 12
    save_every: int = 12
    val_share: float = 0.2
    val_curve_size: int = 40
    seed: int = 0
    threads: int | None = None  # None: every core this process may use (`tools.compute.machine_threads`)
    max_steps: int = 100_000
    time_budget_s: float | None = None


@dataclass(frozen=True)
class Example:
    key: str
    user: str
    prompt: str
    answer: str


@dataclass
class TrainState:
    """What a checkpoint records besides the weights."""

    step: int = 0
    seconds: float = 0.0
    data_digest: str = ""
    train_examples: int = 0
    val_examples: int = 0
    val_users: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)
    stopped_by: str = ""


# ---------------------------------------------------------------------------------------------- data


def adapter_dir(models_dir: Path, data: str, fingerprint: str) -> Path:
    return Path(models_dir) / f"{data}-{fingerprint}" / ADAPTER_DIR


def adapter_gguf(models_dir: Path, data: str, fingerprint: str) -> Path:
    """Where the runtime looks for the served adapter of a data set."""
    return adapter_dir(models_dir, data, fingerprint) / ADAPTER_GGUF


def labels_for(exemplars: Path) -> Path:
    """The labels file of the newest hindsight labels (the key that `exemplars.npz` names)."""
    if not Path(exemplars).is_file():
        raise AdapterError(f"no hindsight labels at {exemplars}; make them with `tandem plans label --data <data>`")
    with np.load(exemplars, allow_pickle=False) as data:
        key = str(data["key"])
    return Path(exemplars).parent / key / "labels.jsonl"


def adapter_digest(path: Path) -> str:
    """The first 12 hex digits of the adapter file's SHA-256: names the adapter in `tandem models`, chat, demo."""
    return file_digest(path)[:12]


def render_prompt(abstract_text: str, prompt: str = ADAPTER_PROMPT) -> str:
    """The zero-shot prompt of the adapter, exactly as the planner renders it (`agents.cloud.planner`)."""
    return get_prompt(prompt).render(abstract=abstract_text)


def read_examples(labels: Path, prompt: str = ADAPTER_PROMPT) -> list[Example]:
    """Hindsight labels (`labels.jsonl`) -> (prompt, compact answer) pairs."""
    from tools.plan_point_answer import PointAnswer  # the answer format

    if not Path(labels).is_file():
        raise AdapterError(f"no hindsight labels at {labels}; make them with `tandem plans label --data <data>`")
    examples = []
    for line in Path(labels).read_text().splitlines():
        row = json.loads(line)
        point = row["target_point"]
        answer = PointAnswer(a=point["alpha"], k=point["tag_count"], n=point["candidate_size"], e=point["encoder"],
                             b=point["beta"]).text()  # fmt: skip
        user = row["key"].split(":", 1)[1]
        examples.append(Example(row["key"], user, render_prompt(row["abstract"], prompt), answer))
    return examples


def split_users(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation) with a seeded `share` of the users (all their instances) held out."""
    users = sorted({e.user for e in examples}, key=lambda u: (len(u), u))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(users, size=max(1, round(share * len(users))), replace=False).tolist())
    return [e for e in examples if e.user not in held], [e for e in examples if e.user in held]


def data_digest(examples: Sequence[Example]) -> str:
    text = json.dumps([(e.key, e.prompt, e.answer) for e in examples])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of BOS + prompt + answer, and labels that are IGNORE on BOS and prompt (Eq. 8 on answer tokens).

    The answer is tokenized alone, as the model writes it token by token after the prompt (llama.cpp tokenizes
    the prompt with BOS and generates the answer's tokens after it)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id, *prompt_ids, *answer_ids]
    return ids, [IGNORE] * (1 + len(prompt_ids)) + list(answer_ids)


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded tensors (input_ids, attention_mask, labels) of a batch."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, mask, labels


def answer_loss(model: Any, input_ids, attention_mask, labels):
    """CDA4Rec Eq. 8: mean cross-entropy of the answer tokens given everything before them.

    `model` is a (LoRA-wrapped) `Gemma3ForCausalLM`; the output layer (and Gemma's logit soft-capping, when the
    config sets it) runs on the answer positions only. Returns (loss, per-example exact match as a bool tensor,
    answer tokens right, answer tokens)."""
    import torch
    import torch.nn.functional as F

    causal = _causal_lm(model)
    hidden = causal.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, d]
    target = labels[:, 1:]  # [B, L-1]: position t predicts token t+1
    chosen = target != IGNORE
    logits = causal.lm_head(hidden[:, :-1][chosen])  # [T, V]
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    gold = target[chosen]
    loss = F.cross_entropy(logits.float(), gold)
    right = logits.argmax(-1) == gold
    wrong = torch.zeros_like(target, dtype=torch.bool)
    wrong[chosen] = ~right
    exact = ~wrong.any(dim=1)
    return loss, exact, int(right.sum()), int(gold.numel())


def _causal_lm(model: Any) -> Any:
    """The Gemma3ForCausalLM inside a peft wrapper (or the model itself)."""
    inner = getattr(model, "base_model", None)
    return getattr(inner, "model", model) if inner is not None and hasattr(inner, "peft_config") else model


# ---------------------------------------------------------------------------------------------- model


def load_base(gguf_file: Path) -> tuple[Any, Any]:
    """(Gemma3ForCausalLM in float32, tokenizer) from the packaged GGUF (about 90 s on two cores)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    path = Path(gguf_file).resolve()
    if not path.is_file():
        raise AdapterError(f"no base model GGUF at {path}; `tandem setup` assembles it")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = Gemma3ForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def with_lora(model: Any, config: AdapterConfig) -> Any:
    """`model` with fresh LoRA weights on every attention and MLP projection (B = 0: the base model's output)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
                      bias="none", task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, lora)


def lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def export_gguf(model: Any, config: AdapterConfig, path: Path) -> Path:
    """The trained adapter as a llama.cpp GGUF LoRA (`tools.lora_gguf`)."""
    from tools.lora_gguf import write_lora_gguf

    blocks = _causal_lm(model).config.num_hidden_layers
    return write_lora_gguf(lora_state(model), config.alpha, blocks, path)


# ---------------------------------------------------------------------------------------------- training


def batch_order(count: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of training step `step`: epoch e visits a permutation seeded by (seed, e)."""
    per_epoch = max(1, count // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[offset * batch_size: (offset + 1) * batch_size].tolist()


def evaluate(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16) -> dict:
    """Answer loss, exact-match rate and token accuracy on `rows` (teacher forcing, no gradient)."""
    import torch

    model.eval()
    losses, exact, right, total = [], 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start: start + batch_size]
            loss, ok, r, t = answer_loss(model, *collate(chunk, pad_id))
            losses.append(float(loss) * t)
            exact += int(ok.sum())
            right, total = right + r, total + t
    model.train()
    return {"val_loss": sum(losses) / max(1, total), "val_exact": exact / max(1, len(rows)),
            "val_token_acc": right / max(1, total)}  # fmt: skip


def save(directory: Path, model: Any, optimizer: Any, state: TrainState) -> None:
    """Adapter + optimizer + state, each replaced atomically (state last: it names a complete checkpoint)."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory / "adapter")
    torch.save(optimizer.state_dict(), directory / "optimizer.tmp")
    (directory / "optimizer.tmp").replace(directory / "optimizer.pt")
    (directory / "state.tmp").write_text(json.dumps(asdict(state), indent=1))
    (directory / "state.tmp").replace(directory / "state.json")


def load_state(directory: Path) -> TrainState | None:
    path = Path(directory) / "state.json"
    return TrainState(**json.loads(path.read_text())) if path.is_file() else None


def plot_curve(state: TrainState, path: Path, title: str) -> Path:
    """Training loss, validation answer loss and validation exact-match rate against steps (PNG)."""
    from matplotlib.figure import Figure  # deferred: only needed when a plot is written

    fig = Figure(figsize=(10, 3.2))
    left, right = fig.subplots(1, 2)
    steps = [row["step"] for row in state.curve]
    left.plot(steps, [row["train_loss"] for row in state.curve], marker=".", label="train (since last point)")
    left.plot(steps, [row["val_loss"] for row in state.curve], marker=".", label="validation users")
    left.set_title("answer-token loss (Eq. 8)")
    right.plot(steps, [row["val_exact"] for row in state.curve], marker=".", label="exact match")
    right.plot(steps, [row["val_token_acc"] for row in state.curve], marker=".", label="token accuracy")
    right.set_title("validation users (teacher forcing)")
    for panel in (left, right):
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


@dataclass
class TrainResult:
    directory: Path
    state: TrainState
    gguf: Path


def train_plan_adapter(
    labels: Path, gguf_file: Path, directory: Path, config: AdapterConfig, *, resume: bool = False,
    progress: bool = True, log: Callable[[str], None] = print, title: str = "plan adapter",
) -> TrainResult:
    """Train (or resume) the plan adapter on the hindsight labels until the time budget or `max_steps`, checkpoint
    every `save_every` steps, then write the curve PNG and the GGUF adapter the runtime serves."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads or machine_threads())
    examples = read_examples(labels)
    train, val = split_users(examples, config.val_share, config.seed)
    digest = data_digest(examples)
    previous = load_state(directory) if resume else None
    if resume and previous is None:
        raise AdapterError(f"nothing to resume at {directory}; start without --resume")
    if previous is not None and previous.data_digest != digest:
        raise AdapterError(f"the checkpoint at {directory} was trained on other labels (data digest "
                           f"{previous.data_digest}, now {digest}); start without --resume")  # fmt: skip
    start_load = time.perf_counter()
    base, tokenizer = load_base(gguf_file)
    log(f"base model loaded in {time.perf_counter() - start_load:.0f} s; {len(train)} training, {len(val)} "
        f"validation instances ({len({e.user for e in val})} held-out users)")  # fmt: skip
    if previous is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, directory / "adapter", is_trainable=True)
    else:
        model = with_lora(base, config)
    model.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows = [encode(tokenizer, e.prompt, e.answer) for e in train]
    rng = np.random.default_rng(config.seed)
    curve_idx = sorted(rng.choice(len(val), size=min(config.val_curve_size, len(val)), replace=False).tolist())
    val_rows = [encode(tokenizer, val[i].prompt, val[i].answer) for i in curve_idx]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    state = previous or TrainState(
        data_digest=digest, train_examples=len(train), val_examples=len(val),
        val_users=sorted({e.user for e in val}, key=lambda u: (len(u), u)), config=asdict(config))  # fmt: skip
    if previous is not None:
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    if not state.curve:
        state.curve.append({"step": 0, "seconds": 0.0, "train_loss": float("nan"), **evaluate(model, val_rows, pad)})
    budget = config.time_budget_s
    begin, base_seconds = time.perf_counter(), state.seconds
    losses: list[float] = []
    stopped = "max_steps"
    columns = (TextColumn("plan adapter"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())  # fmt: skip
    total = config.max_steps if budget is None else None
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=state.step, info="")
        while state.step < config.max_steps:
            if budget is not None and time.perf_counter() - begin >= budget:  # this run's budget
                stopped = "time budget"
                break
            batch = [train_rows[i] for i in batch_order(len(train_rows), config.batch_size, state.step, config.seed)]
            loss, _, _, _ = answer_loss(model, *collate(batch, pad))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
            state.step += 1
            state.seconds = base_seconds + time.perf_counter() - begin
            bar.update(task, completed=state.step, info=f"loss {np.mean(losses[-20:]):.3f}")
            if state.step % config.eval_every == 0:
                state.curve.append({"step": state.step, "seconds": round(state.seconds, 1),
                                    "train_loss": float(np.mean(losses)),
                                    **evaluate(model, val_rows, pad)})  # fmt: skip
                losses = []
                last = state.curve[-1]
                bar.update(task, info=f"val loss {last['val_loss']:.3f}, exact {last['val_exact']:.2f}")
            if state.step % config.save_every == 0:
                save(directory, model, optimizer, state)
    if not state.curve or state.curve[-1]["step"] != state.step:
        state.curve.append({"step": state.step, "seconds": round(state.seconds, 1),
                            "train_loss": float(np.mean(losses)) if losses else float("nan"),
                            **evaluate(model, val_rows, pad)})  # fmt: skip
    state.stopped_by = stopped
    save(directory, model, optimizer, state)
    plot_curve(state, directory / "curve.png", title)
    path = export_gguf(model, config, directory / ADAPTER_GGUF)
    return TrainResult(directory, state, path)
