"""Wording helpers for rule templates: `{name}` in a summary or detail is a fact value or one of these."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.domain.dosing import zoledronic_acid_dose_mg

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


def _sabr_trial(v: Values) -> str:
    n = v.get("n_mets")
    if isinstance(n, int):
        return (
            "Matching trial pattern: SABR-COMET-3 (1–3 lesions)."
            if n <= 3
            else "Matching trial pattern: SABR-COMET-10 (4–5 lesions)."
        )
    return ""


def _sabr_reason(v: Values) -> str:
    reasons = []
    if isinstance(v.get("ecog"), int) and v["ecog"] >= 2:
        reasons.append(f"ECOG {v['ecog']} ≥ 2")
    if v.get("primary_controlled") is False:
        reasons.append("primary not controlled")
    if v.get("brain_met_gt_3cm") is True:
        reasons.append("brain metastasis > 3 cm")
    if v.get("malignant_pleural_effusion") is True:
        reasons.append("malignant pleural effusion")
    return "; ".join(reasons) or "see inputs"


def _bma_choice(v: Values) -> str:
    """start-bma detail: the agent preference (BMA-02), the companion checks, and the prostate label restriction for
    prostate cancer only (clinical-rules §6.1: "prostate cancer not yet castration-resistant")."""
    crcl, scr = v.get("crcl"), v.get("scr_current_mg_dl")
    parts = []
    if (isinstance(crcl, int | float) and crcl < 30) or (isinstance(scr, int | float) and scr > 3.0):
        parts.append("BMA-02: denosumab preferred (CrCl < 30 mL/min or SCr > 3.0 mg/dL) [REV ref 39].")
    parts.append("With calcium + vitamin D and a prior dental check (BMA-04, BMA-05).")
    if v.get("primary_site") == "prostate" and v.get("castration_status") != "resistant":  # §6.1: not yet CRPC
        parts.append(
            "In prostate cancer the zoledronic acid label applies only after progression on at least one hormonal "
            "therapy (not yet castration-resistant: label restriction)."
        )
    return " ".join(parts)


def _za_dose(v: Values) -> str:
    crcl = v.get("crcl")
    dose = zoledronic_acid_dose_mg(crcl) if isinstance(crcl, int | float) else None
    return "unknown" if dose is None else f"{dose:.1f}"


# BMA-05 triggers (clinical-rules §6.5): (applies?, the spec's words for the summary, the sentence for the detail)
_DENTAL_TRIGGERS: tuple[tuple[Callable[[Values], bool], str, str], ...] = (
    (
        lambda v: v.get("dental_exam_recent") is False,
        "dental examination before starting BMA",
        "Dental examination before starting the BMA (none within 6 months).",
    ),
    (
        lambda v: v.get("oral_open_lesion") is True,
        "delay BMA start until healed",
        "Delay the BMA start until the open oral lesion has healed.",
    ),
    (
        lambda v: v.get("invasive_dental_planned") is True and v.get("bma_active") is True,
        "avoid invasive dental procedures during BMA",
        "Avoid invasive dental procedures during BMA treatment.",
    ),
)


def _dental_triggers(v: Values) -> str:
    return " ".join(sentence for applies, _, sentence in _DENTAL_TRIGGERS if applies(v))


def _dental_summary(v: Values) -> str:
    """BMA-05 lists every trigger that applies (clinical-rules §6.5), in the spec's words, under 140 characters."""
    found = [words for applies, words, _ in _DENTAL_TRIGGERS if applies(v)]
    return "ONJ prevention: " + "; ".join(found or [_DENTAL_TRIGGERS[0][1]]) + "."


def _endocrine_choice(v: Values) -> str:
    if v.get("menopausal_status") == "post":
        return "Consider an aromatase inhibitor (letrozole/anastrozole/exemestane)."
    return (
        "Consider ovarian function suppression (e.g. goserelin) or ablation plus endocrine therapy (review: tamoxifen)."
    )


def _adt_note(v: Values) -> str:
    if v.get("fired:stomp-oriole-pattern") is True:  # HORM-PC runs after OMD-02 (`after` in the rule file)
        return (
            "LHRH agonists (leuprolide, goserelin); anti-androgens; abiraterone [REV §3.2]. STOMP/ORIOLE matches "
            "(§3.3): metastasis-directed therapy may delay ADT in hormone-sensitive oligorecurrence."
        )
    return "LHRH agonists (leuprolide, goserelin); anti-androgens; abiraterone [REV §3.2]."


def _mirels_fracture_note(v: Values) -> str:
    """SURG-MIRELS rates the fracture risk of an intact bone (clinical-rules §5.1); when the lesion already has an
    actual or impending fracture recorded (SURG-FX, SURG-TECH), the detail says so first."""
    fracture = v.get("lesion_fracture")
    if fracture in ("actual", "impending"):
        return (
            f"**An {fracture} fracture is recorded for this lesion: the Mirels "
            "score rates the risk of an intact bone; follow the fracture recommendations (SURG-FX / SURG-TECH).** "
        )
    return ""


def _radium_abiraterone(v: Values) -> str:
    """clinical-rules §6.10: "Not with abiraterone + prednisone/prednisolone (EU restriction after ERA-223) [KNOW]";
    said first and plainly when abiraterone is on the medication list."""
    if v.get("abiraterone_active") is True:
        return (
            "**Abiraterone is active: radium-223 is not to be combined with abiraterone + prednisone/prednisolone "
            "(EU restriction after ERA-223: more fractures and deaths) [KNOW].**"
        )
    return "Not with abiraterone + prednisone/prednisolone (EU restriction after ERA-223) [KNOW]."


def _radium_reason(v: Values) -> str:
    reasons = []
    if v.get("visceral_mets") is True:
        reasons.append("contraindicated pattern: visceral metastases")
    if v.get("radium_labs_ok") is False:
        reasons.append("do not administer: ANC/platelets/Hb below threshold")
    return "; ".join(reasons) + "."


def _lesion_site(v: Values) -> str:
    """The lesion's body site in words (SURG-FX "Pathological fracture at <site>", clinical-rules.md §5.2), short
    enough for the summary to stay under 140 characters (contract.md §3)."""
    site = str(v.get("lesion_body_site") or f"{v.get('lesion_condition')} (body site not recorded)")
    return site if len(site) <= SITE_CHARS else site[: SITE_CHARS - 1].rstrip() + "…"


SITE_CHARS = 60  # "Pathological fracture at <site>: urgent orthopaedic oncology assessment." stays < 140


def _renal_values(v: Values) -> str:
    """BMA-02's renal figures, each only when known."""
    shown = [f"CrCl {show(v.get('crcl'))} mL/min"]
    if v.get("scr_current_mg_dl") is not None:
        shown.append(f"serum creatinine {show(v.get('scr_current_mg_dl'))} mg/dL")
    return ", ".join(shown)


def _planned_resection_note(v: Values) -> str:
    """clinical-rules.md §5.3: an open resection planned at a spine/pelvis site is stated in the detail (the
    indicator stays info, contract.md §4)."""
    planned = v.get("lesion_planned_resection")
    if not planned:
        return ""
    return (
        f" An open resection is planned at this lesion ({planned}): at spine and pelvis sites limited (minimally "
        "invasive) surgical approaches must be considered [REV §3.4]."
    )


TEXTS: dict[str, Callable[[Values], str]] = {
    "planned_resection_note": _planned_resection_note,
    "lesion_site": _lesion_site,
    "renal_values": _renal_values,
    "tumor_board_note": _tumor_board_note,
    "stomp_or_oriole": _stomp_or_oriole,
    "sabr_trial": _sabr_trial,
    "sabr_reason": _sabr_reason,
    "bma_choice": _bma_choice,
    "za_dose": _za_dose,
    "dental_triggers": _dental_triggers,
    "dental_summary": _dental_summary,
    "endocrine_choice": _endocrine_choice,
    "adt_note": _adt_note,
    "radium_reason": _radium_reason,
    "radium_abiraterone": _radium_abiraterone,
    "mirels_fracture_note": _mirels_fracture_note,
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


_OPS = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "in": "one of", "nin": "none of"}


def describe(fact_label: str, op: str, value: Any, now: Any) -> str:
    """One condition of a rule in words, with the patient's current value: `ECOG ≤ 1 (now 0)`."""
    if op == "known":
        return f"{fact_label} {'is recorded' if value else 'is not recorded'}"
    shown = ", ".join(show(v) for v in value) if isinstance(value, list) else show(value)
    return f"{fact_label} {_OPS[op]} {shown} (now {show(now)})"
