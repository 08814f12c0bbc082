"""No null or empty element in a CDS Hooks response (cds-hooks.md §1, R3): `prune` removes them and keeps the rest."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.cdshooks.hooks import prune

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", "x", ":[]", '["",null]', ",{}", "a:null"]),  # strings that look like empty elements
    st.text(max_size=5),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "", "null", "c"]), inner, max_size=4),
    ),
    max_leaves=25,
)


def _has_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or v in ("", [], {}) or _has_empty(v) for v in value.values())
    if isinstance(value, list):
        return any(v is None or v in ("", [], {}) or _has_empty(v) for v in value)
    return False


def _by_definition(value: Any) -> Any:
    """What prune must return: containers pruned bottom-up, then empty values dropped."""
    if isinstance(value, dict):
        kept = {k: _by_definition(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v not in ("", [], {})}
    if isinstance(value, list):
        kept_list = [_by_definition(v) for v in value]
        return [v for v in kept_list if v is not None and v not in ("", [], {})]
    return value


@settings(max_examples=1000, deadline=None)
@given(trees)
def test_prune_removes_every_empty_element_and_nothing_else(tree: Any) -> None:
    pruned = prune(tree)
    assert not _has_empty(pruned)
    assert pruned == _by_definition(tree)


def test_nested_empties_are_removed_and_false_and_zero_kept() -> None:
    card = {"summary": "s", "links": [], "suggestions": [{"actions": [{}]}], "x": None, "n": 0, "f": False}
    response = {"cards": [card]}
    assert prune(response) == {"cards": [{"summary": "s", "n": 0, "f": False}]}
