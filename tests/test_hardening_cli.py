"""Hostile text and bad settings at the command line: printed as text, never as markup or terminal control;
one line for every error, exit 2 for usage errors and 1 for failures; the last-resort handler cannot fail."""

from __future__ import annotations

import io
import subprocess

import pytest
from rich.console import Console

from ground.errors import SettingsError
from ground.settings import load_settings
from ground.text import normalize_for_matching, one_line, printable, skeleton
from tandem import views
from tandem.session import print_result
from tests.faults import CLI, PYTHON, ROOT, cli_env, device_home, tandem
from tools.data.catalog import Catalog, Item
from tools.protocol import Abstract, ModuleExplanations, Plan, PlanResult, Violation

ESCAPES = "\x1b]0;pwned\x07\x1b[2J"
HOSTILE = f"[/] [bold]x[/bold] [link=http://evil]y[/link] :smile: {ESCAPES}\u202eevil\r"


def render(*renderables) -> str:
    """What a colour terminal would receive."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=200)
    for renderable in renderables:
        console.print(renderable)
    return out.getvalue()


def assert_neutral(text: str) -> None:
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert "\r" not in text


# ---------------------------------------------------------------------------------------------- output safety


def test_printable_escapes_terminal_controls():
    assert printable(ESCAPES) == "\\x1b]0;pwned\\x07\\x1b[2J"
    assert printable("a\tb\nc") == "a\tb\nc" and printable("a\nb", multiline=False) == "a\\nb"
    assert printable("\u202eabc\u2028\x85\x9b") == "\\u202eabc\\u2028\\x85\\x9b"
    assert printable("Amélie 東京 [/]") == "Amélie 東京 [/]"  # ordinary text, brackets included, untouched
    assert one_line("first\n\n  second\x1b[2J") == "first | second\\x1b[2J"


def test_hostile_strings_in_every_view_render_as_text():
    hostile_item = Item(item_id=1, title=HOSTILE, year=1999, tags=("[/]", ESCAPES))
    catalog = Catalog(items=(hostile_item, Item(item_id=2, title="Plain", year=None, tags=("Drama",))))
    why = ModuleExplanations.model_construct(semantic=HOSTILE, retrieval=HOSTILE, structured="[/]", ranking="x")
    plan = Plan.model_construct(alpha=0.5, tag_count=3, candidate_size=500, tags={HOSTILE: 500}, encoder="SASRec",
                                beta=0.5, explanations=why)  # fmt: skip
    result = PlanResult.model_construct(plan=plan, status="parsed", prompt=HOSTILE, raw_text="", stats=None,
                                        violations=[Violation(field="[/]", code="x", message=HOSTILE)])  # fmt: skip
    state = {
        "abstract": Abstract(sanitized_query=HOSTILE, behavior_summary=HOSTILE), "plan_result": result,
        "ranked": [1, 2], "ranked_scores": [0.9, 0.8], "source": HOSTILE, "route": [HOSTILE],
        "warnings": [f"cloud planning failed: HTTP 500 {HOSTILE}"], "explanation": HOSTILE,
    }  # fmt: skip
    out = io.StringIO()
    print_result(state, catalog, Console(file=out, force_terminal=True, width=250))
    shown = out.getvalue()
    assert_neutral(shown)
    assert "[/]" in shown and "[bold]x[/bold]" in shown and ":smile:" in shown and "\\x1b]0;pwned" in shown
    assert_neutral(render(views.candidates_table(HOSTILE, {HOSTILE: 3}, [], catalog), views.error_line(HOSTILE)))


def test_recommend_with_markup_in_the_query(tmp_path):
    done = tandem("recommend", "--user", "196", "--query", f"[/] comedy {ESCAPES}", "--planner", "rule",
                  home=device_home(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recommendations" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert_neutral(done.stdout + done.stderr)


@pytest.mark.parametrize("user", ["[/]", f"x{ESCAPES}", "[bold red]root[/]"])
def test_hostile_user_id_is_one_plain_line(tmp_path, user):
    done = tandem("recommend", "--user", user, "--planner", "rule", home=device_home(tmp_path))
    assert done.returncode == 1 and "unknown user" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert_neutral(done.stderr)


def test_chat_prints_hostile_commands_as_text(tmp_path):
    lines = ["/watched [/]", f"/watched {ESCAPES}", "/nosuch[/]", "[/] comedy", "/like ²", "/like 1", "/quit"]
    done = tandem("chat", "--user", "196", "--planner", "rule", home=device_home(tmp_path), stdin="\n".join(lines))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "no film matches '[/]'" in out and "/like needs a number" in out and "unknown command /nosuch[/]" in out
    assert "added " in out and "bye: history saved" in out and "Traceback" not in out + done.stderr
    assert_neutral(out)


LAST_RESORT = """
import sys
import tandem.cli as cli

class Nasty(Exception):
    def __str__(self):
        {body}

def boom(*args, **kwargs):
    raise Nasty()

cli.app = boom
sys.argv = ["tandem", "recommend"]
cli.main()
"""


@pytest.mark.parametrize("body", ['return "[/] [bold]boom\\x1b]0;pwned\\x07\\x1b[2J\\nsecond line"',
                                  'raise ValueError("no str for you")'])  # fmt: skip
def test_last_resort_handler_cannot_fail(body):
    done = subprocess.run([PYTHON, "-c", LAST_RESORT.format(body=body)], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 70, done.stderr  # an internal error, not the user's
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected Nasty") and "details in" in lines[0]
    assert_neutral(done.stderr)


# ---------------------------------------------------------------------------------------------- usage errors


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", CLI, *args], capture_output=True, text=True, env=cli_env(**env), cwd=ROOT,
                          timeout=timeout)  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TANDEM_HOME": ""}, "TANDEM_HOME"),
        ({"TANDEM_HOME": "/etc/hostname"}, "TANDEM_HOME"),
        ({"TANDEM_LLM_BACKEND": "gpt"}, "TANDEM_LLM_BACKEND"),
        ({"TANDEM_ITEM_DIM": "many"}, "TANDEM_ITEM_DIM"),
        ({"TANDEM_DB_TIMEOUT": "-1"}, "TANDEM_DB_TIMEOUT"),
        ({"TANDEM_CHROMA_URL": "not a url"}, "TANDEM_CHROMA_URL"),
        ({"TANDEM_OLLAMA_HOST": "ftp://x"}, "TANDEM_OLLAMA_HOST"),
        ({"TANDEM_CONFIG": "/nonexistent/tandem.toml"}, "TANDEM_CONFIG"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(env, named):
    done = run_cli("data", "info", **env)
    assert done.returncode == 2
    assert named in one_error_line(done)


@pytest.mark.parametrize(
    ("toml", "named"),
    [("item_dim = [\n", "is not valid TOML"), ("itemdim = 3\n", "unknown setting 'itemdim'"),
     ("item_dim = 3\n", "item_dim"), ('home = ""\n', "home")],
)  # fmt: skip
def test_bad_settings_file_is_one_line_naming_the_file(tmp_path, toml, named, monkeypatch):
    config = tmp_path / "tandem.toml"
    config.write_text(toml)
    monkeypatch.delenv("TANDEM_HOME", raising=False)  # the environment outranks the file (CI sets TANDEM_HOME)
    done = run_cli("data", "info", TANDEM_CONFIG=str(config))
    assert done.returncode == 2
    line = one_error_line(done)
    assert str(config) in line and named in line


def test_settings_errors_as_an_api():
    with pytest.raises(SettingsError, match="setting max_seq_len"):
        load_settings(max_seq_len=0)
    assert load_settings(home="/tmp").home.name == "tmp"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("recommend", "--user", "196", "--top", "0"), "top_k"),
        (("recommend", "--user", "196", "--top", "-3"), "top_k"),
        (("recommend", "--user", "196", "--top", "ten"), "--top"),
        (("recommend", "--user", "196", "--cloud-url", "not a url"), "--cloud-url"),
        (("recommend", "--user", "196", "--cloud-url", "http://host:99999"), "--cloud-url"),
        (("recommend", "--user", "", "--planner", "rule"), "user"),
        (("chat", "--user", "196", "--cloud-url", "localhost:8765"), "--cloud-url"),
        (("index", "query", "space", "--top", "0"), "--top"),
        (("recommend",), "--user"),
        (("nosuchcommand",), "nosuchcommand"),
    ],
)
def test_bad_options_are_usage_errors(args, named):
    done = run_cli(*args)
    assert done.returncode == 2
    assert named in one_error_line(done)


def test_unknown_planner_is_a_usage_error(tmp_path):
    done = tandem("recommend", "--user", "196", "--planner", "oracle", home=device_home(tmp_path))
    assert done.returncode == 2 and "unknown planner 'oracle'" in one_error_line(done)


def test_failures_exit_1_and_help_exits_0():
    assert run_cli("data", "fetch", "ml-5m").returncode == 1
    assert run_cli("-h").returncode == 0


# ---------------------------------------------------------------------------------------------- normalisation


def test_normalize_for_matching():
    assert normalize_for_matching("Ｔｏｙ\u200b Ѕtоrу") == "Toy Story"
    assert normalize_for_matching("как дела") == "как дела"  # a word of another script stays as written
    assert skeleton("как") == "kak" and len(skeleton("Тоу Ѕtоrу")) == len("Тоу Ѕtоrу")
