"""Data layer: MovieLens fetching and loading, the typed catalog, leave-one-out splits and queries."""

from .catalog import Catalog, Dataset, Item
from .fetch import fetch, known_datasets
from .movielens import load, load_folder
from .queries import FIDELITIES, Fidelity, fidelity_query, make_query, mentions_title
from .splits import EvalInstance, Splits, leave_one_out

__all__ = [
    "FIDELITIES", "Catalog", "Dataset", "EvalInstance", "Fidelity", "Item", "Splits", "fetch", "fidelity_query",
    "known_datasets", "leave_one_out", "load", "load_folder", "make_query", "mentions_title",
]  # fmt: skip
