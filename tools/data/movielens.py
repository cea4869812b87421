"""Loaders for MovieLens: RecBole atomic files (as fetched) and the original GroupLens files.

Every loader returns a `Dataset` re-indexed to dense integer ids (items from 1, 0 = padding; users from
0), with each user's interactions in time order (ties keep file order). Tags are genres plus the release
decade ("1990s"), so ML-100K and ML-1M both have tag groups in the twenties, as in CDA4Rec.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ground.errors import NotMovieLensError

from .catalog import Catalog, Dataset, Item, decade_tag
from .fetch import dataset_dir, fetch, is_fetched

GROUPLENS_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")

RawItem = tuple[str, int | None, list[str]]  # title, year, genres


def load(name_or_path: str, data_dir: Path) -> Dataset:
    """Load a data set by name ("ml-100k", "ml-1m"; fetched on first use) or from a folder of files."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return load_folder(path)
    folder = dataset_dir(name_or_path, data_dir)
    if not is_fetched(name_or_path, data_dir):
        fetch(name_or_path, data_dir)
    return load_folder(folder)


def load_folder(folder: Path) -> Dataset:
    """Recognise the files in `folder` and load them."""
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return _load_grouplens_100k(folder)
    if (folder / "ratings.dat").is_file() and (folder / "movies.dat").is_file():
        return _load_grouplens_1m(folder)
    inter = sorted(folder.glob("*.inter"))
    items = sorted(folder.glob("*.item"))
    if inter and items:
        return _load_atomic(folder.name, inter[0], items[0])
    raise NotMovieLensError(
        f"{folder} is not a MovieLens folder: expected u.data+u.item, ratings.dat+movies.dat, or *.inter+*.item"
    )


def _split_title_year(title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(title.strip())
    if match:
        return match.group(1).strip(), int(match.group(2))
    return title.strip(), None


def _to_int_year(text: str) -> int | None:
    try:
        year = int(float(text))
    except ValueError:
        return None
    return year if 1800 < year < 2100 else None


def _load_atomic(name: str, inter_path: Path, item_path: Path) -> Dataset:
    """RecBole atomic files: typed tab-separated headers; ml-1m's lines end in CRLF."""
    raw_items: dict[str, RawItem] = {}
    with open(item_path, encoding="utf-8", newline="") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\r\n").split("\t")]
        col = {h: i for i, h in enumerate(header)}
        genre_col = col.get("class", col.get("genre"))
        if "item_id" not in col or "movie_title" not in col or genre_col is None:
            raise NotMovieLensError(f"{item_path} lacks item_id/movie_title/genre columns")
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < len(header):
                continue
            year = _to_int_year(fields[col["release_year"]]) if "release_year" in col else None
            raw_items[fields[col["item_id"]]] = (fields[col["movie_title"]].strip(), year, fields[genre_col].split())
    rows = []
    with open(inter_path, encoding="utf-8", newline="") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\r\n").split("\t")]
        col = {h: i for i, h in enumerate(header)}
        if not {"user_id", "item_id", "timestamp"} <= set(col):
            raise NotMovieLensError(f"{inter_path} lacks user_id/item_id/timestamp columns")
        u, i, t = col["user_id"], col["item_id"], col["timestamp"]
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) >= len(header):
                rows.append((fields[u], fields[i], int(float(fields[t]))))
    return _build(name, rows, raw_items)


def _load_grouplens_100k(folder: Path) -> Dataset:
    raw_items: dict[str, RawItem] = {}
    with open(folder / "u.item", encoding="latin-1") as f:
        for line in f:
            fields = line.rstrip("\n").split("|")
            if len(fields) < 5 + len(GROUPLENS_100K_GENRES):
                continue
            title, year = _split_title_year(fields[1])
            if year is None:
                year = _to_int_year(fields[2][-4:]) if fields[2] else None
            flags = fields[5 : 5 + len(GROUPLENS_100K_GENRES)]
            genres = [g for g, flag in zip(GROUPLENS_100K_GENRES, flags, strict=True) if flag == "1"]
            raw_items[fields[0]] = (title, year, genres)
    rows = []
    with open(folder / "u.data", encoding="latin-1") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4:
                rows.append((fields[0], fields[1], int(fields[3])))
    return _build("ml-100k", rows, raw_items)


def _load_grouplens_1m(folder: Path) -> Dataset:
    raw_items: dict[str, RawItem] = {}
    with open(folder / "movies.dat", encoding="latin-1") as f:
        for line in f:
            fields = line.rstrip("\r\n").split("::")
            if len(fields) == 3:
                title, year = _split_title_year(fields[1])
                raw_items[fields[0]] = (title, year, fields[2].split("|"))
    rows = []
    with open(folder / "ratings.dat", encoding="latin-1") as f:
        for line in f:
            fields = line.rstrip("\r\n").split("::")
            if len(fields) == 4:
                rows.append((fields[0], fields[1], int(fields[3])))
    return _build("ml-1m", rows, raw_items)


def _tags(year: int | None, genres: Iterable[str]) -> tuple[str, ...]:
    tags = [g for g in genres if g and g.lower() != "unknown"]
    decade = decade_tag(year)
    if decade:
        tags.append(decade)
    return tuple(dict.fromkeys(tags)) or ("Uncategorized",)


def _build(name: str, rows: list[tuple[str, str, int]], raw_items: dict[str, RawItem]) -> Dataset:
    """Re-index to dense ids in order of first appearance and sort each user's interactions by time."""
    if not rows:
        raise NotMovieLensError(f"no interactions found for {name}")
    item_index: dict[str, int] = {}
    items: list[Item] = []
    per_user: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for order, (user, raw_item, ts) in enumerate(rows):
        if raw_item not in item_index:
            title, year, genres = raw_items.get(raw_item, (*_split_title_year(raw_item), []))
            item_index[raw_item] = len(items) + 1
            items.append(Item(item_id=len(items) + 1, title=title or raw_item, year=year, tags=_tags(year, genres)))
        per_user[user].append((ts, order, item_index[raw_item]))
    user_names = sorted(per_user, key=lambda u: (len(u), u))
    sequences, timestamps = [], []
    for user in user_names:
        events = sorted(per_user[user])
        sequences.append(np.fromiter((e[2] for e in events), dtype=np.int64, count=len(events)))
        timestamps.append(np.fromiter((e[0] for e in events), dtype=np.int64, count=len(events)))
    return Dataset(name, Catalog(tuple(items)), tuple(user_names), tuple(sequences), tuple(timestamps))
