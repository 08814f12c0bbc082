"""The one error the CDS Hooks use case raises; the HTTP entrypoint turns it into an OperationOutcome."""

from __future__ import annotations


class CdsError(Exception):
    """`status` 400/404/412, `code` a FHIR issue-type code, `diagnostics` what was wrong and where."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(status, code, diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics
