"""20,000 evaluations through the engine wrapper from concurrent callers: no crash, no wrong result."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

from service.bootstrap import Container
from service.domain.facts import PatientFacts, known

EVALUATIONS = 20_000
CALLERS = 8


def _patient(i: int) -> PatientFacts:
    n = i % 9  # 0 … 8 lesions
    pf = PatientFacts(f"Patient/stress-{i}", date(2026, 11, 26))
    for fact in (
        known("has_active_distant_met", n > 0),
        known("n_mets_reported", n > 0),
        known("cm_conflict", False),
        known("diffuse_disease", False),
        known("lesion_count_consistent", True),
        known("n_mets", n),
        known("n_mets_min", n),
        known("ecog", i % 4),
        known("ecog_kps_conflict", False),
        known("receptor_conflict", False),
        known("duplicate_conflict", False),
        known("tumor_board_after_omd_dx", False),
        known("bone_mets", n > 0),
        known("bone_pain", "severe"),
        known("n_lesions_planned_curative", 0),
    ):
        pf.put(fact)
    return pf


def _answer(container: Container, i: int) -> tuple[object, tuple[str, ...]]:
    pf = _patient(i)
    out = container.engine.call(container.runner.evaluate, pf)
    return pf.value("omd_state"), tuple(sorted(f"{r.rule}:{r.code}:{r.indicator}" for r in out.recommendations))


def test_concurrent_evaluations_are_all_right(container: Container) -> None:
    patterns = 36  # i % 9 lesions × i % 4 ECOG
    reference = {i: _answer(container, i) for i in range(patterns)}
    # the reference itself is right where the spec is unambiguous
    assert reference[0][0] == "not-applicable" and reference[3][0] == "oligometastatic"
    assert reference[7][0] == "polymetastatic" and "MDT-03:palliative-care-referral:info" in reference[7][1]
    assert "MDT-01:mdt-review:warning" in reference[1][1]

    def one(i: int) -> str | None:
        got = _answer(container, i)
        return None if got == reference[i % patterns] else f"{i}: {got} != {reference[i % patterns]}"

    with ThreadPoolExecutor(CALLERS) as pool:
        wrong = [w for w in pool.map(one, range(EVALUATIONS), chunksize=250) if w]
    assert wrong == []
