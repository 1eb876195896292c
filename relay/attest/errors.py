"""Exceptions raised by :mod:`relay.attest`; every one is an :class:`AttestError`.

Callers that turn failures into auditor findings (``relay verify``) catch the specific classes;
callers that only need "this is not a valid attestation" catch :class:`AttestError`.
"""

from __future__ import annotations

__all__ = [
    "AttestError",
    "BadCheckpointSignatureError",
    "BadSignatureError",
    "CheckpointError",
    "CheckpointNotSignedError",
    "InsecureKeyFileError",
    "InvalidKeyFileError",
    "InvalidOriginError",
    "InvalidVerifierKeyError",
    "KeyFileExistsError",
    "MalformedBatchError",
    "MalformedCheckpointError",
    "NonCanonicalError",
]


class AttestError(Exception):
    """Base class of every error raised by the attestation package."""


class NonCanonicalError(AttestError):
    """A value cannot be written as RFC 8785 JSON, or signed bytes are not in RFC 8785 form."""


class InvalidOriginError(AttestError):
    """An origin (signed-note key name) is empty, too long, or has '+', white space or controls."""


class InvalidVerifierKeyError(AttestError):
    """A verifier key string or its parts are malformed or inconsistent."""


class KeyFileExistsError(AttestError):
    """Saving an operator key would overwrite an existing file."""


class InvalidKeyFileError(AttestError):
    """An operator key file cannot be read as a signed-note private key."""


class InsecureKeyFileError(AttestError):
    """An operator key file is readable or writable by group or others."""


class BadSignatureError(AttestError):
    """A signature does not verify under the given verifier key."""


class MalformedBatchError(AttestError):
    """Signed batch bytes do not have the telemetry-batch/v1 structure."""


class CheckpointError(AttestError):
    """Base class of checkpoint (signed note) failures."""


class MalformedCheckpointError(CheckpointError):
    """The note or its checkpoint body does not follow C2SP signed-note / tlog-checkpoint."""


class CheckpointNotSignedError(CheckpointError):
    """The note carries no signature line from the expected key."""


class BadCheckpointSignatureError(CheckpointError):
    """A signature line from the expected key does not verify."""
