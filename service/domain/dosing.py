"""Zoledronic acid renal dose table (Zometa label, clinical-rules.md §6.2 BMA-02): one place for the rule text and
the CDS Hooks dose-reduction suggestion."""

from __future__ import annotations


def zoledronic_acid_dose_mg(crcl_ml_min: float) -> float | None:
    """The labelled dose for a baseline CrCl (Cockcroft–Gault); None below 30 mL/min (not recommended).

    Bands > 60: 4.0 mg; 50–60: 3.5 mg; 40–49: 3.3 mg; 30–39: 3.0 mg (a CrCl of 49.9 falls in 40–49).
    """
    if crcl_ml_min < 30:
        return None
    return 4.0 if crcl_ml_min > 60 else 3.5 if crcl_ml_min >= 50 else 3.3 if crcl_ml_min >= 40 else 3.0
