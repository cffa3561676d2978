"""The worklist: first on the index, built from state, one button per row."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pathway import services
from pathway.states import CourseState
from scheduling.alerts import alert_raise
from scheduling.models import Alert, AlertKind, WorkAssignment
from tests.factories import (
    BodyMeasurementFactory,
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
)

pytestmark = pytest.mark.django_db


def _eligible_course(pathway, site=None):
    patient = PatientFactory(**({"site": site} if site else {}))
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.evaluate(course)
    services.course_approve(course=course, by=pathway.clinician)
    return course


def _alert(course):
    alert, _ = alert_raise(
        kind=AlertKind.VISIT_OVERDUE,
        course=course,
        condition_key=f"test.{course.pk}",
        message="The 4-week visit is overdue.",
    )
    return alert


def test_the_coordinator_sees_what_to_do_with_one_button_each(client, pathway):
    course = _eligible_course(pathway)
    alert = _alert(course)
    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:index")).content.decode()
    assert "Your worklist" in page
    assert "Book the harvest" in page
    assert (
        reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "schedule_harvest"])
        in page
    )
    assert reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]) in page
    assert str(course.patient) in page


def test_the_lab_sees_the_labs_work_and_not_the_coordinators(client, pathway, course):
    _eligible_course(pathway)
    pathway.advance(course, CourseState.HARVESTED)
    client.force_login(pathway.lab)
    page = client.get(reverse("admin:index")).content.decode()
    assert "Book the harvest" not in page
    assert "Sample due at the lab" in page
    assert (
        reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "receive_at_lab"])
        in page
    )


def test_acknowledging_from_the_worklist_is_one_click_and_comes_back(client, pathway):
    course = _eligible_course(pathway)
    alert = _alert(course)
    client.force_login(pathway.coordinator)
    index = reverse("admin:index")
    response = client.post(
        reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]), {"next": index}
    )
    assert response.status_code == 302 and response["Location"] == index
    alert.refresh_from_db()
    assert alert.acknowledged_by == pathway.coordinator
    assert f"alert.a{alert.pk}" not in client.get(index).content.decode()


def test_the_alert_page_acknowledges_with_a_note_and_snoozes(client, pathway):
    course = _eligible_course(pathway)
    alert, other = _alert(course), _alert(_eligible_course(pathway))
    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:scheduling_alert_change", args=[alert.pk])).content.decode()
    assert "Acknowledge" in page and "Snooze for" in page and "condition_key" not in page
    client.post(
        reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]),
        {"note": "Rang the patient; rebooked for Friday."},
    )
    alert.refresh_from_db()
    assert alert.acknowledged_note == "Rang the patient; rebooked for Friday."
    client.post(reverse("admin:scheduling_alert_snooze", args=[other.pk]), {"for": "1d"})
    other.refresh_from_db()
    assert other.acknowledged_at is None
    assert other.snoozed_until > timezone.now() + dt.timedelta(hours=23)
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:scheduling_alert_acknowledge", args=[other.pk]) not in index


def test_a_foreign_next_is_not_followed(client, pathway):
    alert = _alert(_eligible_course(pathway))
    client.force_login(pathway.coordinator)
    response = client.post(
        reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]),
        {"next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("admin:scheduling_alert_change", args=[alert.pk])


def test_a_get_does_not_acknowledge(client, pathway):
    alert = _alert(_eligible_course(pathway))
    client.force_login(pathway.coordinator)
    response = client.get(reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]))
    assert response.status_code == 404
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_rows_are_taken_and_mine_shows_only_mine(client, pathway):
    mine, theirs = _eligible_course(pathway), _eligible_course(pathway)
    client.force_login(pathway.coordinator)
    client.post(reverse("worklist-assign"), {"key": f"harvest.c{mine.pk}"})
    assert WorkAssignment.objects.get(key=f"harvest.c{mine.pk}").assigned_to == pathway.coordinator
    page = client.get(reverse("admin:index") + "?mine=1").content.decode()
    assert str(mine.patient) in page and str(theirs.patient) not in page


def test_a_made_up_row_writes_nothing(client, pathway):
    _eligible_course(pathway)
    client.force_login(pathway.coordinator)
    response = client.post(reverse("worklist-assign"), {"key": "harvest.c999999"}, follow=True)
    assert "no longer on your worklist" in response.content.decode()
    assert not WorkAssignment.objects.exists()


def test_the_worklist_takes_the_same_queries_for_one_row_or_many(client, pathway):
    course = _eligible_course(pathway)
    _alert(course)
    client.force_login(pathway.coordinator)
    index = reverse("admin:index")
    client.get(index)
    with CaptureQueriesContext(connection) as one:
        client.get(index)
    for _ in range(6):
        _alert(_eligible_course(pathway, site=course.site))
    with CaptureQueriesContext(connection) as seven:
        page = client.get(index).content.decode()
    assert page.count("Book the harvest") == 7
    assert len(seven) == len(one)


def test_every_due_time_names_its_zone(client, pathway):
    course = _eligible_course(pathway)
    _alert(course)
    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:index")).content.decode()
    assert " GMT" in page or " BST" in page
    assert Alert.objects.count() == 1


def test_a_row_is_given_to_a_coordinator_of_its_site_and_no_one_else(client, pathway):
    from tests.factories import SiteFactory, UserFactory

    course = _eligible_course(pathway)
    colleague = UserFactory(username="colleague", role="coordinator")
    course.site.coordinators.add(colleague)
    stranger = UserFactory(username="stranger", role="coordinator")
    SiteFactory(staff=[stranger]).coordinators.add(stranger)
    course.site.coordinators.remove(stranger)
    course.site.members.remove(stranger)
    client.force_login(pathway.coordinator)
    key = f"harvest.c{course.pk}"
    page = client.get(reverse("admin:index")).content.decode()
    assert "give to…" in page
    client.post(reverse("worklist-assign"), {"key": key, "to": str(stranger.pk), "give": "1"})
    assert not WorkAssignment.objects.exists()
    client.post(reverse("worklist-assign"), {"key": key, "to": str(colleague.pk), "give": "1"})
    assert WorkAssignment.objects.get(key=key).assigned_to == colleague
    client.post(reverse("worklist-assign"), {"key": key, "to": "²", "give": "1"})
    assert WorkAssignment.objects.get(key=key).assigned_to == colleague


def test_the_product_is_sent_and_received_at_the_site_from_the_worklist(client, course, pathway):
    from pathway.models import CustodyEvent, CustodyKind

    pathway.advance(course, CourseState.RELEASED)
    client.force_login(pathway.lab)
    page = client.get(reverse("admin:index")).content.decode()
    send = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, "shipped_to_site"])
    assert "Send the product to the site" in page and send in page
    form = client.get(send).content.decode()
    zone = course.site.time_zone
    assert "Temperature of the shipper (°C)" in form
    assert f"Local time at {course.site.name} ({zone}," in form  # the zone named
    now = timezone.localtime(timezone.now(), zone)
    typed = {
        "at_0": now.date().isoformat(),
        "at_1": now.strftime("%H:%M"),
        "location": "Cell manufacturing facility",
        "temperature_c": "4.5",
    }
    wrong = client.post(send, typed | {"scanned_coi_id": "XXX-2026-000001-0"})
    assert (
        wrong.status_code == 200
        and not CustodyEvent.objects.filter(
            course=course, kind=CustodyKind.SHIPPED_TO_SITE
        ).exists()
    )
    sent = client.post(send, typed | {"scanned_coi_id": course.coi_id})
    assert sent.status_code == 302
    assert CustodyEvent.objects.get(course=course, kind=CustodyKind.SHIPPED_TO_SITE).by == (
        pathway.lab
    )
    assert "Send the product to the site" not in client.get(reverse("admin:index")).content.decode()

    client.force_login(pathway.coordinator)
    page = client.get(reverse("admin:index")).content.decode()
    receive = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, "received_at_site"])
    assert "Receive the product at the site" in page and receive in page
    got = client.post(
        receive, typed | {"scanned_coi_id": course.coi_id, "location": course.site.name}
    )
    assert got.status_code == 302
    event = CustodyEvent.objects.get(course=course, kind=CustodyKind.RECEIVED_AT_SITE)
    assert timezone.localtime(event.at, zone).strftime("%H:%M") == now.strftime("%H:%M")
    assert "Receive the product at the site" not in (
        client.get(reverse("admin:index")).content.decode()
    )


def test_a_follow_up_to_book_and_its_alert_are_one_row_with_both_buttons(pathway, course):
    """One thing, one row: the follow-up whose window opened unbooked and the alert that says
    so are the same row, with the booking and the acknowledgement on it."""
    import time_machine

    from pathway.scans import alerts_scan_overdue
    from reporting.worklist import worklist
    from scheduling.models import Visit

    pathway.advance(course, CourseState.FOLLOW_UP)
    visit = Visit.objects.filter(course=course, kind="follow_up").order_by("window_opens_on")[0]
    zone = course.site.time_zone
    inside = dt.datetime.combine(visit.window_opens_on, dt.time(9), tzinfo=zone)
    with time_machine.travel(inside, tick=False):
        alerts_scan_overdue()
        alert = Alert.objects.get(kind=AlertKind.FOLLOW_UP_TO_BOOK, visit=visit)
        rows = worklist(user=pathway.coordinator, sites=[course.site])
    about_it = [row for row in rows if f"v{visit.pk}" in row.key or f"a{alert.pk}" in row.key]
    assert [row.key for row in about_it] == [f"follow_up.v{visit.pk}"]
    [row] = about_it
    assert row.url and row.alert_url  # book it; acknowledge the alert
