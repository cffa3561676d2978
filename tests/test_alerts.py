import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from common.errors import Refused
from pathway.scans import alerts_scan_overdue
from pathway.services import course_create
from pathway.states import CourseState
from reporting.dashboard import site_dashboard
from scheduling.alerts import alert_acknowledge, alert_raise, alert_snooze
from scheduling.models import Alert, AlertKind, Notification, NotificationTemplate, Visit
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_follow_up(course, pathway, coordinator):
    course.patient.coordinator = coordinator
    course.patient.save()
    return pathway.advance(course, CourseState.FOLLOW_UP)


def four_week_visit(course):
    return Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)


def day_after(date, zone):
    return dt.datetime.combine(date + dt.timedelta(days=1), dt.time(9), tzinfo=zone)


def test_an_overdue_visit_alerts_once_however_often_the_scan_runs(in_follow_up, coordinator):
    visit = four_week_visit(in_follow_up)
    zone = in_follow_up.site.time_zone
    on_last_day = dt.datetime.combine(visit.window_closes_on, dt.time(23, 59), tzinfo=zone)
    with time_machine.travel(on_last_day, tick=False):
        alerts_scan_overdue()
        assert not Alert.objects.filter(kind=AlertKind.VISIT_OVERDUE).exists()
    with time_machine.travel(day_after(visit.window_closes_on, zone), tick=False):
        assert alerts_scan_overdue() == 1
        assert alerts_scan_overdue() == 0
    [alert] = Alert.objects.filter(kind=AlertKind.VISIT_OVERDUE)
    assert (alert.kind, alert.visit, alert.site) == (
        AlertKind.VISIT_OVERDUE,
        visit,
        in_follow_up.site,
    )
    assert "4-week lung function" in alert.message and "overdue" in alert.message
    [email] = Notification.objects.filter(template=NotificationTemplate.ALERT, alert=alert)
    assert email.user == coordinator


def test_a_follow_up_whose_window_opens_unbooked_tells_the_coordinator_once(in_follow_up):
    visit = four_week_visit(in_follow_up)
    zone = in_follow_up.site.time_zone
    before = dt.datetime.combine(visit.window_opens_on, dt.time(0, 1), tzinfo=zone)
    with time_machine.travel(before - dt.timedelta(minutes=2), tick=False):
        alerts_scan_overdue()
        assert not Alert.objects.filter(kind=AlertKind.FOLLOW_UP_TO_BOOK).exists()
    with time_machine.travel(before, tick=False):
        alerts_scan_overdue()
        alerts_scan_overdue()
    [alert] = Alert.objects.filter(kind=AlertKind.FOLLOW_UP_TO_BOOK)
    assert alert.visit == visit and "Book the 4-week" in alert.message


@pytest.mark.parametrize("day, alerted", [(35, False), (36, True)])
def test_an_expansion_past_day_35_alerts_coordinator_and_lab(
    course, pathway, coordinator, lab, day, alerted
):
    course.patient.coordinator = coordinator
    course.patient.save()
    pathway.advance(course, CourseState.EXPANDING)
    received_on = timezone.localdate(course.lab_received_at, course.site.time_zone)
    noon = dt.datetime.combine(
        received_on + dt.timedelta(days=day), dt.time(12), tzinfo=course.site.time_zone
    )
    with time_machine.travel(noon, tick=False):
        assert alerts_scan_overdue() == int(alerted)
    if alerted:
        alert = Alert.objects.get(kind=AlertKind.EXPANSION_OVERDUE)
        assert "on day 36" in alert.message and alert.severity == "urgent"
        emails = Notification.objects.filter(template=NotificationTemplate.ALERT)
        # An urgent alert: the lab and the course's clinicians hear of it as well.
        assert set(emails.values_list("user__username", flat=True)) == {
            "coordinator",
            "lab",
            "lab2",
            "clinician",
            "clinician2",
        }


def test_a_release_with_no_transplant_booked_alerts_after_14_days(course, pathway):
    pathway.advance(course, CourseState.RELEASED)
    with time_machine.travel(course.released_at + dt.timedelta(days=14, seconds=-1), tick=False):
        assert alerts_scan_overdue() == 0
    with time_machine.travel(course.released_at + dt.timedelta(days=14, seconds=1), tick=False):
        assert alerts_scan_overdue() == 1
    assert Alert.objects.get().kind == AlertKind.TRANSPLANT_NOT_BOOKED


def test_acknowledging_an_alert_records_who_and_when(in_follow_up, coordinator, clinician):
    visit = four_week_visit(in_follow_up)
    with time_machine.travel(
        day_after(visit.window_closes_on, in_follow_up.site.time_zone), tick=False
    ):
        alerts_scan_overdue()
    alert = Alert.objects.get()
    with pytest.raises(Refused, match=r"for the coordinator role at .*: not yours to act on"):
        alert_acknowledge(alert=alert, by=clinician)
    with pytest.raises(Refused):
        alert_snooze(alert=alert, by=clinician, until=timezone.now() + dt.timedelta(hours=4))
    assert alert_acknowledge(alert=alert, by=coordinator) is True
    assert alert_acknowledge(alert=alert, by=coordinator) is False
    alert.refresh_from_db()
    assert alert.acknowledged_by == coordinator and alert.acknowledged_at


def test_a_coordinator_acknowledges_alerts_in_the_admin(client, in_follow_up, coordinator):
    visit = four_week_visit(in_follow_up)
    with time_machine.travel(
        day_after(visit.window_closes_on, in_follow_up.site.time_zone), tick=False
    ):
        alerts_scan_overdue()
    alert = Alert.objects.get()
    client.force_login(coordinator)
    url = reverse("admin:scheduling_alert_changelist")
    listing = client.get(url, {"open": "yes"})
    assert list(listing.context["cl"].result_list) == [alert]
    client.post(url, {"action": "acknowledge", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.acknowledged_by == coordinator
    assert list(client.get(url, {"open": "yes"}).context["cl"].result_list) == []


def test_the_dashboard_counts_per_site_in_a_fixed_number_of_queries(
    in_follow_up, admin_user, client
):
    visit = four_week_visit(in_follow_up)
    later = day_after(visit.window_closes_on, in_follow_up.site.time_zone)
    with time_machine.travel(later, tick=False):
        alerts_scan_overdue()
        with CaptureQueriesContext(connection) as queries:
            [row] = site_dashboard()
        assert len(queries) == 5
        assert (row["open_alerts"], row["overdue_visits"]) == (1, 1)
        client.force_login(admin_user)
        page = client.get(reverse("admin:index")).content.decode()
    assert "pathway-dashboard" in page and in_follow_up.site.name in page


def test_the_alert_list_costs_the_same_queries_at_any_size(client, admin_user, coordinator):
    client.force_login(admin_user)
    url = reverse("admin:scheduling_alert_changelist")

    def raise_alerts(n, offset):
        for i in range(n):
            course = course_create(patient=PatientFactory(), by=coordinator)
            alert_raise(
                kind=AlertKind.VISIT_OVERDUE,
                course=course,
                condition_key=f"k{offset + i}",
                message="Overdue",
            )

    raise_alerts(2, 0)
    with CaptureQueriesContext(connection) as small:
        client.get(url)
    raise_alerts(20, 100)
    with CaptureQueriesContext(connection) as large:
        client.get(url)
    assert len(small) == len(large)


def _serious_event(course, by):
    from pathway.records import adverse_event_record
    from patients.models import AdverseEvent

    adverse_event_record(
        event=AdverseEvent(
            course=course,
            onset_on=timezone.localdate(),
            grade=3,
            serious=True,
            outcome="recovering",
            description="Pneumothorax after bronchoscopy",
        ),
        by=by,
    )
    return Alert.objects.get(kind=AlertKind.ADVERSE_EVENT)


def test_a_serious_adverse_event_reaches_the_sites_clinicians_and_no_other_sites(
    course, coordinator, clinician
):
    from tests.factories import SiteFactory, UserFactory

    course.patient.coordinator = coordinator
    course.patient.save()
    elsewhere = UserFactory(username="elsewhere", role="clinician", sites=[SiteFactory(code="FAR")])
    alert = _serious_event(course, clinician)
    told = set(Notification.objects.filter(alert=alert).values_list("user__username", flat=True))
    assert told == {"coordinator", "clinician"}
    assert elsewhere.username not in told


def test_a_site_changes_who_hears_of_an_alert_kind(client, course, coordinator, clinician, lab):
    from django.contrib.auth.models import Group

    from scheduling.models import AlertRoute

    course.patient.coordinator = coordinator
    course.patient.save()
    client.force_login(coordinator)
    response = client.post(
        reverse("admin:scheduling_alertroute_add"),
        {
            "kind": AlertKind.ADVERSE_EVENT,
            "group": Group.objects.get(name="lab").pk,
            "site": course.site.pk,
        },
    )
    assert response.status_code == 302
    assert AlertRoute.objects.filter(site=course.site).count() == 1
    alert = _serious_event(course, clinician)
    told = set(Notification.objects.filter(alert=alert).values_list("user__username", flat=True))
    # The site's own route replaces the default for that kind.
    assert told == {"coordinator", "lab"}


@pytest.mark.parametrize(
    "zone, utc_hour, overdue",
    [
        ("Pacific/Kiritimati", 9, False),  # UTC+14: 23:00 on the window's last day
        ("Pacific/Kiritimati", 11, True),  # 01:00 the day after: overdue, before UTC's day ends
        ("Pacific/Pago_Pago", 34, False),  # UTC−11: 23:00 on the window's last day
        ("Pacific/Pago_Pago", 36, True),
    ],
)
def test_overdue_follows_each_sites_own_day_at_the_ends_of_the_earth(
    pathway, protocol, zone, utc_hour, overdue
):
    """The SQL reads an index up to a bound no site's day passes: the farthest zones agree."""
    from scheduling.models import Visit
    from tests.factories import PatientFactory, SiteFactory

    site = SiteFactory(time_zone=zone)
    course = course_create(patient=PatientFactory(site=site), by=pathway.coordinator)
    last_day = dt.date(2026, 3, 10)
    visit = Visit.objects.create(
        course=course,
        kind="follow_up",
        scheduled_at=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        window_closes_on=last_day,
        created_at=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    at = dt.datetime(2026, 3, 10, tzinfo=dt.UTC) + dt.timedelta(hours=utc_hour)
    found = set(Visit.objects.overdue(sites=[site], at=at))
    found_then = set(Visit.objects.overdue_as_of(sites=[site], at=at))
    today = at.astimezone(site.time_zone).date()
    assert (visit in found, visit in found_then, visit.is_overdue(today=today)) == (overdue,) * 3


# Alerts reach someone who can act, and only them.


def _answers_alert(course):
    alert, _ = alert_raise(
        kind=AlertKind.SYMPTOMS,
        course=course,
        condition_key=f"symptoms.test.{course.pk}",
        message="CAT 31 needs a clinician.",
    )
    return alert


def test_a_lab_user_sees_no_clinical_alert_and_may_not_acknowledge_one(
    client, course, coordinator, clinician, lab
):
    alert = _answers_alert(course)
    ack = reverse("admin:scheduling_alert_acknowledge", args=[alert.pk])
    client.force_login(lab)
    assert (
        "A patient&#x27;s answers need a clinician"
        not in client.get(reverse("admin:index")).content.decode()
    )
    listing = client.get(reverse("admin:scheduling_alert_changelist")).content.decode()
    assert "CAT 31 needs a clinician" not in listing
    assert client.post(ack, {"note": "seen"}).status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None

    for person in (clinician, coordinator):
        client.force_login(person)
        assert ack in client.get(reverse("admin:index")).content.decode()
    assert client.post(ack, {"note": "called the patient"}).status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == coordinator


def test_the_lab_sees_the_manufacturing_alerts_and_the_clinician_does_not(
    client, course, clinician, lab
):
    alert, _ = alert_raise(
        kind=AlertKind.GROWTH_SHORTFALL,
        course=course,
        condition_key=f"growth.test.{course.pk}",
        message="The batch may not hold the minimum dose by day 35.",
    )
    ack = reverse("admin:scheduling_alert_acknowledge", args=[alert.pk])
    client.force_login(lab)
    assert ack in client.get(reverse("admin:index")).content.decode()
    client.force_login(clinician)
    assert ack not in client.get(reverse("admin:index")).content.decode()
    assert client.post(ack).status_code == 403


def test_a_site_routing_a_kind_to_the_lab_lets_the_lab_act_on_it(client, course, lab):
    from django.contrib.auth.models import Group

    from scheduling.alerts import alert_may_act
    from scheduling.models import AlertRoute

    alert = _answers_alert(course)
    assert not alert_may_act(user=lab, alert=alert)
    AlertRoute.objects.create(
        kind=AlertKind.SYMPTOMS, group=Group.objects.get(name="lab"), site=course.site
    )
    assert alert_may_act(user=lab, alert=alert)


def test_the_dashboard_counts_the_alerts_the_user_may_act_on(course, lab, coordinator):
    from reporting.dashboard import site_dashboard

    _answers_alert(course)
    [for_lab] = site_dashboard(sites=[course.site], user=lab)
    [for_coordinator] = site_dashboard(sites=[course.site], user=coordinator)
    assert (for_lab["open_alerts"], for_coordinator["open_alerts"]) == (0, 1)
