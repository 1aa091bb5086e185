"""User-facing errors.

Every problem caused by the user's input (files, configs, ids) raises a subclass of
`TransrecError`; the CLI prints its message without a traceback. Anything else is a bug.
"""


class TransrecError(Exception):
    """Base class for errors the user can fix."""


class ConfigError(TransrecError):
    """A bad config file, key or value."""


class DataError(TransrecError):
    """A missing, malformed or inconsistent data file."""


class UnknownIdError(DataError):
    """An id that is not in the vocabulary (item or user)."""


class CheckpointError(TransrecError):
    """A checkpoint folder that cannot be loaded safely."""
