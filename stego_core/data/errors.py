"""The one exception type raised for bad user data (files, folders, labels)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: a missing folder, an unreadable image, a label outside the class range.

    Every message names the offending file or folder and says what to do about it. It subclasses
    `ValueError` so callers that validate arguments generically still catch it.
    """
