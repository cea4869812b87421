"""The error types a user may see. The CLI prints each as one red line and exits non-zero."""


class TandemError(Exception):
    """Base class: something the user can fix, explained in one line."""


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
