"""Distinct, seeded 25-resource FHIR R4 Bundles for the benchmarks.

`bundle(i)` is a pure function of `i`: every index gives a different patient (ids, dates and values), so a
benchmark that uses each index once cannot be flattered by a cache. One Patient, one primary cancer, 2–4
metastases, the local input Observations, ECOG/KPS, disease status, TNM cM, a curative surgery, a tumor board
review, two MedicationRequests and lab Observations; lab Observations pad each Bundle to exactly 25 resources.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

BUNDLE_SIZE = 25
AS_OF = date(2026, 11, 26)
SEED = 20261126

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL = "http://oligocds.org/fhir/CodeSystem/oligocds"
AJCC = "http://cancerstaging.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CURATIVE = "373808002"
PROCEDURE_INTENT = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-procedure-intent"
BASE = "https://bench.oligocds.org/fhir"

Resource = dict[str, Any]

PRIMARIES = (
    ("254837009", "Malignant neoplasm of breast (disorder)", "female", "64368001", "Partial mastectomy"),
    ("399068003", "Malignant tumor of prostate (disorder)", "male", "90470006", "Prostatectomy"),
    ("254637007", "Non-small cell lung cancer (disorder)", None, "173171007", "Lobectomy of lung"),
)
BONE_SITES = (
    ("29627003", "Structure of neck of femur"),
    ("61032001", "Bone structure of L1"),
    ("113197003", "Bone structure of rib"),
)
LAB_RANGES = {"2160-0": (0.6, 2.2, 2), "17861-6": (7.8, 11.2, 1)}  # mg/dL: low, high, decimals
KPS_FOR_ECOG = {0: (90, 100), 1: (70, 80), 2: (50, 60), 3: (30, 40)}
MEDICATIONS = (("72965", "letrozole"), ("77655", "zoledronic acid"))
LABS = (
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma"),
)


# --- small FHIR building blocks ----------------------------------------------------------------------------
def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def day(d: date) -> str:
    return d.isoformat()


@dataclass(frozen=True, slots=True)
class Case:
    """What the resources of one generated patient share."""

    rng: random.Random
    pid: str
    onset: date
    omd_dx: date

    def ref(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def rid(self, suffix: str) -> str:
        return f"{self.pid}-{suffix}"

    def recent(self, max_days: int = 60) -> date:
        return AS_OF - timedelta(days=self.rng.randint(1, max_days))


def observation(case: Case, suffix: str, code: dict[str, Any], value: dict[str, Any], when: date) -> Resource:
    return {
        "resourceType": "Observation",
        "id": case.rid(suffix),
        "status": "final",
        "code": code,
        "subject": case.ref(),
        "effectiveDateTime": day(when),
        **value,
    }


def local_obs(case: Case, code: str, value: dict[str, Any], when: date | None = None) -> Resource:
    return observation(case, code, concept(LOCAL, code), value, when or case.recent())


# --- resources -------------------------------------------------------------------------------------------
def patient(case: Case, gender: str) -> Resource:
    born = date(1940, 1, 1) + timedelta(days=case.rng.randint(0, 365 * 40))
    return {
        "resourceType": "Patient",
        "id": case.pid,
        "identifier": [{"system": f"{BASE}/mrn", "value": case.pid}],
        "name": [{"family": f"Bench{case.rng.randint(0, 10**6)}", "given": [case.pid]}],
        "gender": gender,
        "birthDate": day(born),
    }


def primary(case: Case, code: str, display: str) -> Resource:
    return {
        "resourceType": "Condition",
        "id": case.rid("primary"),
        "clinicalStatus": concept(CLINICAL, "active"),
        "verificationStatus": concept(VERIFICATION, "confirmed"),
        "code": concept(SNOMED, code, display),
        "subject": case.ref(),
        "onsetDateTime": day(case.onset),
    }


def metastasis(case: Case, n: int) -> Resource:
    resource: Resource = {
        "resourceType": "Condition",
        "id": case.rid(f"met-{n}"),
        "clinicalStatus": concept(CLINICAL, "active"),
        "subject": case.ref(),
        "onsetDateTime": day(case.omd_dx - timedelta(days=case.rng.randint(0, 20))),
    }
    if case.rng.random() < 0.2:
        return {**resource, "code": concept(SNOMED, "94381002", "Secondary malignant neoplasm of liver")}
    site, site_name = case.rng.choice(BONE_SITES)
    return {
        **resource,
        "code": concept(SNOMED, "94222008", "Secondary malignant neoplasm of bone"),
        "bodySite": [concept(SNOMED, site, site_name)],
    }


def local_inputs(case: Case, lesions: int) -> list[Resource]:
    rng = case.rng
    months = rng.choice((3, 6, 12, 18, 24, 36, 60))
    pain = rng.choice(("none", "mild", "moderate", "severe"))
    return [
        local_obs(case, "metastatic-lesion-count", {"valueInteger": lesions + rng.choice((0, 0, 0, 1))}),
        local_obs(case, "omd-diagnosis", {}, case.omd_dx),
        local_obs(case, "polymetastatic-history", {"valueBoolean": rng.random() < 0.1}),
        local_obs(case, "previous-omd", {"valueBoolean": rng.random() < 0.3}),
        local_obs(
            case,
            "life-expectancy",
            {"valueQuantity": {"value": months, "unit": "mo", "system": UCUM, "code": "mo"}},
        ),
        local_obs(case, "bone-pain", {"valueCodeableConcept": concept(LOCAL, pain)}),
    ]


def performance(case: Case) -> list[Resource]:
    ecog = case.rng.randint(0, 3)
    kps = case.rng.choice(KPS_FOR_ECOG[ecog])
    when = case.recent(45)
    ecog_code = concept(LOINC, "89247-1", "ECOG performance status")
    kps_code = concept(LOINC, "89243-0", "Karnofsky performance status")
    return [
        observation(case, "ecog", ecog_code, {"valueInteger": ecog}, when),
        observation(case, "kps", kps_code, {"valueInteger": kps}, when),
    ]


def disease_status(case: Case) -> Resource:
    value = {"valueCodeableConcept": concept(SNOMED, "359746009", "Patient's condition stable")}
    code = concept(LOINC, "97509-4", "Cancer disease status")
    obs = observation(case, "status", code, value, case.recent(30))
    return {**obs, "focus": [{"reference": f"Condition/{case.rid('primary')}"}]}


def tnm_cm(case: Case) -> Resource:
    if case.rng.random() < 0.5:
        value = concept(SNOMED, "1229901006", "American Joint Committee on Cancer cM0")
    else:
        value = concept(AJCC, "cM1", "cM1")
    code = concept(SNOMED, "399387003", "Distant metastases clinical category")
    return observation(case, "cm", code, {"valueCodeableConcept": value}, case.omd_dx)


def surgery(case: Case, code: str, display: str) -> Resource:
    performed = case.onset + timedelta(days=case.rng.randint(14, 60))
    return {
        "resourceType": "Procedure",
        "id": case.rid("surgery"),
        "extension": [{"url": PROCEDURE_INTENT, "valueCodeableConcept": concept(SNOMED, CURATIVE)}],
        "status": "completed",
        "code": concept(SNOMED, code, display),
        "subject": case.ref(),
        "performedDateTime": day(performed),
        "reasonReference": [{"reference": f"Condition/{case.rid('primary')}"}],
    }


def tumor_board(case: Case) -> Resource:
    return {
        "resourceType": "Procedure",
        "id": case.rid("tumor-board"),
        "status": "completed",
        "code": concept(LOCAL, "tumor-board-review"),
        "subject": case.ref(),
        "performedDateTime": day(case.omd_dx + timedelta(days=case.rng.randint(1, 10))),
    }


def medication(case: Case, code: str, name: str) -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": case.rid(f"med-{code}"),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": concept(RXNORM, code, name),
        "subject": case.ref(),
        "authoredOn": day(case.recent(120)),
    }


def lab(case: Case, n: int) -> Resource:
    code, display = LABS[n % 2]
    low, high, digits = LAB_RANGES[code]
    value = round(case.rng.uniform(low, high), digits)
    quantity = {"value": value, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    when = AS_OF - timedelta(days=7 + 30 * (n // 2) + case.rng.randint(0, 6))
    return observation(case, f"lab-{n}", concept(LOINC, code, display), {"valueQuantity": quantity}, when)


# --- bundles ---------------------------------------------------------------------------------------------
def new_case(i: int) -> Case:
    rng = random.Random(SEED * 1_000_003 + i)
    onset = AS_OF - timedelta(days=rng.randint(365, 3000))
    omd_dx = AS_OF - timedelta(days=rng.randint(20, 200))
    return Case(rng, f"bench-{i:07d}", onset, omd_dx)


def resources(i: int) -> list[Resource]:
    case = new_case(i)
    code, display, gender, surgery_code, surgery_name = case.rng.choice(PRIMARIES)
    lesions = case.rng.randint(2, 4)
    out = [
        patient(case, gender or case.rng.choice(("female", "male"))),
        primary(case, code, display),
        *(metastasis(case, n) for n in range(lesions)),
        *local_inputs(case, lesions),
        *performance(case),
        disease_status(case),
        tnm_cm(case),
        surgery(case, surgery_code, surgery_name),
        tumor_board(case),
        *(medication(case, rx, name) for rx, name in MEDICATIONS),
    ]
    out.extend(lab(case, n) for n in range(BUNDLE_SIZE - len(out)))
    return out


def bundle(i: int) -> Resource:
    entries = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources(i)]
    return {"resourceType": "Bundle", "id": f"bench-bundle-{i:07d}", "type": "collection", "entry": entries}


def bundle_bytes(i: int) -> bytes:
    return orjson.dumps(bundle(i))


def bundles(start: int, count: int) -> list[bytes]:
    """The bytes of Bundles start … start + count - 1."""
    return [bundle_bytes(i) for i in range(start, start + count)]
