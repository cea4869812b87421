"""Prompt files: loading, versions, placeholders the code fills, faithfulness to Fig. 3-5, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.cloud.planner import LINE_PLAN_PROMPT, PLAN_FIELDS, PLAN_PROMPT, format_examples
from agents.device.abstract import ABSTRACT_FIELDS, ABSTRACT_PROMPT
from agents.device.explain import EXPLAIN_FIELDS, EXPLAIN_PROMPT
from agents.prompt_roles import PromptChoice, choose_prompts, role_of
from prompts import (
    PROMPTS_DIR,
    PromptError,
    PromptTemplate,
    UnknownPromptError,
    content_digest,
    get_prompt,
    load_prompts,
    new_version,
)
from tandem.commands.prompts import prompts_app
from tools.data import Dataset
from tools.plan_parsing import parse_plan

# What the code fills in, per prompt name.
FILLED = {**ABSTRACT_FIELDS, "explain@1": EXPLAIN_FIELDS,
          **{f"{n}@1": f for n, f in PLAN_FIELDS.items() if n != "plan_points"},
          "plan_exemplars@1": PLAN_FIELDS["plan_json"], "plan_exemplars@2": PLAN_FIELDS["plan_points"],
          "plan_exemplars@3": PLAN_FIELDS["plan_points"], "plan_exemplars@4": PLAN_FIELDS["plan_points"]}
FIG3 = ("Given the current user's query and interaction history, generate a two-part abstract: (1) a sanitized query "
        "that preserves intent while removing sensitive or overly specific content, and (2) a behavioral summary "
        "describing interaction sparsity and preference patterns without referencing specific items")  # fmt: skip
FIG4 = ("Given the user abstract containing the query and behavioral summary, generate an adaptive recommendation "
        "strategy across four modules: Semantic User Modeling, Candidate Retrieval, Structured User Modeling, and "
        "Final Ranking. For each module, return both the execution decision and a brief explanation of the "
        "rationale behind it")  # fmt: skip
FIG5 = ("Given the execution plan and the final recommended items, generate a natural language explanation that "
        "helps the user understand why these items were recommended. The explanation should reflect the user's "
        "query intent, behavioral signals, and strategy decisions. Keep the explanation concise, informative, and "
        "personalized.")  # fmt: skip


def test_every_file_loads_with_matching_name_and_version() -> None:
    registry = load_prompts()
    assert set(registry.names()) == {"abstract", "plan", "plan_json", "plan_exemplars", "plan_adapter", "explain"}
    for path in PROMPTS_DIR.glob("*@*.txt"):
        name, version = path.stem.split("@")
        template = registry.get(path.stem)
        assert (template.name, template.version, template.ref) == (name, int(version), path.stem)
        assert template.source.startswith("CDA4Rec Fig.")


def test_placeholders_match_what_the_code_fills() -> None:
    templates = load_prompts().all()
    assert {t.ref for t in templates} == set(FILLED)
    for template in templates:
        assert template.placeholders == FILLED[template.ref], template.ref


def test_code_refers_to_existing_versions() -> None:
    for ref in (ABSTRACT_PROMPT, EXPLAIN_PROMPT, PLAN_PROMPT, LINE_PLAN_PROMPT):
        assert get_prompt(ref).ref == ref


def test_faithful_to_the_paper_figures() -> None:
    for ref in ("abstract@1", "abstract@2"):
        assert FIG3 in get_prompt(ref).body and "Interaction History:" in get_prompt(ref).body
    for name in ("plan", "plan_json", "plan_exemplars@1"):  # the point-answer variants (plan_exemplars@2,
        # plan_adapter@1) keep only the instruction line
        assert FIG4 in get_prompt(name).body
    line = get_prompt("plan").body
    assert "Tips for Decision Making:" in line and "Output Format:" in line
    for module in ("Semantic User Modeling - {query: α, behavior: 1 - α}", "Structured User Modeling - {Model Name",
                   "Final Ranking - {semantic: β, structured: 1 - β}", "Explanation - {...}"):  # fmt: skip
        assert module in line
    assert FIG5 in get_prompt("explain").body and "Final Recommendation List:" in get_prompt("explain").body


def test_render_is_strict() -> None:
    template = get_prompt("abstract@1")
    assert "Query: hello" in template.render(query="hello", history="- x")
    with pytest.raises(PromptError, match="missing"):
        template.render(query="hello")
    with pytest.raises(PromptError, match="unexpected"):
        template.render(query="q", history="h", extra="x")
    # braces of the papers' formats are literal text, and values are not re-interpreted
    assert "${query}" in template.render(query="${query}", history="{}")


def test_unknown_names_and_versions() -> None:
    with pytest.raises(UnknownPromptError, match="unknown prompt"):
        get_prompt("nope")
    with pytest.raises(UnknownPromptError, match="unknown version"):
        get_prompt("plan@99")
    with pytest.raises(UnknownPromptError):
        get_prompt("plan@x")


def test_few_shot_examples_are_valid_plans(ml100k: Dataset) -> None:
    template = get_prompt("plan_json")
    assert template.examples_ref == "plan_json_examples@1" and len(template.examples) >= 3
    for example in template.examples:
        plan = parse_plan(json.dumps(example["plan"]), ml100k.catalog.tags())
        assert plan.tag_count in (3, 5, 10, 20)
        assert "Facts:" in example["abstract"]
    assert format_examples(template).count("User abstract:") == len(template.examples)


def test_malformed_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad@1.txt").write_text("name: other\nversion: 1\n---\nbody\n")
    with pytest.raises(PromptError, match="header says"):
        load_prompts(tmp_path)
    (tmp_path / "bad@1.txt").write_text("no header here")
    with pytest.raises(PromptError, match="---"):
        load_prompts(tmp_path / ".")  # another cache key


def test_cli_list_show_diff() -> None:
    runner = CliRunner()
    listed = runner.invoke(prompts_app, ["list"])
    assert listed.exit_code == 0 and "plan_json@1" in listed.output
    shown = runner.invoke(prompts_app, ["show", "explain@1"])
    assert shown.exit_code == 0 and "Final Recommendation List" in shown.output
    diffed = runner.invoke(prompts_app, ["diff", "plan@1", "plan_json@1"])
    assert diffed.exit_code == 0 and "+++ plan_json@1" in diffed.output
    same = runner.invoke(prompts_app, ["diff", "plan", "plan@1"])
    assert "same body" in same.output
    versions = runner.invoke(prompts_app, ["diff", "abstract@1", "abstract@2"])
    assert versions.exit_code == 0 and "leans to ${lead}" in versions.output


@pytest.mark.parametrize("args", [["show", "nope"], ["show", "plan@9"], ["diff", "plan", "zzz@1"]])
def test_cli_unknown_prompt_is_one_red_line(args: list[str]) -> None:
    result = CliRunner().invoke(prompts_app, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "unknown" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- the prompt engineer's loop


def test_digest_covers_body_and_examples_not_the_header_prose() -> None:
    plan = get_prompt("plan_json@1")
    assert plan.digest == content_digest(plan.body, plan.examples) and len(plan.digest) == 12
    assert plan.ident == f"plan_json@1#{plan.digest}" and plan.key == f"plan_json-v1-{plan.digest}"
    assert content_digest(plan.body + " ") != plan.digest
    assert content_digest(plan.body, plan.examples[:-1]) != plan.digest
    same = PromptTemplate(name="x", version=9, body=plan.body, description="other prose", examples=plan.examples)
    assert same.digest == plan.digest


def test_prompts_new_copies_bumps_and_an_edit_changes_the_digest(user_prompts: Path) -> None:
    made = new_version("plan_json", "plan_json@1")
    assert [p.name for p in made.written] == ["plan_json@2.txt", "plan_json_examples@2.json"]
    assert all(p.parent == user_prompts for p in made.written)  # never inside the package
    assert not (PROMPTS_DIR / "plan_json@2.txt").exists()
    copy = get_prompt("plan_json@2")
    assert copy.examples_ref == "plan_json_examples@2" and copy.digest == get_prompt("plan_json@1").digest
    assert get_prompt("plan_json").ref == "plan_json@2"  # newest
    path = user_prompts / "plan_json@2.txt"
    path.write_text(path.read_text().replace("Known tags:", "Allowed tags:"))
    edited = get_prompt("plan_json@2")  # re-read after the edit, in the same process
    assert edited.digest != get_prompt("plan_json@1").digest and "Allowed tags:" in edited.body
    assert new_version("plan_json", "plan_json@2").template.ref == "plan_json@3"
    other = new_version("plan_short", "plan_json@1").template
    assert other.ref == "plan_short@1" and role_of(other) == "plan"


def test_a_copied_file_is_a_clear_error_naming_the_fix(user_prompts: Path) -> None:
    user_prompts.mkdir()
    (user_prompts / "plan_json@2.txt").write_text((PROMPTS_DIR / "plan_json@1.txt").read_text())
    with pytest.raises(PromptError, match="header says plan_json@1 .* prompts new plan_json --from plan_json@1"):
        load_prompts()
    (user_prompts / "plan_json@2.txt").unlink()
    (user_prompts / "plan_json@1.txt").write_text((PROMPTS_DIR / "plan_json@1.txt").read_text())
    assert get_prompt("plan_json@1").digest  # the same text in two folders is fine
    (user_prompts / "plan_json@1.txt").write_text((PROMPTS_DIR / "plan_json@1.txt").read_text() + "changed\n")
    with pytest.raises(PromptError, match="differs between"):
        load_prompts()


def test_prompt_choice_per_role(user_prompts: Path) -> None:
    assert choose_prompts([]) == PromptChoice()
    chosen = choose_prompts(["plan_json@1", "abstract@1", "explain=explain@1"])
    assert (chosen.abstract, chosen.plan, chosen.explain) == ("abstract@1", "plan_json@1", "explain@1")
    assert choose_prompts(["plan"]).plan == "plan@1"
    with pytest.raises(PromptError, match="cannot be the abstract prompt"):
        choose_prompts(["abstract=plan_json@1"])
    with pytest.raises(PromptError, match="two plan prompts"):
        choose_prompts(["plan@1", "plan_json@1"])
    with pytest.raises(UnknownPromptError):
        choose_prompts(["plan_json@7"])
    new_version("plan_json", "plan_json@1")
    assert choose_prompts(["plan_json@2"]).plan == "plan_json@2"
    assert PromptChoice().idents()["plan"] == get_prompt("plan_json@1").ident


def test_cli_new_and_list_show_digests(user_prompts: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(prompts_app, ["new", "plan_json", "--from", "plan_json@1"])
    assert made.exit_code == 0, made.output
    assert "plan_json@2.txt" in made.output and "tandem eval plans --compare plan_json@1 plan_json@2" in made.output
    listed = runner.invoke(prompts_app, ["list"])
    assert listed.exit_code == 0 and "plan_json@2" in listed.output
    assert get_prompt("plan_json@2").digest in listed.output
    bad = runner.invoke(prompts_app, ["new", "plan_json", "--from", "plan_json@9"])
    assert bad.exit_code == 1 and len(bad.output.strip().splitlines()) == 1
