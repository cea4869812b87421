"""Queries a researcher brings to `tandem eval rec --queries FILE.jsonl`, and the generated fidelity levels.

A queries file has one JSON object per line: {"user": "196", "query": "...", "target": 242 (optional)}.
`user` is the data set's own user id (as in the source files); `target` is a catalog item id. The user's
history is the one the leave-one-out split gives it (test users: everything before the test item; held-out
users: everything before their last item); without a target, the held-out item is the target. A user may
appear on several lines. Any line that is not such an object, an unknown user, a user with no evaluation
instance, or a target outside the catalog or inside the history stops the run with one line naming it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ground.errors import TandemError, UnknownUserError
from tools.checkpoints import file_digest
from tools.data import Dataset, EvalInstance, Fidelity, Splits, fidelity_query
from tools.data.queries import HABIT_WINDOW, QUERIES_VERSION, PhrasingSplit, genres_of


class QueryFileError(TandemError):
    """A queries file that cannot be read, or one of its lines that cannot be used."""


class QueryLine(BaseModel):
    """One line of a queries file."""

    model_config = ConfigDict(extra="forbid")

    user: str | int
    query: str
    target: int | None = None


@dataclass(frozen=True)
class QueryFile:
    """The instances of a queries file, with the file's name and SHA-256 (named in every report)."""

    path: Path
    sha256: str
    instances: list[EvalInstance]

    @property
    def mode(self) -> str:
        """The query mode of its plans: cached plans are keyed by the file's content."""
        return f"file-{self.sha256[:12]}"


def load_query_file(path: Path, dataset: Dataset, splits: Splits) -> QueryFile:
    """Read and check a queries file (see the module docstring); errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise QueryFileError(f"no queries file at {path}")
    base = {inst.user: inst for inst in [*splits.test, *splits.fewshot]}
    instances: list[EvalInstance] = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            instances.append(_instance(path, number, text, dataset, base))
    if not instances:
        raise QueryFileError(f"{path}: no queries (one JSON object per line: user, query, optional target)")
    return QueryFile(path, file_digest(path), instances)


def _instance(path: Path, number: int, text: str, dataset: Dataset, base: dict[int, EvalInstance]) -> EvalInstance:
    where = f"{path} line {number}"
    try:
        line = QueryLine.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise QueryFileError(f"{where}: not JSON ({exc.msg})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "line"
        raise QueryFileError(f"{where}: {field}: {first['msg']} (expected user, query, optional target)") from exc
    try:
        user = dataset.user_index(str(line.user))
    except UnknownUserError as exc:
        raise QueryFileError(f"{where}: {exc}") from exc
    inst = base.get(user)
    if inst is None:
        raise QueryFileError(f"{where}: user {line.user!r} has no evaluation instance (too few interactions)")
    target = inst.target if line.target is None else line.target
    if not 1 <= target <= dataset.catalog.num_items:
        raise QueryFileError(f"{where}: target {target} is not a catalog item id (1..{dataset.catalog.num_items})")
    if target in set(inst.history.tolist()):
        raise QueryFileError(f"{where}: target {target} is already in user {line.user!r}'s history")
    clarity = "none" if not line.query.strip() else "vague"
    return replace(inst, target=target, query=line.query, clarity=clarity, split=f"line{number}")


# ----------------------------------------------------------------------------------- generated queries


def fidelity_mode(fidelity: Fidelity, phrasing: PhrasingSplit) -> str:
    """The query mode of a fidelity level's plans: cached plans are keyed by generator version and phrasing."""
    return "none" if fidelity == "none" else f"{fidelity}-q{QUERIES_VERSION}-{phrasing}"


def with_fidelity(instances: Sequence[EvalInstance], fidelity: Fidelity, dataset: Dataset, seed: int,
                  phrasing: PhrasingSplit = "test") -> tuple[list[EvalInstance], list[str]]:  # fmt: skip
    """The instances with their query replaced by one at `fidelity` (seeded per user), and each query's family.

    `habit` queries are made from the newest history items only (`fidelity_query` gets the target for the
    other levels, and `habit_query` never sees it).
    """
    catalog = dataset.catalog
    all_genres = sorted({g for item in catalog.items for g in genres_of(item)})
    out, family = [], []
    for inst in instances:
        recent = [catalog[int(i)] for i in inst.history[-HABIT_WINDOW:].tolist()]
        made = fidelity_query(fidelity, target=catalog[inst.target], recent=recent, all_genres=all_genres,
                              split=phrasing, seed=(seed, inst.user, len(inst.history)))  # fmt: skip
        out.append(replace(inst, query=made.text, clarity=made.clarity))
        family.append(made.family)
    return out, family
