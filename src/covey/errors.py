"""Errors a user can act on.

Anything raised as a :class:`CoveyError` reaches the user as one line, ``covey: <message>``,
and the process exits with its ``exit_code``; everything else is a bug and gets a traceback.
"""

from __future__ import annotations


class CoveyError(Exception):
    """A failure the user can fix or understand without reading covey's source."""

    exit_code: int = 125
    """125, like ``docker run``: covey itself failed, not the job (whose codes are its own)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecError(CoveyError):
    """Bad input: a flag, a batch file or an env file. The message names the field (and line)."""


class EngineError(CoveyError):
    """The Docker engine is unreachable or refused a request."""


class StoreError(CoveyError):
    """covey's own state database cannot be opened, read or written."""
