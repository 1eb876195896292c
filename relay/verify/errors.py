"""Why `relay verify` could not run (exit status 2), as opposed to what it found (exit 1)."""

from __future__ import annotations

__all__ = ["SavedCheckpointError", "SourceError", "VerifyError"]


class VerifyError(Exception):
    """Base class: the verification could not be carried out."""


class SourceError(VerifyError):
    """The documents could not be read: missing store, unreadable file, search failure."""


class SavedCheckpointError(VerifyError):
    """A saved checkpoint is not a note signed by a registered key of its origin."""
