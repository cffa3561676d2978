"""Alerts to coordinators: raised once per condition, delivered through the outbox."""

import datetime as dt
import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words
from patients.access import user_sees_all_sites
from patients.models import Site
from scheduling.models import (
    Alert,
    AlertKind,
    AlertRoute,
    Channel,
    Notification,
    NotificationTemplate,
    Severity,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.outbox import notifications_write

logger = logging.getLogger(__name__)


def alert_route_groups(*, site_id: int, kind: str) -> list[int]:
    """The roles (group ids) told of `kind` at a site: its own routes for the kind, else the
    defaults (routes with no site)."""
    routes = list(
        AlertRoute.objects.filter(kind=kind)
        .filter(Q(site_id=site_id) | Q(site__isnull=True))
        .values_list("site_id", "group_id")
    )
    own = [group for site, group in routes if site == site_id]
    return own or [group for site, group in routes if site is None]


COORDINATOR_GROUP = "coordinator"


def alerts_for(user) -> Q:
    """The alerts `user` sees and may act on, as a filter on alerts at their sites: every
    alert for the site's coordinators (and whoever sees every site); for others, the kinds
    routed to one of their roles at the alert's site (`AlertRoute`, data a site changes; the
    defaults send clinical alerts to clinicians and manufacturing ones to the lab). The
    worklist, the alert list and the acknowledge and snooze views all ask this."""
    if user_sees_all_sites(user) or user.groups.filter(name=COORDINATOR_GROUP).exists():
        return Q()
    everything_at = Q(site__in=user.coordinated_sites.values("pk"))
    groups = list(user.groups.values_list("pk", flat=True))
    routes = list(AlertRoute.objects.values_list("kind", "site_id", "group_id"))
    own_sites_by_kind: dict[str, set[int]] = {}
    for kind, site_id, _group in routes:
        if site_id is not None:
            own_sites_by_kind.setdefault(kind, set()).add(site_id)
    seen = Q(pk__in=[])
    for kind, site_id, group in routes:
        if group not in groups:
            continue
        if site_id is not None:
            seen |= Q(kind=kind, site_id=site_id)
        else:  # the default, at every site with no route of its own for the kind
            seen |= Q(kind=kind) & ~Q(site_id__in=own_sites_by_kind.get(kind, set()))
    return everything_at | seen


def alert_may_act(*, user, alert: Alert) -> bool:
    """Whether `user` sees `alert` and may acknowledge or snooze it (`alerts_for`)."""
    return (
        user.has_perm("scheduling.change_alert")
        and Alert.objects.filter(alerts_for(user), pk=alert.pk).exists()
    )


def alert_roles_words(*, alert: Alert) -> str:
    """Who an alert is for, in words: "the coordinator or clinician roles"."""
    names = {COORDINATOR_GROUP} | set(
        Group.objects.filter(
            pk__in=alert_route_groups(site_id=alert.site_id, kind=alert.kind)
        ).values_list("name", flat=True)
    )
    return " or ".join(sorted(names))


def alert_recipients(*, course=None, site=None, kind: str):
    """The patient's coordinator (else the site's coordinators), and the staff of the course's
    site in each role its routes name for the kind (`AlertRoute`, data a site changes). An
    alert about no course (an enquiry) goes to `site`'s coordinators and its routes."""
    User = get_user_model()
    site = course.site if course is not None else site
    coordinator_id = course.patient.coordinator_id if course is not None else None
    users = User.objects.filter(pk=coordinator_id) if coordinator_id else site.coordinators.all()
    groups = alert_route_groups(site_id=site.pk, kind=kind)
    if groups:
        at_site = Q(member_sites=site.pk) | Q(coordinated_sites=site.pk)
        users = users | User.objects.filter(at_site, groups__in=groups)
    return users.filter(is_active=True).exclude(email="").distinct()


def alert_raise(
    *,
    kind: AlertKind,
    course=None,
    condition_key: str,
    message: str,
    severity: Severity = Severity.WARNING,
    visit: Visit | None = None,
    enquiry=None,
) -> tuple[Alert, bool]:
    """Raise an alert unless this condition already has one; email it to whoever must act.
    It is about a course, or about an enquiry (someone not yet a patient) at its site.

    Returns the alert and whether it is new. Safe to call from concurrent scans.
    """
    site = course.site if course is not None else enquiry.site
    max_attempts = (
        course.protocol.delivery_max_attempts
        if course is not None
        else Notification._meta.get_field("max_attempts").default
    )
    existing = Alert.objects.filter(condition_key=condition_key).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind,
                severity=severity,
                course=course,
                enquiry=enquiry,
                site_id=site.pk,
                visit=visit,
                message=message,
                condition_key=condition_key,
            )
            now = timezone.now()
            notifications_write(
                [
                    Notification(
                        template=NotificationTemplate.ALERT,
                        channel=Channel.EMAIL,
                        user=user,
                        alert=alert,
                        send_after=now,
                        max_attempts=max_attempts,
                        idempotency_key=f"alert.a{alert.pk}.u{user.pk}.email",
                    )
                    for user in alert_recipients(course=course, site=site, kind=kind)
                ]
            )
    except IntegrityError:
        return Alert.objects.get(condition_key=condition_key), False
    logger.info("Alert raised: %s", condition_key)
    return alert, True


def _may_act_or_refused(*, alert: Alert, by) -> None:
    if not alert_may_act(user=by, alert=alert):
        roles = alert_roles_words(alert=alert)
        raise Refused([f"This alert is for the {roles} role at {alert.site}: not yours to act on."])


def alert_acknowledge(*, alert: Alert, by, note: str = "") -> bool:
    """Mark an alert as seen by `by`, with what was done about it; returns False if someone
    already had. Refused to whoever the alert is not for (`alert_may_act`), at every entry."""
    _may_act_or_refused(alert=alert, by=by)
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_by=by, acknowledged_at=timezone.now(), acknowledged_note=note.strip()
        )
    )


SNOOZE_CHOICES = {
    "4h": dt.timedelta(hours=4),
    "1d": dt.timedelta(days=1),
    "3d": dt.timedelta(days=3),
}


def alert_snooze(*, alert: Alert, by, until: dt.datetime) -> bool:
    """Take an open alert off the worklist until `until`; it stays open (and counted)."""
    _may_act_or_refused(alert=alert, by=by)
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(snoozed_until=until)
    )


def alerts_scan_overdue_visits(*, now: dt.datetime | None = None) -> int:
    """Raise an alert for each overdue visit; returns how many were new. Running it again
    raises nothing twice."""
    now = now or timezone.now()
    raised = 0
    for site in Site.objects.all():
        today = timezone.localdate(now, site.time_zone)
        overdue_visits = (
            Visit.objects.overdue(sites=[site], at=now)
            .exclude(alerts__kind=AlertKind.VISIT_OVERDUE)
            .select_related("course__patient", "course__site", "course__protocol", "protocol_visit")
        )
        for visit in overdue_visits:
            days = (today - visit.window_closes_on).days
            raised += alert_raise(
                kind=AlertKind.VISIT_OVERDUE,
                course=visit.course,
                visit=visit,
                condition_key=f"visit_overdue.v{visit.pk}",
                message=f"The {visit} is overdue: its window closed {days} day(s) ago, on "
                f"{date_words(visit.window_closes_on)}.",
            )[1]
    return raised


def alerts_scan_follow_ups_to_book(*, course_states, now: dt.datetime | None = None) -> int:
    """Tell the coordinator once, for each follow-up whose window has opened in its site's
    calendar and that nobody has booked yet, of courses in `course_states` (those taking
    appointments); returns how many were new."""
    now = now or timezone.now()
    raised = 0
    for site in Site.objects.all():
        today = timezone.localdate(now, site.time_zone)
        to_book = (
            Visit.objects.filter(
                course__site=site,
                kind=VisitKind.FOLLOW_UP,
                status=VisitStatus.PLANNED,
                window_opens_on__lte=today,
                window_closes_on__gte=today,
                course__state__in=course_states,
            )
            .exclude(alerts__kind=AlertKind.FOLLOW_UP_TO_BOOK)
            .select_related("course__patient", "course__site", "course__protocol", "protocol_visit")
        )
        for visit in to_book:
            raised += alert_raise(
                kind=AlertKind.FOLLOW_UP_TO_BOOK,
                severity=Severity.INFO,
                course=visit.course,
                visit=visit,
                condition_key=f"follow_up_to_book.v{visit.pk}",
                message=f"Book the {visit.label} of {visit.course.patient.mrn}: its window is open "
                f"from {date_words(visit.window_opens_on)} to "
                f"{date_words(visit.window_closes_on)}.",
            )[1]
    return raised
