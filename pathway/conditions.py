"""The pathway's rules as pure functions: facts in, reasons out.

Nothing here touches the database. Each rule explains itself in words a coordinator can
act on; an empty list of reasons means the step may go ahead.
"""

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from common.zones import date_words, local_words
from pathway.coi import coi_ids_match
from pathway.models import (
    NEGATIVE_MARKERS,
    POSITIVE_MARKERS,
    CustodyKind,
    Protocol,
    ProtocolQcTest,
    QcTestKind,
)
from pathway.therapies import ELIGIBILITY_RULES
from patients.clinical import OBSTRUCTION_RATIO, ratio_display
from patients.measures import measure
from patients.models import (
    A1ATScreening,
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    LungFunctionTest,
    SmokingStatus,
)


class RuleStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class RuleResult:
    rule: str
    status: RuleStatus
    reason: str
    values: dict = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return self.status == RuleStatus.FAILED


@dataclass(frozen=True)
class EvaluationFacts:
    """The latest records the eligibility rules read."""

    today: dt.date
    smoking_status: str
    smoking_quit_date: dt.date | None
    lung_function: LungFunctionTest | None
    chest_ct: ChestCT | None
    assessment: ClinicalAssessment | None


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later, clamped to the month's end (31 Aug + 6 = 28/29 Feb)."""
    years, month_index = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month_index + 1
    return day.replace(
        year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1])
    )


def _pct(value: Decimal) -> str:
    return f"{Decimal(value).normalize():f}"


def _spirometry_rules(facts: EvaluationFacts, protocol: Protocol, justification: str):
    test = facts.lung_function
    names = ("COPD confirmed", "GOLD stage 2–4", "FEV1 % predicted in range")
    if test is None:
        return [
            RuleResult(name, RuleStatus.FAILED, "No lung function test is recorded.")
            for name in names
        ]

    ratio, fev1_pct, stage = ratio_display(test.fev1_fvc), test.fev1_pct_predicted, test.gold_stage
    values = {
        "fev1_fvc": str(ratio),
        "fev1_pct_predicted": str(fev1_pct),
        "taken_on": str(test.taken_on),
    }
    results = []
    if test.fev1_fvc < OBSTRUCTION_RATIO:
        results.append(
            RuleResult(
                names[0],
                RuleStatus.PASSED,
                f"FEV1/FVC is {ratio}, below {OBSTRUCTION_RATIO}.",
                values,
            )
        )
    else:
        results.append(
            RuleResult(
                names[0],
                RuleStatus.FAILED,
                f"FEV1/FVC is {ratio}; COPD needs a post-bronchodilator "
                f"ratio below {OBSTRUCTION_RATIO}.",
                values,
            )
        )

    if stage is None:
        results.append(
            RuleResult(
                names[1], RuleStatus.FAILED, "No airflow obstruction, so no GOLD stage.", values
            )
        )
    elif stage == 1:
        results.append(
            RuleResult(
                names[1],
                RuleStatus.FAILED,
                f"GOLD 1 (FEV1 {_pct(fev1_pct)} % predicted); the pathway treats GOLD 2 to 4.",
                values | {"gold_stage": stage},
            )
        )
    else:
        results.append(
            RuleResult(
                names[1], RuleStatus.PASSED, f"GOLD {stage}.", values | {"gold_stage": stage}
            )
        )

    results.append(
        fev1_range_rule(
            fev1_pct=fev1_pct,
            protocol=protocol,
            justification=justification,
            stage=stage,
            values=values,
        )
    )
    return results


def fev1_range_rule(
    *,
    fev1_pct: Decimal,
    protocol: Protocol,
    justification: str = "",
    stage: int | None = None,
    values: dict | None = None,
) -> RuleResult:
    """FEV1 % predicted within the protocol's range; below it, only on a specialist's
    written justification. The checklist's rule, and the enquiry page's for a figure a person
    gives themselves."""
    name, values = "FEV1 % predicted in range", values or {}
    allowed = f"{_pct(protocol.fev1_pct_min)}–{_pct(protocol.fev1_pct_max)} %"
    if fev1_pct > protocol.fev1_pct_max:
        return RuleResult(
            name,
            RuleStatus.FAILED,
            f"FEV1 is {_pct(fev1_pct)} % predicted; the protocol allows {allowed}.",
            values,
        )
    if fev1_pct < protocol.fev1_pct_min and justification.strip():
        return RuleResult(
            name,
            RuleStatus.OVERRIDDEN,
            f"FEV1 is {_pct(fev1_pct)} % predicted, below "
            f"{_pct(protocol.fev1_pct_min)} %; accepted on the specialist's "
            f"justification: {justification.strip()}",
            values,
        )
    if fev1_pct < protocol.fev1_pct_min:
        return RuleResult(
            name,
            RuleStatus.FAILED,
            f"FEV1 is {_pct(fev1_pct)} % predicted, below "
            f"{_pct(protocol.fev1_pct_min)} %{' (GOLD 4)' if stage == 4 else ''}: approval "
            "needs a specialist's written justification that enough basal cells remain.",
            values,
        )
    return RuleResult(
        name,
        RuleStatus.PASSED,
        f"FEV1 is {_pct(fev1_pct)} % predicted, within {allowed}.",
        values,
    )


def evaluation_sources(facts: EvaluationFacts, *, zone) -> str:
    """Which records the checklist read, so that nobody has to guess which of two tests on
    the same day counted. Entry times are in `zone`, named."""
    parts = [
        f"{label} of {date_words(record.taken_on)} (entered {local_words(record.entered_at, zone)})"
        for label, record in (
            ("lung function", facts.lung_function),
            ("chest CT", facts.chest_ct),
            ("clinical assessment", facts.assessment),
        )
        if record is not None
    ]
    return "Read from the latest " + ", ".join(parts) + "." if parts else "No records yet."


def _ct_rule(facts: EvaluationFacts) -> RuleResult:
    name = "Emphysema on CT"
    ct = facts.chest_ct
    if ct is None:
        return RuleResult(name, RuleStatus.FAILED, "No chest CT is recorded.")
    return emphysema_rule(present=ct.emphysema_present, ct_on=ct.taken_on)


def emphysema_rule(*, present: bool, ct_on: dt.date | None) -> RuleResult:
    """Emphysema on a chest CT: as the CT of `ct_on` shows it, or (no date) as a person says
    a CT of theirs showed."""
    name = "Emphysema on CT"
    if ct_on is None:
        if present:
            return RuleResult(name, RuleStatus.PASSED, "A chest CT showed emphysema, they say.")
        return RuleResult(name, RuleStatus.FAILED, "A chest CT showed no emphysema, they say.")
    values = {"taken_on": str(ct_on)}
    if present:
        return RuleResult(
            name, RuleStatus.PASSED, f"The CT of {date_words(ct_on)} shows emphysema.", values
        )
    return RuleResult(
        name, RuleStatus.FAILED, f"The CT of {date_words(ct_on)} shows no emphysema.", values
    )


def _smoking_rule(facts: EvaluationFacts, protocol: Protocol) -> RuleResult:
    return smoking_rule(
        smoking_status=facts.smoking_status,
        quit_on=facts.smoking_quit_date,
        today=facts.today,
        protocol=protocol,
    )


def smoking_rule(
    *, smoking_status: str, quit_on: dt.date | None, today: dt.date, protocol: Protocol
) -> RuleResult:
    """Not smoking for the protocol's months: the checklist's rule, and the enquiry page's
    for what a person says of themselves."""
    name = "Not smoking"
    months = protocol.smoking_quit_min_months
    if smoking_status == SmokingStatus.NEVER:
        return RuleResult(name, RuleStatus.PASSED, "Never smoked.")
    if smoking_status == SmokingStatus.CURRENT:
        return RuleResult(
            name,
            RuleStatus.FAILED,
            f"The patient smokes; the protocol needs {months} months without smoking.",
        )
    if quit_on is None:
        return RuleResult(
            name, RuleStatus.FAILED, "The date the patient quit smoking is not recorded."
        )
    values = {"quit_on": str(quit_on)}
    eligible_from = add_months(quit_on, months)
    if today >= eligible_from:
        return RuleResult(
            name, RuleStatus.PASSED, f"Quit smoking on {date_words(quit_on)}.", values
        )
    return RuleResult(
        name,
        RuleStatus.FAILED,
        f"Quit smoking on {date_words(quit_on)}; the protocol needs {months} months without "
        f"smoking, reached on {eligible_from}.",
        values,
    )


def _assessment_rules(facts: EvaluationFacts) -> list[RuleResult]:
    names = (
        "Fit for bronchoscopy",
        "No active respiratory infection",
        "A1AT screening recorded",
        "Dyspnoea despite optimised therapy",
    )
    assessment = facts.assessment
    if assessment is None:
        return [
            RuleResult(name, RuleStatus.FAILED, "No clinical assessment is recorded.")
            for name in names
        ]
    values = {"taken_on": str(assessment.taken_on)}

    def rule(name: str, passed: bool, passed_reason: str, failed_reason: str) -> RuleResult:
        if passed:
            return RuleResult(name, RuleStatus.PASSED, passed_reason, values)
        return RuleResult(name, RuleStatus.FAILED, failed_reason, values)

    return [
        bronchoscopy_fitness_rule(
            fit=assessment.fit_for_bronchoscopy, assessed_on=assessment.taken_on
        ),
        infection_rule(
            infected=assessment.active_respiratory_infection, assessed_on=assessment.taken_on
        ),
        rule(
            names[2],
            assessment.a1at_screening != A1ATScreening.PENDING,
            f"Alpha-1 antitrypsin screening: {assessment.get_a1at_screening_display().lower()}.",
            "Alpha-1 antitrypsin screening is indicated but has no result yet.",
        ),
        rule(
            names[3],
            assessment.dyspnoea_despite_optimised_therapy,
            "Dyspnoea persists despite optimised inhalers and rehabilitation.",
            "Persistent dyspnoea despite optimised inhalers and rehabilitation is not attested.",
        ),
    ]


def bronchoscopy_fitness_rule(*, fit: bool, assessed_on: dt.date | None) -> RuleResult:
    """Fit for bronchoscopy: as the cardiac assessment of `assessed_on` found, or (no date) as
    a person says a doctor told them."""
    name = "Fit for bronchoscopy"
    if assessed_on is None:
        if fit:
            return RuleResult(
                name, RuleStatus.PASSED, "A doctor said a bronchoscopy is possible, they say."
            )
        return RuleResult(name, RuleStatus.FAILED, "Not able to have a bronchoscopy, they say.")
    values, on = {"taken_on": str(assessed_on)}, date_words(assessed_on)
    if fit:
        return RuleResult(
            name,
            RuleStatus.PASSED,
            f"The cardiac assessment of {on} found the patient fit for bronchoscopy.",
            values,
        )
    return RuleResult(
        name,
        RuleStatus.FAILED,
        f"The cardiac assessment of {on} found the patient not fit for bronchoscopy.",
        values,
    )


def infection_rule(*, infected: bool, assessed_on: dt.date | None) -> RuleResult:
    """No active respiratory infection: on the assessment of `assessed_on`, or (no date) as
    a person says of themselves today."""
    name = "No active respiratory infection"
    if assessed_on is None:
        if infected:
            return RuleResult(name, RuleStatus.FAILED, "A chest infection now, they say.")
        return RuleResult(name, RuleStatus.PASSED, "No chest infection now, they say.")
    values, on = {"taken_on": str(assessed_on)}, date_words(assessed_on)
    if infected:
        return RuleResult(
            name, RuleStatus.FAILED, f"An active respiratory infection is recorded on {on}.", values
        )
    return RuleResult(name, RuleStatus.PASSED, f"No active respiratory infection on {on}.", values)


def _infusion_rule(facts: EvaluationFacts) -> RuleResult:
    name = ELIGIBILITY_RULES["fit_for_infusion"]
    assessment = facts.assessment
    if assessment is None:
        return RuleResult(name, RuleStatus.FAILED, "No clinical assessment is recorded.")
    values = {"taken_on": str(assessment.taken_on)}
    on = date_words(assessment.taken_on)
    if assessment.fit_for_infusion:
        return RuleResult(
            name,
            RuleStatus.PASSED,
            f"The assessment of {on} found the patient fit for an intravenous infusion.",
            values,
        )
    if assessment.fit_for_infusion is None:
        return RuleResult(
            name,
            RuleStatus.FAILED,
            f"The assessment of {on} does not say whether the patient is fit for an "
            "intravenous infusion.",
            values,
        )
    return RuleResult(
        name,
        RuleStatus.FAILED,
        f"The assessment of {on} found the patient not fit for an intravenous infusion.",
        values,
    )


def eligibility_checklist(
    *, facts: EvaluationFacts, protocol: Protocol, low_fev1_justification: str = ""
) -> list[RuleResult]:
    """Every eligibility rule the protocol applies (its own list, else its therapy's), each
    passed, failed or overridden, in the checklist's order."""
    spirometry = _spirometry_rules(facts, protocol, low_fev1_justification)
    assessment = _assessment_rules(facts)
    every = {
        "copd_confirmed": spirometry[0],
        "emphysema_on_ct": _ct_rule(facts),
        "gold_2_4": spirometry[1],
        "fev1_in_range": spirometry[2],
        "not_smoking": _smoking_rule(facts, protocol),
        "fit_for_bronchoscopy": assessment[0],
        "no_infection": assessment[1],
        "a1at_recorded": assessment[2],
        "dyspnoea": assessment[3],
        "fit_for_infusion": _infusion_rule(facts),
    }
    applied = set(protocol.applied_eligibility_rules)
    return [result for key, result in every.items() if key in applied]


def cold_chain_breaches(
    *, protocol: Protocol, temperature_c: Decimal, transit_hours: Decimal
) -> list[str]:
    """Why a sample's journey to the lab broke the cold chain; empty if it did not."""
    breaches = []
    if not protocol.cold_chain_min_c <= temperature_c <= protocol.cold_chain_max_c:
        breaches.append(
            f"The sample arrived at {_pct(temperature_c)} °C; the cold chain allows "
            f"{_pct(protocol.cold_chain_min_c)}–{_pct(protocol.cold_chain_max_c)} °C."
        )
    if transit_hours > protocol.cold_chain_max_transit_hours:
        breaches.append(
            f"The sample was {_pct(transit_hours)} h in transit; the cold chain allows "
            f"{_pct(protocol.cold_chain_max_transit_hours)} h."
        )
    return breaches


@dataclass(frozen=True)
class QCResults:
    identity_p63_pct: Decimal | None
    purity_pct: Decimal | None
    sterility_negative: bool
    viability_pct: Decimal | None
    viable_cells: int | None
    extra: dict = field(default_factory=dict)


def minimum_cells(*, protocol: Protocol, weight_kg: Decimal) -> int:
    return int(protocol.dose_min_million_per_kg * Decimal(weight_kg) * 1_000_000)


def release_refusals(
    *,
    protocol: Protocol,
    expansion_day: int | None,
    qc: QCResults,
    weight: BodyMeasurement | None,
    qc_tests: Sequence[ProtocolQcTest] = (),
) -> list[str]:
    """Why a product may not be released yet; empty if it may. `qc_tests` are the protocol's
    extra release tests."""
    missing = [
        label
        for label, value in (
            ("identity (P63+ %)", qc.identity_p63_pct),
            ("purity", qc.purity_pct),
            ("viability", qc.viability_pct),
            ("the viable cell count", qc.viable_cells),
        )
        if value is None
    ]
    if missing:
        return [f"The QC results do not record {', '.join(missing)}."]
    # A result saved before its range was checked cannot be signed off as meeting anything.
    impossible = [
        words
        for key, value in (
            ("identity_p63_pct", qc.identity_p63_pct),
            ("purity_pct", qc.purity_pct),
            ("viability_pct", qc.viability_pct),
            ("viable_cells", qc.viable_cells),
        )
        if (words := measure(key).refusal(value))
    ]
    if impossible:
        return [*impossible, "Correct the QC results on the batch before the release."]
    refusals = []
    if expansion_day is None:
        refusals.append("The lab has not recorded receiving the sample.")
    elif not protocol.expansion_min_days <= expansion_day <= protocol.expansion_max_days:
        refusals.append(
            f"Expansion is on day {expansion_day}; release is allowed on days "
            f"{protocol.expansion_min_days}–{protocol.expansion_max_days}."
        )
    if qc.identity_p63_pct < protocol.min_identity_p63_pct:
        refusals.append(
            f"Identity: {_pct(qc.identity_p63_pct)} % P63+ cells; the protocol needs at least "
            f"{_pct(protocol.min_identity_p63_pct)} %."
        )
    if qc.purity_pct < protocol.min_purity_pct:
        refusals.append(
            f"Purity is {_pct(qc.purity_pct)} %; the protocol needs at least "
            f"{_pct(protocol.min_purity_pct)} %."
        )
    if not qc.sterility_negative:
        refusals.append("Sterility is not negative.")
    for test in qc_tests:
        result = qc.extra.get(test.name)
        if test.kind == QcTestKind.PASS_FAIL:
            if result is not True:
                refusals.append(f"{test.name}: not recorded as passed.")
        elif result is None:
            refusals.append(f"{test.name}: not recorded; the protocol needs {test.specification}.")
        elif not test.passes(result):
            refusals.append(
                f"{test.name} is {result} {test.unit}".rstrip()
                + f"; the protocol needs {test.specification}."
            )
    if qc.viability_pct < protocol.min_viability_pct:
        refusals.append(
            f"Viability is {_pct(qc.viability_pct)} %; the protocol needs at least "
            f"{_pct(protocol.min_viability_pct)} %."
        )
    if weight is None:
        refusals.append("No body weight is recorded since the evaluation began.")
    else:
        needed = minimum_cells(protocol=protocol, weight_kg=weight.weight_kg)
        if qc.viable_cells < needed:
            refusals.append(
                f"{qc.viable_cells / 1e6:.1f} × 10⁶ viable cells cannot make the minimum dose "
                f"of {_pct(protocol.dose_min_million_per_kg)} × 10⁶/kg for "
                f"{_pct(weight.weight_kg)} kg ({needed / 1e6:.1f} × 10⁶ cells)."
            )
    return refusals


def dosing_weight_refusals(
    *,
    protocol: Protocol,
    weighed_on: dt.date,
    transplant_on: dt.date,
    evaluation_started_on: dt.date | None,
) -> list[str]:
    """Why a weight may not be used for the dose; empty if it may."""
    refusals = []
    age = (transplant_on - weighed_on).days
    if age < 0:
        refusals.append("The weight cannot be dated after the transplant.")
    elif age > protocol.dosing_weight_max_age_days:
        refusals.append(
            f"The weight was taken {age} days before the transplant; the protocol needs one "
            f"from the last {protocol.dosing_weight_max_age_days} days."
        )
    if evaluation_started_on and weighed_on < evaluation_started_on:
        refusals.append(
            f"The weight is dated {date_words(weighed_on)}, before the evaluation began on "
            f"{date_words(evaluation_started_on)}."
        )
    return refusals


def dose_million_per_kg(*, cells: int, weight_kg: Decimal) -> Decimal:
    """Exact, so that 0.695 is below 0.70 rather than rounded onto it."""
    return Decimal(cells) / Decimal(weight_kg) / Decimal(1_000_000)


def transplant_refusals(
    *,
    protocol: Protocol,
    course_coi_id: str | None,
    bedside_coi_id: str,
    cells_administered: int,
    weight: BodyMeasurement | None,
    released_cells: int | None = None,
) -> dict[str, list[str]]:
    """Why the product may not be given, by the field each reason is about; empty if it may."""
    refusals = {"bedside_coi_id": [], "cells_administered": [], "weight_kg": []}
    if released_cells is not None and cells_administered > released_cells:
        refusals["cells_administered"].append(
            f"{cells_administered / 1e6:.1f} × 10⁶ cells is more than the batch released "
            f"({released_cells / 1e6:.1f} × 10⁶ viable cells): check the count."
        )
    if not course_coi_id or not coi_ids_match(bedside_coi_id, course_coi_id):
        refusals["bedside_coi_id"].append(
            f"The chain-of-identity id read at the bedside ({bedside_coi_id}) does not match this "
            "patient's. Do not administer; check the product label."
        )
    if weight is None:
        refusals["weight_kg"].append("No body weight is recorded since the evaluation began.")
    else:
        dose = dose_million_per_kg(cells=cells_administered, weight_kg=weight.weight_kg)
        if not protocol.dose_min_million_per_kg <= dose <= protocol.dose_max_million_per_kg:
            refusals["cells_administered"].append(
                f"The dose is {dose:.3f} × 10⁶ cells/kg for {_pct(weight.weight_kg)} kg; the "
                f"protocol allows {_pct(protocol.dose_min_million_per_kg)}–"
                f"{_pct(protocol.dose_max_million_per_kg)} × 10⁶/kg."
            )
    return {field: found for field, found in refusals.items() if found}


def product_arrival_refusals(
    *, custody_events: list[tuple[str, dt.datetime]], site: str
) -> list[str]:
    """Why the product has not reached the bedside through the chain of custody: its leaving
    the lab, then its arrival at the treating site, each recorded with its label scanned.
    `custody_events` are (kind, when) since the release, less any a correction voided."""
    shipped = [at for kind, at in custody_events if kind == CustodyKind.SHIPPED_TO_SITE]
    received = [
        at
        for kind, at in custody_events
        if kind == CustodyKind.RECEIVED_AT_SITE and shipped and at >= min(shipped)
    ]
    missing = [
        words
        for found, words in (
            (shipped, "leaving the lab for the site"),
            (received, f"arriving at {site} after it left the lab"),
        )
        if not found
    ]
    if not missing:
        return []
    return [
        f"The chain of custody does not show the product {' or '.join(missing)}: record it "
        "(Custody events, with the label scanned) before the transplant."
    ]


@dataclass(frozen=True)
class LotQC:
    """A cell-bank lot's certificate of analysis and QC, as its release reads them."""

    viability_pct: Decimal | None
    sterility_negative: bool | None
    mycoplasma_negative: bool | None
    endotoxin_eu_ml: Decimal | None
    markers: dict  # field name → % of cells (None where not recorded)
    storage_temperature_c: Decimal
    expires_on: dt.date


def lot_release_refusals(*, protocol: Protocol, qc: LotQC, today: dt.date) -> list[str]:
    """Why a lot may not be released for use; empty if it may: the ISCT minimal identity
    (CD73, CD90, CD105 present; CD45, CD34, CD14/CD11b, CD79a/CD19, HLA-DR absent, to the
    protocol's limits), viability after thaw, sterility, mycoplasma, endotoxin, its storage
    and its expiry."""
    missing = [
        label
        for label, value in (
            ("viability", qc.viability_pct),
            ("sterility", qc.sterility_negative),
            ("mycoplasma", qc.mycoplasma_negative),
            ("endotoxin", qc.endotoxin_eu_ml),
            *((marker, qc.markers.get(name)) for name, marker in POSITIVE_MARKERS),
            *((marker, qc.markers.get(name)) for name, marker in NEGATIVE_MARKERS),
        )
        if value is None
    ]
    if missing:
        return [f"The lot's QC does not record {', '.join(missing)}."]
    refusals = []
    low = protocol.min_positive_marker_pct
    for name, marker in POSITIVE_MARKERS:
        if qc.markers[name] < low:
            refusals.append(
                f"{marker} is on {_pct(qc.markers[name])} % of the cells; the protocol needs "
                f"at least {_pct(low)} %."
            )
    high = protocol.max_negative_marker_pct
    for name, marker in NEGATIVE_MARKERS:
        if qc.markers[name] > high:
            refusals.append(
                f"{marker} is on {_pct(qc.markers[name])} % of the cells; the protocol allows "
                f"at most {_pct(high)} %."
            )
    if qc.viability_pct < protocol.min_viability_pct:
        refusals.append(
            f"Viability after thaw is {_pct(qc.viability_pct)} %; the protocol needs at least "
            f"{_pct(protocol.min_viability_pct)} %."
        )
    if not qc.sterility_negative:
        refusals.append("Sterility is not negative.")
    if not qc.mycoplasma_negative:
        refusals.append("Mycoplasma is not negative.")
    if qc.endotoxin_eu_ml > protocol.max_endotoxin_eu_ml:
        refusals.append(
            f"Endotoxin is {_pct(qc.endotoxin_eu_ml)} EU/mL; the protocol allows at most "
            f"{_pct(protocol.max_endotoxin_eu_ml)} EU/mL."
        )
    if qc.storage_temperature_c > protocol.max_storage_temperature_c:
        refusals.append(
            f"The lot is stored at {_pct(qc.storage_temperature_c)} °C; the protocol needs "
            f"{_pct(protocol.max_storage_temperature_c)} °C or colder (vapour-phase nitrogen)."
        )
    if qc.expires_on <= today:
        refusals.append(f"The lot expired on {date_words(qc.expires_on)}.")
    return refusals


def infusion_refusals(
    *,
    protocol: Protocol,
    thawed_at: dt.datetime,
    started_at: dt.datetime,
    thaw_delay_reason: str,
    cells_given: int,
    weight_kg: Decimal,
    units_cells: int,
) -> dict[str, list[str]]:
    """Why a dose may not be recorded as given, by field; empty if it may: thawed before it
    started and within the protocol's minutes of it (or a reason for the delay), a dose per
    kg in the protocol's range, and never more cells than the units held."""
    refusals = {"thawed_at": [], "thaw_delay_reason": [], "cells_given": []}
    minutes = (started_at - thawed_at).total_seconds() / 60
    limit = protocol.thaw_to_infusion_max_minutes
    if minutes < 0:
        refusals["thawed_at"].append("The units cannot be thawed after the infusion started.")
    elif minutes > limit and not thaw_delay_reason.strip():
        refusals["thaw_delay_reason"].append(
            f"The infusion started {minutes:.0f} minutes after thaw; the protocol allows "
            f"{limit}. Give the reason (a protocol deviation), or correct the times."
        )
    if cells_given > units_cells:
        refusals["cells_given"].append(
            f"{cells_given / 1e6:.1f} × 10⁶ cells is more than the units held "
            f"({units_cells / 1e6:.1f} × 10⁶): check the count."
        )
    dose = dose_million_per_kg(cells=cells_given, weight_kg=weight_kg)
    if not protocol.dose_min_million_per_kg <= dose <= protocol.dose_max_million_per_kg:
        refusals["cells_given"].append(
            f"The dose is {dose:.3f} × 10⁶ cells/kg for {_pct(weight_kg)} kg; the protocol "
            f"allows {_pct(protocol.dose_min_million_per_kg)}–"
            f"{_pct(protocol.dose_max_million_per_kg)} × 10⁶/kg."
        )
    return {field: found for field, found in refusals.items() if found}


def vitals_after_refusals(
    *, protocol: Protocol, started_at: dt.datetime, now: dt.datetime, zone
) -> list[str]:
    """Why the infusion, with its vital signs "an hour after", cannot be recorded at `now`;
    empty if it can: the protocol's minutes after the start (60 by default) have not passed,
    so the reading after cannot have been taken yet."""
    due = started_at + dt.timedelta(minutes=protocol.vitals_after_minutes)
    if now >= due:
        return []
    return [
        f"The vital signs after are taken {protocol.vitals_after_minutes} minutes after the "
        f"infusion started: record the infusion from {local_words(due, zone)}."
    ]
