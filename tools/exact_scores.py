"""e_sem . e_i in float64 (CDA4Rec Eq. 3's retrieval score), the same number for an item wherever it is computed.

The cloud's exact index cuts its tag groups on these scores, the device recomputes them from its own item table
when the answer comes on the compact wire, and the plan executor ranks thousands of plans from them: all three
must agree to the last bit, or two items scoring alike can swap at a tag group's cut-off.

A BLAS matrix-vector product does not give that: it accumulates rows in blocks and handles the rows left over
by another code path, so two identical rows can get scores one unit in the last place apart depending on where
they sit in the matrix and how many rows it has (ML-100K lists some films twice with the same text, hence the
same embedding: "Deceiver" (1997) is items 692 and 1623, and the plan executor and the served pipeline once
ranked an oracle plan one position apart over them). Here each product of a float32
entry and a float32 query component is exact in float64, and every row is summed by the same pairwise reduction,
so a row's score depends only on the row and the query.
"""

from __future__ import annotations

import numpy as np


def exact_scores(table: np.ndarray, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """e_sem . e_i [C] in float64 for the items `ids` [C] of `table` [V + 1, d] and the query e_sem [d]: the same
    value for an item (and for two identical rows) however many items are scored together and in what order."""
    rows = np.asarray(table)[np.asarray(ids, dtype=np.int64)].astype(np.float64)  # [C, d]
    return (rows * np.asarray(query, dtype=np.float64).reshape(1, -1)).sum(axis=1)
