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
    "lesion_long_bone": "long bone of a limb (Mirels scope: from the body site, else the mirels-site component)",
    "mirels": "Mirels inputs (local code mirels-assessment: site, pain, lesion type, size)",
    "fracture": "fracture status of the lesion (local code fracture-status)",
    "crcl": "creatinine clearance, Cockcroft–Gault (LOINC 35591-7, or creatinine + weight + age + sex)",
    "ca_corrected_mg_dl": "albumin-corrected calcium (calcium 17861-6 and albumin 1751-7)",
    "scr_current_mg_dl": "serum creatinine (LOINC 2160-0)",
    "scr_baseline_mg_dl": "serum creatinine before the first zoledronic acid dose",
    "menopausal_status": "menopausal status (local code menopausal-status)",
    "anc": "neutrophil count (LOINC 751-8)",
    "platelets": "platelet count (LOINC 777-3)",
    "hb": "haemoglobin (LOINC 718-7)",
    "egfr_sensitizing_mutation": "EGFR sensitising mutation (genomic variant, not protein IHC)",
    "alk_fusion": "ALK fusion (genomic variant or FISH 78205-2)",
}


def label(fact: str) -> str:
    return FACT_LABELS.get(fact, fact.replace("_", " "))


# The fact names of clinical-rules.md §1.2: the only names `issues[].input` carries (contract.md §3).
PUBLIC_FACTS = frozenset(
    {
        "primary_site",
        "primary_dx_date",
        "primary_treated_definitively",
        "primary_progressing",
        "primary_controlled",
        "mets",
        "n_mets",
        "n_mets_lifetime",
        "max_mets_per_organ",
        "n_organs",
        "bone_only",
        "visceral_mets",
        "brain_mets",
        "brain_met_gt_3cm",
        "malignant_pleural_effusion",
        "diffuse_disease",
        "cm_category",
        "history_polymetastatic",
        "previous_omd_dx",
        "omd_dx_date",
        "on_systemic_therapy_at_omd_dx",
        "any_omd_lesion_progressing",
        "ecog",
        "kps",
        "life_expectancy",
        "bone_pain",
        "mirels",
        "fracture",
        "site_class",
        "mscc_or_neuro_deficit",
        "crcl",
        "scr_baseline_mg_dl",
        "scr_current_mg_dl",
        "ca_corrected_mg_dl",
        "anc",
        "platelets",
        "hb",
        "dental_exam_done",
        "oral_open_lesion",
        "invasive_dental_planned",
        "er",
        "pr",
        "her2",
        "menopausal_status",
        "egfr_sensitizing_mutation",
        "alk_fusion",
        "castration_status",
        "testosterone_ng_dl",
        "age",
        "current_meds",
        "draft_orders",
        "tumor_board_reviewed",
        "planned_local_tx_lesions",
    }
)

# Internal working facts → the §1.2 fact they stand for.
ALIASES = {
    "lesion_mirels_score": "mirels",
    "lesion_mirels_size": "mirels",
    "lesion_site_class": "site_class",
    "lesion_long_bone": "site_class",
    "lesion_fracture": "fracture",
    # open lesion inputs of needs_stabilisation (SABR-01), one per input and status
    "lesions_mirels_unknown": "mirels",
    "lesions_mirels_conflicting": "mirels",
    "lesions_fracture_unknown": "fracture",
    "lesions_fracture_conflicting": "fracture",
    "life_expectancy_6m": "life_expectancy",
    "calcium_low": "ca_corrected_mg_dl",
    "calcium_mg_dl": "ca_corrected_mg_dl",
    "albumin_g_dl": "ca_corrected_mg_dl",
    "days_since_primary_treatment": "primary_treated_definitively",
    "days_since_primary_dx": "primary_dx_date",
    "cm_category_recorded": "cm_category",
    "lesion_progressing": "any_omd_lesion_progressing",
    "max_mets_per_organ_upper": "max_mets_per_organ",
}


def public_name(fact: str) -> str:
    return ALIASES.get(fact, fact)


# Lesion facts that say what exactly is open for an input of that lesion (clinical-rules.md §5.1: the Mirels
# missing-input names the lesion and the missing components); issue details quote them.
LESION_NOTES = {"mirels": "lesion_mirels_missing"}
