"""A site's visits as a calendar feed: a secret link per user and site, what each visit is and
when, nothing that identifies the patient (the MRN only where a setting asks for it), one query
for the visits however many there are."""

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from icalendar import Calendar

from pathway import services
from pathway.models import Protocol
from reporting.calendar_feed import (
    calendar_feed_ics,
    calendar_feed_token_hash,
    calendar_feed_token_issue,
    calendar_feed_token_resolve,
    calendar_feed_token_revoke,
)
from scheduling.models import CalendarFeedToken, Visit, VisitKind, VisitStatus
from scheduling.services import visit_book, visit_reschedule
from tests.factories import PatientFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

NEW_YORK = ZoneInfo("America/New_York")
# Spring 2026: New York is already on summer time (since 8 March), so local 09:30 is 13:30 UTC.
NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC)
HARVEST_AT = dt.datetime(2026, 4, 2, 9, 30, tzinfo=NEW_YORK)
PATIENT = {
    "first_name": "Zebedeeka",
    "last_name": "Quixoticanary",
    "email": "canary.quixoticanary@example.com",
    "phone": "+447911999888",
    "mrn": "100042",
    "date_of_birth": dt.date(1951, 7, 7),
}


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def site(coordinator):
    return SiteFactory(code="NYC", name="Manhattan Chest Clinic", time_zone="America/New_York")


@pytest.fixture
def other_site(coordinator):
    return SiteFactory(code="OTH", name="Other Clinic")


@pytest.fixture
def patient(site):
    return PatientFactory(site=site, **PATIENT)


@pytest.fixture
def harvest(patient, coordinator):
    course = services.course_create(patient=patient, by=coordinator)
    return visit_book(
        course=course, kind=VisitKind.HARVEST, scheduled_at=HARVEST_AT, place="Endoscopy 2"
    )


@pytest.fixture
def follow_up(harvest):
    """A follow-up not booked yet: due 12 weeks on, in a window of ±14 days."""
    protocol_visit = Protocol.objects.get(is_default=True).visits.get(weeks_after_transplant=12)
    due_on = dt.date(2026, 7, 1)
    return Visit.objects.create(
        course=harvest.course,
        kind=VisitKind.FOLLOW_UP,
        protocol_visit=protocol_visit,
        scheduled_at=dt.datetime(2026, 7, 1, 10, 0, tzinfo=NEW_YORK),
        window_opens_on=due_on - dt.timedelta(days=14),
        window_closes_on=due_on + dt.timedelta(days=14),
        status=VisitStatus.PLANNED,
    )


def feed_url(token):
    return reverse("calendar-feed", args=[token])


def read_feed(client, token):
    response = client.get(feed_url(token))
    assert response.status_code == 200, response.status_code
    return response, Calendar.from_ical(response.content)


def events_by_uid(calendar):
    return {str(event["UID"]): event for event in calendar.walk("VEVENT")}


def uid_of(visit):
    return f"visit-{visit.pk}@localhost"


def unfolded(content: bytes) -> bytes:
    """The feed with iCalendar's 75-octet line folding undone, so no word hides across a fold."""
    return content.replace(b"\r\n ", b"")


def test_the_feed_holds_the_sites_visits_at_their_instant(client, coordinator, harvest):
    token = calendar_feed_token_issue(user=coordinator, site=harvest.course.site)
    response, calendar = read_feed(client, token)
    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    assert response["Cache-Control"] == "private, max-age=300"
    assert str(calendar["X-WR-CALNAME"]).startswith("Manhattan Chest Clinic")
    assert str(calendar["X-WR-TIMEZONE"]) == "America/New_York"
    assert "REFRESH-INTERVAL" in calendar
    event = events_by_uid(calendar)[uid_of(harvest)]
    start = event.decoded("DTSTART")
    assert start.tzinfo is not None
    assert start == HARVEST_AT == dt.datetime(2026, 4, 2, 13, 30, tzinfo=dt.UTC)
    assert event.decoded("DURATION") == dt.timedelta(hours=2)
    assert str(event["SUMMARY"]) == "Harvest bronchoscopy"
    assert str(event["STATUS"]) == "CONFIRMED"
    assert event.decoded("DTSTAMP") == NOW
    assert reverse("admin:scheduling_visit_change", args=[harvest.pk]) in str(event["DESCRIPTION"])


def test_a_follow_up_not_booked_is_due_all_day_over_its_window(client, coordinator, follow_up):
    token = calendar_feed_token_issue(user=coordinator, site=follow_up.course.site)
    _, calendar = read_feed(client, token)
    event = events_by_uid(calendar)[uid_of(follow_up)]
    assert str(event["SUMMARY"]) == "due: 12-week lung function"
    assert event.decoded("DTSTART") == dt.date(2026, 6, 17)
    assert event.decoded("DTEND") == dt.date(2026, 7, 16)  # all-day ends are exclusive
    assert str(event["TRANSP"]) == "TRANSPARENT"
    assert str(event["STATUS"]) == "TENTATIVE"
    description = str(event["DESCRIPTION"])
    assert "Window opens: Wed 17 Jun 2026" in description
    assert "Window closes: Wed 15 Jul 2026" in description


FORBIDDEN = [
    PATIENT["first_name"],
    PATIENT["last_name"],
    PATIENT["email"],
    PATIENT["phone"],
    "7911999888",
    "1951-07-07",
    "19510707",
    "07/07/1951",
    "COPD",
    "emphysema",
    "Endoscopy 2",  # the place
]


def test_nothing_that_identifies_the_patient_is_in_the_feed(client, coordinator, follow_up):
    """A subscribed calendar is read by its provider and shown on a phone's lock screen."""
    token = calendar_feed_token_issue(user=coordinator, site=follow_up.course.site)
    response, _ = read_feed(client, token)
    content = unfolded(response.content)
    assert b"Harvest bronchoscopy" in content
    for text in [PATIENT["mrn"], *FORBIDDEN]:
        assert text.lower().encode() not in content.lower(), text


def test_a_hospitals_own_calendar_server_may_have_the_mrn_in_titles(
    client, coordinator, follow_up, harvest, settings
):
    settings.CALENDAR_FEED_SHOWS_MRN = True
    token = calendar_feed_token_issue(user=coordinator, site=follow_up.course.site)
    response, calendar = read_feed(client, token)
    events = events_by_uid(calendar)
    assert str(events[uid_of(harvest)]["SUMMARY"]) == "MRN 100042 · Harvest bronchoscopy"
    assert str(events[uid_of(follow_up)]["SUMMARY"]) == "due: MRN 100042 · 12-week lung function"
    content = unfolded(response.content)
    for text in FORBIDDEN:  # the MRN, and still nothing else
        assert text.lower().encode() not in content.lower(), text


def test_another_sites_visits_are_not_in_the_feed(client, coordinator, harvest, other_site):
    other_patient = PatientFactory(site=other_site, mrn="900009")
    other_course = services.course_create(patient=other_patient, by=coordinator)
    elsewhere = visit_book(
        course=other_course, kind=VisitKind.HARVEST, scheduled_at=HARVEST_AT, place="Theatre"
    )
    token = calendar_feed_token_issue(user=coordinator, site=harvest.course.site)
    response, calendar = read_feed(client, token)
    assert set(events_by_uid(calendar)) == {uid_of(harvest)}
    assert uid_of(elsewhere).encode() not in response.content
    assert b"900009" not in response.content


def test_cancelled_visits_and_those_beyond_the_horizon_are_left_out(client, coordinator, harvest):
    course = harvest.course
    shown = Visit.objects.create(
        course=course,
        kind=VisitKind.FOLLOW_UP,
        scheduled_at=NOW - dt.timedelta(days=29),
        status=VisitStatus.DONE,
    )
    for scheduled_at, status in (
        (HARVEST_AT + dt.timedelta(days=1), VisitStatus.CANCELLED),
        (NOW - dt.timedelta(days=31), VisitStatus.DONE),
        (NOW + dt.timedelta(days=401), VisitStatus.BOOKED),
    ):
        Visit.objects.create(
            course=course, kind=VisitKind.FOLLOW_UP, scheduled_at=scheduled_at, status=status
        )
    token = calendar_feed_token_issue(user=coordinator, site=course.site)
    _, calendar = read_feed(client, token)
    assert set(events_by_uid(calendar)) == {uid_of(harvest), uid_of(shown)}


def feed_of(token):
    return CalendarFeedToken.objects.get(token_hash=calendar_feed_token_hash(token))


def test_unknown_revoked_and_no_longer_allowed_links_are_not_found_alike(
    client, coordinator, harvest
):
    site = harvest.course.site
    unknown = client.get(feed_url("not-a-token-anyone-was-given"))
    assert unknown.status_code == 404

    revoked = calendar_feed_token_issue(user=coordinator, site=site)
    assert calendar_feed_token_revoke(feed=feed_of(revoked), by=coordinator) is True
    assert calendar_feed_token_revoke(feed=feed_of(revoked), by=coordinator) is False
    response = client.get(feed_url(revoked))
    assert response.status_code == 404
    assert response.content == unknown.content

    token = calendar_feed_token_issue(user=coordinator, site=site)
    read_feed(client, token)
    site.members.remove(coordinator)
    assert client.get(feed_url(token)).status_code == 404
    assert calendar_feed_token_resolve(token=token) is None

    site.members.add(coordinator)  # back at the site: the old link stays revoked
    assert client.get(feed_url(token)).status_code == 404
    assert feed_of(token).revoked_at is not None

    token = calendar_feed_token_issue(user=coordinator, site=site)
    read_feed(client, token)
    coordinator.is_active = False
    coordinator.save(update_fields=["is_active"])
    assert client.get(feed_url(token)).status_code == 404


def test_a_new_link_revokes_the_users_earlier_one_for_that_site(client, coordinator, harvest):
    site = harvest.course.site
    first = calendar_feed_token_issue(user=coordinator, site=site)
    second = calendar_feed_token_issue(user=coordinator, site=site)
    assert client.get(feed_url(first)).status_code == 404
    read_feed(client, second)
    assert CalendarFeedToken.objects.filter(user=coordinator, revoked_at__isnull=True).count() == 1
    revoked = CalendarFeedToken.objects.get(revoked_at__isnull=False)
    assert revoked.revoked_by == coordinator and revoked.revoked_at == NOW


def test_only_the_owner_or_a_superuser_revokes_a_link(coordinator, clinician, harvest):
    token = calendar_feed_token_issue(user=coordinator, site=harvest.course.site)
    with pytest.raises(PermissionDenied):
        calendar_feed_token_revoke(feed=feed_of(token), by=clinician)
    admin = UserFactory(username="root", is_superuser=True)
    assert calendar_feed_token_revoke(feed=feed_of(token), by=admin) is True


def test_a_link_is_issued_only_for_a_site_the_user_works_at(coordinator, lab, other_site, site):
    other_site.members.remove(coordinator)
    with pytest.raises(PermissionDenied):
        calendar_feed_token_issue(user=coordinator, site=other_site)
    with pytest.raises(PermissionDenied):  # lab staff do not see visits
        calendar_feed_token_issue(user=lab, site=site)


def test_a_moved_visit_moves_and_its_sequence_and_last_modified_go_up(
    client, coordinator, harvest, clock
):
    token = calendar_feed_token_issue(user=coordinator, site=harvest.course.site)
    _, before = read_feed(client, token)
    clock.shift(dt.timedelta(hours=2))
    moved_to = HARVEST_AT + dt.timedelta(days=3, hours=1)
    visit_reschedule(visit=harvest, scheduled_at=moved_to)
    _, after = read_feed(client, token)
    old, new = events_by_uid(before)[uid_of(harvest)], events_by_uid(after)[uid_of(harvest)]
    assert old.decoded("DTSTART") == HARVEST_AT
    assert new.decoded("DTSTART") == moved_to
    assert new.decoded("SEQUENCE") > old.decoded("SEQUENCE")
    assert new.decoded("LAST-MODIFIED") > old.decoded("LAST-MODIFIED")
    assert new.decoded("LAST-MODIFIED") == NOW + dt.timedelta(hours=2)


def test_the_query_count_does_not_grow_with_the_visits(client, coordinator, harvest, clock):
    def add_visits(n):
        for i in range(n):
            Visit.objects.create(
                course=harvest.course,
                kind=VisitKind.FOLLOW_UP,
                scheduled_at=HARVEST_AT + dt.timedelta(days=7 * (i + 1)),
                status=VisitStatus.BOOKED,
            )

    def queries_for_the_feed():
        clock.shift(dt.timedelta(minutes=5))  # so that each read records its use
        with CaptureQueriesContext(connection) as queries:
            _, calendar = read_feed(client, token)
        return len(queries), len(calendar.walk("VEVENT"))

    token = calendar_feed_token_issue(user=coordinator, site=harvest.course.site)
    add_visits(1)
    few, events = queries_for_the_feed()
    assert events == 2
    add_visits(8)
    many, events = queries_for_the_feed()
    assert events == 10
    assert few == many
    with CaptureQueriesContext(connection) as queries:
        calendar_feed_ics(site=harvest.course.site, now=NOW)
    assert len(queries) == 1


def test_the_raw_token_is_not_stored_only_its_hash(coordinator, site):
    token = calendar_feed_token_issue(user=coordinator, site=site)
    feed = CalendarFeedToken.objects.get()
    assert feed.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(value) for value in CalendarFeedToken.objects.values_list().get()]
    assert not any(token in value for value in stored)
    assert len(token) >= 43  # 32 random bytes, URL-safe base64


def test_reading_the_feed_records_its_use_at_most_once_a_minute(client, coordinator, site, clock):
    token = calendar_feed_token_issue(user=coordinator, site=site)
    read_feed(client, token)
    assert CalendarFeedToken.objects.get().last_used_at == NOW
    clock.shift(dt.timedelta(seconds=30))
    read_feed(client, token)
    assert CalendarFeedToken.objects.get().last_used_at == NOW
    clock.shift(dt.timedelta(seconds=60))
    read_feed(client, token)
    assert CalendarFeedToken.objects.get().last_used_at == NOW + dt.timedelta(seconds=90)


# The admin: each user issues and revokes their own links.


def admin_url(view, *args):
    return reverse(f"admin:scheduling_calendarfeedtoken_{view}", args=args)


def test_a_coordinator_issues_a_link_in_the_admin_and_sees_it_once(
    client, coordinator, harvest, settings
):
    settings.SITE_URL = "https://tracker.clinic.example/"  # links use it, not the request's host
    site = harvest.course.site
    client.force_login(coordinator)
    page = client.get(admin_url("add"))
    assert page.status_code == 200
    assert set(page.context["adminform"].form.fields["site"].queryset) >= {site}
    assert 'name="_addanother"' not in page.content.decode()
    assert 'name="_continue"' not in page.content.decode()
    response = client.post(admin_url("add"), {"site": site.pk})
    assert response.status_code == 200
    [(shown_site, url)] = response.context["links"]
    assert shown_site == site and f'value="{url}"' in response.content.decode()
    assert "/calendar/" not in response.cookies.get("messages", "").__str__()
    assert url.startswith("https://tracker.clinic.example/calendar/") and url.endswith(".ics")
    token = url.rsplit("/", 1)[1].removesuffix(".ics")
    client.logout()
    _, calendar = read_feed(client, token)
    assert f"visit-{harvest.pk}@tracker.clinic.example" in events_by_uid(calendar)
    feed = CalendarFeedToken.objects.get()
    assert feed.user == coordinator and feed.site == site


def test_a_site_the_user_does_not_work_at_is_not_offered(client, coordinator, site, other_site):
    other_site.members.remove(coordinator)
    client.force_login(coordinator)
    page = client.get(admin_url("add"))
    assert other_site not in set(page.context["adminform"].form.fields["site"].queryset)
    client.post(admin_url("add"), {"site": other_site.pk})
    assert not CalendarFeedToken.objects.exists()


def test_users_see_and_revoke_only_their_own_links(client, coordinator, clinician, site):
    calendar_feed_token_issue(user=coordinator, site=site)
    theirs = calendar_feed_token_issue(user=clinician, site=site)
    mine = CalendarFeedToken.objects.get(user=coordinator)
    client.force_login(coordinator)
    listed = client.get(admin_url("changelist"))
    assert [f.pk for f in listed.context["cl"].result_list] == [mine.pk]
    other = CalendarFeedToken.objects.get(user=clinician)
    assert client.get(admin_url("change", other.pk)).status_code in (302, 404)
    client.post(
        admin_url("changelist"),
        {"action": "revoke", "_selected_action": [mine.pk, other.pk]},
    )
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    assert calendar_feed_token_resolve(token=theirs) is not None

    root = UserFactory(username="root", is_superuser=True)
    client.force_login(root)
    listed = client.get(admin_url("changelist"))
    assert {f.pk for f in listed.context["cl"].result_list} == {mine.pk, other.pk}


def test_a_new_link_for_the_same_site_is_issued_from_the_list(client, coordinator, site):
    old = calendar_feed_token_issue(user=coordinator, site=site)
    client.force_login(coordinator)
    response = client.post(
        admin_url("changelist"),
        {"action": "issue_again", "_selected_action": [CalendarFeedToken.objects.get().pk]},
    )
    [(_, url)] = response.context["links"]
    token = url.split("/calendar/", 1)[1].split(".ics", 1)[0]
    assert token != old
    assert calendar_feed_token_resolve(token=old) is None
    assert calendar_feed_token_resolve(token=token).site == site


def test_lab_staff_cannot_issue_links(client, lab):
    client.force_login(lab)
    assert client.get(admin_url("add")).status_code == 403
