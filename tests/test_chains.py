"""Booking the whole chain against the calendars, and the chain following each slip."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from common.errors import Refused
from pathway import services
from pathway.chains import course_chains
from pathway.states import CourseState
from scheduling.models import (
    Alert,
    AlertKind,
    Reservation,
    ReservationPurpose,
    Resource,
    ResourceKind,
    ResourceSession,
    SlotHold,
    Visit,
    VisitKind,
)
from scheduling.services import visit_reschedule
from scheduling.slots import slots_take

pytestmark = pytest.mark.django_db


def _calendars(site, *, suite_capacity=2, lab_capacity=3):
    """The site's suite on Tuesdays and Thursdays 08:00–13:00, and the lab's expansion
    capacity every day."""
    suite = Resource.objects.create(
        name="Bronchoscopy suite",
        kind=ResourceKind.BRONCHOSCOPY,
        site=site,
        time_zone="Europe/London",
    )
    for weekday in (1, 3):
        ResourceSession.objects.create(
            resource=suite,
            weekday=weekday,
            starts_at=dt.time(8),
            ends_at=dt.time(13),
            capacity=suite_capacity,
        )
    lab = Resource.objects.create(
        name="Lab expansion", kind=ResourceKind.EXPANSION, time_zone="Europe/London"
    )
    for weekday in range(7):
        ResourceSession.objects.create(
            resource=lab,
            weekday=weekday,
            starts_at=dt.time(0),
            ends_at=dt.time(23, 59),
            capacity=lab_capacity,
        )
    return suite, lab


@pytest.fixture
def eligible(course, pathway):
    pathway.advance(course, CourseState.EVALUATION)
    services.course_approve(course=course, by=pathway.clinician)
    return course


@pytest.fixture
def calendars(eligible):
    return _calendars(eligible.site)


def _held(course, purpose=None):
    rows = Reservation.objects.filter(course=course, released_at__isnull=True)
    return rows.filter(purpose=purpose) if purpose else rows


def _book(course, by, chain):
    return services.course_schedule_harvest(
        course=course,
        by=by,
        scheduled_at=chain.harvest.starts_at,
        transplant_at=chain.transplant.starts_at,
        place="Suite",
    )


def test_the_earliest_chains_are_free_in_every_part(eligible, calendars):
    suite, _lab = calendars
    chains = course_chains(eligible)
    assert len(chains) == 3
    harvests = [c.harvest.starts_at for c in chains]
    assert harvests == sorted(harvests) and len(set(harvests)) == 3
    first = chains[0]
    harvested_on = timezone.localdate(first.harvest.starts_at, suite.time_zone)
    assert harvested_on.weekday() in (1, 3)
    assert len(first.expansion) == 36  # day 0 to day 35, one place a day
    transplant_on = timezone.localdate(first.transplant.starts_at, suite.time_zone)
    assert 21 <= (transplant_on - harvested_on).days <= 35
    # The earliest: the first suite slot a transplant's notice (24 h) after the release
    # window opens on day 21, so that a product released that morning can be booked for it.
    first_bookable = harvested_on + dt.timedelta(days=22)
    while first_bookable.weekday() not in (1, 3):
        first_bookable += dt.timedelta(days=1)
    assert transplant_on == first_bookable


def test_a_harvest_whose_lab_days_are_full_is_not_offered(eligible, calendars):
    _suite, lab = calendars
    first = course_chains(eligible)[0]
    # Fill the lab on day 10 of the first chain's expansion.
    day_ten = first.expansion[10]
    slots_take(resource=lab, slots=[day_ten], what="x")
    slots_take(resource=lab, slots=[day_ten], what="x")
    slots_take(resource=lab, slots=[day_ten], what="x")
    chains = course_chains(eligible)
    assert all(day_ten not in chain.expansion for chain in chains)
    assert chains[0].harvest.starts_at > first.harvest.starts_at


def test_a_chain_is_reserved_whole(eligible, calendars, coordinator):
    chain = course_chains(eligible)[0]
    _book(eligible, coordinator, chain)
    assert eligible.state == CourseState.HARVEST_SCHEDULED
    assert _held(eligible, ReservationPurpose.HARVEST).get().starts_at == chain.harvest.starts_at
    assert _held(eligible, ReservationPurpose.EXPANSION).count() == 36
    transplant = _held(eligible, ReservationPurpose.TRANSPLANT).get()
    assert transplant.starts_at == chain.transplant.starts_at and transplant.provisional
    harvest_visit = Visit.objects.get(course=eligible, kind=VisitKind.HARVEST)
    assert _held(eligible, ReservationPurpose.HARVEST).get().visit == harvest_visit
    suite, lab = Resource.objects.get(kind="bronchoscopy"), Resource.objects.get(kind="expansion")
    assert SlotHold.objects.get(resource=suite, starts_at=chain.harvest.starts_at).held == 1
    assert SlotHold.objects.filter(resource=lab, held=1).count() == 36


def test_a_chain_with_one_part_taken_is_rolled_back_whole(eligible, calendars, coordinator):
    suite, lab = calendars
    chain = course_chains(eligible)[0]
    slots_take(resource=suite, slots=[chain.transplant], what="x")
    slots_take(resource=suite, slots=[chain.transplant], what="x")  # now full
    with pytest.raises(Refused, match="no free transplant slot"):
        _book(eligible, coordinator, chain)
    eligible.refresh_from_db()
    assert eligible.state == CourseState.ELIGIBLE
    assert not Reservation.objects.exists()
    assert not Visit.objects.filter(course=eligible).exists()
    assert not SlotHold.objects.filter(resource=lab, held__gt=0).exists()
    assert not SlotHold.objects.filter(
        resource=suite, starts_at=chain.harvest.starts_at, held__gt=0
    ).exists()


def test_a_harvest_off_the_suites_calendar_is_refused(eligible, calendars, coordinator):
    chain = course_chains(eligible)[0]
    with pytest.raises(Refused, match="is not a free slot"):
        services.course_schedule_harvest(
            course=eligible,
            by=coordinator,
            scheduled_at=chain.harvest.starts_at + dt.timedelta(hours=1),
            place="Suite",
        )
    assert not Reservation.objects.exists()


def test_a_site_without_calendars_books_by_time_as_before(eligible, coordinator):
    when = timezone.now() + dt.timedelta(days=3)
    services.course_schedule_harvest(course=eligible, by=coordinator, scheduled_at=when, place="X")
    assert eligible.state == CourseState.HARVEST_SCHEDULED
    assert not Reservation.objects.exists()


# The chain follows each slip.


def _harvest(course, chain, pathway):
    with time_machine.travel(chain.harvest.starts_at + dt.timedelta(hours=1), tick=False):
        services.course_record_harvest(
            course=course,
            by=pathway.clinician,
            performed_at=timezone.now(),
            operator=pathway.clinician,
        )


def _receive(course, chain, pathway, *, after=dt.timedelta(hours=6), temperature="4.5"):
    with time_machine.travel(chain.harvest.starts_at + after, tick=False):
        services.course_receive_at_lab(
            course=course,
            scanned_coi_id=course.coi_id,
            by=pathway.lab,
            received_at=timezone.now(),
            temperature_c=Decimal(temperature),
            transit_hours=Decimal(after.total_seconds() / 3600).quantize(Decimal("0.1")),
        )


def _harvest_and_receive(course, chain, pathway):
    _harvest(course, chain, pathway)
    _receive(course, chain, pathway)


@pytest.fixture
def booked(eligible, calendars, coordinator):
    chain = course_chains(eligible)[0]
    _book(eligible, coordinator, chain)
    return eligible, chain


def _chain_alerts(course):
    return Alert.objects.filter(course=course, kind=AlertKind.CHAIN_CHANGED)


def test_a_moved_harvest_takes_its_chain_along(booked, coordinator):
    course, chain = booked
    suite = Resource.objects.get(kind="bronchoscopy")
    later = course_chains(course)[1].harvest  # the next free harvest slot
    visit = Visit.objects.get(course=course, kind=VisitKind.HARVEST)
    visit_reschedule(visit=visit, scheduled_at=later.starts_at, by=coordinator)
    assert _held(course, ReservationPurpose.HARVEST).get().starts_at == later.starts_at
    days = sorted(_held(course, ReservationPurpose.EXPANSION).values_list("starts_at", flat=True))
    later_on = timezone.localdate(later.starts_at, suite.time_zone)
    assert len(days) == 36 and timezone.localdate(days[0], suite.time_zone) == later_on
    assert SlotHold.objects.get(resource=suite, starts_at=chain.harvest.starts_at).held == 0
    # The transplant slot still fits the new release window, so it is kept.
    transplant = _held(course, ReservationPurpose.TRANSPLANT).get()
    moved_on = timezone.localdate(transplant.starts_at, suite.time_zone)
    assert 21 <= (moved_on - later_on).days <= 35
    # The slots and the places held agree.
    assert sum(SlotHold.objects.values_list("held", flat=True)) == _held(course).count()


def test_a_harvest_moved_off_the_calendar_is_refused_and_keeps_its_chain(booked, coordinator):
    course, chain = booked
    visit = Visit.objects.get(course=course, kind=VisitKind.HARVEST)
    with pytest.raises(Refused, match="not a free slot"):
        visit_reschedule(visit=visit, scheduled_at=chain.harvest.starts_at + dt.timedelta(hours=2))
    assert _held(course).count() == 38
    assert sum(SlotHold.objects.values_list("held", flat=True)) == 38


def test_a_cold_chain_rejection_gives_back_the_rest_and_tells_the_coordinator_once(booked, pathway):
    course, chain = booked
    _harvest(course, chain, pathway)
    _receive(course, chain, pathway, temperature="15")  # outside the cold chain: rejected
    assert course.state == CourseState.ELIGIBLE
    # What had begun stays (the harvest, the day's lab place); nothing ahead is held.
    received = chain.harvest.starts_at + dt.timedelta(hours=6)
    assert not _held(course).filter(starts_at__gt=received).exists()
    [alert] = _chain_alerts(course)
    assert "The sample was rejected" in alert.message
    assert "Given back:" in alert.message and "35 expansion days" in alert.message
    assert "provisional transplant" in alert.message
    assert "GMT" in alert.message or "BST" in alert.message
    assert "Earliest new chain: harvest" in alert.message


def test_a_failed_qc_gives_back_the_rest(booked, pathway):
    course, chain = booked
    _harvest_and_receive(course, chain, pathway)
    with time_machine.travel(chain.harvest.starts_at + dt.timedelta(days=10), tick=False):
        services.course_fail_qc(course=course, by=pathway.lab, reason="Mycoplasma positive")
        assert not _held(course).filter(starts_at__gt=timezone.now()).exists()
        assert _held(course, ReservationPurpose.EXPANSION).count() == 11  # days 0 to 10, used
    [alert] = _chain_alerts(course)
    assert "Mycoplasma positive" in alert.message


def test_hold_keeps_the_cells_place_in_the_lab_and_resume_takes_the_transplant_back(
    booked, pathway, coordinator
):
    course, chain = booked
    _harvest_and_receive(course, chain, pathway)
    with time_machine.travel(chain.harvest.starts_at + dt.timedelta(days=5), tick=False):
        services.course_hold(course=course, by=coordinator, reason="Chest infection")
        assert _held(course, ReservationPurpose.EXPANSION).count() == 36
        assert not _held(course, ReservationPurpose.TRANSPLANT).exists()
        services.course_resume(course=course, by=coordinator)
    transplant = _held(course, ReservationPurpose.TRANSPLANT).get()
    assert transplant.starts_at == chain.transplant.starts_at  # still free: the same slot
    assert [a.message.split(".")[0] for a in _chain_alerts(course).order_by("id")] == [
        "The course was put on hold: Chest infection",
        "The course was resumed",
    ]


def test_withdrawal_leaves_nothing_held_ahead(booked, coordinator):
    course, _chain = booked
    services.course_withdraw(course=course, by=coordinator, reason="Moved away")
    assert not _held(course).exists()
    assert not SlotHold.objects.filter(held__gt=0).exists()


def test_release_gives_back_the_lab_days_left_and_the_transplant_books_the_held_slot(
    booked, pathway, coordinator
):
    course, chain = booked
    _harvest_and_receive(course, chain, pathway)
    release_at = chain.harvest.starts_at + dt.timedelta(days=21, hours=-2)
    with time_machine.travel(release_at, tick=False):
        pathway.release(course)
        assert (
            not _held(course, ReservationPurpose.EXPANSION)
            .filter(starts_at__gt=timezone.now())
            .exists()
        )
        services.course_schedule_transplant(
            course=course,
            by=coordinator,
            scheduled_at=chain.transplant.starts_at,
            place="Suite",
        )
    transplant = _held(course, ReservationPurpose.TRANSPLANT).get()
    assert transplant.visit.kind == VisitKind.TRANSPLANT and not transplant.provisional
    assert not _chain_alerts(course).exists()  # nothing slipped


def test_a_transplant_off_the_calendar_is_refused(booked, pathway, coordinator):
    course, chain = booked
    _harvest_and_receive(course, chain, pathway)
    with time_machine.travel(chain.harvest.starts_at + dt.timedelta(days=21, hours=-2), tick=False):
        pathway.release(course)
        with pytest.raises(Refused, match="not a free slot"):
            services.course_schedule_transplant(
                course=course,
                by=coordinator,
                scheduled_at=chain.transplant.starts_at + dt.timedelta(minutes=30),
                place="Suite",
            )
    assert course.state == CourseState.RELEASED
    assert _held(course, ReservationPurpose.TRANSPLANT).get().provisional


# Through the admin.


def test_the_admin_offers_chains_and_books_the_one_picked(client, eligible, calendars, coordinator):
    client.force_login(coordinator)
    url = reverse(
        "admin:pathway_treatmentcourse_transition",
        args=[eligible.pk, "schedule_harvest"],
    )
    page = client.get(url).content.decode()
    chain = course_chains(eligible)[1]
    assert chain.key in page and "provisional transplant" in page and "GMT" in page
    response = client.post(url, {"chain": chain.key, "place": "Suite", "note": ""})
    assert response.status_code == 302
    eligible.refresh_from_db()
    assert eligible.state == CourseState.HARVEST_SCHEDULED
    assert _held(eligible, ReservationPurpose.HARVEST).get().starts_at == chain.harvest.starts_at


def test_the_admin_refuses_a_chain_taken_since_the_page_was_drawn(
    client, eligible, calendars, coordinator
):
    suite, _lab = calendars
    client.force_login(coordinator)
    url = reverse(
        "admin:pathway_treatmentcourse_transition",
        args=[eligible.pk, "schedule_harvest"],
    )
    chain = course_chains(eligible)[0]
    slots_take(resource=suite, slots=[chain.harvest], what="x")
    slots_take(resource=suite, slots=[chain.harvest], what="x")
    response = client.post(url, {"chain": chain.key, "place": "Suite", "note": ""})
    assert response.status_code == 200
    assert "no longer free" in response.content.decode()
    eligible.refresh_from_db()
    assert eligible.state == CourseState.ELIGIBLE and not Reservation.objects.exists()


# The forecast against the transplant slot held.


def test_a_forecast_past_the_provisional_slot_alerts_once_with_a_proposed_slot(booked, pathway):
    from pathway.custody import batch_record_cell_count
    from pathway.selectors import course_dosing_weight

    course, chain = booked
    _harvest_and_receive(course, chain, pathway)
    batch = course.batches.get()
    weight = course_dosing_weight(course=course).weight_kg
    target = float(course.protocol.dose_target_million_per_kg) * float(weight) * 1e6
    with time_machine.travel(batch.received_at + dt.timedelta(days=7.5), tick=False):
        for day in (1, 3, 5, 7):
            viable = target * 2 ** ((day - 28) / 3)  # doubling every 3 days: ready on day 28
            batch_record_cell_count(
                batch=batch,
                by=pathway.lab,
                counted_at=batch.received_at + dt.timedelta(days=day),
                total_cells=round(viable / 0.9),
                viability_pct=Decimal("90"),
            )
    [alert] = Alert.objects.filter(course=course, kind=AlertKind.FORECAST_PAST_TRANSPLANT)
    assert "forecast to reach the target dose" in alert.message and "on day 28" in alert.message
    assert "Proposed new slot:" in alert.message
    proposed_day = int(alert.message.split("Proposed new slot: ")[1].split("(day ")[1][:2])
    assert 28 <= proposed_day <= 35


# Booking the follow-ups against the clinic's calendar.


def _clinic(site):
    clinic = Resource.objects.create(
        name="Lung-function clinic",
        kind=ResourceKind.LUNG_FUNCTION,
        site=site,
        time_zone="Europe/London",
    )
    for weekday in range(5):
        ResourceSession.objects.create(
            resource=clinic, weekday=weekday, starts_at=dt.time(9), ends_at=dt.time(10), capacity=1
        )
    return clinic


@pytest.fixture
def following_up(course, pathway):
    pathway.advance(course, CourseState.FOLLOW_UP)
    return course


def test_book_all_the_follow_ups_proposes_a_free_slot_in_each_window(
    following_up, coordinator, client
):
    from scheduling.chains import follow_ups_proposal

    clinic = _clinic(following_up.site)
    proposal = follow_ups_proposal(course=following_up)
    assert len(proposal) == following_up.protocol.visits.count()
    for visit, slot in proposal:
        day = timezone.localdate(slot.starts_at, clinic.time_zone)
        assert visit.window_opens_on <= day <= visit.window_closes_on
        assert slot.starts_at > timezone.now()
    client.force_login(coordinator)
    url = reverse("admin:pathway_treatmentcourse_follow_ups", args=[following_up.pk])
    page = client.get(url).content.decode()
    assert "Book the ticked follow-ups" in page and ("GMT" in page or "BST" in page)
    leave_out = proposal[-1][0]
    data = {"book": [str(v.pk) for v, _ in proposal[:-1]]} | {
        f"at_{v.pk}": s.starts_at.isoformat() for v, s in proposal
    }
    response = client.post(url, data, follow=True)
    assert "Booked:" in response.content.decode()
    booked = Visit.objects.filter(course=following_up, status="booked", kind="follow_up")
    assert booked.count() == len(proposal) - 1 and leave_out not in booked
    assert (
        Reservation.objects.filter(
            course=following_up, purpose=ReservationPurpose.FOLLOW_UP, released_at__isnull=True
        ).count()
        == len(proposal) - 1
    )
    assert all(v.place == str(clinic) for v in booked)


def test_no_follow_up_is_proposed_inside_its_visits_notice(following_up):
    """A proposal is a booking the patient can keep: never sooner than the visit's notice."""
    from scheduling.chains import follow_ups_proposal

    _clinic(following_up.site)
    visit = Visit.objects.filter(course=following_up, kind="follow_up").order_by("window_opens_on")[
        0
    ]
    visit.protocol_visit.notice_hours = 96
    visit.protocol_visit.save()
    # From the first day of its window: the first 96 hours of it cannot be offered.
    opens = dt.datetime.combine(
        visit.window_opens_on, dt.time(7), tzinfo=following_up.site.time_zone
    )
    proposal = dict(follow_ups_proposal(course=following_up, after=opens))
    slot = proposal[visit]
    assert slot is None or slot.starts_at >= opens + dt.timedelta(hours=96)
    assert slot is not None  # the window is longer than the notice: a later slot is offered


def test_a_follow_up_slot_taken_meanwhile_books_none_of_the_set(following_up, coordinator, client):
    from scheduling.chains import follow_ups_proposal

    clinic = _clinic(following_up.site)
    proposal = follow_ups_proposal(course=following_up)
    slots_take(resource=clinic, slots=[proposal[1][1]], what="x")  # someone else took it
    client.force_login(coordinator)
    url = reverse("admin:pathway_treatmentcourse_follow_ups", args=[following_up.pk])
    data = {"book": [str(v.pk) for v, _ in proposal]} | {
        f"at_{v.pk}": s.starts_at.isoformat() for v, s in proposal
    }
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Nothing was booked" in response.content.decode()
    assert not Visit.objects.filter(course=following_up, status="booked", kind="follow_up")
    assert not Reservation.objects.filter(purpose=ReservationPurpose.FOLLOW_UP).exists()


def test_a_follow_up_moved_off_the_clinics_calendar_is_refused(following_up, coordinator):
    from scheduling.chains import follow_ups_proposal

    _clinic(following_up.site)
    visit, slot = follow_ups_proposal(course=following_up)[0]
    with pytest.raises(Refused, match="not a free slot"):
        visit_reschedule(
            visit=visit, scheduled_at=slot.starts_at + dt.timedelta(minutes=20), by=coordinator
        )


def test_a_withdrawal_gives_back_the_follow_ups_places(following_up, coordinator):
    from scheduling.chains import follow_ups_proposal
    from scheduling.services import follow_ups_book

    _clinic(following_up.site)
    proposal = follow_ups_proposal(course=following_up)
    follow_ups_book(
        course=following_up,
        by=coordinator,
        picks={visit.pk: slot.starts_at for visit, slot in proposal},
    )
    assert sum(SlotHold.objects.values_list("held", flat=True)) == len(proposal)
    services.course_withdraw(course=following_up, by=coordinator, reason="Moved abroad")
    assert not _held(following_up).exists()
    assert sum(SlotHold.objects.values_list("held", flat=True)) == 0
    [alert] = _chain_alerts(following_up)
    assert all(visit.label in alert.message for visit, _ in proposal)


# What the review found.


def test_moving_a_visit_off_the_calendar_in_the_admin_is_refused_beside_the_field(
    booked, client, coordinator
):
    course, chain = booked
    visit = Visit.objects.get(course=course, kind=VisitKind.HARVEST)
    client.force_login(coordinator)
    off = timezone.localtime(chain.harvest.starts_at, course.site.time_zone) + dt.timedelta(hours=2)
    response = client.post(
        reverse("admin:scheduling_visit_change", args=[visit.pk]),
        {
            "scheduled_at_0": off.date().isoformat(),
            "scheduled_at_1": off.strftime("%H:%M"),
            "place": "Suite",
            "deviation_reason": "The patient asked",  # no reason makes a full suite free
        },
    )
    assert response.status_code == 200
    assert "is not a free slot" in response.content.decode()
    visit.refresh_from_db()
    assert visit.scheduled_at == chain.harvest.starts_at
    assert _held(course).count() == 38


def test_a_hold_before_the_harvest_keeps_the_booked_harvest_and_its_lab_days(booked, coordinator):
    course, chain = booked
    services.course_hold(course=course, by=coordinator, reason="Flu")
    assert _held(course, ReservationPurpose.HARVEST).get().starts_at == chain.harvest.starts_at
    assert _held(course, ReservationPurpose.EXPANSION).count() == 36
    assert not _held(course, ReservationPurpose.TRANSPLANT).exists()
    services.course_resume(course=course, by=coordinator)
    assert _held(course).count() == 38
    assert sum(SlotHold.objects.values_list("held", flat=True)) == 38


def test_a_late_receipt_holds_the_lab_days_it_can_and_names_the_one_it_cannot(booked, pathway):
    course, chain = booked
    lab = Resource.objects.get(kind="expansion")
    _harvest(course, chain, pathway)
    # Received a day later, the batch needs one more day at the end, which is full.
    extra_day = chain.expansion[-1].starts_at + dt.timedelta(days=1)
    extra = SlotHold.objects.create(
        resource=lab, starts_at=extra_day, ends_at=extra_day, capacity=3, held=3
    )
    _receive(course, chain, pathway, after=dt.timedelta(days=1, hours=2))
    # Days 0–35 from the receipt are held but the full one; the harvest day is history.
    days = _held(course, ReservationPurpose.EXPANSION)
    assert days.count() == 36 and not days.filter(starts_at=extra.starts_at).exists()
    [alert] = _chain_alerts(course)
    assert f"{timezone.localtime(extra_day, lab.time_zone):%d %b}" in alert.message
    assert "Not held" in alert.message


def test_a_site_without_a_suite_calendar_still_holds_the_labs_days(eligible, coordinator):
    lab = Resource.objects.create(
        name="Lab expansion", kind=ResourceKind.EXPANSION, time_zone="Europe/London"
    )
    for weekday in range(7):
        ResourceSession.objects.create(
            resource=lab, weekday=weekday, starts_at=dt.time(0), ends_at=dt.time(23, 59)
        )
    services.course_schedule_harvest(
        course=eligible,
        by=coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy",
    )
    assert _held(eligible, ReservationPurpose.EXPANSION).count() == 36


def test_hostile_ticks_on_the_follow_ups_page_are_refused_not_a_500(
    following_up, coordinator, client
):
    _clinic(following_up.site)
    client.force_login(coordinator)
    url = reverse("admin:pathway_treatmentcourse_follow_ups", args=[following_up.pk])
    for ticked in (["²"], ["9" * 5000], ["-1", "abc"], ["1e3"]):
        response = client.post(url, {"book": ticked})
        assert response.status_code == 200
    assert not Reservation.objects.exists()


def test_a_site_coordinator_cannot_make_lab_capacity(client, coordinator):
    client.force_login(coordinator)
    response = client.post(
        reverse("admin:scheduling_resource_add"),
        {
            "name": "Our own expansion",
            "kind": "expansion",
            "time_zone": "Europe/London",
            "sessions-TOTAL_FORMS": "0",
            "sessions-INITIAL_FORMS": "0",
            "closures-TOTAL_FORMS": "0",
            "closures-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Resource.objects.filter(kind="expansion").exists()
