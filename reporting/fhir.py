"""Patients and their pathway as a FHIR R4 Bundle (type "collection"), as plain JSON-able dicts.

One bundle holds, per patient: the site (Organization), the Patient, a CarePlan per treatment
course, an Appointment per visit, a Procedure per harvest, transplant and infusion, a
BiologicallyDerivedProduct per cell-bank lot an infusion was given from, an Observation per
lung-function value, six-minute walk and C-reactive protein result, and an AdverseEvent per
adverse event.

Every resource's id is a UUID5 of this deployment and the row it comes from, and its fullUrl
is `urn:uuid:<id>`: references resolve inside the bundle, and exporting the same rows again
gives the same ids. The queries are the same few however many patients are exported.
"""

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

from django.db.models import Prefetch, QuerySet, prefetch_related_objects
from django.utils import timezone

from common.replica import replica_reads
from common.urls import public_url
from pathway.models import CellBankLot, Infusion, LotStatus, ProductUnit, TreatmentCourse
from pathway.states import FINAL_STATES, CourseState, Therapy
from patients.clinical import ratio_display
from patients.models import (
    AdverseEvent,
    AdverseEventOutcome,
    CReactiveProtein,
    LungFunctionTest,
    Patient,
    Site,
    SixMinuteWalkTest,
)
from scheduling.models import Visit, VisitKind, VisitStatus

FHIR_JSON = "application/fhir+json"

# Everything the bundle carries; whoever exports it must be allowed to see all of it.
FHIR_EXPORT_PERMISSIONS = (
    "patients.view_patient",
    "patients.view_lungfunctiontest",
    "patients.view_sixminutewalktest",
    "patients.view_adverseevent",
    "patients.view_creactiveprotein",
    "pathway.view_treatmentcourse",
    "scheduling.view_visit",
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_SEVERITY = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
AE_OUTCOME = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
BRONCHOSCOPY = {"system": SNOMED, "code": "10847001", "display": "Bronchoscopy"}

# CarePlan.status (R4: draft | active | on-hold | revoked | completed | entered-in-error |
# unknown). Every open step of the pathway is the plan being carried out; a course that ends
# before its last follow-up (declined at evaluation, or withdrawn) was terminated early.
CARE_PLAN_STATUS = {
    CourseState.ON_HOLD: "on-hold",
    CourseState.COMPLETED: "completed",
    CourseState.INELIGIBLE: "revoked",
    CourseState.WITHDRAWN: "revoked",
}

# What each therapy's plan is called.
CARE_PLAN_TITLES = {
    Therapy.P63: "Autologous airway progenitor-cell therapy for COPD",
    Therapy.MSC: "Allogeneic mesenchymal stem cell infusion for COPD",
}

# Appointment.status (R4). A planned visit is a slot the protocol proposes, not yet agreed.
APPOINTMENT_STATUS = {
    VisitStatus.PLANNED: "proposed",
    VisitStatus.BOOKED: "booked",
    VisitStatus.DONE: "fulfilled",
    VisitStatus.MISSED: "noshow",
    VisitStatus.CANCELLED: "cancelled",
}

# AdverseEvent.outcome (R4, required binding).
AE_OUTCOME_CODES = {
    AdverseEventOutcome.RECOVERED: ("resolved", "Resolved"),
    AdverseEventOutcome.RECOVERING: ("recovering", "Recovering"),
    AdverseEventOutcome.NOT_RECOVERED: ("ongoing", "Ongoing"),
    AdverseEventOutcome.SEQUELAE: ("resolvedWithSequelae", "Resolved with Sequelae"),
    AdverseEventOutcome.FATAL: ("fatal", "Fatal"),
    AdverseEventOutcome.UNKNOWN: ("unknown", "Unknown"),
}

# LungFunctionTest field -> (key, LOINC code or None, text, UCUM code, unit shown).
# The % predicted values without a LOINC code here go out coded by text only, rather than
# under a code nobody checked.
LUNG_FUNCTION_VALUES = (
    ("fev1_l", "fev1", "20150-9", "FEV1", "L", "L"),
    ("fev1_pct_predicted", "fev1-pct", "20152-5", "FEV1 % predicted", "%", "%"),
    ("fvc_l", "fvc", "19868-9", "FVC", "L", "L"),
    ("fvc_pct_predicted", "fvc-pct", None, "FVC % predicted", "%", "%"),
    ("dlco", "dlco", "19911-7", "DLCO", "mL/min/mm[Hg]", "mL/min/mmHg"),
    ("dlco_pct_predicted", "dlco-pct", None, "DLCO % predicted", "%", "%"),
    ("tlc_pct_predicted", "tlc-pct", None, "TLC % predicted", "%", "%"),
)
FEV1_FVC = ("19926-5", "FEV1/FVC")
WALK_DISTANCE = ("64098-7", "Six-minute walk distance")
CRP = ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma")
# An MSC infusion goes out coded by text: no SNOMED code for it was checked here.
INFUSION_TEXT = "Intravenous infusion of allogeneic mesenchymal stem cells"


def fhir_export_allowed(*, user) -> bool:
    """Whether `user` may see everything a bundle holds (site scoping is the caller's)."""
    return user.has_perms(FHIR_EXPORT_PERMISSIONS)


@replica_reads(purpose="a FHIR export")
def fhir_bundle_for_patients(
    *, patients: QuerySet[Patient], sites: QuerySet[Site] | None = None
) -> dict:
    """A FHIR R4 collection Bundle of `patients` and everything recorded on their pathway.

    With `sites`, only the courses (and their visits and adverse events) run at those sites:
    a patient who moved sites takes no earlier site's course to someone who cannot see it.
    Reads in a constant number of queries, whatever the number of patients, from the replica
    when it is fit to (common/replica.py).
    """
    courses = TreatmentCourse.objects.select_related("protocol").order_by("referred_at", "pk")
    adverse_events = AdverseEvent.objects.order_by("onset_on", "pk")
    if sites is not None:
        courses = courses.filter(site__in=sites)
        adverse_events = adverse_events.filter(course__site__in=sites)
    patients = patients.select_related("site").prefetch_related(
        Prefetch("courses", queryset=courses),
        Prefetch(
            "courses__visits",
            queryset=Visit.objects.select_related("protocol_visit").order_by("scheduled_at", "pk"),
        ),
        Prefetch("lungfunctiontests", queryset=LungFunctionTest.objects.order_by("taken_on", "pk")),
        Prefetch(
            "sixminutewalktests", queryset=SixMinuteWalkTest.objects.order_by("taken_on", "pk")
        ),
        Prefetch("adverse_events", queryset=adverse_events),
    )
    patients = list(patients.order_by("site__code", "mrn", "pk"))
    # What only an infusion course records (its doses and lots; CRP, which its follow-ups
    # measure), read for those patients alone: three queries more when there are any.
    infused = [
        patient
        for patient in patients
        if any(course.protocol.therapy == Therapy.MSC for course in patient.courses.all())
    ]
    prefetch_related_objects(
        infused,
        Prefetch("creactiveproteins", queryset=CReactiveProtein.objects.order_by("taken_on", "pk")),
        Prefetch(
            "courses__infusions",
            queryset=Infusion.objects.filter(started_at__isnull=False).order_by("dose_number"),
        ),
        Prefetch("courses__infusions__units", queryset=ProductUnit.objects.select_related("lot")),
    )
    builder = _BundleBuilder(infused={patient.pk for patient in infused})
    for patient in patients:
        builder.add_patient(patient)
    return _without_empty(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": _instant(timezone.now()),
            "entry": builder.entries,
        }
    )


class _BundleBuilder:
    def __init__(self, *, infused: set[int]):
        self.infused = infused
        self.entries: list[dict] = []
        self.sites_added: set[int] = set()
        self.lots_added: set[int] = set()

    def add(self, resource: dict) -> None:
        self.entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})

    def add_patient(self, patient: Patient) -> None:
        if patient.site_id not in self.sites_added:
            self.sites_added.add(patient.site_id)
            self.add(_organization(patient.site))
        self.add(_patient(patient))
        observations_by_visit = defaultdict(list)
        for test in patient.lungfunctiontests.all():
            for observation in _lung_function_observations(test):
                self.add(observation)
                if test.visit_id:
                    observations_by_visit[test.visit_id].append(observation)
        for walk in patient.sixminutewalktests.all():
            observation = _walk_observation(walk)
            self.add(observation)
            if walk.visit_id:
                observations_by_visit[walk.visit_id].append(observation)
        infused = patient.pk in self.infused
        for crp in patient.creactiveproteins.all() if infused else ():
            observation = _crp_observation(crp)
            self.add(observation)
            if crp.visit_id:
                observations_by_visit[crp.visit_id].append(observation)
        for course in patient.courses.all():
            visits = course.visits.all()
            infusions = list(course.infusions.all()) if infused else []
            for lot in {unit.lot for i in infusions for unit in i.units.all()}:
                if lot.pk not in self.lots_added:
                    self.lots_added.add(lot.pk)
                    self.add(_biologically_derived_product(lot))
            procedures = _procedures(course, visits, infusions)
            self.add(_care_plan(course, visits, procedures, observations_by_visit))
            for visit in visits:
                self.add(_appointment(visit, patient))
            for procedure in procedures.values():
                self.add(procedure)
        for event in patient.adverse_events.all():
            self.add(_adverse_event(event))


# Ids and references.


def _namespace() -> uuid.UUID:
    # Primary keys are only unique within one database: the deployment's URL keeps two
    # deployments' ids apart, and is stable for as long as the deployment is.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{_base_url()}/fhir")


def _base_url() -> str:
    return public_url("")


def _resource_id(obj, *parts) -> str:
    name = "/".join([obj._meta.label_lower, str(obj.pk), *parts])
    return str(uuid.uuid5(_namespace(), name))


def _reference(obj, *parts, display: str = "") -> dict:
    return _without_empty(
        {"reference": f"urn:uuid:{_resource_id(obj, *parts)}", "display": display}
    )


def _ref_to(resource: dict) -> dict:
    return {"reference": f"urn:uuid:{resource['id']}"}


# Values.


def _instant(value: dt.datetime) -> str:
    """An aware datetime as ISO 8601 with its offset, in UTC (as stored)."""
    return value.astimezone(dt.UTC).isoformat()


def _date(value: dt.date | None) -> str | None:
    # Dates (date taken, onset, windows) stay dates: a made-up time would claim a precision
    # the record never had. FHIR's dateTime allows a bare date.
    return value.isoformat() if value else None


def _number(value: Decimal | int) -> float | int:
    return value if isinstance(value, int) else float(value)


def _without_empty(value):
    """FHIR JSON has no empty strings, arrays or objects, and no nulls: drop them."""
    if isinstance(value, dict):
        cleaned = {key: _without_empty(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        cleaned = [_without_empty(item) for item in value]
        return [item for item in cleaned if item not in (None, "", [], {})]
    return value


# Resources.


def _organization(site: Site) -> dict:
    return {
        "resourceType": "Organization",
        "id": _resource_id(site),
        "identifier": [{"system": f"{_base_url()}/fhir/sid/site", "value": site.code}],
        "name": site.name,
    }


def _patient(patient: Patient) -> dict:
    site = patient.site
    telecom = []
    # The consents are the patient's say on being reached by email or SMS; contact details
    # they have not agreed to be reached on stay in the tracker.
    if patient.consent_email and patient.email:
        telecom.append({"system": "email", "value": patient.email})
    if patient.consent_sms and patient.phone:
        telecom.append({"system": "phone", "value": patient.phone.as_e164, "use": "mobile"})
    return {
        "resourceType": "Patient",
        "id": _resource_id(patient),
        "identifier": [
            {
                "use": "official",
                "type": {
                    "coding": [
                        {
                            "system": IDENTIFIER_TYPE,
                            "code": "MR",
                            "display": "Medical record number",
                        }
                    ]
                },
                # MRNs are unique per site only: each site's are their own namespace.
                "system": f"{_base_url()}/fhir/sid/mrn/{site.code}",
                "value": patient.mrn,
                "assigner": _reference(site, display=site.name),
            }
        ],
        "name": [{"use": "official", "family": patient.last_name, "given": [patient.first_name]}],
        "telecom": telecom,
        # The model's choices are FHIR's administrative genders, code for code.
        "gender": patient.sex,
        "birthDate": _date(patient.date_of_birth),
        "managingOrganization": _reference(site, display=site.name),
    }


def _appointment(visit: Visit, patient: Patient) -> dict:
    start = _instant(visit.scheduled_at)
    participants = [
        {
            "actor": _reference(patient, display=f"{patient.first_name} {patient.last_name}"),
            "status": "needs-action" if visit.status == VisitStatus.PLANNED else "accepted",
        }
    ]
    if visit.place:
        participants.append({"actor": {"display": visit.place}, "status": "accepted"})
    window = {"start": _date(visit.window_opens_on), "end": _date(visit.window_closes_on)}
    return {
        "resourceType": "Appointment",
        "id": _resource_id(visit),
        "status": APPOINTMENT_STATUS[visit.status],
        "serviceType": [{"text": visit.get_kind_display()}],
        "description": visit.label,
        "start": start,
        # The tracker keeps when a visit starts, not how long it lasts, and R4 wants an end
        # with every start (app-2): the end repeats the start rather than invent a length.
        "end": start,
        "created": _instant(visit.created_at),
        "requestedPeriod": [window],
        "participant": participants,
    }


def _procedures(course: TreatmentCourse, visits, infusions=()) -> dict[int, dict]:
    """Each harvest, transplant and infusion performed (a harvest repeated after a failed
    batch too), by the booking it was recorded against; an infusion names the lot it was given
    from."""
    given = {infusion.visit_id: infusion for infusion in infusions}
    procedures = {}
    for visit in visits:
        if visit.kind == VisitKind.FOLLOW_UP or visit.status != VisitStatus.DONE:
            continue
        if visit.kind == VisitKind.INFUSION:
            infusion = given.get(visit.pk)
            units = list(infusion.units.all()) if infusion else []
            procedures[visit.pk] = {
                "resourceType": "Procedure",
                "id": _resource_id(visit, "procedure"),
                "basedOn": [_reference(course)],
                "status": "completed",
                "code": {"text": INFUSION_TEXT},
                "subject": _reference(course.patient),
                "performedDateTime": _instant(visit.done_at or visit.scheduled_at),
                "usedReference": [
                    _reference(lot, display=f"Lot {lot.lot_number}")
                    for lot in sorted({u.lot for u in units}, key=lambda lot: lot.pk)
                ],
                "note": [
                    {
                        "text": f"Dose {infusion.dose_number}: {infusion.cells_given:,} cells "
                        f"from units {', '.join(u.unit_id for u in units)}."
                    }
                    if infusion
                    else None
                ],
            }
            continue
        note = ""
        if visit.kind == VisitKind.TRANSPLANT and course.cells_administered:
            note = f"{course.cells_administered:,} viable cells administered."
        procedures[visit.pk] = {
            "resourceType": "Procedure",
            "id": _resource_id(visit, "procedure"),
            "basedOn": [_reference(course)],
            "status": "completed",
            "code": {"coding": [BRONCHOSCOPY], "text": visit.get_kind_display()},
            "subject": _reference(course.patient),
            "performedDateTime": _instant(visit.done_at or visit.scheduled_at),
            "note": [{"text": note}],
        }
    return procedures


def _care_plan(course, visits, procedures: dict, observations_by_visit: dict) -> dict:
    activities = []
    for visit in visits:
        outcomes = [_ref_to(o) for o in observations_by_visit.get(visit.pk, ())]
        if visit.pk in procedures:
            outcomes.insert(0, _ref_to(procedures[visit.pk]))
        activity = {
            "reference": _reference(visit, display=visit.label),
            "outcomeReference": outcomes,
        }
        activities.append((visit.scheduled_at, activity))
    if course.lab_received_at:
        activities.append((course.lab_received_at, _expansion_activity(course)))
    activities.sort(key=lambda pair: pair[0])

    state = course.get_state_display()
    if course.state == CourseState.ON_HOLD and course.state_before_hold:
        state += f" (from {CourseState(course.state_before_hold).label.lower()})"
    return {
        "resourceType": "CarePlan",
        "id": _resource_id(course),
        "identifier": [
            {"system": f"{_base_url()}/fhir/sid/coi", "value": course.coi_id}
            if course.coi_id
            else None
        ],
        "status": CARE_PLAN_STATUS.get(course.state, "active"),
        "intent": "plan",
        "title": f"{CARE_PLAN_TITLES[course.protocol.therapy]} ({course.protocol.name})",
        "description": f"Treatment course #{course.pk}: {state}.",
        "subject": _reference(course.patient),
        "period": {
            "start": _instant(course.referred_at),
            "end": _instant(course.state_changed_at) if course.state in FINAL_STATES else None,
        },
        "created": _instant(course.referred_at),
        "activity": [activity for _, activity in activities],
    }


def _expansion_activity(course: TreatmentCourse) -> dict:
    """The cells' expansion at the lab: the step between the two bronchoscopies."""
    if course.released_at:
        status = "completed"
    elif course.state == CourseState.ON_HOLD:
        status = "on-hold"
    elif course.state in FINAL_STATES:
        status = "stopped"
    else:
        status = "in-progress"
    return {
        "detail": {
            "code": {"text": "Ex vivo expansion of the harvested cells"},
            "status": status,
            "scheduledPeriod": {
                "start": _instant(course.lab_received_at),
                "end": _instant(course.released_at) if course.released_at else None,
            },
        }
    }


def _observation(record, key: str, code: str | None, text: str, value, ucum: str, unit: str):
    coding = [{"system": LOINC, "code": code, "display": text}] if code else []
    return {
        "resourceType": "Observation",
        "id": _resource_id(record, key),
        "status": "final",
        # Spirometry, DLCO and the walk are measured on the patient with simple instruments:
        # "exam". None of them is a vital sign in FHIR's sense (that profile fixes its codes).
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "exam", "display": "Exam"}]}
        ],
        "code": {"coding": coding, "text": text},
        "subject": _reference(record.patient),
        "effectiveDateTime": _date(record.taken_on),
        "issued": _instant(record.entered_at),
        "valueQuantity": {"value": _number(value), "unit": unit, "system": UCUM, "code": ucum},
    }


def _lung_function_observations(test: LungFunctionTest) -> list[dict]:
    observations = {}
    for field, key, code, text, ucum, unit in LUNG_FUNCTION_VALUES:
        value = getattr(test, field)
        if value is not None:
            observations[key] = _observation(test, key, code, text, value, ucum, unit)
    # As a percentage cut (not rounded) to one decimal, as the admin shows it, so a ratio just
    # under 70 % does not read as 70 %.
    ratio_pct = ratio_display(test.fev1_fvc) * 100
    ratio = _observation(test, "fev1-fvc", *FEV1_FVC, ratio_pct, "%", "%")
    ratio["derivedFrom"] = [_ref_to(observations["fev1"]), _ref_to(observations["fvc"])]
    observations["fev1-fvc"] = ratio
    return list(observations.values())


def _walk_observation(walk: SixMinuteWalkTest) -> dict:
    return _observation(walk, "distance", *WALK_DISTANCE, walk.distance_m, "m", "m")


def _crp_observation(crp: CReactiveProtein) -> dict:
    observation = _observation(crp, "crp", *CRP, crp.crp_mg_l, "mg/L", "mg/L")
    observation["category"] = [
        {
            "coding": [
                {"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}
            ]
        }
    ]
    return observation


def _biologically_derived_product(lot: CellBankLot) -> dict:
    """A cell-bank lot: its units, its donor's tissue, its storage and its expiry."""
    return {
        "resourceType": "BiologicallyDerivedProduct",
        "id": _resource_id(lot),
        "identifier": [{"system": f"{_base_url()}/fhir/sid/lot", "value": lot.lot_number}],
        "productCategory": "cells",
        "productCode": {
            "text": f"Mesenchymal stem cells, {lot.get_tissue_source_display().lower()}, "
            f"passage {lot.passage}, {lot.cells_per_unit:,} cells per unit"
        },
        "status": "available" if lot.status == LotStatus.RELEASED else "unavailable",
        "quantity": lot.units_received,
        "collection": {"source": None},
        "storage": [
            {
                "description": f"Expires {lot.expires_on.isoformat()}",
                "temperature": _number(lot.storage_temperature_c),
                "scale": "celsius",
            }
        ],
    }


def _adverse_event(event: AdverseEvent) -> dict:
    # R4's severity is mild | moderate | severe (required binding); CTCAE grades 3-5 are all
    # "severe" there, so the grade itself rides along as the text.
    severity = ("mild", "Mild") if event.grade == 1 else ("moderate", "Moderate")
    if event.grade >= 3:
        severity = ("severe", "Severe")
    seriousness = ("Serious", "Serious") if event.serious else ("Non-serious", "Non-serious")
    outcome = AE_OUTCOME_CODES[event.outcome]
    return {
        "resourceType": "AdverseEvent",
        "id": _resource_id(event),
        "actuality": "actual",
        "event": {"text": event.description},
        "subject": _reference(event.patient),
        "date": _date(event.onset_on),
        "recordedDate": _instant(event.entered_at),
        "seriousness": {
            "coding": [
                {"system": AE_SERIOUSNESS, "code": seriousness[0], "display": seriousness[1]}
            ]
        },
        "severity": {
            "coding": [{"system": AE_SEVERITY, "code": severity[0], "display": severity[1]}],
            "text": f"CTCAE grade {event.grade}",
        },
        "outcome": {"coding": [{"system": AE_OUTCOME, "code": outcome[0], "display": outcome[1]}]},
    }
