"""`tandem chat`: an interactive terminal chat as one user, one request per turn through the graph.

Sessions persist with the LangGraph SQLite checkpointer (resume with `--session ID`); the device history
lives in the device store and grows with /like and /watched. Ctrl-C and Ctrl-D leave cleanly: every
reaction was already committed to SQLite when it was typed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from graph.builder import builder
from graph.run import recommend, sqlite_checkpointer
from graph.runtime import TandemRuntime
from ground.errors import TandemError
from tandem import views
from tools import conversation as talk

HELP = """[bold]commands[/]
  any text        ask for recommendations (empty line: recommend from your history alone)
  /like N         you liked item N of the last list: it joins your history
  /watched TITLE  you watched a film: it joins your history (title search)
  /history        your newest interactions
  /plan           the last plan and its rationale
  /why            explain the last list (device language model)
  /backend        which models and services answer
  /reset          forget this user's device history, cache and conversation, start a new session
  /help           this text
  /quit           leave (Ctrl-D and Ctrl-C leave too)"""


@dataclass
class ChatSession:
    """One user's chat: the runtime, the checkpointed graph thread, and the last answer."""

    runtime: TandemRuntime
    user: str
    session_id: str
    console: Console
    graph: Any = None
    last: dict[str, Any] = field(default_factory=dict)
    conversation: talk.Conversation = field(default_factory=talk.Conversation)
    fresh: bool = False

    @classmethod
    def open(cls, runtime: TandemRuntime, user: str | None, session_id: str | None, console: Console) -> ChatSession:
        saver = sqlite_checkpointer(runtime.settings.home / "device" / "sessions.sqlite", runtime.settings.db_timeout)
        for notice in saver.notices:
            console.print(views.labelled("notice: ", notice, "yellow"))
        views.runtime_notes(runtime.notes, console)
        graph = builder.compile(checkpointer=saver, name="tandem-chat")
        session_id = session_id or uuid.uuid4().hex[:8]
        previous = graph.get_state({"configurable": {"thread_id": session_id}}).values
        if previous.get("user") and user and previous["user"] != user:
            raise TandemError(f"session {session_id} belongs to user {previous['user']!r}, not {user!r}")
        user = user or previous.get("user")
        if not user:
            raise TandemError(f"unknown session {session_id!r}: start one with --user ID")
        saved = talk.Conversation.model_validate(previous.get("conversation") or {})
        return cls(runtime, user, session_id, console, graph, dict(previous), saved)

    # -- one turn --------------------------------------------------------------------------------------
    @property
    def catalog(self):
        return self.runtime.device.catalog

    def resolve(self, said: str) -> talk.Resolution:
        """The utterance read against the conversation (`tools.conversation`); an empty line stands alone."""
        if not said.strip():
            return talk.Resolution(request="", conversation=self.conversation)
        return talk.resolve(self.conversation, said, self.catalog)

    def ask(self, query: str | talk.Resolution) -> Mapping[str, Any]:
        """One turn through the checkpointed thread (its per-turn lists start afresh each turn)."""
        turn = query if isinstance(query, talk.Resolution) else self.resolve(query)
        self.last = dict(recommend(self.runtime, self.user, turn.request, graph=self.graph, thread_id=self.session_id,
                                   seeds=turn.seeds, avoid=turn.avoid, use_cache=not self.fresh))  # fmt: skip
        said = query if isinstance(query, str) else turn.said
        self._save(talk.record(turn.conversation, said, turn.request, self.last.get("ranked", [])))
        return self.last

    def _save(self, conversation: talk.Conversation) -> None:
        """Keep the conversation with the chat's thread (a state update after the thread's last node)."""
        self.conversation = conversation
        config = {"configurable": {"thread_id": self.session_id}}
        values = {"conversation": conversation.model_dump(mode="json")}
        self.graph.update_state(config, values, as_node="device_explain")

    def show_resolution(self, turn: talk.Resolution) -> None:
        self.console.print(views.resolution_text(turn))

    def show_turn(self, turn: Mapping[str, Any]) -> None:
        self.console.print(views.crossing_text(turn))
        if turn.get("plan_result") is not None:
            self.console.print(views.plan_table(turn["plan_result"]))
        self.console.print(views.ranked_table(turn, self.catalog))
        self.console.print(views.route_summary(turn))
        for warning in turn.get("warnings", []):
            self.console.print(views.labelled("warning: ", warning, "yellow"))
        for failure in self.graph.checkpointer.take_failures():
            self.console.print(views.labelled("warning: ", f"{failure}; the answer above stands, the session lacks "
                                              "this turn", "yellow"))  # fmt: skip

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
            self.console.print(views.safe(f"unknown command {name}; /help lists them", "red"))
            return True
        handlers[name](arg)
        return True

    def like(self, arg: str) -> None:
        ranked = self.last.get("ranked", [])
        if not ranked:
            self.console.print("[red]nothing to like yet[/]: ask for recommendations first")
            return
        if not (arg.isascii() and arg.isdigit()) or not 1 <= int(arg) <= len(ranked):
            self.console.print(f"[red]/like needs a number from 1 to {len(ranked)}[/]")
            return
        self._add(ranked[int(arg) - 1])
        self._save(talk.like(self.conversation, ranked[int(arg) - 1]))

    def watched(self, arg: str) -> None:
        if not arg:
            self.console.print("[red]/watched needs a title[/], e.g. /watched toy story")
            return
        catalog = self.catalog
        needle = arg.lower()
        exact = [i for i in catalog.items if i.title.lower() == needle]
        found = exact or [i for i in catalog.items if needle in i.title.lower()]
        if len(found) == 1:
            self._add(found[0].item_id)
        elif not found:
            self.console.print(views.safe(f"no film matches {arg!r}", "red"))
        else:
            shown = ", ".join(f"{i.title} ({i.year})" for i in found[:6])
            message = f"{len(found)} films match {arg!r}: {shown}; type more of the title"
            self.console.print(views.safe(message, "yellow"))

    def _add(self, item_id: int) -> None:
        item = self.catalog[item_id]
        length = self.runtime.device.store.append(self.user, [item_id])
        self.console.print(views.labelled("added ", f"{item.title} ({item.year}) to your history "
                                          f"({length} interactions)", "green"))  # fmt: skip

    def history(self, arg: str = "") -> None:
        items, _ = self.runtime.device.store.history(self.user)
        catalog = self.catalog
        table = Table(title=views.safe(f"history of {self.user}: {len(items)} interactions, newest first"))
        table.add_column("#")
        table.add_column("title")
        table.add_column("tags")
        for n, item_id in enumerate(items[::-1][:15].tolist(), 1):
            item = catalog[item_id]
            table.add_row(str(n), views.safe(f"{item.title} ({item.year})"), views.safe(", ".join(item.tags)))
        self.console.print(table)

    def plan(self, arg: str = "") -> None:
        if self.last.get("plan_result") is None:
            self.console.print("no plan yet: ask for recommendations first")
            return
        self.console.print(views.plan_table(self.last["plan_result"]))

    def why(self, arg: str = "") -> None:
        if not self.last.get("ranked"):
            self.console.print("nothing to explain yet: ask for recommendations first")
            return
        self.console.print(Text("why these: ", style="bold"), end="")
        streamed: list[str] = []

        def show(piece: str) -> None:  # the device model's words as they are written
            streamed.append(piece)
            self.console.print(views.safe(piece, multiline=False), end="")

        explanation = self.runtime.device.explain(self.last["plan_result"].plan, self.last["ranked"], on_text=show)
        if explanation.source == "slm":
            self.console.print()
        else:  # the model wrote nothing usable (or there is no model): the template stands instead
            self.console.print(views.safe(" [unusable: replaced]", style="dim") if streamed else "")
            self.console.print(views.labelled("why these: ", explanation.text, "bold"))

    def backend(self, arg: str = "") -> None:
        s = self.runtime.settings
        models = f"device {s.model_spec('device').label()}, cloud {s.model_spec('cloud').label()}, " \
                 f"text encoder {s.embedding_spec().label()}"
        cloud = self.runtime.cloud_url or "in process"
        chroma = s.chroma_url or f"embedded at {s.chroma_dir}"
        planner = f"{self.runtime.planner} ({self.runtime.plan_model})"
        self.console.print(views.safe(f"language models: {models}\nplanner: {planner}\ncloud: {cloud}\n"
                                f"Chroma: {chroma}\ndata: {self.runtime.workspace.dataset.name}"))  # fmt: skip

    def reset(self, arg: str = "") -> None:
        items, _ = self.runtime.device.store.history(self.user)
        self.runtime.device.store.reset(self.user)
        self.session_id = uuid.uuid4().hex[:8]
        self.last, self.conversation = {}, talk.start_over()
        self.console.print(views.reset_text(len(items), self.session_id))

    def help(self, arg: str = "") -> None:
        self.console.print(HELP)


def run_chat(session: ChatSession) -> None:
    """The read-eval-print loop."""
    console = session.console
    turns = session.last.get("ranked")
    state = f"resumed session {session.session_id}" if turns else f"session {session.session_id}"
    console.print(Text.assemble(("Tandem chat", "bold"), views.safe(f" as user {session.user} ({state}; resume with "
                                f"--session {session.session_id}). /help for commands.")))  # fmt: skip
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
            resolution = session.resolve(line)
            session.show_resolution(resolution)
            with console.status("thinking (device and cloud agents at work)"):
                turn = session.ask(resolution)
            session.show_turn(turn)
        except KeyboardInterrupt:
            console.print("[yellow]request interrupted[/]")
        except TandemError as exc:
            console.print(views.error_line(exc))
    items, _ = session.runtime.device.store.history(session.user)
    console.print(views.safe(f"bye: history saved ({len(items)} interactions), session {session.session_id}"))
