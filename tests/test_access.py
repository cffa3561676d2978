"""Who sees what: every admin model × every role × view/add/change/delete × own and another
site. The figure that matters is unauthorised successes, which must be 0."""

import pytest
from django.contrib.admin.sites import site as admin_site
from django.urls import reverse
from django.utils import timezone

from pathway import services
from pathway.models import Batch, CustodyEvent, TransitionLog
from pathway.records import adverse_event_record
from pathway.states import CourseState
from patients.access import user_sees_all_sites
from patients.models import AdverseEvent, Patient
from scheduling.alerts import alert_raise
from scheduling.models import Alert, AlertKind, Notification, Visit
from tests.factories import (
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    SiteFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
ROLES = ("coordinator", "clinician", "lab", "programme lead", "auditor")


def build_site(code, pathway):
    """A site with a course in expansion and one of everything that hangs on a course."""
    site = SiteFactory(code=code, staff=[])
    patient = PatientFactory(site=site)
    for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
        factory(patient=patient, taken_on=pathway.at(0).date())
    course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.advance(course, CourseState.EXPANDING)
    alert_raise(kind=AlertKind.VISIT_OVERDUE, course=course, condition_key=f"k{code}", message="m")
    adverse_event_record(
        event=AdverseEvent(
            course=course,
            onset_on=timezone.localdate(),
            grade=1,
            serious=False,
            outcome="recovered",
            description="Cough",
        ),
        by=pathway.clinician,
    )
    Notification.objects.create(
        template="visit_reminder",
        channel="email",
        patient=patient,
        visit=Visit.objects.filter(course=course).first(),
        send_after=timezone.now(),
        idempotency_key=f"matrix.{code}",
    )
    return {
        Patient: patient,
        type(course): course,
        Visit: Visit.objects.filter(course=course).first(),
        Alert: Alert.objects.get(course=course),
        Notification: Notification.objects.get(idempotency_key=f"matrix.{code}"),
        Batch: Batch.objects.get(course=course),
        CustodyEvent: CustodyEvent.objects.filter(course=course).first(),
        AdverseEvent: AdverseEvent.objects.get(course=course),
        TransitionLog: TransitionLog.objects.filter(course=course).first(),
        type(site): site,
    }


def admin_url(model, view, obj=None):
    name = f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"
    return reverse(name, args=[obj.pk] if obj is not None else [])


def attempt(client, model, op, obj):
    """Whether the admin let the user in for `op`: True means access was granted."""
    if op == "list":
        response = client.get(admin_url(model, "changelist"))
        return response.status_code == 200 and obj.pk in {
            o.pk for o in response.context["cl"].result_list
        }
    if op == "view":
        return client.get(admin_url(model, "change", obj)).status_code == 200
    if op == "change":
        response = client.get(admin_url(model, "change", obj))
        return response.status_code == 200 and bool(response.context.get("has_change_permission"))
    if op == "delete":
        allowed = client.get(admin_url(model, "delete", obj)).status_code == 200
        client.post(admin_url(model, "delete", obj), {"post": "yes"})
        survived = model._default_manager.filter(pk=obj.pk).exists()
        return allowed or not survived
    raise ValueError(op)


def test_the_access_matrix_has_no_unauthorised_success(client, pathway):
    own, other = build_site("OWN", pathway), build_site("OTH", pathway)
    models = [m for m in own if m in admin_site._registry]
    checks, unauthorised = 0, []
    for role in ROLES:
        user = UserFactory(
            username=f"matrix-{role}", role=role, sites=[own[type(own[Patient].site)]]
        )
        client.force_login(user)
        everywhere = user_sees_all_sites(user)
        for model in models:
            perms = {
                op: user.has_perm(f"{model._meta.app_label}.{action}_{model._meta.model_name}")
                for op, action in (
                    ("list", "view"),
                    ("view", "view"),
                    ("change", "change"),
                    ("delete", "delete"),
                    ("add", "add"),
                )
            }
            perms["list"] = perms["view"] = perms["view"] or perms["change"]
            add_granted = client.get(admin_url(model, "add")).status_code == 200
            checks += 1
            if add_granted and not perms["add"]:
                unauthorised.append((role, model.__name__, "add", "-"))
            for where, objects in (("own", own), ("other", other)):
                for op in ("list", "view", "change", "delete"):
                    allowed = perms[op] and (
                        where == "own" or (everywhere and op in ("list", "view"))
                    )
                    granted = attempt(client, model, op, objects[model])
                    checks += 1
                    if granted and not allowed:
                        unauthorised.append((role, model.__name__, op, where))
    print(f"\naccess matrix: {checks} checks, {len(unauthorised)} unauthorised successes")
    assert unauthorised == []
    assert checks >= 5 * 9 * 9


def test_another_sites_records_are_not_offered_in_forms(client, pathway):
    own, other = build_site("OWN", pathway), build_site("OTH", pathway)
    coordinator = UserFactory(
        username="scoped", role="coordinator", sites=[own[type(own[Patient].site)]]
    )
    client.force_login(coordinator)
    add_course = client.get(admin_url(type(own[Patient]), "add"))
    sites_offered = set(add_course.context["adminform"].form.fields["site"].queryset)
    assert sites_offered == {own[type(own[Patient].site)]}
    autocomplete = client.get(
        reverse("admin:autocomplete"),
        {
            "term": "",
            "app_label": "pathway",
            "model_name": "treatmentcourse",
            "field_name": "patient",
        },
    )
    ids = {int(r["id"]) for r in autocomplete.json()["results"]}
    assert own[Patient].pk in ids and other[Patient].pk not in ids


def test_a_guessed_url_of_another_site_is_not_found(client, pathway):
    own, other = build_site("OWN", pathway), build_site("OTH", pathway)
    coordinator = UserFactory(
        username="guess", role="coordinator", sites=[own[type(own[Patient].site)]]
    )
    client.force_login(coordinator)
    course = other[type(own[Visit].course)]
    for url in (
        admin_url(type(course), "change", course),
        reverse("admin:pathway_treatmentcourse_label", args=[course.pk]),
        reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "hold"]),
    ):
        assert client.get(url).status_code in (403, 404), url
    report = client.get(reverse("weekly-report"), {"site": "OTH"})
    assert (
        "OTH" not in {s.code for s in report.context["sites"]}
        and report.context["report"].site.code == "OWN"
    )


def test_a_filtered_list_exports_as_csv_within_the_users_sites(client, pathway):
    import csv
    import io

    own, _other = build_site("OWN", pathway), build_site("OTH", pathway)
    coordinator = UserFactory(
        username="exporter", role="coordinator", sites=[own[type(own[Patient].site)]]
    )
    client.force_login(coordinator)
    url = admin_url(Patient, "changelist")
    everyone = list(Patient.objects.values_list("pk", flat=True))
    response = client.post(
        url, {"action": "export_as_csv", "_selected_action": everyone, "select_across": "1"}
    )
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][0] == "MRN"
    assert [r[0] for r in rows[1:]] == [own[Patient].mrn]


@pytest.mark.parametrize(
    "changelist",
    [
        "admin:patients_patient_changelist",
        "admin:pathway_treatmentcourse_changelist",
        "admin:scheduling_visit_changelist",
        "admin:scheduling_alert_changelist",
        "admin:enquiries_enquiry_changelist",
        "admin:scheduling_resource_changelist",
    ],
)
def test_a_lists_by_site_filter_offers_only_the_users_sites(client, changelist):
    ours = [SiteFactory(name="Harbour Chest Clinic"), SiteFactory(name="Hill Chest Clinic")]
    SiteFactory(name="Elsewhere Lung Centre")
    user = UserFactory(role="coordinator", sites=ours)
    client.force_login(user)
    page = client.get(reverse(changelist)).content.decode()
    assert "Harbour Chest Clinic" in page and "Hill Chest Clinic" in page
    assert "Elsewhere Lung Centre" not in page
