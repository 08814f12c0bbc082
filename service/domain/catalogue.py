"""Human labels for the facts of clinical-rules.md §1.2, and how a sender supplies each (for issue details)."""

from __future__ import annotations

FACT_LABELS: dict[str, str] = {
    "primary_site": "primary cancer site (PrimaryCancerCondition.code)",
    "primary_dx_date": "primary cancer diagnosis date (PrimaryCancerCondition onset/recordedDate)",
    "primary_treated_definitively": "curative-intent treatment of the primary (Procedure, intent 373808002)",
    "days_since_primary_treatment": "end date of definitive treatment of the primary",
    "days_since_primary_dx": "primary cancer diagnosis date",
    "primary_progressing": "disease status of the primary (CancerDiseaseStatus 97509-4 with focus → primary)",
    "primary_controlled": "controlled primary (OMD-03)",
    "n_mets": "exact metastatic lesion count (local code metastatic-lesion-count)",
    "n_mets_lifetime": "lifetime metastatic lesion count",
    "max_mets_per_organ": "lesions per organ (metastatic-lesion-count with focus)",
    "cm_category": "TNM distant metastasis category",
    "history_polymetastatic": "polymetastatic disease before the OMD diagnosis (local code polymetastatic-history)",
    "previous_omd_dx": "an earlier episode of OMD (local code previous-omd)",
    "omd_dx_date": "OMD diagnosis date (local code omd-diagnosis)",
    "months_primary_to_omd": "interval from primary diagnosis to OMD diagnosis",
    "on_systemic_therapy_at_omd_dx": "systemic therapy at the OMD diagnosis date",
    "any_omd_lesion_progressing": "progression of OMD lesions on current imaging (local code lesion-progressing)",
    "ecog": "ECOG performance status (LOINC 89247-1) or Karnofsky (89243-0)",
    "kps": "Karnofsky performance status (LOINC 89243-0)",
    "life_expectancy": "life expectancy estimate in months (local code life-expectancy)",
    "life_expectancy_6m": "life expectancy ≥ 6 months (PS-01)",
    "bone_pain": "bone pain (local code bone-pain)",
    "castration_status": "castration status (local code castration-status)",
    "adt_last_6_months": "ADT within the last 6 months (medication list)",
    "brain_mets": "brain metastasis",
    "er": "oestrogen receptor status",
    "pr": "progesterone receptor status",
    "her2": "HER2 status",
    "duplicate_resource": "resources sent twice with the same id",
    "site_class": "body site of the lesion",
}


def label(fact: str) -> str:
    return FACT_LABELS.get(fact, fact.replace("_", " "))
