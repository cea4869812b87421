"""The graph's run context (LangGraph `context_schema`): which runtime a run uses.

The CLI, the chat and the tests pass a built `TandemRuntime`. LangGraph's own tooling (`langgraph dev`, the
LangGraph API server) can only pass plain values, so without a runtime the context builds one from the
process settings (`TANDEM_*`, `tandem.toml`) for its data set, planner and cloud URL, once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields

from graph.runtime import TandemRuntime
from ground.errors import TandemError
from ground.settings import get_settings

_built: dict[tuple[str | None, str, str | None], TandemRuntime] = {}
_lock = threading.Lock()


@dataclass
class TandemContext:
    """What a run needs besides its input."""

    runtime: TandemRuntime | None = None
    """A built runtime (CLI, chat, tests); when None one is built from the settings below."""
    data: str | None = None
    """Data set for a runtime built from settings (default: the `dataset` setting)."""
    planner: str = "llm"
    """llm (language-model planner) or rule, for a runtime built from settings."""
    cloud_url: str | None = None
    """Cloud service URL for a runtime built from settings (default: the cloud runs in process)."""

    @classmethod
    def of(cls, value: TandemContext | Mapping[str, object] | None) -> TandemContext:
        """The context as given: this dataclass, the plain dict an API server passes, or nothing."""
        if isinstance(value, TandemContext):
            return value
        given = dict(value or {})
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise TandemError(f"unknown context key(s) {unknown}; a run's context takes data, planner, cloud_url")
        return cls(**given)  # type: ignore[arg-type]

    def resolve(self) -> TandemRuntime:
        if self.runtime is not None:
            return self.runtime
        key = (self.data, self.planner, self.cloud_url)
        with _lock:
            if key not in _built:
                _built[key] = TandemRuntime.create(get_settings(), self.data, planner=self.planner,  # type: ignore[arg-type]
                                                   cloud_url=self.cloud_url, progress=False)  # fmt: skip
            return _built[key]
