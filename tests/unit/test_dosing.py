"""The zoledronic acid renal dose table (Zometa label; clinical-rules.md §6.2) at every band edge."""

from __future__ import annotations

import pytest

from service.domain.dosing import zoledronic_acid_dose_mg


@pytest.mark.parametrize(
    ("crcl", "dose"),
    [(29.9, None), (30, 3.0), (39.9, 3.0), (40, 3.3), (49.9, 3.3), (50, 3.5), (60, 3.5), (60.1, 4.0), (120, 4.0)],
)
def test_band_edges(crcl: float, dose: float | None) -> None:
    assert zoledronic_acid_dose_mg(crcl) == dose
