"""Generated queries: three clarity levels, seeded, never naming the target."""

from __future__ import annotations

from collections import Counter

from tools.data import Item, make_query, mentions_title


def test_target_title_never_appears(ml100k, ml100k_splits):
    instances = ml100k_splits.test + ml100k_splits.valid + ml100k_splits.fewshot
    for inst in instances:
        assert not mentions_title(inst.query, ml100k.catalog[inst.target].title), inst
    clarities = Counter(inst.clarity for inst in instances)
    assert set(clarities) == {"clear", "vague", "none"}
    assert all(inst.query == "" for inst in instances if inst.clarity == "none")
    assert all(inst.query for inst in instances if inst.clarity != "none")


def test_clear_query_names_genre_and_decade():
    item = Item(item_id=1, title="Heat", year=1995, tags=("Action", "Crime", "1990s"))
    query, clarity = make_query(item, seed=(1,), clarity="clear")
    assert clarity == "clear" and "Action" in query and "1990s" in query


def test_titles_that_collide_with_templates_are_avoided():
    for title in ("M", "Drama", "Comedy", "Something", "Tonight", "Recommend a Comedy film"):
        item = Item(item_id=1, title=title, year=1931, tags=("Comedy", "Drama", "1930s"))
        for clarity in ("clear", "vague"):
            for seed in range(5):
                query, _ = make_query(item, seed=(seed,), clarity=clarity)
                assert not mentions_title(query, title), (title, query)


def test_mentions_title_handles_articles_and_word_boundaries():
    assert mentions_title("I loved the usual suspects!", "Usual Suspects, The")
    assert mentions_title("Heat (1995) again", "Heat")
    assert not mentions_title("a heated debate", "Heat")
    assert make_query(Item(item_id=1, title="X", year=None, tags=("Drama",)), seed=(3, 4)) == make_query(
        Item(item_id=1, title="X", year=None, tags=("Drama",)), seed=(3, 4)
    )
