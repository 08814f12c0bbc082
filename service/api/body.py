"""Request body checks shared by /evaluate and /ingest: media type (415) and size (413)."""

from __future__ import annotations

from fastapi import Request

from service.api.errors import ApiError

JSON_TYPES = ("application/fhir+json", "application/json")


async def read_json_body(request: Request, limit: int) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise ApiError(
            415,
            "not-supported",
            f"Content-Type {media or '(none)'} is not supported; send application/fhir+json or application/json",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too-costly", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too-costly", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
