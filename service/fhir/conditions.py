"""Cancer Conditions → primary cancer facts and the metastases (lesions) with their counts
(fhir-mapping.md §2, §3.1, §4.1–§4.4; clinical-rules.md §3.1 lesion counting)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from service.domain.facts import InputIssue
from service.fhir import codes
from service.fhir.readings import Invalid, Reading, by_focus, latest, read_all, value_int
from service.fhir.util import (
    LOCAL,
    SNOMED,
    Resource,
    add_months,
    codings,
    extensions,
    local_code,
    parse_date,
    ref_id,
    rid,
)

INACTIVE_CLINICAL = frozenset({"inactive", "resolved", "remission"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
PRIMARY_PROFILE = "mcode-primary-cancer-condition"
SECONDARY_PROFILE = "mcode-secondary-cancer-condition"
# axillary nodes, SNOMED 94181007 and its ICD-10-CM twin C77.3 (fhir-mapping §4.1): regional (N category), not
# counted as metastases (clinical-rules §3.1) [CONFIG: regional vs distant depends on the primary]
REGIONAL_NODE_CODES = {"94181007", "C77.3"}


@dataclass(slots=True)
class Metastasis:
    condition: str
    organ: str
    site_class: str
    body_sites: tuple[str, ...]
    active: bool
    regional: bool
    onset: date | None
    count: int | None = None  # exact per-site count (local count with focus, or linked Tumor BodyStructures)
    count_sources: tuple[str, ...] = ()
    count_conflict: tuple[str, ...] = ()  # per-site counts that disagree on their latest date
    diffuse: bool = False  # carcinomatosis, leptomeningeal or marrow disease (codes.is_diffuse)
    sided_sites: tuple[tuple[str, str | None], ...] = ()  # (SNOMED body site, its laterality qualifier or None)
    site_label: str | None = None  # the body site in words, e.g. "left shaft of femur"
    precoordinated: bool = False  # set by a primary "metastatic to bone" code (codes.PRECOORDINATED_SNOMED)

    @property
    def lower_bound(self) -> int:
        return self.count if self.count is not None else max(1, len(self.body_sites))


@dataclass(slots=True)
class CancerPicture:
    primaries: list[Resource] = field(default_factory=list)
    primary_site: str | None = None
    primary_dx_date: date | None = None
    primary_dx_latest: date | None = None  # the latest day a partial primary date allows
    primary_ids: list[str] = field(default_factory=list)
    mets: list[Metastasis] = field(default_factory=list)
    total_count: Reading | None = None
    earlier_counts: list[Reading] = field(default_factory=list)
    count_conflict: tuple[str, ...] = ()  # total counts that disagree on their latest date
    fractures: list[Resource] = field(default_factory=list)

    @property
    def distant(self) -> list[Metastasis]:
        return [m for m in self.mets if m.active and not m.regional]


def _profiles(resource: Resource) -> list[str]:
    return [str(p) for p in (resource.get("meta") or {}).get("profile") or []]


def _has_profile(resource: Resource, suffix: str) -> bool:
    return any(p.rstrip("/").split("/")[-1].startswith(suffix) for p in _profiles(resource))


def _status(resource: Resource, key: str) -> str | None:
    return next((c for _, c in codings(resource.get(key))), None)


def is_active(condition: Resource) -> bool:
    clinical = _status(condition, "clinicalStatus")
    verification = _status(condition, "verificationStatus")
    return clinical not in INACTIVE_CLINICAL and verification not in EXCLUDED_VERIFICATION


def dx_date(condition: Resource) -> date | None:
    return dx_dates(condition)[0]


def dx_dates(condition: Resource) -> tuple[date | None, date | None]:
    """The earliest and latest diagnosis date the record allows: a partial date (YYYY or YYYY-MM) spans its year or
    month (contract.md §3: never guessed); a full date is both."""
    onset = condition.get("onsetDateTime") or (condition.get("onsetPeriod") or {}).get("start")
    for value in (onset, condition.get("recordedDate")):
        found = parse_date(value)
        if found:
            return found, last_day(value, found)
    for ext in extensions(condition, ("condition-assertedDate",)):
        found = parse_date(ext.get("valueDateTime"))
        return found, last_day(ext.get("valueDateTime"), found) if found else None
    return None, None


def last_day(value: object, first: date) -> date:
    """The last day a FHIR date of the precision of `value` can mean, from its first day."""
    text = str(value)
    if len(text) == 4:
        return first.replace(month=12, day=31)
    if len(text) == 7:
        return add_months(first, 1) - timedelta(days=1)
    return first


def body_site_codes(condition: Resource) -> list[str]:
    return [c for s, c in codings(condition.get("bodySite") or []) if s == SNOMED]


LATERALITY_EXTENSIONS = ("mcode-laterality-qualifier", "mcode-laterality")  # STU4, STU1 (fhir-mapping.md §1, §5)
LOCATION_EXTENSIONS = ("mcode-body-location-qualifier", "mcode-location-qualifier")
# fhir-mapping.md §1: 7771000 Left, 24028007 Right, 51440002 Right and left, 399488007 Midline
SIDES = {"7771000": {"left"}, "24028007": {"right"}, "51440002": {"left", "right"}, "399488007": {"midline"}}


def sided_body_sites(condition: Resource) -> tuple[tuple[str, str | None], ...]:
    """Each SNOMED bodySite code with the laterality qualifier on that bodySite (fhir-mapping.md §3.1), if any."""
    found: list[tuple[str, str | None]] = []
    for site in condition.get("bodySite") or []:
        side = next(
            (c for ext in extensions(site, LATERALITY_EXTENSIONS) for _, c in codings(ext.get("valueCodeableConcept"))),
            None,
        )
        found.extend((c, side) for s, c in codings(site) if s == SNOMED)
    return tuple(dict.fromkeys(found))


def same_body_site(a: tuple[tuple[str, str | None], ...], b: tuple[tuple[str, str | None], ...]) -> bool:
    """A shared body site code whose lateralities agree where both carry one (right and left covers either side)."""
    return any(
        code_a == code_b and (side_a is None or side_b is None or bool(_sides(side_a) & _sides(side_b)))
        for code_a, side_a in a
        for code_b, side_b in b
    )


def _sides(code: str) -> set[str]:
    return SIDES.get(code, {code})


def site_label(condition: Resource) -> str | None:
    """The bodySite in words: laterality and location qualifier, then the site name of fhir-mapping.md §4.4, else the
    sender's text or display (e.g. "left proximal humerus"); None without a bodySite."""
    names: list[str] = []
    for site in condition.get("bodySite") or []:
        if not isinstance(site, dict):
            continue
        qualifiers = [
            codes.SITE_QUALIFIER_WORD[c]
            for ext in extensions(site, (*LATERALITY_EXTENSIONS, *LOCATION_EXTENSIONS))
            for _, c in codings(ext.get("valueCodeableConcept"))
            if c in codes.SITE_QUALIFIER_WORD
        ]
        known_name = next((codes.SITE_NAME[c] for s, c in codings(site) if s == SNOMED and c in codes.SITE_NAME), None)
        displays = [str(c.get("display")) for c in site.get("coding") or [] if isinstance(c, dict) and c.get("display")]
        name = known_name or site.get("text") or next(iter(displays), None)
        if name:
            names.append(" ".join([*dict.fromkeys(qualifiers), str(name)]))
    return ", ".join(dict.fromkeys(names)) or None


def _qualifiers(condition: Resource) -> set[str]:
    found: set[str] = set()
    for site in condition.get("bodySite") or []:
        for ext in extensions(site, LOCATION_EXTENSIONS):
            found.update(c for _, c in codings(ext.get("valueCodeableConcept")))
    return found


def site_class(organ: str, condition: Resource) -> str:
    """`lesions[].siteClass` (clinical-rules.md §5.3): bone sites by body site; non-bone lesions are `other`."""
    if organ != "bone":
        return "other"
    classes = set()
    for code in body_site_codes(condition):
        cls = codes.SITE_CLASS.get(code) or ("minor" if code in codes.RIBS else None)
        if code == "23416004" and codes.DISTAL in _qualifiers(condition):
            cls = "minor"
        classes.add(cls or "unknown")
    if len(classes) != 1:
        return "unknown"  # no usable site, or sites of different classes on one Condition [CONFIG]
    return classes.pop()


def read_conditions(
    conditions: Iterable[Resource], issues: list[InputIssue]
) -> tuple[list[Resource], list[Metastasis], list[Resource]]:
    """Split cancer Conditions into primaries, metastases and pathological-fracture Conditions."""
    primaries: list[Resource] = []
    mets: list[Metastasis] = []
    fractures: list[Resource] = []
    for cond in conditions:
        if _status(cond, "verificationStatus") == "entered-in-error":
            continue
        code = cond.get("code")
        is_secondary, organ = codes.secondary_organ(code)
        if codes.is_pathological_fracture(code):
            fractures.append(cond)
        # a refuted metastasis never was one: not counted now nor in the lifetime total (clinical-rules §3.1 excludes
        # refuted with entered-in-error; fhir-mapping §2 n_mets_lifetime is "as n_mets" incl. inactive/resolved)
        if (is_secondary or _has_profile(cond, SECONDARY_PROFILE)) and _status(cond, "verificationStatus") != "refuted":
            mets.append(_metastasis(cond, organ, code))
            if not is_secondary:
                issues.append(
                    InputIssue("unsupported-resource", "mets", f"{rid(cond)}: secondary cancer code not recognised")
                )
        # by code, not only by profile (fhir-mapping §5): any ICD-10-CM C00–C96 cancer that is not a secondary
        if (
            codes.primary_site(code)
            or _has_profile(cond, PRIMARY_PROFILE)
            or (not is_secondary and codes.is_cancer_code(code))
        ):
            primaries.append(cond)
            if not codes.primary_site(code):
                issues.append(
                    InputIssue("unsupported-resource", "primary_site", f"{rid(cond)}: cancer code not recognised")
                )
    return primaries, _without_redundant_precoordinated(mets), fractures


def _without_redundant_precoordinated(mets: list[Metastasis]) -> list[Metastasis]:
    """A primary coded "metastatic to bone" (712849003, 424887002) says that bone metastases exist; it sets a bone
    metastasis of its own only when no bone metastasis Condition records them (fhir-mapping §4.1). Next to one it
    is the same disease, not another lesion (clinical-rules §3.1: count lesions, not Condition resources)."""
    if not any(m.organ == "bone" and m.active and not m.precoordinated for m in mets):
        return mets
    return [m for m in mets if not m.precoordinated]


def _metastasis(cond: Resource, organ: str | None, code: object) -> Metastasis:
    sites = body_site_codes(cond)
    if organ is None:
        organ = next((codes.BODY_SITE_ORGAN[s] for s in sites if s in codes.BODY_SITE_ORGAN), None)
        if organ is None and any(s in codes.SITE_CLASS or s in codes.RIBS for s in sites):
            organ = "bone"
    organ = organ or "other"
    regional = organ == "lymph-node" and any(c in REGIONAL_NODE_CODES for _, c in codings(code))
    return Metastasis(
        condition=rid(cond),
        organ=organ,
        site_class=site_class(organ, cond),
        body_sites=tuple(dict.fromkeys(sites)),
        active=is_active(cond),
        regional=regional,
        onset=dx_date(cond),
        diffuse=codes.is_diffuse(organ, code),
        precoordinated=codes.is_precoordinated(code) and not _has_profile(cond, SECONDARY_PROFILE),
        sided_sites=sided_body_sites(cond),
        site_label=site_label(cond),
    )


def apply_counts(
    mets: list[Metastasis],
    count_obs: Iterable[Resource],
    tumors: Iterable[Resource],
    issues: list[InputIssue],
) -> tuple[Reading | None, list[Reading], tuple[str, ...]]:
    """Per-site counts onto the metastases (a per-site conflict is kept on the metastasis); return the latest total
    count (None when absent or conflicting), every total count reading, and the sources of a conflicting total."""
    readings = read_all(count_obs, _count, "n_mets", issues)
    groups = by_focus(readings)
    per_tumor: dict[str, list[str]] = {}
    for tumor in tumors:
        for ext in extensions(tumor, ("mcode-related-condition", "condition-related")):
            target = ref_id(ext.get("valueReference"))
            if target:
                per_tumor.setdefault(target, []).append(rid(tumor))
    for met in mets:
        selected = latest(groups.get(met.condition, []))
        if selected and selected.value is not None and not selected.conflicting:
            met.count, met.count_sources = int(selected.value), selected.sources
        elif met.condition in per_tumor:
            met.count, met.count_sources = len(per_tumor[met.condition]), tuple(per_tumor[met.condition])
        elif selected and selected.conflicting:
            met.count_conflict = selected.sources
    totals = groups.get(None, [])
    chosen = latest(totals)
    total = None
    if chosen and not chosen.conflicting:
        total = next(r for r in totals if r.source == chosen.sources[0])
    return total, totals, chosen.sources if chosen and chosen.conflicting else ()


def _count(obs: Resource) -> int | None:
    value = value_int(obs)
    if value < 0:
        raise Invalid("lesion count must be ≥ 0")
    return value


def is_local(obs: Resource, code: str) -> bool:
    return local_code(obs.get("code")) == code and any(s == LOCAL for s, _ in codings(obs.get("code")))
