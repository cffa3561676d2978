"""Slots from a resource's weekly sessions and closures, across clock changes."""

import datetime as dt
from types import SimpleNamespace as Row
from zoneinfo import ZoneInfo

import pytest

from scheduling.models import Resource, ResourceClosure, ResourceKind, ResourceSession
from scheduling.slots import resource_slots, slots_between

LONDON = ZoneInfo("Europe/London")
TUESDAY_THURSDAY = [
    Row(weekday=1, starts_at=dt.time(8), ends_at=dt.time(13), capacity=2),
    Row(weekday=3, starts_at=dt.time(8), ends_at=dt.time(13), capacity=2),
]


def test_a_session_keeps_its_local_time_across_the_spring_clock_change():
    # Britain moves to summer time on Sunday 29 March 2026.
    slots = slots_between(
        sessions=TUESDAY_THURSDAY,
        closures=[],
        zone=LONDON,
        first_day=dt.date(2026, 3, 23),
        last_day=dt.date(2026, 4, 3),
    )
    assert [s.starts_at.astimezone(LONDON).time() for s in slots] == [dt.time(8)] * 4
    assert [s.starts_at.hour for s in slots] == [8, 8, 7, 7]  # in UTC: GMT, then BST
    assert all(s.capacity == 2 for s in slots)


def test_a_session_keeps_its_local_time_across_the_autumn_clock_change():
    new_york = ZoneInfo("America/New_York")  # back to standard time on 1 November 2026
    slots = slots_between(
        sessions=[Row(weekday=0, starts_at=dt.time(9), ends_at=dt.time(12), capacity=1)],
        closures=[],
        zone=new_york,
        first_day=dt.date(2026, 10, 26),
        last_day=dt.date(2026, 11, 2),
    )
    assert [s.starts_at.hour for s in slots] == [13, 14]  # 09:00 EDT, then 09:00 EST


def test_a_closure_takes_its_days_out_both_ends_included():
    closure = Row(first_day=dt.date(2026, 12, 24), last_day=dt.date(2027, 1, 1))
    slots = slots_between(
        sessions=TUESDAY_THURSDAY,
        closures=[closure],
        zone=LONDON,
        first_day=dt.date(2026, 12, 21),
        last_day=dt.date(2027, 1, 8),
    )
    days = [s.starts_at.astimezone(LONDON).date() for s in slots]
    assert days == [dt.date(2026, 12, 22), dt.date(2027, 1, 5), dt.date(2027, 1, 7)]


def test_a_leap_day_session_exists():
    slots = slots_between(
        sessions=[Row(weekday=1, starts_at=dt.time(8), ends_at=dt.time(9), capacity=1)],
        closures=[],
        zone=LONDON,
        first_day=dt.date(2028, 2, 29),
        last_day=dt.date(2028, 2, 29),
    )
    assert [s.starts_at.date() for s in slots] == [dt.date(2028, 2, 29)]


@pytest.mark.django_db
def test_a_resources_slots_come_from_its_rows_in_two_queries(django_assert_num_queries):
    suite = Resource.objects.create(
        name="Bronchoscopy suite 2", kind=ResourceKind.BRONCHOSCOPY, time_zone="Europe/London"
    )
    for weekday in (1, 3):
        ResourceSession.objects.create(
            resource=suite, weekday=weekday, starts_at=dt.time(8), ends_at=dt.time(13), capacity=2
        )
    ResourceClosure.objects.create(
        resource=suite,
        first_day=dt.date(2026, 12, 24),
        last_day=dt.date(2026, 12, 26),
        reason="Christmas",
    )
    with django_assert_num_queries(2):
        slots = resource_slots(
            resource=suite, first_day=dt.date(2026, 12, 21), last_day=dt.date(2026, 12, 31)
        )
    assert len(slots) == 3  # Tue 22, Tue 29, Thu 31; Thu 24 closed


def _suite_with_one_place():
    suite = Resource.objects.create(
        name="Suite 1", kind=ResourceKind.BRONCHOSCOPY, time_zone="Europe/London"
    )
    ResourceSession.objects.create(
        resource=suite, weekday=1, starts_at=dt.time(8), ends_at=dt.time(13), capacity=1
    )
    [slot] = resource_slots(
        resource=suite, first_day=dt.date(2026, 12, 22), last_day=dt.date(2026, 12, 22)
    )
    return suite, slot


@pytest.mark.django_db
def test_a_slot_takes_as_many_as_its_capacity_and_gives_a_place_back():
    from common.errors import Refused
    from scheduling.slots import slot_release, slot_take

    suite, slot = _suite_with_one_place()
    slot_take(resource=suite, slot=slot)
    with pytest.raises(Refused, match="is full"):
        slot_take(resource=suite, slot=slot)
    slot_release(resource=suite, slot=slot)
    slot_take(resource=suite, slot=slot)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_coordinators_taking_the_last_place_at_once_one_wins():
    import threading

    from django.db import connection

    from common.errors import Refused
    from scheduling.models import SlotHold
    from scheduling.slots import slot_take

    suite, slot = _suite_with_one_place()
    barrier, outcomes = threading.Barrier(20), []

    def book():
        try:
            barrier.wait(timeout=10)
            slot_take(resource=suite, slot=slot)
            outcomes.append("won")
        except Refused:
            outcomes.append("told it is full")
        finally:
            connection.close()

    threads = [threading.Thread(target=book) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["told it is full"] * 19 + ["won"]
    assert SlotHold.objects.get(resource=suite).held == 1


@pytest.mark.django_db
def test_staff_see_their_sites_resources_and_the_labs_and_only_the_lab_changes_the_labs(client):
    from django.urls import reverse

    from tests.factories import SiteFactory, UserFactory

    here, there = SiteFactory(code="HER"), SiteFactory(code="THR")
    coordinator = UserFactory(username="coord", role="coordinator", sites=[here])
    suite = Resource.objects.create(name="Suite", kind=ResourceKind.BRONCHOSCOPY, site=here)
    elsewhere = Resource.objects.create(name="Far", kind=ResourceKind.BRONCHOSCOPY, site=there)
    lab = Resource.objects.create(name="Incubators", kind=ResourceKind.EXPANSION)
    client.force_login(coordinator)
    listed = client.get(reverse("admin:scheduling_resource_changelist")).content.decode()
    assert "Suite" in listed and "Incubators" in listed and "Far" not in listed
    change = reverse("admin:scheduling_resource_change", args=[elsewhere.pk])
    assert client.get(change).status_code == 404
    lab_page = client.get(reverse("admin:scheduling_resource_change", args=[lab.pk]))
    assert lab_page.status_code == 200 and 'name="_save"' not in lab_page.content.decode()
    assert suite.site == here
