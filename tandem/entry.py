"""The `tandem` console script: Ctrl-C is handled before the first heavy import.

Importing the CLI loads typer, rich, NumPy and the data tools (about a second); a Ctrl-C in that second would
otherwise print a long import traceback. The handler of `tandem.interrupts` is installed first, then the CLI
is imported.
"""

from __future__ import annotations

from tandem import interrupts


def main() -> None:
    interrupts.install()
    try:
        from tandem.cli import main as cli_main  # deferred on purpose: the handler must exist before this import
    except interrupts.Interrupted:
        interrupts.exit_now()
    cli_main()


if __name__ == "__main__":
    main()
