"""The one error type of the data layer."""

from __future__ import annotations


class DataError(RuntimeError):
    """Data that is missing, corrupt or cannot be written.

    The message is one sentence that says what to put where, or what is wrong with which file.
    """


class DataWarning(UserWarning):
    """Data that is used although it is not exactly the official one (e.g. other checksums)."""
