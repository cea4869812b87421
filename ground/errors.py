"""The error types a user may see. The CLI prints each as one red line and exits with its `exit_code`."""


class TandemError(Exception):
    """Base class: something the user can fix, explained in one line."""

    exit_code = 1
    """The CLI's exit code: 1 for a failure, 2 for a usage error (`UsageError`)."""


class UnknownDatasetError(TandemError):
    """A data set name Tandem does not know."""


class NotMovieLensError(TandemError):
    """A folder that does not hold MovieLens files."""


class IndexMissingError(TandemError):
    """The Chroma tag index has not been built (or was built for other data)."""


class UnknownTagError(TandemError):
    """A tag that is not in the catalog's tag list."""


class UnknownUserError(TandemError):
    """A user id that is not in the data set."""


class UnknownItemError(TandemError):
    """An item id that is not in the catalog."""


class UsageError(TandemError):
    """A setting or an option the user gave is empty or makes no sense (the CLI exits with code 2)."""

    exit_code = 2


class SettingsError(UsageError):
    """A `TANDEM_*` variable or a `tandem.toml` entry that cannot be used; the message names it."""


class StoreError(TandemError):
    """A local SQLite file could not be read or written (locked, full, corrupt); the message names the file."""
class DependencyUnavailableError(TandemError):
    """A service Tandem depends on failed or cannot be reached; `dependency` names it (chroma, index, planner)."""

    dependency: str = "dependency"

    def __init__(self, message: str, dependency: str | None = None) -> None:
        super().__init__(message)
        if dependency is not None:
            self.dependency = dependency
