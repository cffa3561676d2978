"""The capacity view: places held per day, per resource, for 8 weeks."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from scheduling.capacity import capacity_by_day
from scheduling.models import Resource, ResourceClosure, ResourceKind, ResourceSession
from scheduling.slots import resource_slots, slots_take
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


def _suite(site, name="Suite"):
    suite = Resource.objects.create(
        name=name, kind=ResourceKind.BRONCHOSCOPY, site=site, time_zone="Asia/Shanghai"
    )
    ResourceSession.objects.create(
        resource=suite, weekday=1, starts_at=dt.time(8), ends_at=dt.time(13), capacity=2
    )
    return suite


def test_a_day_counts_its_places_held_in_the_resources_own_calendar():
    suite = _suite(SiteFactory())
    today = timezone.localdate()
    monday = today - dt.timedelta(days=today.weekday())
    tuesday = monday + dt.timedelta(days=8)
    [slot] = resource_slots(resource=suite, first_day=tuesday, last_day=tuesday)
    slots_take(resource=suite, slots=[slot], what="x")
    ResourceClosure.objects.create(
        resource=suite,
        first_day=tuesday + dt.timedelta(days=7),
        last_day=tuesday + dt.timedelta(days=7),
        reason="Audit",
    )
    [use] = capacity_by_day(resources=Resource.objects.all(), first_day=today)
    assert len(use.weeks) == 8 and all(len(week) == 7 for week in use.weeks)
    day = use.weeks[1][1]
    assert (day.day, day.held, day.capacity, day.band) == (tuesday, 1, 2, "busy")
    assert use.weeks[2][1].band == "closed" and use.weeks[2][1].capacity == 0
    assert use.weeks[1][0].band == "none"
    assert use.held == 1 and use.capacity == 2 * 7  # eight Tuesdays less the closed one


def test_the_heat_map_takes_the_same_queries_for_one_resource_or_many(admin_client):
    url = reverse("admin:scheduling_resource_capacity")
    site = SiteFactory()
    _suite(site, "Suite A")
    admin_client.get(url)
    with CaptureQueriesContext(connection) as one:
        page = admin_client.get(url).content.decode()
    assert "Suite A" in page and "0/2" in page
    for n in range(5):
        _suite(site, f"Suite {n}")
    with CaptureQueriesContext(connection) as six:
        page = admin_client.get(url).content.decode()
    assert "Suite 4" in page
    assert len(six) == len(one)


def test_a_coordinator_sees_their_sites_resources_and_the_labs_only(client, coordinator):
    home, elsewhere = SiteFactory(), SiteFactory(staff=[])
    home.members.add(coordinator)
    _suite(home, "Home suite")
    _suite(elsewhere, "Elsewhere suite")
    Resource.objects.create(name="Lab expansion", kind=ResourceKind.EXPANSION)
    client.force_login(coordinator)
    page = client.get(reverse("admin:scheduling_resource_capacity")).content.decode()
    assert "Home suite" in page and "Lab expansion" in page
    assert "Elsewhere suite" not in page
