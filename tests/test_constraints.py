"""The request parser shared by the device and the rule planner: "not X" in many phrasings, year ranges, people."""

from __future__ import annotations

import pytest

from tools.constraints import parse_request, unsupported_note
from tools.protocol import Abstract
from tools.rule_planner import query_tags, rule_plan, signals_from_abstract

TAGS = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
        "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "Uncategorized", "War",
        "Western", "1920s", "1930s", "1940s", "1950s", "1960s", "1970s", "1980s", "1990s"]  # fmt: skip

NOT_X = [
    ("anything but romance", "Romance"),
    ("Anything but a Romance", "Romance"),
    ("no horror", "Horror"),
    ("not romance", "Romance"),
    ("Not romance!", "Romance"),
    ("a funny movie, not romance", "Romance"),
    ("nothing romantic please", "Romance"),
    ("a comedy without any romance", "Romance"),
    ("I don't want horror", "Horror"),
    ("i dont want any westerns", "Western"),
    ("I do not like musicals", "Musical"),
    ("skip the westerns", "Western"),
    ("except for dramas", "Drama"),
    ("everything except war movies", "War"),
    ("other than sci-fi", "Sci-Fi"),
    ("dramas excluding war films", "War"),
    ("non-horror thriller", "Horror"),
    ("romance-free comedy", "Romance"),
    ("no romcoms", "Romance"),
    ("no more scary stuff", "Horror"),
    ("I'm not into horror", "Horror"),
    ("avoid documentaries", "Documentary"),
    ("a fun movie, but no musicals please", "Musical"),
    ("something other than a comedy", "Comedy"),
    ("I hate thrillers", "Thriller"),
    ("no cartoons", "Animation"),
    ("not a kids movie", "Children's"),
    ("no sci fi tonight", "Sci-Fi"),
    ("sick of action movies", "Action"),
    ("anything except film noir", "Film-Noir"),
    ("Recommend something that isn't a horror movie", "Horror"),
    ("I want a movie that is not a comedy", "Comedy"),
    ("not in the mood for romance", "Romance"),
    ("keep it free of horror", "Horror"),
    ("steer clear of horror", "Horror"),
    ("something without violence or horror", "Horror"),
    ("exclude comedy", "Comedy"),
    ("romance? no thanks", "Romance"),
    ("horror is not my thing", "Horror"),
    ("not another comedy", "Comedy"),
    ("I can't stand horror", "Horror"),
    ("films that aren't thrillers", "Thriller"),
    ("I'd rather not watch a musical", "Musical"),
    ("show me anything, just no horror", "Horror"),
    ("a drama but not a war film", "War"),
]


@pytest.mark.parametrize(("text", "tag"), NOT_X)
def test_not_x_phrasings_exclude_x(text: str, tag: str) -> None:
    parsed = parse_request(text, TAGS)
    assert tag in parsed.exclude and tag not in parsed.include, parsed
    assert tag not in query_tags(text, TAGS), "the rule planner must not read an excluded tag as a query tag"


@pytest.mark.parametrize(
    ("text", "include", "exclude"),
    [
        ("no horror, romance or war", [], ["Horror", "Romance", "War"]),
        ("a comedy, not romance, from the 1980s", ["Comedy", "1980s"], ["Romance"]),
        ("not romance, a comedy", ["Comedy"], ["Romance"]),
        ("non-horror thriller", ["Thriller"], ["Horror"]),
        ("not too long, a comedy", ["Comedy"], []),
        ("an animated movie my kids can watch", ["Animation", "Children's"], []),
        ("something like an animated children's comedy from the 1990s but for adults",
         ["Animation", "Comedy", "1990s"], ["Children's"]),
    ],
)
def test_negation_scope_stops_where_the_list_ends(text: str, include: list[str], exclude: list[str]) -> None:
    parsed = parse_request(text, TAGS)
    assert parsed.include == include and parsed.exclude == exclude, parsed


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("a comedy before 1990", (None, 1989)),
        ("something pre-1990", (None, 1989)),
        ("before the 90s", (None, 1989)),
        ("from the 1980s", (1980, 1989)),
        ("a funny sci-fi from the 80s", (1980, 1989)),
        ("same but 1980s", (1980, 1989)),
        ("after 1995", (1996, None)),
        ("since 1995", (1995, None)),
        ("between 1980 and 1995", (1980, 1995)),
        ("westerns 1950-1969", (1950, 1969)),
        ("in 1994", (1994, 1994)),
        ("80s or 90s action", (1980, 1999)),
        ("something like a comedy from the 1990s", (None, None)),  # a likeness, not a range
        ("a comedy, not from the 80s", (None, None)),
    ],
)
def test_year_ranges(text: str, years: tuple[int | None, int | None]) -> None:
    parsed = parse_request(text, TAGS)
    assert (parsed.year_from, parsed.year_to) == years, parsed


def test_a_decade_under_a_negation_is_an_excluded_tag() -> None:
    parsed = parse_request("a comedy, not from the 80s", TAGS)
    assert parsed.exclude == ["1980s"] and not parsed.allows(["Comedy", "1980s"], 1985)


@pytest.mark.parametrize(
    ("text", "cut", "served"),
    [
        ("a Tom Hanks movie", "Tom Hanks", "a movie"),
        ("a Hitchcock thriller", "Hitchcock", "a thriller"),
        ("movies starring Meg Ryan", "starring Meg Ryan", "movies"),
        ("a comedy with Jim Carrey", "with Jim Carrey", "a comedy"),
        ("Spielberg's films", "Spielberg's", "films"),
        ("a movie about a dog who saves christmas", "about a dog who saves christmas", "a movie"),
        ("Action movies set in Paris", "set in Paris", "Action movies"),
    ],
)
def test_people_and_plots_are_cut_and_named(text: str, cut: str, served: str) -> None:
    parsed = parse_request(text, TAGS)
    assert parsed.unsupported == [cut] and parsed.served == served, parsed
    note = unsupported_note(parsed)
    assert note and cut in note and "genres" in note and "decades" in note and "viewing patterns" in note


def test_genre_words_are_not_people() -> None:
    for text in ["a Funny movie", "a Romantic comedy", "a Christmas movie with family", "I'd like a Sci-Fi film"]:
        assert "Funny" not in parse_request(text, TAGS).unsupported
    assert parse_request("a Sci-Fi movie", TAGS).unsupported == []


def test_the_rule_planner_never_plans_an_excluded_tag() -> None:
    facts = "Facts: 39 interactions over 30 days; 39 in the last 30 days; last one 0 days before the request; " \
            "top tags: Romance, Comedy, Drama; recent tags: Romance, Comedy."  # fmt: skip
    for query in ["anything but romance", "a comedy, no romance", "no romance or comedy"]:
        signals = signals_from_abstract(Abstract(sanitized_query=query, behavior_summary=facts), TAGS)
        plan = rule_plan(signals, TAGS)
        assert "Romance" not in plan.tags, (query, plan.tags)
