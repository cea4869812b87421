"""Generated queries: three clarity levels, seeded, never naming the target."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path

from tools.constraints import TAG_ALIASES, TAG_FORMS
from tools.data import Item, fidelity_query, make_query, mentions_title
from tools.data.queries import FAMILIES, MOODS, families, habit_query
from tools.rule_planner import query_tags


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


# ------------------------------------------------------------------------ fidelity levels and phrasings

ROOT = Path(__file__).resolve().parent.parent


def test_phrasing_families_are_split_into_dev_and_test():
    assert families("dev") and len(families("test")) >= 2
    assert all(f.split in ("dev", "test") for f in FAMILIES)
    assert {f.name for f in families("dev")}.isdisjoint({f.name for f in families("test")})


def phrasing_leaks(aliases: dict[str, str], prompt_texts: dict[str, str]) -> list[str]:
    """Every test-family phrasing that an alias would decode, or that a prompt file contains."""
    leaks = []
    for family in families("test"):
        for phrase in family.phrasings():
            low = phrase.lower()
            for alias in aliases:
                if re.search(rf"(?<![\w-]){re.escape(alias.lower())}(?![\w-])", low):
                    leaks.append(f"alias {alias!r} decodes {family.name} phrasing {phrase!r}")
            for name, text in prompt_texts.items():
                if re.search(rf"(?<![\w-]){re.escape(low)}(?![\w-])", text.lower()):
                    leaks.append(f"prompt {name} contains {family.name} phrasing {phrase!r}")
    return leaks


def test_no_test_phrasing_appears_in_the_alias_table_or_any_prompt():
    prompt_files = sorted(p for p in (ROOT / "prompts").iterdir() if p.is_file() and p.suffix in (".txt", ".json"))
    assert len(prompt_files) >= 3
    prompts = {p.name: p.read_text(encoding="utf-8") for p in prompt_files}
    vocabulary = {**TAG_ALIASES, **TAG_FORMS}  # every word the request parser reads as a tag
    assert phrasing_leaks(vocabulary, prompts) == []
    # the check bites: a test phrasing added to the alias table or to a prompt is caught
    mood = families("test")[0].moods["Comedy"]
    assert phrasing_leaks({**TAG_ALIASES, mood: "Comedy"}, prompts)
    template = families("test")[1].phrasings()[-1]
    assert phrasing_leaks(TAG_ALIASES, {**prompts, "plan@9.txt": f"Example: {template}."})


def test_dev_phrasings_are_what_the_alias_table_was_built_on():
    dev = families("dev")[0]
    decoded = {tag for tag in query_tags(" ".join(dev.moods.values()), list(MOODS))}
    assert len(decoded) >= 10  # the dev mood words decode back to their genres: that is the leak `exact` measures


def test_habit_query_never_reads_the_target(ml100k, ml100k_splits):
    assert "target" not in inspect.signature(habit_query).parameters
    genres = sorted(MOODS)
    for inst in ml100k_splits.test[:60]:
        recent = [ml100k.catalog[i] for i in inst.history[-10:].tolist()]
        made = [fidelity_query("habit", target=ml100k.catalog[t], recent=recent, all_genres=genres, split="test",
                               seed=(0, inst.user)).text for t in (inst.target, 1, 50)]  # fmt: skip
        assert made[0] == made[1] == made[2] and made[0]


def test_partial_query_names_exactly_one_target_genre(ml100k, ml100k_splits):
    genres = sorted(MOODS)
    wrong = 0
    for inst in ml100k_splits.test[:200]:
        target = ml100k.catalog[inst.target]
        family = families("test")
        query = fidelity_query("partial", target=target, recent=[], all_genres=genres, split="test",
                               seed=(1, inst.user))  # fmt: skip
        named = named_genres(query.text, family)
        own = [g for g in named if g in target.tags]
        assert len(own) == 1, (query, target.tags)
        assert len(named) <= 2 and "1990s" not in query.text
        wrong += len(named) == 2
    assert 50 < wrong < 150  # about half carry a genre the target lacks


def named_genres(text: str, fams) -> list[str]:
    """Genres a generated query names, directly or through any family's mood words."""
    found = []
    for genre in MOODS:
        words = [genre] + [f.moods[genre] for f in fams]
        if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text, flags=re.IGNORECASE) for w in words):
            found.append(genre)
    return found


def test_exact_query_is_the_oracle_hint_and_none_is_empty(ml100k, ml100k_splits):
    for inst in ml100k_splits.test[:100]:
        target = ml100k.catalog[inst.target]
        exact = fidelity_query("exact", target=target, recent=[], all_genres=sorted(MOODS), split="test",
                               seed=(2, inst.user))  # fmt: skip
        assert set(named_genres(exact.text, families("test"))) <= set(target.tags)
        assert not mentions_title(exact.text, target.title)
        assert fidelity_query("none", target=target, recent=[], all_genres=[], split="test", seed=(2,)).text == ""
    assert fidelity_query("exact", target=target, recent=[], all_genres=[], split="dev", seed=(3,)).family == (
        "dev-classic"
    )
