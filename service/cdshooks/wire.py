"""Wire models of CDS Hooks 2.0 requests and feedback (pydantic), kept apart from what the use case works on.

Unknown members are ignored (`extension` keys, 3.0 additions); missing or mistyped required members become a
`CdsError(400)` whose diagnostics name the element, e.g. "context.patientId: missing"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.cdshooks.errors import CdsError

Text = Field(min_length=1)


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CodingJson(Wire):
    system: str = Text
    code: str = Text
    display: str | None = None


class HookRequestJson(Wire):
    hook: str = Text
    hookInstance: str = Text
    fhirServer: str | None = Field(None, min_length=1)
    fhirAuthorization: dict[str, Any] | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequestJson:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer: required when fhirAuthorization is present")
        return self


class PatientViewContextJson(Wire):
    userId: str = Text
    patientId: str = Text
    encounterId: str | None = None


class OrderSignContextJson(PatientViewContextJson):
    draftOrders: dict[str, Any]


class OrderSelectContextJson(OrderSignContextJson):
    selections: list[str] = Field(min_length=1)


class AcceptedSuggestionJson(Wire):
    id: str = Text


class OverrideReasonJson(Wire):
    reason: CodingJson | None = None
    userComment: str | None = None

    @model_validator(mode="after")
    def _reason_or_comment(self) -> OverrideReasonJson:  # cds-fb-3
        if self.reason is None and not self.userComment:
            raise ValueError("overrideReason: needs a reason or a userComment (cds-fb-3)")
        return self


class FeedbackItemJson(Wire):
    card: str = Text
    outcome: Literal["accepted", "overridden"]  # cds-fb-1
    acceptedSuggestions: list[AcceptedSuggestionJson] | None = None
    overrideReason: OverrideReasonJson | None = None
    outcomeTimestamp: str

    @field_validator("outcomeTimestamp")
    @classmethod
    def _utc(cls, value: str) -> str:
        """ISO 8601 with a time zone, normalised to UTC so that equal instants compare equal."""
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 date-time") from None
        if instant.tzinfo is None:
            raise ValueError("needs a time zone (UTC)")
        return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @model_validator(mode="after")
    def _accepted_names_suggestions(self) -> FeedbackItemJson:  # cds-fb-2
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions: required when outcome is accepted (cds-fb-2)")
        return self


class FeedbackJson(Wire):
    feedback: list[FeedbackItemJson] = Field(min_length=1)


M = TypeVar("M", bound=BaseModel)


def read(model: type[M], data: Any, where: str = "") -> M:
    """`model` validated from parsed JSON, or `CdsError(400, …)` naming the first offending element."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CdsError(400, "invalid", _describe(exc, where)) from None


def load(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CdsError(400, "invalid", f"malformed JSON: {exc}") from None


def _describe(exc: ValidationError, where: str) -> str:
    first = exc.errors(include_url=False)[0]
    path = where
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if first["type"] == "missing":
        message = "missing"
    elif first["type"] in ("model_type", "dict_type"):
        message, path = "expected a JSON object", path or "body"
    else:
        message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message
