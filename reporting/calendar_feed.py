"""A site's visits as an iCalendar feed that staff subscribe to in Outlook, Google or Apple
Calendar, behind a secret link per user and site.

Calendar applications cannot sign in, so the link is the credential: only its SHA-256 is
stored, and it works only while its user is active, still works at the site and may see
visits. What the feed says is read by the calendar provider's servers too, and shown on a
phone's lock screen: an event says what the visit is and when, and links to it in the tracker,
and nothing that identifies the patient. A hospital whose calendars stay on its own
server may add the MRN to each title (`CALENDAR_FEED_SHOWS_MRN`).
"""

import datetime as dt
import hashlib
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.urls import reverse
from django.utils import timezone
from icalendar import Calendar, Event, vDuration

from common.replica import replica_reads
from common.urls import public_url
from common.zones import date_words
from patients.access import user_sites
from patients.models import Site
from scheduling.models import CalendarFeedToken, Visit, VisitKind, VisitStatus

# A month back keeps last month's procedures for context; 400 days ahead covers the protocol's
# follow-ups (the last is due 26 weeks after a transplant that may be months away) with room.
FEED_DAYS_BEFORE = 30
FEED_DAYS_AFTER = 400
# The model stores no end time: long enough to show the slot, not a claim about the theatre.
VISIT_DURATIONS = {
    VisitKind.HARVEST: dt.timedelta(hours=2),
    VisitKind.TRANSPLANT: dt.timedelta(hours=2),
    VisitKind.INFUSION: dt.timedelta(hours=3),  # thaw, an hour's drip, an hour's watch
    VisitKind.FOLLOW_UP: dt.timedelta(hours=1),
}
EVENT_STATUSES = {
    VisitStatus.PLANNED: "TENTATIVE",
    VisitStatus.BOOKED: "CONFIRMED",
    VisitStatus.DONE: "CONFIRMED",
    # Shown struck through where clients do: it did not take place.
    VisitStatus.MISSED: "CANCELLED",
}
# Clients that honour a hint poll hourly; the view lets caches keep a copy for five minutes.
REFRESH_INTERVAL = dt.timedelta(hours=1)
# A feed read every few minutes by several clients would otherwise write a row each time.
MARK_USED_EVERY = dt.timedelta(minutes=1)


def calendar_feed_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def calendar_feed_sites(*, user) -> QuerySet[Site]:
    """The sites whose visits `user` may subscribe to: theirs, if they may see visits."""
    if not user.is_active or not user.has_perm("scheduling.view_visit"):
        return Site.objects.none()
    return user_sites(user)


def calendar_feed_may_subscribe(*, user, site: Site) -> bool:
    return (
        user.is_active
        and user.has_perm("scheduling.view_visit")
        and user_sites(user).filter(pk=site.pk).exists()
    )


def calendar_feed_token_issue(*, user, site: Site) -> str:
    """A new secret link to `site`'s visits for `user`, returned once and never stored.

    Their earlier link to the same site, if any, stops working.
    """
    if not calendar_feed_may_subscribe(user=user, site=site):
        raise PermissionDenied(f"You may not subscribe to the visits of {site}.")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        # One issue at a time per user, so two at once cannot both be the active link.
        get_user_model().objects.select_for_update().get(pk=user.pk)
        CalendarFeedToken.objects.filter(user=user, site=site, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=user
        )
        CalendarFeedToken.objects.create(
            user=user, site=site, token_hash=calendar_feed_token_hash(token), created_at=now
        )
    return token


def calendar_feed_token_revoke(*, feed: CalendarFeedToken, by) -> bool:
    """Stop a link working: its own user or a superuser may. False if it already had."""
    if feed.user_id != by.pk and not by.is_superuser:
        raise PermissionDenied("Only its owner can revoke a calendar link.")
    now = timezone.now()
    revoked = CalendarFeedToken.objects.filter(pk=feed.pk, revoked_at__isnull=True).update(
        revoked_at=now, revoked_by=by
    )
    if revoked:
        feed.revoked_at, feed.revoked_by = now, by
    return bool(revoked)


def calendar_feed_token_resolve(*, token: str) -> CalendarFeedToken | None:
    """The active link a raw token stands for, or None.

    An unknown and a revoked token cost the same single lookup by hash; the owner's access is
    checked again on every read, so leaving the site or the role revokes the link.
    """
    feed = (
        CalendarFeedToken.objects.select_related("user", "site")
        .filter(token_hash=calendar_feed_token_hash(token), revoked_at__isnull=True)
        .first()
    )
    if feed is None:
        return None
    if not calendar_feed_may_subscribe(user=feed.user, site=feed.site):
        # For good: a link that leaked must not come back when its owner does.
        CalendarFeedToken.objects.filter(pk=feed.pk).update(revoked_at=timezone.now())
        return None
    return feed


def calendar_feed_token_mark_used(*, feed: CalendarFeedToken, now: dt.datetime) -> None:
    """Record that the feed was read, at most once a minute, without touching anything else."""
    if feed.last_used_at and now - feed.last_used_at < MARK_USED_EVERY:
        return
    CalendarFeedToken.objects.filter(pk=feed.pk).update(last_used_at=now)
    feed.last_used_at = now


def calendar_feed_visits(*, site: Site, now: dt.datetime):
    """The site's visits the feed shows, with what an event needs, in one query.

    Timed visits whose time falls in the horizon; follow-ups not booked yet (planned) whose
    window overlaps it. Cancelled visits are left out: a subscribed calendar drops them.
    """
    zone = site.time_zone
    starts, ends = (
        now - dt.timedelta(days=FEED_DAYS_BEFORE),
        now + dt.timedelta(days=FEED_DAYS_AFTER),
    )
    history = (
        Visit.history.model.objects.filter(id=OuterRef("pk"))
        .order_by()
        .values("id")
        .annotate(changes=Count("history_id"), last_changed=Max("history_date"))
    )
    visits = (
        Visit.objects.filter(course__site=site)
        .exclude(status=VisitStatus.CANCELLED)
        .filter(
            Q(scheduled_at__gte=starts, scheduled_at__lt=ends)
            | Q(
                kind=VisitKind.FOLLOW_UP,
                status=VisitStatus.PLANNED,
                window_closes_on__gte=timezone.localdate(starts, zone),
                window_opens_on__lte=timezone.localdate(ends, zone),
            )
        )
    )
    # Only what an event shows: the patient is read only for the MRN, where titles carry it. A
    # course reads its state when it is loaded (ConcurrentTransitionMixin): deferring it costs
    # a query each.
    shown = [
        "kind",
        "status",
        "scheduled_at",
        "window_opens_on",
        "window_closes_on",
        "created_at",
        "course__state",
        "protocol_visit__name",
    ]
    related = ["course", "protocol_visit"]
    if settings.CALENDAR_FEED_SHOWS_MRN:
        shown.append("course__patient__mrn")
        related.append("course__patient")
    return (
        visits.select_related(*related)
        .only(*shown)
        .annotate(
            changes=Subquery(history.values("changes")),
            last_changed=Subquery(history.values("last_changed")),
        )
        .order_by("scheduled_at", "id")
    )


def _is_due_only(visit: Visit) -> bool:
    """A planned follow-up's time is only its due date at the transplant's clock time: the
    feed shows it as due over its window until it is booked."""
    return (
        visit.kind == VisitKind.FOLLOW_UP
        and visit.status == VisitStatus.PLANNED
        and visit.window_opens_on is not None
        and visit.window_closes_on is not None
    )


def event_title(visit: Visit) -> str:
    """What the visit is ("Harvest bronchoscopy"), "due: " before a follow-up not booked yet;
    the MRN first only where CALENDAR_FEED_SHOWS_MRN says so. What staff need beyond it is a
    tap away: the event's link opens the visit in the tracker, behind its sign-in."""
    words = [visit.label]
    if settings.CALENDAR_FEED_SHOWS_MRN:
        words.insert(0, f"MRN {visit.course.patient.mrn}")
    return ("due: " if _is_due_only(visit) else "") + " · ".join(words)


def _visit_event(visit: Visit, *, zone, now: dt.datetime, host: str, base_url: str) -> Event:
    label = visit.label
    local = timezone.localtime(visit.scheduled_at, zone)
    link = base_url + reverse("admin:scheduling_visit_change", args=[visit.pk])
    lines = [f"{label}: {visit.get_status_display().lower()}."]
    # A procedure's window is its one day: worth saying only for a follow-up's range.
    if visit.window_opens_on and visit.window_closes_on != visit.window_opens_on:
        lines.append(f"Window opens: {date_words(visit.window_opens_on)}")
        lines.append(f"Window closes: {date_words(visit.window_closes_on)}")
    if _is_due_only(visit):
        lines.append(f"Due: {date_words(local)}. Not booked yet.")
    lines.append(f"In the tracker: {link}")
    event = Event.new(
        uid=f"visit-{visit.pk}@{host}",
        stamp=now,
        # The first history record is the visit's creation: each later one is a change.
        sequence=max((visit.changes or 1) - 1, 0),
        last_modified=visit.last_changed or visit.created_at,
        status=EVENT_STATUSES.get(visit.status, "CONFIRMED"),
        url=link,
        description="\n".join(lines),
    )
    if _is_due_only(visit):
        event.add("SUMMARY", event_title(visit))
        event.add("DTSTART", visit.window_opens_on)
        # All-day ends are exclusive: the day after the window closes.
        event.add("DTEND", visit.window_closes_on + dt.timedelta(days=1))
        # A window spanning weeks must not mark the coordinator busy for all of them.
        event.add("TRANSP", "TRANSPARENT")
    else:
        event.add("SUMMARY", event_title(visit))
        event.add("DTSTART", visit.scheduled_at.astimezone(dt.UTC))
        event.add("DURATION", VISIT_DURATIONS.get(visit.kind, dt.timedelta(hours=1)))
    return event


@replica_reads(purpose="a calendar feed")
def calendar_feed_ics(*, site: Site, now: dt.datetime) -> bytes:
    """The site's visits from FEED_DAYS_BEFORE ago to FEED_DAYS_AFTER ahead, as iCalendar,
    read from the replica when it is fit to (the link itself is checked on the primary, so a
    revoked one stops at once).

    Times are in UTC (exact instants, no VTIMEZONE to carry); X-WR-TIMEZONE tells clients
    which zone the site works in. Each visit keeps its UID, and moving it raises its
    SEQUENCE and LAST-MODIFIED, so clients move the event instead of adding another.
    """
    base_url = public_url("")
    host = urlsplit(base_url).hostname or "pathway-tracker"
    zone = site.time_zone
    calendar = Calendar.new(
        prodid="-//Pathway tracker//Visits feed//EN",
        method="PUBLISH",
        uid=f"site-{site.pk}@{host}",
        name=f"{site.name}: pathway visits",
        refresh_interval=REFRESH_INTERVAL,
    )
    calendar.add("CALSCALE", "GREGORIAN")
    calendar.add("X-WR-TIMEZONE", str(zone))
    calendar.add("X-PUBLISHED-TTL", vDuration(REFRESH_INTERVAL))
    for visit in calendar_feed_visits(site=site, now=now):
        calendar.add_component(
            _visit_event(visit, zone=zone, now=now, host=host, base_url=base_url)
        )
    return calendar.to_ical()
