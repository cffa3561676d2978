"""The weekly status report: what happened in an ISO week and what comes next, for one site
or all of them, computed in the database in a fixed number of queries.

Every figure is as of the end of the week (Monday 00:00 after it, in the report's zone), so a
report read weeks later says what was true then: each course's state is read back from the
transition log, a batch is expanding only if it had been received and not yet released,
rejected or failed by then, an alert counts if it was open then, a visit was overdue if it
was still open then. Outcomes count the follow-ups done before the end, from the changes
stored when they were measured (`reporting.models.FollowUpOutcome`)."""

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
)
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.replica import ReadSource, read_source_primary, reading_from, replica_reads
from pathway.models import (
    TRANSITIONS,
    Batch,
    BatchStatus,
    ReferenceFigure,
    TransitionLog,
    TreatmentCourse,
)
from pathway.states import CourseState, Therapy
from pathway.therapies import PATHWAYS, pathway_of
from patients.access import PROGRAMME_LEAD_GROUP
from patients.models import AdverseEvent, Site
from reporting.funnel import FunnelRow, enquiry_funnel, funnel_rows
from reporting.models import WeeklyFigures
from reporting.outcomes import MedianDuration, cohort_outcomes
from reporting.statistics import Summary
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    Alert,
    Channel,
    Notification,
    NotificationTemplate,
    Visit,
    VisitStatus,
)
from scheduling.outbox import notifications_write
from scheduling.outbox_archive import reminder_counts

# The report lists the visits booked in the two weeks after its week.
LOOKAHEAD_DAYS = 14
THROUGHPUT_WEEKS = 13
# Each list shows its most pressing rows and says how many there are in all: across a
# national programme a list of every open alert is neither readable nor quick to build.
LIST_ROWS = 100
# Reports go out on Monday at 07:00 in each site's own time, for the week just ended; a week's
# figures are kept from then on.
SEND_WEEKDAY, SEND_TIME = 0, dt.time(7, 0)
_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})", re.ASCII)
FIRST_YEAR, LAST_YEAR = 1900, 2999


def week_label(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(week: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Monday 00:00 to the next Monday 00:00 of ISO week `2026-W48`, in `zone`."""
    # The whole text, ASCII digits only: "2026-W10\n" or other scripts' digits would name the
    # same week under another label, and a kept week is found by its label.
    match = _WEEK.fullmatch(week or "")
    if not match:
        raise ValueError(f"A week looks like 2026-W48, not {week!r}.")
    if not FIRST_YEAR <= int(match[1]) <= LAST_YEAR:
        # Far years overflow a date once moved to UTC or a week on.
        raise ValueError(f"Choose a week between {FIRST_YEAR} and {LAST_YEAR}, not {week}.")
    try:
        monday = dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ValueError(f"{week} is not a week of that year.") from None
    start = dt.datetime.combine(monday, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(monday + dt.timedelta(weeks=1), dt.time(0), tzinfo=zone)
    return start, end


def previous_week(now: dt.datetime, zone: ZoneInfo) -> str:
    return week_label(timezone.localdate(now, zone) - dt.timedelta(weeks=1))


def report_sent_at(week: str, zone: ZoneInfo) -> dt.datetime:
    """When the report of `week` goes out (Monday 07:00 after it, in `zone`), and from when its
    figures are kept."""
    _start, end = week_bounds(week, zone)
    return dt.datetime.combine(end.date() + dt.timedelta(days=SEND_WEEKDAY), SEND_TIME, tzinfo=zone)


def latest_sent_week(now: dt.datetime, zone: ZoneInfo) -> str:
    """The latest week whose report has gone out by `now`: last week, or before Monday 07:00
    the week before it."""
    week = previous_week(now, zone)
    if now < report_sent_at(week, zone):
        week = previous_week(now - dt.timedelta(weeks=1), zone)
    return week


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
    # The state each listed batch's course had at the end, where it has moved on since.
    states_at_end: dict[int, str]
    # How many rows each list has in all (it shows at most LIST_ROWS of them).
    totals: dict[str, int]
    # The therapies the week's courses follow, and each one's median days between its steps.
    therapies: list[str]
    throughput_by_therapy: list[tuple[str, list[tuple[str, float | None]]]]
    # The front door: the last 13 weeks' enquiries and how far they came, per site and therapy.
    funnel: list[FunnelRow]
    # When the figures were worked out, and whether they are a closed week's, kept.
    computed_at: dt.datetime
    kept: bool
    # The zone the week was worked out in (its site's when worked out, if it has moved since).
    zone: ZoneInfo
    # Where it was read from (the replica or the primary), and how far behind that was.
    read_source: ReadSource = dataclasses.field(default_factory=read_source_primary)

    @property
    def throughput_days(self) -> list[tuple[str, float | None]]:
        """Median days between steps, every therapy's, each therapy named where there are
        several."""
        several = len(self.throughput_by_therapy) > 1
        return [
            (f"{pathway_of(therapy).short_name}: {label}" if several else label, days)
            for therapy, rows in self.throughput_by_therapy
            for label, days in rows
        ]

    def state_at_end(self, course) -> str:
        return self.states_at_end.get(course.pk, course.state)

    def courses(self):
        """The courses in scope at the week's end, read only when the CSV asks (a national
        programme has 100,000), from where the figures were read."""
        return (
            _courses_in(self.site)
            .filter(referred_at__lt=self.end)
            .select_related("patient", "site")
            .order_by("site__code", "pk")
            .using(self.read_source.alias)
        )

    def courses_moved_since(self) -> dict[int, str]:
        """The state at the end of every course in scope that has moved since, for the CSV."""
        with reading_from(self.read_source):
            moved = _moved_since(_courses_in(self.site), self.end)
        return {pk: then for pk, (then, _now) in moved.items()}

    @property
    def scope(self) -> str:
        return self.site.name if self.site else "All sites"

    @property
    def week_was_over(self) -> bool:
        """Whether the figures were worked out once the week was over (not as of a moment in
        it)."""
        return self.computed_at >= self.end


def _courses_in(site: Site | None):
    return TreatmentCourse.objects.filter(site=site) if site else TreatmentCourse.objects.all()


def weekly_report(*, week: str, site: Site | None = None, recompute: bool = False) -> WeeklyReport:
    """The report for ISO `week`, for `site` or (None) across all sites.

    A week is worked out once and kept (`WeeklyFigures`) from its report's sending time on
    (Monday 07:00 after it, in its zone), so that the email and every later opening read the
    same figures, one row however large the programme; `recompute` works it out again, to
    take in corrections made since. Before then it is worked out each time and not kept: a
    week not yet over, or one whose last entries may still be coming in."""
    if recompute:
        # Someone acting: the figures must take in the correction just made, on the primary.
        return _weekly_report_read(week=week, site=site, recompute=True)
    # Opened (the page, its CSV, the Monday email): from the replica when it is fit to read.
    with replica_reads(purpose="the weekly report") as source:
        report = _weekly_report_read(week=week, site=site, recompute=False)
    report.read_source = source
    return report


def _weekly_report_read(*, week: str, site: Site | None, recompute: bool) -> WeeklyReport:
    zone = site.time_zone if site else ZoneInfo(settings.TIME_ZONE)
    now = timezone.now()
    if now < report_sent_at(week, zone):
        figures = weekly_figures(week=week, site=site)
        return _report_from(week, site, figures, computed_at=now, kept=False)
    if recompute:
        kept, _ = WeeklyFigures.objects.update_or_create(
            week=week,
            site=site,
            defaults={"figures": weekly_figures(week=week, site=site), "computed_at": now},
        )
    else:
        kept = WeeklyFigures.objects.filter(week=week, site=site).first()
        if kept is None:
            # Two first openings at once both work it out; both read the row written first
            # (get_or_create reads and writes the primary).
            kept, _ = WeeklyFigures.objects.get_or_create(
                week=week,
                site=site,
                defaults={"figures": weekly_figures(week=week, site=site), "computed_at": now},
            )
    return _report_from(week, site, kept.figures, computed_at=kept.computed_at, kept=True)


def weekly_figures(*, week: str, site: Site | None = None) -> dict:
    """Every figure of the report for ISO `week`, as of its end, worked out from the rows:
    plain values a JSON column keeps, with the listed rows by primary key."""
    zone = site.time_zone if site else ZoneInfo(settings.TIME_ZONE)
    start, end = week_bounds(week, zone)
    sites = [site] if site else list(Site.objects.all())
    courses = TreatmentCourse.objects.filter(site__in=sites)
    moved_since = _moved_since(courses, end)
    states = _counts_by_state_at_end(courses, end, moved_since)
    logs = TransitionLog.objects.filter(course__site__in=sites, at__gte=start, at__lt=end)
    moved = dict(
        logs.values_list("transition").annotate(n=Count("id")).values_list("transition", "n")
    )
    visits = Visit.objects.filter(course__site__in=sites, created_at__lt=end)
    # Booked then: still open, or taken place (or missed) since.
    upcoming = visits.filter(
        status__in=[*OPEN_VISIT_STATUSES, VisitStatus.DONE, VisitStatus.MISSED],
        scheduled_at__gte=end,
        scheduled_at__lt=end + dt.timedelta(days=LOOKAHEAD_DAYS),
    ).order_by("scheduled_at", "pk")
    overdue = Visit.objects.overdue_as_of(sites=sites, at=end).order_by("window_closes_on", "pk")
    alerts = (
        Alert.objects.filter(site__in=sites, created_at__lt=end)
        .filter(Q(acknowledged_at__isnull=True) | Q(acknowledged_at__gte=end))
        .order_by("created_at", "pk")
    )
    withdrawn_since = TransitionLog.objects.filter(transition="withdraw", at__gte=end)
    batches = (
        Batch.objects.filter(course__site__in=sites, received_at__lt=end)
        .filter(
            Q(status=BatchStatus.EXPANDING)
            | Q(status=BatchStatus.RELEASED, released_at__gte=end)
            | Q(status=BatchStatus.FAILED_QC, qc_recorded_at__gte=end)
            | Q(status=BatchStatus.DISCARDED, course__in=withdrawn_since.values("course_id"))
        )
        .order_by("received_at", "pk")
    )
    grades = AdverseEvent.objects.filter(course__site__in=sites, onset_on__lt=end.date()).aggregate(
        **{
            f"week_{g}": Count("id", filter=Q(grade=g, onset_on__gte=start.date()))
            for g in range(1, 6)
        },
        **{f"all_{g}": Count("id", filter=Q(grade=g)) for g in range(1, 6)},
    )
    listed_batches = list(batches.values_list("pk", "course_id", "course__state")[:LIST_ROWS])
    therapies = therapies_in(courses, end)
    figures = {
        "zone": str(zone),
        "start": start,
        "end": end,
        "therapies": therapies,
        "courses_by_state": {
            state.value: states.get(state.value, 0) for state in _states_of(therapies)
        },
        "referrals": courses.filter(referred_at__gte=start, referred_at__lt=end).count(),
        "transitions": moved,
        "upcoming": list(upcoming.values_list("pk", flat=True)[:LIST_ROWS]),
        "overdue_visits": list(overdue.values_list("pk", flat=True)[:LIST_ROWS]),
        "open_alerts": list(alerts.values_list("pk", flat=True)[:LIST_ROWS]),
        "batches_in_expansion": [pk for pk, _course, _state in listed_batches],
        "outcomes": [
            {
                **row,
                # Pairs, not an object: jsonb does not keep an object's keys in order.
                "measures": [
                    (
                        key,
                        {
                            "summary": dataclasses.asdict(values["summary"]),
                            "references": [reference.pk for reference in values["references"]],
                        },
                    )
                    for key, values in row["measures"].items()
                ],
            }
            for therapy in therapies
            for row in _therapy_outcomes(courses, therapy, end)
        ],
        "adverse_events_by_grade": [
            (g, grades[f"week_{g}"], grades[f"all_{g}"]) for g in range(1, 6)
        ],
        "reminders": reminder_counts(sites=[site] if site else None, start=start, end=end),
        "funnel": enquiry_funnel(
            sites=sites, start=end - dt.timedelta(weeks=THROUGHPUT_WEEKS), end=end
        ),
        "throughput_days": [
            (f"{therapy}:{label}", days)
            for therapy in therapies
            for label, days in _throughput(courses.filter(protocol__therapy=therapy), end, therapy)
        ],
        # Each listed batch's course's state then, kept: it may move after the figures are.
        # JSON keys are strings: the course's pk is turned back into a number when read.
        "states_at_end": {
            str(course): moved_since.get(course, (state_now,))[0]
            for _pk, course, state_now in listed_batches
        },
        "totals": {
            "upcoming": upcoming.count(),
            "overdue_visits": overdue.count(),
            "open_alerts": alerts.count(),
            "batches_in_expansion": batches.count(),
        },
    }
    # As a JSON column gives them back, so that a kept week reads exactly as a live one.
    return json.loads(json.dumps(figures, cls=DjangoJSONEncoder))


def therapies_in(courses, end: dt.datetime) -> list[str]:
    """The therapies of the courses referred before `end`, in the registry's order; the first
    therapy's alone when there are none, so that an empty report reads as it always has."""
    found = set(
        courses.filter(referred_at__lt=end).values_list("protocol__therapy", flat=True).distinct()
    )
    return [str(t) for t in PATHWAYS if t in found] or [str(next(iter(PATHWAYS)))]


def _states_of(therapies: list[str]) -> list[CourseState]:
    """The states the report counts: those of the therapies in it, in pathway order."""
    wanted = {state for therapy in therapies for state in pathway_of(therapy).states}
    return [state for state in CourseState if state in wanted]


def _therapy_outcomes(courses, therapy: str, end: dt.datetime) -> list[dict]:
    """One therapy's outcomes, against its own published figures; each row says whose."""
    return [
        {**row, "therapy": therapy}
        for row in cohort_outcomes(
            courses=courses.filter(protocol__therapy=therapy), before=end, therapy=therapy
        )
    ]


def _in_order(queryset, pks: list[int]) -> list:
    """The rows of `pks` in that order; a row deleted since is left out."""
    rows = queryset.in_bulk(pks)
    return [rows[pk] for pk in pks if pk in rows]


def _report_from(
    week: str, site: Site | None, figures: dict, *, computed_at: dt.datetime, kept: bool
) -> WeeklyReport:
    """The report read from its figures (kept, or just worked out): the listed rows and the
    published reference figures in one query each."""
    visits = Visit.objects.select_related("course__patient", "course__site", "protocol_visit")
    references = {reference.pk: reference for reference in ReferenceFigure.objects.all()}
    moved = figures["transitions"]
    return WeeklyReport(
        week=week,
        site=site,
        start=parse_datetime(figures["start"]),
        end=parse_datetime(figures["end"]),
        courses_by_state=[
            (state.label, figures["courses_by_state"].get(state.value, 0))
            for state in CourseState
            if state.value in figures["courses_by_state"]
        ],
        referrals=figures["referrals"],
        transitions=[(label, moved[name]) for name, label in TRANSITIONS if moved.get(name)],
        completions=moved.get("complete", 0),
        upcoming=_in_order(visits, figures["upcoming"]),
        overdue_visits=_in_order(visits, figures["overdue_visits"]),
        open_alerts=_in_order(
            Alert.objects.select_related("course__patient", "site"), figures["open_alerts"]
        ),
        batches_in_expansion=_in_order(
            Batch.objects.select_related("course__site", "course__protocol", "course__patient"),
            figures["batches_in_expansion"],
        ),
        outcomes=[
            {
                **row,
                "measures": {
                    key: {
                        "summary": Summary(**values["summary"]),
                        "references": [
                            references[pk] for pk in values["references"] if pk in references
                        ],
                    }
                    for key, values in row["measures"]
                },
            }
            for row in figures["outcomes"]
        ],
        adverse_events_by_grade=[tuple(row) for row in figures["adverse_events_by_grade"]],
        reminders=figures["reminders"],
        therapies=figures.get("therapies") or [str(next(iter(PATHWAYS)))],
        throughput_by_therapy=_throughput_by_therapy(figures["throughput_days"]),
        # A week kept before there was a front door has no funnel.
        funnel=funnel_rows(figures.get("funnel", [])),
        states_at_end={int(pk): state for pk, state in figures["states_at_end"].items()},
        totals=figures["totals"],
        computed_at=computed_at,
        kept=kept,
        zone=ZoneInfo(figures["zone"]),
    )


def _moved_since(courses, end: dt.datetime) -> dict[int, tuple[str, str]]:
    """(state at `end`, state now) of each course in `courses` that has moved since `end`:
    its state then is the one its first transition after `end` left. Reads only the log
    since `end`, not every course."""
    since = (
        TransitionLog.objects.filter(course__in=courses, at__gte=end, course__referred_at__lt=end)
        .order_by("course_id", "at", "id")
        .values_list("course_id", "source_state", "course__state")
    )
    if connection.vendor == "postgresql":
        return {pk: (then, now) for pk, then, now in since.distinct("course_id")}
    moved = {}
    for pk, then, now in since:
        moved.setdefault(pk, (then, now))
    return moved


def _counts_by_state_at_end(courses, end: dt.datetime, moved: dict[int, tuple[str, str]]):
    """Courses referred before `end` by the state they were in at `end`: today's counts,
    with each course that has moved since counted in its state then instead."""
    existing = courses.filter(referred_at__lt=end)
    counts = dict(existing.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    for then, now in moved.values():
        counts[now] -= 1
        counts[then] = counts.get(then, 0) + 1
    return counts


# Each therapy's steps whose median days apart the report shows.
STEPS = {
    Therapy.P63: (
        ("Referral → harvest", "referred_at", "harvested_at"),
        ("Harvest → release", "harvested_at", "released_at"),
        ("Release → transplant", "released_at", "transplanted_at"),
    ),
    Therapy.MSC: (
        ("Referral → allocation", "referred_at", "product_allocated_at"),
        ("Allocation → first infusion", "product_allocated_at", "first_infused_at"),
        ("First → latest infusion", "first_infused_at", "last_infused_at"),
    ),
}


def _throughput_by_therapy(rows) -> list[tuple[str, list[tuple[str, float | None]]]]:
    """The kept figures' rows ("p63:Referral → harvest", days) grouped by therapy; a week kept
    before there were two therapies has its rows unnamed, the first therapy's."""
    groups: dict[str, list] = {}
    for label, days in rows:
        therapy, _, step = label.rpartition(":") if ":" in label else ("", "", label)
        groups.setdefault(therapy or str(next(iter(PATHWAYS))), []).append((step, days))
    return list(groups.items())


def _throughput(courses, end: dt.datetime, therapy: str) -> list[tuple[str, float | None]]:
    """Median days between the therapy's steps, over courses that took the later step in the
    last 13 weeks."""
    steps = STEPS[Therapy(therapy)]
    since = end - dt.timedelta(weeks=THROUGHPUT_WEEKS)
    medians = courses.aggregate(
        **{
            f"step{i}": MedianDuration(
                ExpressionWrapper(F(later) - F(earlier), output_field=DurationField()),
                filter=Q(
                    **{f"{later}__gte": since, f"{later}__lt": end, f"{earlier}__isnull": False}
                ),
            )
            for i, (_, earlier, later) in enumerate(steps)
        }
    )
    result = []
    for i, (label, _, _) in enumerate(steps):
        value = medians[f"step{i}"]
        if isinstance(value, int | float):  # SQLite hands back microseconds
            value = dt.timedelta(microseconds=value)
        result.append((label, None if value is None else round(value.total_seconds() / 86400, 1)))
    return result


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
    notifications_write(rows)
    return len(rows)
