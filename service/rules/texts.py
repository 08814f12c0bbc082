"""Wording helpers for rule templates: `{name}` in a summary or detail is a fact value or one of these."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Values = Mapping[str, Any]


def _tumor_board_note(v: Values) -> str:
    if v.get("tumor_board_after_omd_dx"):
        return f"Tumor board review on {v.get('tumor_board_date', 'record')}."
    return "No tumor board review after the OMD diagnosis is recorded."


def _stomp_or_oriole(v: Values) -> str:
    stomp = (
        v.get("bone_pain") == "none"
        and v.get("adt_ever") is False
        and isinstance(v.get("testosterone_ng_dl"), int | float)
        and v["testosterone_ng_dl"] > 50
    )
    return "Matches STOMP and ORIOLE criteria" if stomp else "Matches ORIOLE criteria"


TEXTS: dict[str, Callable[[Values], str]] = {
    "tumor_board_note": _tumor_board_note,
    "stomp_or_oriole": _stomp_or_oriole,
}


def show(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class _Fill(dict[str, Any]):
    def __init__(self, values: Values) -> None:
        super().__init__()
        self._values = values

    def __missing__(self, key: str) -> str:
        if key in TEXTS:
            return TEXTS[key](self._values)
        return show(self._values.get(key))


def render(template: str, values: Values) -> str:
    return template.format_map(_Fill(values))
