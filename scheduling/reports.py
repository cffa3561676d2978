"""The weekly status report: what happened in an ISO week and what comes next, for one site
or all of them, computed in the database in a fixed number of queries."""

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    Case,
    Count,
    DateField,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Value,
    When,
)
from django.template.loader import render_to_string
from django.utils import timezone

from pathway.models import (
    TRANSITIONS,
    Batch,
    BatchStatus,
    OutcomeMeasure,
    TransitionLog,
    TreatmentCourse,
)
from pathway.outcomes import MedianDuration, cohort_outcomes
from pathway.states import CourseState
from patients.models import AdverseEvent, Site
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    Alert,
    Channel,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Visit,
)

UPCOMING_DAYS = 14
THROUGHPUT_WEEKS = 13
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def week_label(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(week: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Monday 00:00 to the next Monday 00:00 of ISO week `2026-W48`, in `zone`."""
    match = _WEEK.match(week or "")
    if not match:
        raise ValueError(f"A week looks like 2026-W48, not {week!r}.")
    try:
        monday = dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ValueError(f"{week} is not a week of that year.") from None
    start = dt.datetime.combine(monday, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(monday + dt.timedelta(weeks=1), dt.time(0), tzinfo=zone)
    return start, end


def previous_week(now: dt.datetime, zone: ZoneInfo) -> str:
    return week_label(timezone.localdate(now, zone) - dt.timedelta(weeks=1))


@dataclass
class WeeklyReport:
    week: str
    site: Site | None
    start: dt.datetime
    end: dt.datetime
    courses_by_state: list[tuple[str, int]]
    referrals: int
    transitions: list[tuple[str, int]]
    completions: int
    upcoming: list[Visit]
    overdue_visits: list[Visit]
    open_alerts: list[Alert]
    batches_in_expansion: list[Batch]
    outcomes: list[dict]
    adverse_events_by_grade: list[tuple[int, int, int]]
    reminders: dict[str, int]
    throughput_days: list[tuple[str, float | None]]

    def courses(self):
        """The courses in scope, read only when the CSV asks: a national programme has 100,000."""
        sites = [self.site] if self.site else Site.objects.all()
        return (
            TreatmentCourse.objects.filter(site__in=sites)
            .select_related("patient", "site")
            .order_by("site__code", "pk")
        )

    @property
    def scope(self) -> str:
        return self.site.name if self.site else "All sites"

    @property
    def zone(self) -> ZoneInfo:
        return self.site.time_zone if self.site else ZoneInfo(settings.TIME_ZONE)


def _local_today_by_site(sites, at: dt.datetime, path: str) -> Case:
    return Case(
        *(When(**{path: s.pk}, then=Value(timezone.localdate(at, s.time_zone))) for s in sites),
        output_field=DateField(),
    )


def weekly_report(*, week: str, site: Site | None = None) -> WeeklyReport:
    """The report for ISO `week`, for `site` or (None) across all sites."""
    zone = site.time_zone if site else ZoneInfo(settings.TIME_ZONE)
    start, end = week_bounds(week, zone)
    sites = [site] if site else list(Site.objects.all())
    courses = TreatmentCourse.objects.filter(site__in=sites)

    states = dict(courses.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    logs = TransitionLog.objects.filter(course__site__in=sites, at__gte=start, at__lt=end)
    moved = dict(
        logs.values_list("transition").annotate(n=Count("id")).values_list("transition", "n")
    )
    visits = Visit.objects.filter(course__site__in=sites).select_related(
        "course__patient", "course__site", "protocol_visit"
    )
    upcoming = visits.filter(
        status__in=OPEN_VISIT_STATUSES,
        scheduled_at__gte=end,
        scheduled_at__lt=end + dt.timedelta(days=UPCOMING_DAYS),
    ).order_by("scheduled_at")
    overdue = (
        visits.filter(status__in=OPEN_VISIT_STATUSES)
        .annotate(site_day=_local_today_by_site(sites, end, "course__site_id"))
        .filter(window_closes_on__lt=F("site_day"))
        .order_by("window_closes_on")
    )
    alerts = (
        Alert.objects.filter(site__in=sites, created_at__lt=end)
        .filter(Q(acknowledged_at__isnull=True) | Q(acknowledged_at__gte=end))
        .select_related("course__patient", "site")
        .order_by("created_at")
    )
    batches = (
        Batch.objects.filter(course__site__in=sites, received_at__lt=end)
        .filter(Q(status=BatchStatus.EXPANDING) | Q(released_at__gte=end))
        .exclude(status__in=[BatchStatus.REJECTED, BatchStatus.FAILED_QC])
        .select_related("course__site", "course__protocol", "course__patient")
        .order_by("received_at")
    )
    grades = AdverseEvent.objects.filter(course__site__in=sites, onset_on__lt=end.date()).aggregate(
        **{
            f"week_{g}": Count("id", filter=Q(grade=g, onset_on__gte=start.date()))
            for g in range(1, 6)
        },
        **{f"all_{g}": Count("id", filter=Q(grade=g)) for g in range(1, 6)},
    )
    reminders = Notification.objects.filter(
        template=NotificationTemplate.VISIT_REMINDER, patient__site__in=sites
    ).aggregate(
        sent=Count("id", filter=Q(sent_at__gte=start, sent_at__lt=end)),
        failed=Count("id", filter=Q(failed_at__gte=start, failed_at__lt=end)),
        pending=Count("id", filter=Q(status=NotificationStatus.PENDING)),
    )
    return WeeklyReport(
        week=week,
        site=site,
        start=start,
        end=end,
        courses_by_state=[(state.label, states.get(state.value, 0)) for state in CourseState],
        referrals=courses.filter(referred_at__gte=start, referred_at__lt=end).count(),
        transitions=[(label, moved[name]) for name, label in TRANSITIONS if moved.get(name)],
        completions=moved.get("complete", 0),
        upcoming=list(upcoming),
        overdue_visits=list(overdue),
        open_alerts=list(alerts),
        batches_in_expansion=list(batches),
        outcomes=cohort_outcomes(courses=courses),
        adverse_events_by_grade=[(g, grades[f"week_{g}"], grades[f"all_{g}"]) for g in range(1, 6)],
        reminders=reminders,
        throughput_days=_throughput(courses, end),
    )


STEPS = (
    ("Referral → harvest", "referred_at", "harvested_at"),
    ("Harvest → release", "harvested_at", "released_at"),
    ("Release → transplant", "released_at", "transplanted_at"),
)


def _throughput(courses, end: dt.datetime) -> list[tuple[str, float | None]]:
    """Median days between steps, over courses that took the later step in the last 13 weeks."""
    since = end - dt.timedelta(weeks=THROUGHPUT_WEEKS)
    medians = courses.aggregate(
        **{
            f"step{i}": MedianDuration(
                ExpressionWrapper(F(later) - F(earlier), output_field=DurationField()),
                filter=Q(
                    **{f"{later}__gte": since, f"{later}__lt": end, f"{earlier}__isnull": False}
                ),
            )
            for i, (_, earlier, later) in enumerate(STEPS)
        }
    )
    result = []
    for i, (label, _, _) in enumerate(STEPS):
        value = medians[f"step{i}"]
        if isinstance(value, int | float):  # SQLite hands back microseconds
            value = dt.timedelta(microseconds=value)
        result.append((label, None if value is None else round(value.total_seconds() / 86400, 1)))
    return result


def report_csv(report: WeeklyReport) -> str:
    """The underlying rows: one per course in scope, with its steps' dates."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "course",
            "site",
            "mrn",
            "state",
            "days_in_state",
            "referred_on",
            "harvested_on",
            "released_on",
            "transplanted_on",
            "coi_id",
        ]
    )
    for course in report.courses().iterator(chunk_size=2000):
        zone = course.site.time_zone

        def day(value, zone=zone):
            return timezone.localdate(value, zone).isoformat() if value else ""

        writer.writerow(
            [
                course.pk,
                course.site.code,
                course.patient.mrn,
                course.state,
                course.days_in_state,
                day(course.referred_at),
                day(course.harvested_at),
                day(course.released_at),
                day(course.transplanted_at),
                course.coi_id or "",
            ]
        )
    return out.getvalue()


def report_chart_png(report: WeeklyReport) -> bytes:
    """Courses by state, and the latest follow-up's outcomes against the reference figures."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    states, outcomes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    labels = [label for label, _ in report.courses_by_state]
    counts = [count for _, count in report.courses_by_state]
    states.barh(labels[::-1], counts[::-1], color="#417690")
    states.set_title(f"Courses by state: {report.scope}")
    states.set_xlabel("courses")

    latest = next(
        (row for row in reversed(report.outcomes) if row["measures"]["walk_m"]["summary"].n), None
    )
    if latest:
        names, means, errors, references = [], [], [], []
        for key, label in (
            ("dlco_relative_pct", "DLCO %"),
            ("walk_m", "6MWD m"),
            ("fev1_ml", "FEV1 mL"),
        ):
            summary = latest["measures"][key]["summary"]
            reported = [
                r.value for r in latest["measures"][key]["references"] if r.kind == "reported"
            ]
            names.append(label)
            means.append(summary.mean or 0)
            errors.append((summary.ci_high - summary.mean) if summary.ci_high is not None else 0)
            references.append(float(reported[0]) if reported else None)
        outcomes.bar(
            names, means, yerr=errors, color="#79aec8", capsize=4, label="programme (95 % CI)"
        )
        for x, value in enumerate(references):
            if value is not None:
                outcomes.plot([x - 0.4, x + 0.4], [value, value], color="#ba2121", linewidth=2)
        outcomes.set_title(f"{latest['visit']}: change (red: published)", fontsize=10)
        outcomes.axhline(0, color="#999", linewidth=0.5)
    else:
        outcomes.text(0.5, 0.5, "No follow-up measured yet", ha="center", va="center")
        outcomes.set_axis_off()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def report_context(report: WeeklyReport) -> dict:
    """What the report's templates read, with the per-row figures worked out."""
    batches = []
    for batch in report.batches_in_expansion:
        zone, protocol = batch.course.site.time_zone, batch.course.protocol
        received_on = timezone.localdate(batch.received_at, zone)
        opens, closes = protocol.release_window(received_on)
        batches.append(
            {
                "batch": batch,
                "day": (
                    timezone.localdate(report.end - dt.timedelta(seconds=1), zone) - received_on
                ).days,
                "opens": opens,
                "closes": closes,
            }
        )
    outcomes = []
    for row in report.outcomes:
        lines = [
            {"label": OutcomeMeasure(key).label, **values}
            for key, values in row["measures"].items()
            if values["summary"].n
        ]
        if lines:
            outcomes.append({"visit": row["visit"], "lines": lines})
    return {
        "report": report,
        "last_day": report.end - dt.timedelta(days=1),
        "upcoming_days": UPCOMING_DAYS,
        "throughput_weeks": THROUGHPUT_WEEKS,
        "batches": batches,
        "outcomes": outcomes,
    }


def report_html(report: WeeklyReport) -> str:
    return render_to_string("scheduling/report/body.html", report_context(report))


def report_text(report: WeeklyReport) -> str:
    return render_to_string("scheduling/report/email.txt", report_context(report))


# Reports go out on Monday at 07:00 in each site's own time, for the week just ended.
SEND_WEEKDAY, SEND_TIME = 0, dt.time(7, 0)
PROGRAMME_LEAD_GROUP = "programme lead"


def _due_week(now: dt.datetime, zone: ZoneInfo) -> str | None:
    """The week whose report is due at `now` in `zone`: last week, once Monday 07:00 has come."""
    local = now.astimezone(zone)
    monday = local.date() - dt.timedelta(days=local.weekday() - SEND_WEEKDAY)
    if local < dt.datetime.combine(monday, SEND_TIME, tzinfo=zone):
        return None
    return week_label(monday - dt.timedelta(weeks=1))


def _report_notification(week: str, site: Site | None, user) -> Notification:
    scope = site.code if site else "all"
    return Notification(
        template=NotificationTemplate.WEEKLY_REPORT,
        channel=Channel.EMAIL,
        user=user,
        report_week=week,
        report_site=site,
        send_after=timezone.now(),
        idempotency_key=f"weekly.{week}.{scope}.u{user.pk}",
    )


def weekly_reports_queue(*, now: dt.datetime | None = None) -> int:
    """Put each due weekly report in the outbox, once per recipient and week.

    Safe to run as often as beat likes: the idempotency key turns a repeat into nothing.
    Returns how many rows it offered (existing ones are skipped by the database)."""
    now = now or timezone.now()
    rows = []
    for site in Site.objects.prefetch_related("coordinators"):
        week = _due_week(now, site.time_zone)
        if week:
            rows += [
                _report_notification(week, site, user)
                for user in site.coordinators.all()
                if user.is_active and user.email
            ]
    week = _due_week(now, ZoneInfo(settings.TIME_ZONE))
    if week:
        leads = (
            get_user_model()
            .objects.filter(groups__name=PROGRAMME_LEAD_GROUP, is_active=True)
            .exclude(email="")
        )
        rows += [_report_notification(week, None, user) for user in leads]
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
