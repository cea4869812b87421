"""The graph's run context (LangGraph `context_schema`): which runtime a run uses.

The CLI, the chat and the tests pass a built `TandemRuntime`. LangGraph's own tooling (`langgraph dev`, the
LangGraph API server) can only pass plain values, so without a runtime the context builds one from the
process settings (`TANDEM_*`, `tandem.toml`) for its data set, planner and cloud URL, once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graph.runtime import TandemRuntime
from ground.settings import get_settings

_built: dict[tuple[str | None, str, str | None], TandemRuntime] = {}
_lock = threading.Lock()


class TandemContext(BaseModel):
    """What a run needs besides its input. Unknown keys are refused (LangGraph validates a plain dict here)."""

    model_config = ConfigDict(extra="forbid")

    runtime: Any = Field(None, description="A built `TandemRuntime`; None: one is built from the settings.")
    data: str | None = Field(None, description="Data set for a runtime built from settings (default: `dataset`).")
    planner: Literal["llm", "rule"] = Field("llm", description="Planner of a runtime built from settings.")
    cloud_url: str | None = Field(None, description="Cloud service URL (default: the cloud runs in process).")

    @field_validator("runtime")
    @classmethod
    def _a_runtime(cls, value: Any) -> TandemRuntime | None:
        if value is not None and not isinstance(value, TandemRuntime):
            raise ValueError(f"runtime must be a TandemRuntime, not {type(value).__name__}")
        return value

    @classmethod
    def of(cls, value: TandemContext | Mapping[str, object] | None) -> TandemContext:
        """The context as given: this model, a plain mapping, or nothing (everything from the settings)."""
        if isinstance(value, TandemContext):
            return value
        return cls.model_validate(dict(value or {}))

    def resolve(self) -> TandemRuntime:
        if self.runtime is not None:
            return self.runtime
        key = (self.data, self.planner, self.cloud_url)
        with _lock:
            if key not in _built:
                _built[key] = TandemRuntime.create(get_settings(), self.data, planner=self.planner,
                                                   cloud_url=self.cloud_url, progress=False)  # fmt: skip
            return _built[key]
