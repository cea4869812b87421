"""Device structured encoders f_loc of CDA4Rec Eq. 4: SASRec, SURGE and Caser behind one interface."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import SequentialEncoder, pad_left
from .caser import Caser
from .sasrec import SASRec
from .surge import SURGE

ENCODERS: dict[str, type[SequentialEncoder]] = {"sasrec": SASRec, "surge": SURGE, "caser": Caser}


def build_encoder(name: str, num_items: int, item_table: np.ndarray | None = None, **config: Any) -> SequentialEncoder:
    """A fresh encoder by name; `item_table` [num_items + 1, d] (CDA4Rec Eq. 1) initialises its item table."""
    cls = ENCODERS[name]
    if item_table is not None:
        config.setdefault("dim", item_table.shape[1])
    return cls(num_items=num_items, item_table=item_table, **config)


__all__ = ["ENCODERS", "SASRec", "SURGE", "Caser", "SequentialEncoder", "build_encoder", "pad_left"]
