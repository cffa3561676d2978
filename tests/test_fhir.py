"""The FHIR R4 export: what a transplanted course looks like as a Bundle, that it validates,
that its references resolve, and who can export whom.

Validated with fhir.resources' R4B models: the package (8.x) has no models for R4 (4.0.1)
itself, its default ones are R5, and R4B (4.3.0) has the same structure as R4 for every
resource type the export writes.
"""

import datetime as dt
import json
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from pathway import services
from pathway.records import adverse_event_record, clinical_record_save
from pathway.states import CourseState
from patients.models import (
    AdverseEvent,
    LungFunctionTest,
    Patient,
    SixMinuteWalkTest,
)
from reporting.fhir import APPOINTMENT_STATUS, fhir_bundle_for_patients
from scheduling.models import Visit, VisitKind
from tests.factories import LungFunctionTestFactory, PatientFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

EXPECTED_TYPES = {
    "Organization",
    "Patient",
    "CarePlan",
    "Appointment",
    "Procedure",
    "Observation",
    "AdverseEvent",
}


# fhir.resources checks structure, cardinality and formats, not codes: R4's required bindings
# for the codes the export writes are checked here (entered-in-error left out: never exported).
R4_CODES = {
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("CarePlan", "status"): {"draft", "active", "on-hold", "revoked", "completed", "unknown"},
    ("CarePlan", "intent"): {"proposal", "plan", "order", "option"},
    ("Appointment", "status"): {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "checked-in",
        "waitlist",
    },
    ("Procedure", "status"): {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "unknown",
    },
    ("Observation", "status"): {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "unknown",
    },
    ("AdverseEvent", "actuality"): {"actual", "potential"},
}


def validated(bundle: dict) -> dict:
    """`bundle` after a JSON round trip, validated whole and entry by entry."""
    data = json.loads(json.dumps(bundle))
    Bundle.model_validate(data)
    for entry in data.get("entry", []):
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        for (resource_type, field), codes in R4_CODES.items():
            if resource["resourceType"] == resource_type:
                assert resource[field] in codes, (resource_type, field, resource[field])
    return data


def resources(bundle: dict, resource_type: str) -> list[dict]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == resource_type
    ]


def references_in(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [ref for item in value.values() for ref in references_in(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references_in(item)]
    return []


@pytest.fixture
def transplanted(pathway, course):
    """A course in follow-up, with the first follow-up's lung function and walk, and an AE."""
    pathway.advance(course, CourseState.FOLLOW_UP)
    follow_up = course.visits.filter(kind=VisitKind.FOLLOW_UP).order_by("scheduled_at").first()
    today = timezone.localdate(timezone=course.site.time_zone)
    clinical_record_save(
        record=LungFunctionTest(
            visit=follow_up,
            taken_on=today,
            fev1_l=Decimal("1.35"),
            fev1_pct_predicted=Decimal("50.5"),
            fvc_l=Decimal("2.45"),
            dlco=Decimal("12.3"),
            dlco_pct_predicted=Decimal("48.0"),
        ),
        by=pathway.clinician,
    )
    clinical_record_save(
        record=SixMinuteWalkTest(visit=follow_up, taken_on=today, distance_m=412),
        by=pathway.clinician,
    )
    adverse_event_record(
        event=AdverseEvent(
            course=course,
            onset_on=today,
            grade=3,
            serious=True,
            related_to_procedure="yes",
            outcome="recovering",
            description="Pneumothorax after the transplant bronchoscopy",
        ),
        by=pathway.clinician,
    )
    course.refresh_from_db()
    return course


def export(*patients) -> dict:
    return validated(
        fhir_bundle_for_patients(patients=Patient.objects.filter(pk__in=[p.pk for p in patients]))
    )


def test_a_transplanted_course_exports_as_a_valid_collection_of_every_resource_type(transplanted):
    bundle = export(transplanted.patient)

    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == EXPECTED_TYPES
    assert len(resources(bundle, "Procedure")) == 2
    assert len(resources(bundle, "Appointment")) == transplanted.visits.count()
    assert len(resources(bundle, "AdverseEvent")) == 1


def test_a_harvest_repeated_after_a_failed_batch_exports_both_harvests(course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    with time_machine.travel(pathway.at(10), tick=False):
        services.course_fail_qc(course=course, by=pathway.lab, reason="Sterility positive")
    with time_machine.travel(pathway.at(11), tick=False):
        services.course_schedule_harvest(
            course=course, by=pathway.coordinator, scheduled_at=pathway.at(15), place="Suite 1"
        )
    with time_machine.travel(pathway.at(15.1), tick=False):
        services.course_record_harvest(
            course=course,
            by=pathway.clinician,
            performed_at=pathway.at(15),
            operator=pathway.clinician,
        )

    bundle = export(course.patient)

    harvests = sorted(p["performedDateTime"] for p in resources(bundle, "Procedure"))
    assert harvests == [pathway.at(2).isoformat(), pathway.at(15).isoformat()]
    [care_plan] = resources(bundle, "CarePlan")
    outcomes = [ref for a in care_plan["activity"] for ref in a.get("outcomeReference", [])]
    procedure_urls = {f"urn:uuid:{p['id']}" for p in resources(bundle, "Procedure")}
    assert procedure_urls <= {ref["reference"] for ref in outcomes}


def test_every_reference_resolves_within_the_bundle_and_ids_are_stable(transplanted):
    bundle = export(transplanted.patient)
    full_urls = [e["fullUrl"] for e in bundle["entry"]]

    assert len(full_urls) == len(set(full_urls))
    assert all(url.startswith("urn:uuid:") for url in full_urls)
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    references = references_in([e["resource"] for e in bundle["entry"]])
    assert references and set(references) <= set(full_urls)
    assert [e["fullUrl"] for e in export(transplanted.patient)["entry"]] == full_urls


def test_the_patient_carries_the_mrn_per_site_name_birth_date_and_consented_telecom(transplanted):
    patient = transplanted.patient
    (resource,) = resources(export(patient), "Patient")

    (identifier,) = resource["identifier"]
    assert identifier["value"] == patient.mrn
    assert identifier["system"].endswith(f"/fhir/sid/mrn/{patient.site.code}")
    assert resource["name"] == [
        {"use": "official", "family": patient.last_name, "given": [patient.first_name]}
    ]
    assert resource["birthDate"] == patient.date_of_birth.isoformat()
    assert resource["gender"] == patient.sex
    assert {t["system"] for t in resource["telecom"]} == {"email", "phone"}

    Patient.objects.filter(pk=patient.pk).update(consent_sms=False)
    (resource,) = resources(export(patient), "Patient")
    assert [t["system"] for t in resource["telecom"]] == ["email"]


def test_observations_carry_the_stored_values_under_their_loinc_codes(transplanted):
    test = LungFunctionTest.objects.get(visit__course=transplanted)
    walk = SixMinuteWalkTest.objects.get(visit__course=transplanted)
    expected = {
        "20150-9": (test.fev1_l, "L"),
        "20152-5": (test.fev1_pct_predicted, "%"),
        "19868-9": (test.fvc_l, "L"),
        "19926-5": (Decimal("55.1"), "%"),  # 1.35 / 2.45 = 0.5510…, cut to 55.1 %
        "19911-7": (test.dlco, "mL/min/mm[Hg]"),
        "64098-7": (Decimal(walk.distance_m), "m"),
    }
    observations = resources(export(transplanted.patient), "Observation")
    follow_up_day = test.taken_on.isoformat()
    found = {}
    for observation in observations:
        loinc = [c["code"] for c in observation["code"].get("coding", []) if "loinc" in c["system"]]
        if loinc and observation["effectiveDateTime"] == follow_up_day:
            quantity = observation["valueQuantity"]
            assert quantity["system"] == "http://unitsofmeasure.org"
            found[loinc[0]] = (Decimal(str(quantity["value"])), quantity["code"])
        assert observation["status"] == "final"
        assert observation["category"][0]["coding"][0]["code"] == "exam"
    assert found == expected


def test_care_plan_procedures_and_appointments_follow_the_course(transplanted):
    bundle = export(transplanted.patient)
    (care_plan,) = resources(bundle, "CarePlan")
    procedures = {p["code"]["text"]: p for p in resources(bundle, "Procedure")}
    appointments = {a["id"]: a for a in resources(bundle, "Appointment")}

    assert care_plan["status"] == "active" and care_plan["intent"] == "plan"
    assert care_plan["identifier"][0]["value"] == transplanted.coi_id
    assert care_plan["period"]["start"] == transplanted.referred_at.isoformat()
    assert "end" not in care_plan["period"]
    harvest, transplant = procedures["Harvest bronchoscopy"], procedures["Transplant bronchoscopy"]
    assert harvest["performedDateTime"] == transplanted.harvested_at.isoformat()
    assert transplant["performedDateTime"] == transplanted.transplanted_at.isoformat()
    assert transplant["performedDateTime"].endswith("+00:00")
    assert {p["status"] for p in procedures.values()} == {"completed"}
    assert {p["code"]["coding"][0]["code"] for p in procedures.values()} == {"10847001"}

    # One activity per visit, in time order; each procedure is the outcome of its visit.
    visit_refs = [a["reference"]["reference"] for a in care_plan["activity"] if "reference" in a]
    assert [ref.removeprefix("urn:uuid:") for ref in visit_refs] == [
        a["id"] for a in sorted(appointments.values(), key=lambda a: a["start"])
    ]
    outcomes = {
        ref["reference"] for a in care_plan["activity"] for ref in a.get("outcomeReference", [])
    }
    assert {f"urn:uuid:{p['id']}" for p in procedures.values()} <= outcomes
    assert any(a.get("detail", {}).get("status") == "completed" for a in care_plan["activity"])

    for visit in transplanted.visits.all():
        (appointment,) = [
            a for a in appointments.values() if a["start"] == visit.scheduled_at.isoformat()
        ]
        assert appointment["status"] == APPOINTMENT_STATUS[visit.status]
        assert appointment["participant"][0]["actor"]["reference"].startswith("urn:uuid:")
    assert {a["status"] for a in appointments.values()} >= {"fulfilled", "proposed"}


def test_the_care_plan_status_follows_hold_and_withdrawal(transplanted, pathway):
    services.course_hold(course=transplanted, by=pathway.coordinator, reason="Chest infection")
    (care_plan,) = resources(export(transplanted.patient), "CarePlan")
    assert care_plan["status"] == "on-hold"
    assert care_plan["description"].endswith("On hold (from follow-up).")

    services.course_withdraw(course=transplanted, by=pathway.coordinator, reason="Moved away")
    bundle = export(transplanted.patient)
    (care_plan,) = resources(bundle, "CarePlan")
    assert care_plan["status"] == "revoked"
    assert care_plan["period"]["end"] == transplanted.state_changed_at.isoformat()
    statuses = {a["status"] for a in resources(bundle, "Appointment")}
    assert "cancelled" in statuses and "proposed" not in statuses


def test_an_adverse_event_is_an_actual_r4_adverse_event(transplanted):
    (event,) = resources(export(transplanted.patient), "AdverseEvent")

    assert event["actuality"] == "actual"
    assert event["event"]["text"] == "Pneumothorax after the transplant bronchoscopy"
    assert event["date"] == timezone.localdate(timezone=transplanted.site.time_zone).isoformat()
    assert event["seriousness"]["coding"][0]["code"] == "Serious"
    assert event["severity"]["coding"][0]["code"] == "severe"
    assert event["severity"]["text"] == "CTCAE grade 3"
    assert event["outcome"]["coding"][0]["code"] == "recovering"


def admin_export(client, *patients):
    return client.post(
        reverse("admin:patients_patient_changelist"),
        {"action": "export_fhir_bundle", "_selected_action": [p.pk for p in patients]},
    )


def test_the_admin_action_exports_only_the_selected_patients_of_the_users_sites(
    client, transplanted
):
    own = transplanted.patient
    other_site = SiteFactory(code="OTH", staff=[])
    stranger = PatientFactory(site=other_site)
    neighbour = PatientFactory(site=own.site)
    exporter = UserFactory(username="exporter", role="coordinator", sites=[own.site])
    client.force_login(exporter)

    response = admin_export(client, own, stranger)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    assert response["Content-Disposition"].startswith("attachment;")
    bundle = validated(json.loads(response.content))
    mrns = [p["identifier"][0]["value"] for p in resources(bundle, "Patient")]
    assert mrns == [own.mrn]  # not the other site's patient, nor the unselected neighbour
    assert neighbour.mrn not in response.content.decode()
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == EXPECTED_TYPES


def test_a_patient_who_moved_site_takes_no_earlier_sites_course_along(client, transplanted):
    patient = transplanted.patient
    new_site = SiteFactory(code="NEW", staff=[])
    patient.site = new_site
    patient.save()
    exporter = UserFactory(username="exporter", role="coordinator", sites=[new_site])
    client.force_login(exporter)

    bundle = validated(json.loads(admin_export(client, patient).content))

    assert [p["identifier"][0]["value"] for p in resources(bundle, "Patient")] == [patient.mrn]
    for kind in ("CarePlan", "Appointment", "Procedure", "AdverseEvent"):
        assert resources(bundle, kind) == [], kind
    assert transplanted.coi_id not in json.dumps(bundle)


def test_the_admin_action_needs_leave_to_see_everything_the_bundle_holds(client, transplanted):
    # A programme lead reads patients and courses, but not their clinical records.
    lead = UserFactory(username="lead", role="programme lead")
    client.force_login(lead)

    response = admin_export(client, transplanted.patient)

    assert response.status_code == 302
    assert not response.get("Content-Type", "").startswith("application/fhir+json")
    listing = client.get(reverse("admin:patients_patient_changelist"))
    assert "export_fhir_bundle" not in dict(listing.context["action_form"].fields["action"].choices)


def test_the_command_exports_a_patient_or_a_site(transplanted, tmp_path, capsys):
    patient = transplanted.patient
    PatientFactory(site=patient.site)
    call_command("fhir_export", "--patient", patient.mrn)
    bundle = validated(json.loads(capsys.readouterr().out))
    assert [p["identifier"][0]["value"] for p in resources(bundle, "Patient")] == [patient.mrn]

    output = tmp_path / "site.json"
    call_command("fhir_export", "--site", patient.site.code.lower(), "--output", str(output))
    bundle = validated(json.loads(output.read_text()))
    assert len(resources(bundle, "Patient")) == 2
    assert len(resources(bundle, "Organization")) == 1


def test_the_command_says_clearly_what_it_cannot_find(db):
    SiteFactory(code="LDN")
    with pytest.raises(CommandError, match="No patient has the MRN 'NOPE'"):
        call_command("fhir_export", "--patient", "NOPE")
    with pytest.raises(CommandError, match="No site has the code 'XYZ'; the codes are: LDN"):
        call_command("fhir_export", "--site", "XYZ")
    with pytest.raises(CommandError, match="one of the arguments --patient --site is required"):
        call_command("fhir_export")
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command("fhir_export", "--patient", "NOPE", "--site", "LDN")
    with pytest.raises(CommandError, match="has control characters"):
        call_command("fhir_export", "--patient", "12\x003")
    with pytest.raises(CommandError, match="has control characters"):
        call_command("fhir_export", "--site", "L\x00N")
    with pytest.raises(CommandError, match="--patient is empty"):
        call_command("fhir_export", "--patient", "")
    with pytest.raises(CommandError, match="has control characters"):
        call_command("fhir_export", "--site", "LDN", "--output", "out\x00.json")
    with pytest.raises(CommandError, match="Cannot write /nonexistent/dir/out"):
        call_command("fhir_export", "--site", "LDN", "--output", "/nonexistent/dir/out.json")


def test_an_mrn_used_at_two_sites_needs_its_site(db, capsys):
    first = PatientFactory(site=SiteFactory(code="LDN"), mrn="123")
    PatientFactory(site=SiteFactory(code="SHA"), mrn="123")

    with pytest.raises(CommandError, match=r"used at 2 sites \(LDN, SHA\).*--patient LDN:123"):
        call_command("fhir_export", "--patient", "123")
    call_command("fhir_export", "--patient", "ldn:123")
    bundle = validated(json.loads(capsys.readouterr().out))
    (patient,) = resources(bundle, "Patient")
    assert patient["id"] == export(first)["entry"][1]["resource"]["id"]


def add_patients(site, count, coordinator):
    """Patients with a course, a visit, a lung function, a walk and an adverse event each."""
    today = timezone.localdate()
    for _ in range(count):
        patient = PatientFactory(site=site)
        course = services.course_create(patient=patient, by=coordinator)
        visit = Visit.objects.create(
            course=course,
            kind=VisitKind.HARVEST,
            scheduled_at=timezone.now() + dt.timedelta(days=3),
        )
        LungFunctionTestFactory(patient=patient, dlco=Decimal("15.0"))
        SixMinuteWalkTest.objects.create(patient=patient, taken_on=today, distance_m=350)
        AdverseEvent.objects.create(
            patient=patient,
            course=course,
            visit=visit,
            onset_on=today,
            grade=1,
            serious=False,
            description="Cough",
        )


def test_a_site_export_takes_the_same_queries_for_2_patients_as_for_6(coordinator):
    site = SiteFactory(code="QRY")

    def queries_for_site_export():
        with CaptureQueriesContext(connection) as queries:
            bundle = fhir_bundle_for_patients(patients=Patient.objects.filter(site=site))
        return len(queries), validated(bundle)

    add_patients(site, 2, coordinator)
    for_two, bundle = queries_for_site_export()
    assert len(resources(bundle, "Patient")) == 2
    add_patients(site, 4, coordinator)
    for_six, bundle = queries_for_site_export()
    assert len(resources(bundle, "Patient")) == 6

    assert for_two == for_six == 6  # patients, courses, visits, lung function, walks, AEs


def test_an_empty_export_is_still_a_valid_bundle(db):
    bundle = export()
    assert "entry" not in bundle  # FHIR JSON has no empty arrays
    assert bundle["timestamp"].endswith("+00:00")


def test_an_infusion_exports_as_a_procedure_from_its_lot_and_crp_with_its_loinc_code(
    msc, msc_site, clinician
):
    from patients.models import CReactiveProtein

    lot = msc.lot(msc_site, number="UC-7")
    course = msc.advance(msc.course(msc_site), CourseState.FOLLOW_UP)
    clinical_record_save(
        record=CReactiveProtein(
            patient=course.patient, taken_on=msc.at(-1).date(), crp_mg_l=Decimal("12.5")
        ),
        by=clinician,
    )
    bundle = export(course.patient)
    [care_plan] = resources(bundle, "CarePlan")
    assert care_plan["title"].startswith("Allogeneic mesenchymal stem cell infusion")
    [procedure] = resources(bundle, "Procedure")
    assert procedure["code"]["text"] == "Intravenous infusion of allogeneic mesenchymal stem cells"
    assert procedure["performedDateTime"] == course.first_infused_at.isoformat()
    [product] = resources(bundle, "BiologicallyDerivedProduct")
    assert procedure["usedReference"][0]["reference"] == f"urn:uuid:{product['id']}"
    assert product["identifier"][0]["value"] == lot.lot_number
    assert (product["productCategory"], product["quantity"]) == ("cells", 6)
    assert product["storage"][0] == {
        "description": f"Expires {lot.expires_on.isoformat()}",
        "temperature": -180,
        "scale": "celsius",
    }
    [crp] = [o for o in resources(bundle, "Observation") if o["code"]["text"].startswith("C re")]
    assert crp["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "1988-5",
        "display": "C reactive protein [Mass/volume] in Serum or Plasma",
    }
    assert crp["valueQuantity"] == {
        "value": 12.5,
        "unit": "mg/L",
        "system": "http://unitsofmeasure.org",
        "code": "mg/L",
    }
    ids = {e["fullUrl"] for e in bundle["entry"]}
    assert set(references_in(bundle["entry"])) <= ids | {
        r for r in references_in(bundle["entry"]) if not r.startswith("urn:")
    }
