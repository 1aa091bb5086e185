"""transrec: universal user representations for recommendation."""

from transrec.errors import ConfigError, DataError, TransrecError, UnknownIdError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "TransrecError", "UnknownIdError", "__version__"]
