"""`tandem chat`: an interactive terminal chat as one user, one request per turn through the graph.

Sessions persist with the LangGraph SQLite checkpointer (resume with `--session ID`); the device history
lives in the device store and grows with /like and /watched. Ctrl-C and Ctrl-D leave cleanly: every
reaction was already committed to SQLite when it was typed.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from ground.errors import TandemError
from tandem import views

HELP = """[bold]commands[/]
  any text        ask for recommendations (empty line: recommend from your history alone)
  /like N         you liked item N of the last list: it joins your history
  /watched TITLE  you watched a film: it joins your history (title search)
  /history        your newest interactions
  /plan           the last plan and its rationale
  /why            explain the last list (device language model)
  /backend        which models and services answer
  /reset          forget this user's device history and cache, start a new session
  /help           this text
  /quit           leave (Ctrl-D and Ctrl-C leave too)"""


@dataclass
class ChatSession:
    """One user's chat: the runtime, the checkpointed graph thread, and the last answer."""

    runtime: Any
    user: str
    session_id: str
    console: Console
    graph: Any = None
    last: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, runtime, user: str | None, session_id: str | None, console: Console) -> ChatSession:
        from langgraph.checkpoint.sqlite import SqliteSaver

        from graph.builder import builder

        path = runtime.settings.home / "device" / "sessions.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        saver = SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))
        graph = builder.compile(checkpointer=saver, name="tandem-chat")
        session_id = session_id or uuid.uuid4().hex[:8]
        previous = graph.get_state({"configurable": {"thread_id": session_id}}).values
        if previous.get("user") and user and previous["user"] != user:
            raise TandemError(f"session {session_id} belongs to user {previous['user']!r}, not {user!r}")
        user = user or previous.get("user")
        if not user:
            raise TandemError(f"unknown session {session_id!r}: start one with --user ID")
        return cls(runtime, user, session_id, console, graph, dict(previous))

    # -- one turn --------------------------------------------------------------------------------------
    def ask(self, query: str) -> dict[str, Any]:
        from graph.run import recommend

        config = {"configurable": {"thread_id": self.session_id}}
        before = self.graph.get_state(config).values
        counts = {key: len(before.get(key, [])) for key in ("route", "warnings", "crossings", "timings")}
        state = recommend(self.runtime, self.user, query, graph=self.graph, thread_id=self.session_id)
        turn = dict(state)
        for key, start in counts.items():  # the thread accumulates these lists; show this turn's part
            turn[key] = state.get(key, [])[start:]
        turn["_catalog"] = self.runtime.workspace.dataset.catalog
        self.last = turn
        return turn

    def show_turn(self, turn: dict[str, Any]) -> None:
        if turn.get("plan_result"):
            self.console.print(views.plan_table(turn["plan_result"]))
        self.console.print(views.ranked_table(turn, turn["_catalog"]))
        self.console.print(views.route_summary(turn))
        for warning in turn.get("warnings", []):
            self.console.print(f"[yellow]warning:[/] {warning}")

    # -- commands --------------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run one /command; False means leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        handlers = {
            "/like": self.like, "/watched": self.watched, "/history": self.history, "/plan": self.plan,
            "/why": self.why, "/backend": self.backend, "/reset": self.reset, "/help": self.help,
        }  # fmt: skip
        if name in ("/quit", "/exit", "/q"):
            return False
        if name not in handlers:
            self.console.print(f"[red]unknown command {name}[/]; /help lists them")
            return True
        handlers[name](arg)
        return True

    def like(self, arg: str) -> None:
        ranked = self.last.get("ranked", [])
        if not ranked:
            self.console.print("[red]nothing to like yet[/]: ask for recommendations first")
            return
        if not arg.isdigit() or not 1 <= int(arg) <= len(ranked):
            self.console.print(f"[red]/like needs a number from 1 to {len(ranked)}[/]")
            return
        self._add(ranked[int(arg) - 1])

    def watched(self, arg: str) -> None:
        if not arg:
            self.console.print("[red]/watched needs a title[/], e.g. /watched toy story")
            return
        catalog = self.runtime.workspace.dataset.catalog
        needle = arg.lower()
        exact = [i for i in catalog.items if i.title.lower() == needle]
        found = exact or [i for i in catalog.items if needle in i.title.lower()]
        if len(found) == 1:
            self._add(found[0].item_id)
        elif not found:
            self.console.print(f"[red]no film matches {arg!r}[/]")
        else:
            shown = ", ".join(f"{i.title} ({i.year})" for i in found[:6])
            self.console.print(f"[yellow]{len(found)} films match {arg!r}[/]: {shown}; type more of the title")

    def _add(self, item_id: int) -> None:
        item = self.runtime.workspace.dataset.catalog[item_id]
        length = self.runtime.store.append(self.user, [item_id])
        self.console.print(f"[green]added[/] {item.title} ({item.year}) to your history ({length} interactions)")

    def history(self, arg: str = "") -> None:
        items, _ = self.runtime.store.history(self.user)
        catalog = self.runtime.workspace.dataset.catalog
        table = Table(title=f"history of {self.user}: {len(items)} interactions, newest first")
        table.add_column("#")
        table.add_column("title")
        table.add_column("tags")
        for n, item_id in enumerate(items[::-1][:15].tolist(), 1):
            item = catalog[item_id]
            table.add_row(str(n), f"{item.title} ({item.year})", ", ".join(item.tags))
        self.console.print(table)

    def plan(self, arg: str = "") -> None:
        if not self.last.get("plan_result"):
            self.console.print("no plan yet: ask for recommendations first")
            return
        self.console.print(views.plan_table(self.last["plan_result"]))

    def why(self, arg: str = "") -> None:
        if not self.last.get("ranked"):
            self.console.print("nothing to explain yet: ask for recommendations first")
            return
        with self.console.status("the device model is writing an explanation"):
            text = self.runtime.explain(self.last["plan_result"]["plan"], self.last["ranked"])
        self.console.print(f"[bold]why these:[/] {text}")

    def backend(self, arg: str = "") -> None:
        s = self.runtime.settings
        models = (
            f"Ollama at {s.ollama_host}: cloud {s.ollama_cloud_model}, device {s.ollama_device_model}"
            if s.llm_backend == "ollama"
            else "embedded llama.cpp, Gemma 3 270M Q4_K_M for both agents"
        )
        cloud = self.runtime.cloud_url or "in process"
        chroma = s.chroma_url or f"embedded at {s.chroma_dir}"
        self.console.print(f"language models: {models}\nplanner: {self.runtime.planner}\ncloud: {cloud}\n"
                           f"Chroma: {chroma}\ndata: {self.runtime.workspace.dataset.name}")  # fmt: skip

    def reset(self, arg: str = "") -> None:
        self.runtime.store.reset(self.user)
        self.session_id = uuid.uuid4().hex[:8]
        self.last = {}
        self.console.print(f"history and cache cleared; new session {self.session_id}")

    def help(self, arg: str = "") -> None:
        self.console.print(HELP)


def run_chat(session: ChatSession) -> None:
    """The read-eval-print loop."""
    console = session.console
    turns = session.last.get("ranked")
    state = f"resumed session {session.session_id}" if turns else f"session {session.session_id}"
    console.print(f"[bold]Tandem chat[/] as user {session.user} ({state}; resume with --session "
                  f"{session.session_id}). /help for commands.")  # fmt: skip
    while True:
        try:
            line = console.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        try:
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            with console.status("thinking (device and cloud agents at work)"):
                turn = session.ask(line)
            session.show_turn(turn)
        except KeyboardInterrupt:
            console.print("[yellow]request interrupted[/]")
        except TandemError as exc:
            console.print(f"[red]error:[/] {exc}")
    items, _ = session.runtime.store.history(session.user)
    console.print(f"bye: history saved ({len(items)} interactions), session {session.session_id}")
