"""Code tables of fhir-mapping.md §3–§4: organ buckets, primary sites, body-site classes, LOINC codes."""

from __future__ import annotations

from service.fhir.util import ICD10CM, LOINC, SNOMED, codings

# --- metastases: organ buckets (§4.1) ---------------------------------------------------------------------
SECONDARY_SNOMED = {
    "94222008": "bone",
    "94409002": "bone-marrow",
    "94381002": "liver",
    "94391008": "lung",
    "94225005": "brain",
    "94181007": "lymph-node",
    "128462008": None,  # generic: organ from bodySite
    "712849003": "bone",  # prostate cancer metastatic to bone (precoordinated)
    "424887002": "bone",  # thyroid cancer metastatic to bone (precoordinated)
}
SECONDARY_ICD10 = {
    "C79.51": "bone",
    "C79.5": "bone",
    "C7B.03": "bone",
    "C79.52": "bone-marrow",
    "C78.7": "liver",
    "C78.0": "lung",
    "C78.00": "lung",
    "C78.01": "lung",
    "C78.02": "lung",
    "C79.31": "brain",
    "C79.32": "brain",  # meninges: diffuse, leptomeningeal (fhir-mapping §4.1 brain row)
    "C78.2": "pleura",
    "C78.6": "peritoneum",
    "C79.70": "adrenal",
    "C79.71": "adrenal",
    "C79.72": "adrenal",
    "C79.9": None,
    "C79.89": None,
}
# primaries "metastatic to bone" (fhir-mapping §4.1): they set a bone metastasis and the primary
PRECOORDINATED_SNOMED = frozenset({"712849003", "424887002"})
DIFFUSE_ORGANS = frozenset({"bone-marrow", "pleura", "peritoneum"})
DIFFUSE_ICD10 = frozenset({"C79.32"})  # leptomeningeal: organ brain, diffuse (fhir-mapping §4.1)
VISCERAL_ORGANS = frozenset({"lung", "liver", "brain", "adrenal", "pleura", "peritoneum", "other-visceral"})


def is_diffuse(organ: str, code: object) -> bool:
    """Diffuse disease (clinical-rules §1.2 `diffuse_disease`): the diffuse organ buckets, or leptomeningeal."""
    return organ in DIFFUSE_ORGANS or any(s == ICD10CM and c in DIFFUSE_ICD10 for s, c in codings(code))


# Body sites that give the organ of a generic secondary code (128462008 + bodySite).
BODY_SITE_ORGAN = {
    "10200004": "liver",
    "39607008": "lung",
    "12738006": "brain",
    "23451007": "adrenal",
    "3120008": "pleura",
    "15425007": "peritoneum",
    "59441001": "lymph-node",
}

# --- primary cancers (§4.2) --------------------------------------------------------------------------------
# Melanoma (TGT-RCC/IO, clinical-rules.md §6.12: immunotherapy for bone-metastatic melanoma). The spec's code tables
# give none: SNOMED 372244006 "Malignant melanoma (disorder)", ICD-10-CM C43 "Malignant melanoma of skin".
# primary_site has no melanoma value (clinical-rules §1.2): it is `other`, and `is_melanoma` sets the melanoma fact.
MELANOMA_SNOMED, MELANOMA_ICD10 = "372244006", "C43"
PRIMARY_SNOMED = {
    "254837009": "breast",
    "372137005": "breast",
    "408643008": "breast",
    "353431000119107": "breast",
    "353561000119103": "breast",
    "399068003": "prostate",
    "712849003": "prostate",
    "363358000": "lung_other",
    "254637007": "lung_nsclc",
    "702391001": "kidney_rcc",
    "363518003": "kidney_rcc",
    "363478007": "thyroid",
    "424887002": "thyroid",
    "109989006": "myeloma",
    MELANOMA_SNOMED: "other",
}
PRIMARY_ICD10_PREFIX = {
    "C50": "breast",
    "C61": "prostate",
    "C34": "lung_other",
    "C64": "kidney_rcc",
    "C73": "thyroid",
    "C90.0": "myeloma",
    MELANOMA_ICD10: "other",
}


def is_melanoma(code: object) -> bool:
    for system, value in codings(code):
        if (system == SNOMED and value == MELANOMA_SNOMED) or (system == ICD10CM and value.startswith(MELANOMA_ICD10)):
            return True
    return False


# Specific ICD-10-CM secondaries of visceral organs outside the §4.1 rows, by code prefix: the "other visceral" of
# clinical-rules §1.2 `visceral_mets` [KNOW: ICD-10-CM chapter C78–C79 titles]. Mediastinum (C78.1), skin (C79.2),
# other nervous system (C79.4-), breast (C79.81) and unspecified sites stay `other` (organ unknown → visceral unknown).
OTHER_VISCERAL_ICD10 = (
    "C78.3",  # other and unspecified respiratory organs
    "C78.4",  # small intestine
    "C78.5",  # large intestine and rectum
    "C78.8",  # other and unspecified digestive organs
    "C79.0",  # kidney and renal pelvis
    "C79.1",  # bladder and other urinary organs
    "C79.6",  # ovary
    "C79.82",  # genital organs
)


PATHOLOGICAL_FRACTURE_SNOMED = "268029009"  # fhir-mapping §4.3
PATHOLOGICAL_FRACTURE_ICD10 = "M84.5"  # "Pathological fracture in neoplastic disease", M84.5- (§4.3, marked "?")


def is_pathological_fracture(code: object) -> bool:
    return any(
        (system == SNOMED and value == PATHOLOGICAL_FRACTURE_SNOMED)
        or (system == ICD10CM and value.startswith(PATHOLOGICAL_FRACTURE_ICD10))
        for system, value in codings(code)
    )


def organ_bucket(organ: str) -> str:
    """The organ as `assessment.organs` / `lesions[].organ` show it: the §4.1 buckets (`other-visceral` is ours, to
    know it is visceral, and shows as `other`)."""
    return "other" if organ == "other-visceral" else organ


def is_precoordinated(code: object) -> bool:
    return any(system == SNOMED and value in PRECOORDINATED_SNOMED for system, value in codings(code))


def secondary_organ(code: object) -> tuple[bool, str | None]:
    """(is a secondary cancer code, organ bucket or None when the code does not say). A coding that names the organ
    wins over a generic one, whatever their order (e.g. SNOMED 128462008 next to ICD-10-CM C78.7)."""
    secondary, organ = False, None
    for system, value in codings(code):
        found: tuple[bool, str | None] = (False, None)
        if system == SNOMED and value in SECONDARY_SNOMED:
            found = True, SECONDARY_SNOMED[value]
        elif system == ICD10CM and value in SECONDARY_ICD10:
            found = True, SECONDARY_ICD10[value]
        elif system == ICD10CM and value[:3] in ("C77", "C78", "C79", "C7B"):
            visceral = value.startswith(OTHER_VISCERAL_ICD10)
            found = True, "lymph-node" if value.startswith("C77") else "other-visceral" if visceral else None
        if found[0]:
            secondary = True
            if found[1] is not None:
                return True, found[1]
    return secondary, organ


# A coding that says more wins over one that says less, in any order (C34.90 "lung, unspecified" next to SNOMED
# 254637007 "non-small cell lung cancer" is NSCLC); otherwise the first recognised coding.
LESS_SPECIFIC_SITES = ("lung_other", "other")


def primary_site(code: object) -> str | None:
    found: list[str] = []
    for system, value in codings(code):
        if system == SNOMED and value in PRIMARY_SNOMED:
            found.append(PRIMARY_SNOMED[value])
        elif system == ICD10CM:
            found += [site for prefix, site in PRIMARY_ICD10_PREFIX.items() if value.startswith(prefix)][:1]
    return next((site for site in found if site not in LESS_SPECIFIC_SITES), found[0] if found else None)


def is_cancer_code(code: object) -> bool:
    """A code that is clearly meant as a cancer diagnosis (ICD-10-CM C00–C96, or a known SNOMED cancer)."""
    for system, value in codings(code):
        if system == ICD10CM and value[:1] == "C" and value[1:3].isdigit() and int(value[1:3]) <= 96:
            return True
        if system == SNOMED and (value in PRIMARY_SNOMED or value in SECONDARY_SNOMED or value == "363346000"):
            return True
    return False


# --- body sites → site class and Mirels site points (§4.4) ------------------------------------------------
PROXIMAL, DISTAL = "40415009", "46053002"
SITE_CLASS = {
    "71341001": "weight-bearing-long-bone",  # femur
    "2812003": "weight-bearing-long-bone",  # head of femur
    "29627003": "weight-bearing-long-bone",  # neck of femur
    "41111004": "weight-bearing-long-bone",  # shaft of femur
    "85050009": "weight-bearing-long-bone",  # humerus
    "12611008": "other-long-bone",  # tibia
    "87342007": "other-long-bone",  # fibula
    "62413002": "other-long-bone",  # radius
    "23416004": "other-long-bone",  # ulna (distal ulna → minor)
    "113197003": "minor",  # rib
    "51299004": "minor",  # clavicle
    "421060004": "spine",
    "122496007": "spine",
    "3572006": "spine",
    "73903008": "spine",
    "35769007": "spine",
    "87141009": "spine",
    "61032001": "spine",
    "280849005": "spine",
    "91116008": "spine",
    "118645006": "pelvis",
    "22356005": "pelvis",
    "85710004": "pelvis",
    "37783008": "pelvis",
    "719537008": "pelvis",
    "79601000": "other",  # scapula
    "119186007": "other",  # bone, unspecified
    "14016003": "other",  # bone marrow
}
# Individual ribs 1st…12th (fhir-mapping.md §4.4 names the ends, 48535007 … 43993008): SNOMED "Bone structure of
# first … twelfth rib", as listed in mCODE's radiotherapy treatment location value set.
RIBS = {
    "48535007",  # 1st
    "78247007",  # 2nd
    "25888004",  # 3rd
    "25523003",  # 4th
    "15339008",  # 5th
    "59558009",  # 6th
    "24915002",  # 7th
    "5953002",  # 8th
    "22565002",  # 9th
    "77644006",  # 10th
    "58830002",  # 11th
    "43993008",  # 12th
}
# Human-readable names of the body sites above (fhir-mapping.md §4.4 "site" column), for card texts such as SURG-FX
# "Pathological fracture at <site>" (clinical-rules.md §5.2).
SITE_NAME = {
    "71341001": "femur",
    "2812003": "head of femur",
    "29627003": "neck of femur",
    "41111004": "shaft of femur",
    "12611008": "tibia",
    "87342007": "fibula",
    "85050009": "humerus",
    "62413002": "radius",
    "23416004": "ulna",
    "113197003": "rib",
    "51299004": "clavicle",
    "421060004": "vertebral column",
    "122496007": "lumbar vertebral column",
    "3572006": "vertebral body",
    "73903008": "lumbar vertebra",
    "35769007": "thoracic vertebra",
    "87141009": "sacral vertebra",
    "61032001": "L1 vertebra",
    "280849005": "T12 vertebra",
    "91116008": "C3 vertebra",
    "118645006": "bony pelvis",
    "22356005": "ilium",
    "85710004": "ischium",
    "37783008": "acetabulum",
    "719537008": "right acetabulum",
    "79601000": "scapula",
    "119186007": "bone",
    "14016003": "bone marrow",
    "48535007": "1st rib",
    "78247007": "2nd rib",
    "25888004": "3rd rib",
    "25523003": "4th rib",
    "15339008": "5th rib",
    "59558009": "6th rib",
    "24915002": "7th rib",
    "5953002": "8th rib",
    "22565002": "9th rib",
    "77644006": "10th rib",
    "58830002": "11th rib",
    "43993008": "12th rib",
}
# Words for the laterality (fhir-mapping.md §1) and location qualifiers (§1, §4.4) of a body site.
SITE_QUALIFIER_WORD = {
    "7771000": "left",
    "24028007": "right",
    "51440002": "bilateral",
    "399488007": "midline",
    "40415009": "proximal",
    "46053002": "distal",
}

MIRELS_SITE_POINTS = {
    "2812003": 3,
    "29627003": 3,
    "41111004": 2,
    "12611008": 2,
    "87342007": 2,
    "85050009": 1,
    "62413002": 1,
    "23416004": 1,
}

# --- observations (§3.2–§3.4, §4.6) ------------------------------------------------------------------------
ECOG = "89247-1"
KPS = "89243-0"
DISEASE_STATUS = ("97509-4", "88040-1")
WORSENED = "271299001"
UNDETERMINED = "709137006"  # "Patient condition undetermined": a status that says neither way
TUMOR_SIZE = "21889-1"
M_CATEGORY_SNOMED = ("277208005", "399387003", "371497001")
M_CATEGORY_LOINC = ("21907-1", "21901-4", "21913-9")
# AJCC cM0 (1229901006, fhir-mapping §3.3 ✔) and cM0(i+) (1229902004); every other SNOMED value is M1
# (1229903009 is AJCC cM1, 1229904003 cM1a …: public AJCC value sets)
CM0_SNOMED = {"1229901006", "1229902004"}
ER_LOINC = ("85337-4", "40556-3", "16112-5", "85329-1", "14228-1")
PR_LOINC = ("85339-0", "40557-1", "16113-3", "85325-9", "14230-7")
HER2_LOINC = ("48676-1", "85319-2", "18474-7", "85318-4", "49683-6", "31150-6")
POSITIVE = {(LOINC, "LA6576-8"), (SNOMED, "10828004")}
NEGATIVE = {(LOINC, "LA6577-6"), (SNOMED, "260385009")}
EQUIVOCAL = {(LOINC, "LA11885-0"), (SNOMED, "42425007")}
CURATIVE = "373808002"
RADIOTHERAPY_COURSE = "1217123003"

# Menopausal status derivation (clinical-rules.md §6.7: "bilateral oophorectomy → post"): SNOMED 29827000 bilateral
# salpingo-oophorectomy (mCODE cancer-related surgical procedures); a coding display or text naming a bilateral
# oophorectomy also counts (service/fhir/procedures.py).
BILATERAL_OOPHORECTOMY = ("29827000",)

# Resections of the primaries read (OMD-03 "a resection code", clinical-rules.md §3.4), SNOMED, from mCODE's
# cancer-related surgical procedures: partial mastectomy, prostatectomy, nephrectomy, lung lobectomy,
# bilobectomy, pneumonectomy, thyroidectomy. A display or text naming an -ectomy or a resection counts too.
PRIMARY_RESECTIONS = (
    "64368001",
    "26294005",
    "90470006",
    "108022006",
    "173171007",
    "359623004",
    "173170008",
    "49795001",
    "13619001",
    "24443003",
)
