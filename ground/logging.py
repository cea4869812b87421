"""Standard `logging` for Tandem: one rich handler on stderr, the level from `TANDEM_LOG_LEVEL`.

Loggers are named after the part that writes: `tandem.graph` (each request's route and per-node timings at
DEBUG), `tandem.models` (each language-model call: backend, model, tokens, latency, at DEBUG),
`tandem.cloud.access` (the cloud service's access log, at INFO). Library loggers stay at WARNING so a
DEBUG run shows Tandem's own lines. Model and user text reaches a log only through `%r`-style arguments,
never as markup.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HANDLER_NAME = "tandem-rich"


def configure_logging(level: str = "WARNING", console: Console | None = None) -> logging.Logger:
    """Route the `tandem` loggers to one rich handler on stderr at `level` (idempotent; a `console` given
    replaces the one an earlier call set, and loggers another library's dictConfig disabled are enabled)."""
    logger = logging.getLogger("tandem")
    logger.setLevel(level.upper())
    for name, other in logging.Logger.manager.loggerDict.items():
        if name.startswith("tandem") and isinstance(other, logging.Logger):
            other.disabled = False
    for handler in logger.handlers:
        if handler.get_name() == _HANDLER_NAME and console is not None and isinstance(handler, RichHandler):
            handler.console = console
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = RichHandler(console=console or Console(stderr=True), markup=False, rich_tracebacks=False,
                              show_path=False, log_time_format="%H:%M:%S")  # fmt: skip
        handler.set_name(_HANDLER_NAME)
        logger.addHandler(handler)
        logger.propagate = False
    return logger
