"""The auditor: `relay verify` and the checks behind it (DESIGN §5.6).

`verify_documents` is the whole check over any iterable of documents; the sources (NDJSON,
embedded store, Elasticsearch) only produce documents, and the command only prints the report.
"""

from __future__ import annotations

from relay.verify.errors import SavedCheckpointError, SourceError, VerifyError
from relay.verify.findings import Code, Finding
from relay.verify.report import OriginHead, OriginTotals, VerificationReport
from relay.verify.verifier import Verifier, verify_documents

__all__ = [
    "Code",
    "Finding",
    "OriginHead",
    "OriginTotals",
    "SavedCheckpointError",
    "SourceError",
    "VerificationReport",
    "Verifier",
    "VerifyError",
    "verify_documents",
]
