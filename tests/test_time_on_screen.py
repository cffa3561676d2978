"""One rule for time on screen: the site's zone, named; exports in ISO 8601 with offset."""

import csv
import io

import pytest
from django.urls import reverse

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
