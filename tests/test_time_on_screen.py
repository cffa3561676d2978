"""One rule for time on screen: the site's zone, named; exports in ISO 8601 with offset."""

import csv
import datetime as dt
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from common.zones import date_words
from pathway.states import CourseState
from scheduling.models import Visit

pytestmark = pytest.mark.django_db


@pytest.fixture
def shanghai_course(course, pathway):
    course.site.time_zone = "Asia/Shanghai"
    course.site.save(update_fields=["time_zone"])
    return pathway.advance(course, CourseState.HARVEST_SCHEDULED)


def test_lists_and_pages_name_the_sites_zone(admin_client, shanghai_course):
    listing = admin_client.get(reverse("admin:scheduling_visit_changelist")).content.decode()
    assert "CST" in listing and "Booked for (the site" in listing
    page = admin_client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[shanghai_course.pk])
    ).content.decode()
    assert " CST" in page


def test_the_export_carries_the_moment_in_iso_8601_with_its_offset(admin_client, shanghai_course):
    visit = Visit.objects.get(course=shanghai_course)
    response = admin_client.post(
        reverse("admin:scheduling_visit_changelist"),
        {"action": "export_as_csv", "_selected_action": [visit.pk]},
    )
    header, row = list(csv.reader(io.StringIO(response.content.decode())))[:2]
    column = header.index("scheduled at (ISO 8601, UTC)")
    assert row[column] == visit.scheduled_at.isoformat()
    assert row[column].endswith("+00:00")


def test_mark_missed_shows_the_booked_time_in_the_sites_zone_not_8_hours_off(
    admin_client, shanghai_course
):
    visit = Visit.objects.get(course=shanghai_course)
    zone = shanghai_course.site.time_zone
    day = timezone.localdate(visit.scheduled_at, zone)
    visit.scheduled_at = dt.datetime.combine(day, dt.time(10), tzinfo=zone)
    visit.save(update_fields=["scheduled_at"])
    page = admin_client.get(reverse("admin:scheduling_visit_missed", args=[visit.pk]))
    text = page.content.decode()
    assert f"booked for {date_words(day)} 10:00 CST" in text
    assert "02:00 CST" not in text


def test_a_shanghai_course_page_shows_its_visits_and_steps_in_shanghai_time(
    admin_client, shanghai_course
):
    visit = Visit.objects.get(course=shanghai_course)
    local = timezone.localtime(visit.scheduled_at, shanghai_course.site.time_zone)
    page = admin_client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[shanghai_course.pk])
    ).content.decode()
    assert f"{local:%H:%M} CST" in page
    assert " BST" not in page and " GMT" not in page


def test_a_boston_course_says_when_its_state_changed_in_boston_time(admin_client, course):
    course.site.time_zone = "America/New_York"
    course.site.save(update_fields=["time_zone"])
    local = timezone.localtime(course.state_changed_at, course.site.time_zone)
    page = admin_client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
    ).content.decode()
    assert f"{local:%H:%M} {local:%Z}" in page
    assert local.tzname() in ("EST", "EDT")


def test_each_visit_on_the_weekly_report_names_its_sites_zone(admin_client, shanghai_course):
    page = admin_client.get(reverse("weekly-report")).content.decode()
    assert "each site's times in its own zone, named" in page
    visit = Visit.objects.get(course=shanghai_course)
    local = timezone.localtime(visit.scheduled_at, shanghai_course.site.time_zone)
    if timezone.now() < visit.scheduled_at < timezone.now() + dt.timedelta(days=14):
        assert f"{local:%H:%M} CST" in page


def test_the_custody_form_reads_its_time_at_the_courses_site(client, pathway, course):
    from pathway.models import CustodyEvent, CustodyKind

    course.site.time_zone = "Asia/Shanghai"
    course.site.save(update_fields=["time_zone"])
    pathway.advance(course, CourseState.RELEASED)
    client.force_login(pathway.lab)
    url = reverse("admin:pathway_custodyevent_add")
    page = client.get(url).content.decode()
    assert "Local time at the course" in page, page[page.find('name="at_0"') - 1500 :][:2000]
    local = timezone.localtime(timezone.now(), course.site.time_zone) - dt.timedelta(minutes=10)
    response = client.post(
        url,
        {
            "course": course.pk,
            "kind": CustodyKind.SHIPPED_TO_SITE,
            "scanned_coi_id": course.coi_id,
            "at_0": local.date().isoformat(),
            "at_1": local.strftime("%H:%M"),
            "location": "Lab",
            "temperature_c": "5",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = CustodyEvent.objects.get(course=course, kind=CustodyKind.SHIPPED_TO_SITE)
    assert timezone.localtime(event.at, course.site.time_zone).strftime("%H:%M") == (
        local.strftime("%H:%M")
    )
