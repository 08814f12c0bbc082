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


def _expected(i: int) -> tuple[str, set[str]]:
    n, ecog = i % 9, i % 4
    if n == 0:
        return "not-applicable", set()
    if n <= 5:
        return "oligometastatic", {"mdt-review"}
    return "polymetastatic", {"palliative-care-referral"} if ecog >= 0 else set()


def test_concurrent_evaluations_are_all_right(container: Container) -> None:
    runner = container.runner
    engine = container.engine

    def one(i: int) -> str | None:
        pf = _patient(i)
        out = engine.call(runner.evaluate, pf)
        state, codes = _expected(i)
        got = {r.code for r in out.recommendations}
        if pf.value("omd_state") != state or got != codes:
            return f"{i}: {pf.value('omd_state')} {sorted(got)} != {state} {sorted(codes)}"
        return None

    with ThreadPoolExecutor(CALLERS) as pool:
        wrong = [w for w in pool.map(one, range(EVALUATIONS), chunksize=250) if w]
    assert wrong == []
