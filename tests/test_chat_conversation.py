"""Scripted multi-turn conversations through the real graph (rule planner, ML-100K, real Chroma and SQLite).

Each test types what a person would and checks the effect on the list, not only the text: references rank
toward the item, refinements move the years, exclusions hold in 10 of 10 results and persist across turns,
a decade shift keeps the rest of the request, the conversation survives a resume, and /reset says what it
clears and does not reload the data set's ratings.
"""

from __future__ import annotations

import io
from dataclasses import replace
from statistics import median

import numpy as np
import pytest
from rich.console import Console

from graph.builder import builder
from graph.run import recommend, sqlite_checkpointer
from graph.runtime import TandemRuntime
from tandem.chat import ChatSession
from tandem.views import plan_table
from tools import conversation as talk
from tools.constraints import parse_request
from tools.protocol import Plan, PlanResult, Violation

USER = "196"


@pytest.fixture
def runtime(settings, ready, tmp_path) -> TandemRuntime:
    return TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"),
                                progress=False)  # fmt: skip


def open_chat(runtime: TandemRuntime, tmp_path, session: str = "s1", user: str | None = USER) -> ChatSession:
    graph = builder.compile(checkpointer=sqlite_checkpointer(tmp_path / "sessions.sqlite"))
    console = Console(file=io.StringIO(), width=160)
    previous = graph.get_state({"configurable": {"thread_id": session}}).values
    saved = talk.Conversation.model_validate(previous.get("conversation") or {})
    return ChatSession(runtime, user or previous["user"], session, console, graph, dict(previous), saved)


def items(chat: ChatSession, turn) -> list:
    return [chat.catalog[i] for i in turn["ranked"]]


def test_reference_ranks_toward_the_referenced_item(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    first = chat.ask("a funny movie")
    second_id = first["ranked"][1]
    resolution = chat.resolve("more like the second one")
    assert resolution.seeds == [second_id]
    seed = chat.catalog[second_id]
    assert "like a" in resolution.request and seed.title not in resolution.request  # described, never named
    assert parse_request(resolution.request, chat.catalog.tags()).year_from is None  # a likeness is no range
    turn = chat.ask(resolution)
    assert second_id not in turn["ranked"], "asked for more like it, not it again"

    # the same standalone request without the seed: the seed pulls the list toward the referenced item
    plain = recommend(runtime, USER, resolution.request, use_cache=False, allow_rerequest=False)
    norms = np.linalg.norm(runtime.device.item_table, axis=1, keepdims=True)
    table = runtime.device.item_table / np.maximum(norms, 1e-12)

    def closeness(ids: list[int]) -> float:
        return float(np.mean(table[ids] @ table[second_id]))

    assert closeness(turn["ranked"]) > closeness(plain["ranked"])


def test_refinement_older_moves_every_result_before_the_last_lists_decade(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    first = chat.ask("a funny movie")
    middle = int(median(i.year for i in items(chat, first)))
    resolution = chat.resolve("older ones please")
    assert f"before {middle // 10 * 10}" in resolution.request and "funny" in resolution.request
    turn = chat.ask(resolution)
    assert len(turn["ranked"]) == 10 and all(i.year < middle // 10 * 10 for i in items(chat, turn))
    newer = chat.ask("newer")
    assert all(i.year >= (int(median(i.year for i in items(chat, turn))) // 10 * 10 + 10) for i in items(chat, newer))


def test_exclusion_holds_in_ten_of_ten_and_persists_until_dropped(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    turn = chat.ask("a romantic comedy")
    assert any("Romance" in i.tags for i in items(chat, turn))
    turn = chat.ask("anything but romance")
    assert len(turn["ranked"]) == 10 and not any("Romance" in i.tags for i in items(chat, turn))
    assert "Romance" not in turn["plan_result"].plan.tags
    turn = chat.ask("older ones please")  # a refinement keeps the exclusion
    assert "not Romance" in chat.conversation.turns[-1].request
    assert not any("Romance" in i.tags for i in items(chat, turn))
    turn = chat.ask("romance is fine again")
    assert "Romance" not in chat.conversation.exclude and "not Romance" not in chat.conversation.turns[-1].request


def test_not_that_one_is_never_shown_again(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    first = chat.ask("a thriller")
    chat.ask("more like the first one")
    turned_down = chat.conversation.focus
    assert turned_down == first["ranked"][0]
    resolution = chat.resolve("not that one")
    assert turned_down in resolution.avoid and turned_down not in resolution.seeds
    for said in ("", "a thriller", "any decade"):
        turn = chat.ask(chat.resolve(said) if said else resolution)
        assert turned_down not in turn["ranked"]


def test_decade_shift_keeps_the_rest_of_the_request_and_survives_a_resume(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path, session="resume1")
    chat.ask("a funny movie, no romance")
    turn = chat.ask("same but 1980s")
    assert chat.conversation.turns[-1].request == "a funny movie, not Romance, from the 1980s"
    assert all(1980 <= i.year <= 1989 and "Romance" not in i.tags for i in items(chat, turn))

    again = open_chat(runtime, tmp_path, session="resume1", user=None)  # a new process resuming the session
    assert again.user == USER and again.conversation.topic == "a funny movie"
    assert again.conversation.exclude == ["Romance"] and again.conversation.shown == turn["ranked"]
    resolution = again.resolve("same again but from the 1970s")
    assert resolution.request == "a funny movie, not Romance, from the 1970s"
    turn = again.ask(resolution)
    assert all(1970 <= i.year <= 1979 and "Romance" not in i.tags for i in items(again, turn))
    assert sum("Comedy" in i.tags for i in items(again, turn)) >= 8  # "funny" was kept
    dropped = again.resolve("any decade")
    assert dropped.request == "a funny movie, not Romance"


def test_liked_items_become_seeds_and_start_over_drops_everything(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    first = chat.ask("an adventure, not from the 1990s")
    chat.like("3")
    assert chat.conversation.seeds[-1].item_id == first["ranked"][2] and chat.conversation.seeds[-1].kind == "liked"
    assert first["ranked"][2] in chat.resolve("more of that").seeds
    fresh = chat.resolve("start over, a western")
    assert fresh.request == "a western" and not fresh.seeds and not fresh.conversation.exclude


def test_reset_says_what_it_clears_and_does_not_reload_the_ratings(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    chat.ask("a funny movie")
    before = len(runtime.device.store.history(USER)[0])
    assert before > 0
    chat.reset()
    said = chat.console.file.getvalue()
    assert f"({before} interactions)" in said and "conversation" in said and "not loaded again" in said
    assert chat.conversation == talk.Conversation()
    turn = chat.ask("a funny movie")
    assert len(runtime.device.store.history(USER)[0]) == 0, "the data set's ratings came back after /reset"
    assert len(turn["ranked"]) == 10 and turn["plan_result"].plan.encoder == "none"  # planned for an empty history


def test_cache_is_keyed_by_planner_and_prompt(runtime):
    first = recommend(runtime, USER, "a funny movie", allow_rerequest=False)
    assert first["source"] == "cloud"
    assert recommend(runtime, USER, "a funny movie", allow_rerequest=False)["source"] == "cache"
    other = replace(runtime, planner="llm")  # another planner: the cached plan is not its plan
    assert other.cache_scope != runtime.cache_scope
    assert recommend(other, USER, "a funny movie", allow_rerequest=False)["source"] == "cloud"
    fresh = recommend(runtime, USER, "a funny movie", allow_rerequest=False, use_cache=False)
    assert fresh["source"] == "cloud" and fresh["plan_result"].status == "rule"


def test_a_people_request_is_served_with_an_honest_line(runtime):
    state = recommend(runtime, USER, "a Hitchcock thriller", allow_rerequest=False)
    assert state["abstract"].sanitized_query == "a thriller"
    assert any('"Hitchcock"' in w and "genres" in w for w in state["warnings"])
    assert len(state["ranked"]) == 10


def test_a_named_history_title_crosses_as_its_description(runtime, tmp_path):
    toy_story = next(i for i in runtime.device.catalog.items if i.title == "Toy Story")
    state = recommend(runtime, "someone-new", "something like Toy Story but for adults", allow_rerequest=False,
                      history=[toy_story.item_id, 50], history_ts=[1, 2])  # fmt: skip
    sent = state["abstract"].sanitized_query
    assert sent == "something like an animated children's comedy from the 1990s but for adults"
    assert state["replaced"] == ['"Toy Story" -> "an animated children\'s comedy from the 1990s"']


def test_plan_labels_are_honest():
    why = {"semantic": "one", "retrieval": "one", "structured": "one", "ranking": "one"}
    plan = Plan.model_validate({"alpha": 0.5, "tag_count": 3, "candidate_size": 500, "encoder": "SASRec",
                                "beta": 0.5, "tags": {"Comedy": 200, "Drama": 200, "Action": 100},
                                "explanations": why})  # fmt: skip
    compact = plan_table(PlanResult(plan=plan, status="rule"))
    out = io.StringIO()
    Console(file=out, width=160).print(compact)
    text = out.getvalue()
    assert "rule planner" in text and "fallback" not in text
    assert text.count("one rationale for the whole plan") == 1 and len(compact.columns) == 2

    own = plan.model_copy(update={"explanations": plan.explanations.model_copy(update={"ranking": "two"})})
    violation = Violation(field="tag_count", code="mismatch", message="tag_count=4, 3 tags")
    repaired = plan_table(PlanResult(plan=own, status="repaired", violations=[violation]))
    out = io.StringIO()
    Console(file=out, width=200).print(repaired)
    text = out.getvalue()
    assert len(repaired.columns) == 3 and "repaired on parsing" in text and "violation" not in text
    assert "in the model's text: tag_count=4, 3 tags (the table shows the final plan)" in text


# ---------------------------------------------------------------------------------------------- not X, 10 of 10

NOT_X_REQUESTS = [
    ("anything but romance", "Romance"),
    ("a comedy, no romance", "Romance"),
    ("I don't want drama tonight", "Drama"),
    ("something exciting but not action", "Action"),
    ("nothing with comedy please", "Comedy"),
    ("a thriller without any crime", "Crime"),
]


def _ten_without(state, catalog, tag: str) -> None:
    assert len(state["ranked"]) == 10
    hits = [catalog[i].title for i in state["ranked"] if tag in catalog[i].tags]
    assert not hits, f"{tag} in {hits}"
    assert tag not in state["plan_result"].plan.tags


@pytest.mark.parametrize(("query", "tag"), NOT_X_REQUESTS)
def test_not_x_excludes_x_in_ten_of_ten_through_the_graph(runtime, query, tag):
    state = recommend(runtime, USER, query, allow_rerequest=False)
    _ten_without(state, runtime.device.catalog, tag)
    assert state["constraints"].exclude == [tag]


@pytest.fixture
def llm_runtime(settings, ready, tmp_path) -> TandemRuntime:
    return TandemRuntime.create(settings, "ml-100k", planner="llm", store_path=str(tmp_path / "device.sqlite"),
                                progress=False)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("query", "tag"), NOT_X_REQUESTS[:2])
def test_not_x_excludes_x_in_ten_of_ten_with_the_language_model_planner(llm_runtime, query, tag):
    state = recommend(llm_runtime, USER, query, allow_rerequest=False)
    _ten_without(state, llm_runtime.device.catalog, tag)


@pytest.mark.slow
def test_a_language_model_plan_naming_an_excluded_tag_is_swapped_on_the_device(llm_runtime):
    rt = llm_runtime
    history = rt.device.history(USER)
    abstract = rt.device.abstract("a funny movie", history.items, history.timestamps).abstract
    real = rt.cloud.plan(abstract)  # the embedded language model's own plan
    assert real.status in ("parsed", "repaired"), real.violations
    named = next(t for t in real.plan.tags if not t[:4].isdigit())
    rt.cloud.plan = lambda _abstract: real  # the graph is handed exactly that plan
    state = recommend(rt, USER, f"a funny movie, not {named}", allow_rerequest=False, use_cache=False)
    assert "device_constrain" in state["route"]
    assert any(f"the plan named {named}" in w for w in state["warnings"])
    final = state["plan_result"].plan
    assert named not in final.tags and final.tag_count == real.plan.tag_count
    assert sorted(final.tags.values()) == sorted(real.plan.tags.values())  # each N_i kept by its replacement
    _ten_without(state, rt.device.catalog, named)


def test_darker_rules_out_light_genres_until_the_topic_changes(runtime, tmp_path):
    chat = open_chat(runtime, tmp_path)
    chat.ask("a thriller, no westerns")
    turn = chat.ask("darker")
    assert not any({"Comedy", "Children's", "Animation", "Western"} & set(i.tags) for i in items(chat, turn))
    assert sum(bool({"Crime", "Thriller"} & set(i.tags)) for i in items(chat, turn)) >= 5
    new_topic = chat.resolve("a road movie comedy")  # a new topic: "darker" goes, the user's own "no westerns" stays
    assert new_topic.request == "a road movie comedy, not Western"
