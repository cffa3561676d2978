"""The pathway at a glance: each step of a course with its date done or due, and what to do next.

Dates are the site's calendar dates, as a coordinator at that site reads them.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import models
from django.utils import timezone

from common.zones import date_words, local_words
from pathway.forecast import forecast_interval_words
from pathway.models import BatchStatus, TransitionLog, TreatmentCourse, expansion_day
from pathway.selectors import batch_growth_forecast
from pathway.states import CourseState, Therapy
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    ReservationPurpose,
    Visit,
    VisitKind,
    VisitStatus,
)


class StepStatus(models.TextChoices):
    DONE = "done", "Done"
    CURRENT = "current", "In progress"
    DUE = "due", "Due"
    OVERDUE = "overdue", "Overdue"
    UPCOMING = "upcoming", "Not yet"
    MISSED = "missed", "Missed"
    SKIPPED = "skipped", "Not reached"


@dataclass(frozen=True)
class TimelineStep:
    name: str
    status: StepStatus
    when: str = ""
    detail: str = ""


@dataclass(frozen=True)
class CourseTimeline:
    steps: list[TimelineStep]
    next_action: str
    next_action_overdue: bool = False


_LATE = (StepStatus.OVERDUE, StepStatus.MISSED)

_ENDED = {
    CourseState.WITHDRAWN: "withdrawn",
    CourseState.INELIGIBLE: "found ineligible",
}


def course_timeline(*, course: TreatmentCourse, now: dt.datetime | None = None) -> CourseTimeline:
    """The steps of the course in pathway order: two queries, three before the transplant."""
    now = now or timezone.now()
    zone, protocol = course.site.time_zone, course.protocol
    today = timezone.localdate(now, zone)

    def on(moment: dt.datetime) -> dt.date:
        return timezone.localdate(moment, zone)

    def day(moment: dt.datetime) -> str:
        return date_words(on(moment))

    logged = dict(
        TransitionLog.objects.filter(course=course, transition__in=("approve", "decline"))
        .order_by("at")
        .values_list("transition", "at")
    )
    visits = list(
        Visit.objects.filter(course=course)
        .exclude(status=VisitStatus.CANCELLED)
        .select_related("protocol_visit")
        .order_by("scheduled_at", "id")
    )
    procedure = {visit.kind: visit for visit in visits if visit.kind != VisitKind.FOLLOW_UP}
    follow_ups = [visit for visit in visits if visit.kind == VisitKind.FOLLOW_UP]

    steps = [TimelineStep("Referral", StepStatus.DONE, f"{day(course.referred_at)}")]

    # Evaluation
    if "approve" in logged:
        steps.append(
            TimelineStep("Evaluation", StepStatus.DONE, f"{day(logged['approve'])}", "eligible")
        )
    elif "decline" in logged:
        steps.append(
            TimelineStep("Evaluation", StepStatus.DONE, f"{day(logged['decline'])}", "ineligible")
        )
    elif course.evaluation_started_at:
        steps.append(
            TimelineStep(
                "Evaluation", StepStatus.CURRENT, f"since {day(course.evaluation_started_at)}"
            )
        )
    else:
        steps.append(TimelineStep("Evaluation", StepStatus.UPCOMING))

    # A course on hold waits for what it was waiting for before.
    waiting_in = course.state_before_hold if course.state == CourseState.ON_HOLD else course.state
    treatment = _TREATMENT_STEPS[protocol.therapy]
    steps += treatment(
        course, procedure=procedure, waiting_in=waiting_in, now=now, today=today, zone=zone
    )

    follow_up_steps = [(visit, _follow_up_step(visit, today, zone)) for visit in follow_ups]
    if follow_up_steps:
        steps += [step for _, step in follow_up_steps]
    else:
        steps += [
            TimelineStep(
                protocol_visit.name,
                StepStatus.UPCOMING,
                detail=f"{protocol_visit.weeks_after_transplant} weeks after "
                f"{_anchor_words(course)}, ± {protocol_visit.window_days} days",
            )
            for protocol_visit in protocol.visits.all()
        ]

    if course.state == CourseState.COMPLETED:
        steps.append(TimelineStep("Completion", StepStatus.DONE, f"{day(course.state_changed_at)}"))
    else:
        steps.append(TimelineStep("Completion", StepStatus.UPCOMING))

    if course.state in _ENDED:
        steps = [
            step
            if step.status in (StepStatus.DONE, StepStatus.MISSED)
            else TimelineStep(step.name, StepStatus.SKIPPED, detail=step.detail)
            for step in steps
        ]
    return CourseTimeline(steps, *_next_action(course, steps, follow_up_steps, on))


def _p63_steps(course, *, procedure, waiting_in, now, today, zone) -> list[TimelineStep]:
    """Harvest, expansion, release and transplant."""
    protocol = course.protocol
    steps: list[TimelineStep] = []

    def on(moment: dt.datetime) -> dt.date:
        return timezone.localdate(moment, zone)

    def day(moment: dt.datetime) -> str:
        return date_words(on(moment))

    steps.append(
        _procedure_step(
            "Harvest",
            pending=waiting_in in (CourseState.ELIGIBLE, CourseState.HARVEST_SCHEDULED),
            performed_at=course.harvested_at,
            visit=procedure.get(VisitKind.HARVEST),
            today=today,
            zone=zone,
        )
    )

    # Expansion and release: the lab's window counts from the day the sample arrived.
    if course.lab_received_at:
        received_on = on(course.lab_received_at)
        opens, closes = protocol.release_window(received_on)
        window = f"release window {date_words(opens)} – {date_words(closes)}"
        limits = f"{protocol.expansion_min_days}–{protocol.expansion_max_days} days"
        if course.released_at:
            days = expansion_day(
                received_at=course.lab_received_at, at=course.released_at, zone=zone
            )
            steps.append(
                TimelineStep(
                    "Expansion",
                    StepStatus.DONE,
                    f"from {date_words(received_on)}",
                    f"{days} days ({limits})",
                )
            )
            steps.append(TimelineStep("Release", StepStatus.DONE, f"{day(course.released_at)}"))
        else:
            day = expansion_day(received_at=course.lab_received_at, at=now, zone=zone)
            late = today > closes
            steps.append(
                TimelineStep(
                    "Expansion",
                    StepStatus.OVERDUE if late else StepStatus.CURRENT,
                    f"from {date_words(received_on)}",
                    f"day {day} of {limits}{_forecast_words(course)}",
                )
            )
            steps.append(
                TimelineStep(
                    "Release",
                    StepStatus.OVERDUE
                    if late
                    else StepStatus.DUE
                    if today >= opens
                    else StepStatus.UPCOMING,
                    window,
                )
            )
    else:
        steps.append(
            TimelineStep(
                "Expansion",
                StepStatus.UPCOMING,
                detail=f"{protocol.expansion_min_days}–{protocol.expansion_max_days} days",
            )
        )
        steps.append(TimelineStep("Release", StepStatus.UPCOMING))

    transplant = _procedure_step(
        "Transplant",
        pending=waiting_in in (CourseState.RELEASED, CourseState.TRANSPLANT_SCHEDULED),
        performed_at=course.transplanted_at,
        visit=procedure.get(VisitKind.TRANSPLANT),
        today=today,
        zone=zone,
    )
    if transplant.status == StepStatus.UPCOMING and course.released_at:
        # The same deadline as the "transplant not booked" alert: to the minute, not the day.
        book_by = course.released_at + dt.timedelta(days=protocol.transplant_booking_max_days)
        transplant = TimelineStep(
            "Transplant",
            StepStatus.OVERDUE if now > book_by else StepStatus.DUE,
            f"book by {local_words(book_by, zone)}",
        )
    steps.append(transplant)

    return steps


def _msc_steps(course, *, procedure, waiting_in, now, today, zone) -> list[TimelineStep]:
    """The allocation, then each dose: given, booked, held in the chairs, or to come."""
    protocol = course.protocol
    steps = []
    if course.product_allocated_at:
        steps.append(
            TimelineStep(
                "Allocation",
                StepStatus.DONE,
                date_words(timezone.localdate(course.product_allocated_at, zone)),
            )
        )
    elif waiting_in == CourseState.ELIGIBLE:
        steps.append(TimelineStep("Allocation", StepStatus.DUE, "units from a released lot"))
    else:
        steps.append(TimelineStep("Allocation", StepStatus.UPCOMING))
    given = {
        infusion.dose_number: infusion
        for infusion in course.infusions.filter(started_at__isnull=False)
    }
    held = list(
        course.reservations.filter(
            purpose=ReservationPurpose.INFUSION,
            visit__isnull=True,
            released_at__isnull=True,
            starts_at__gt=now,
        )
        .order_by("starts_at")
        .values_list("starts_at", flat=True)
    )
    booking = procedure.get(VisitKind.INFUSION)
    for dose in range(1, protocol.dose_count + 1):
        name = (
            f"Infusion {dose} of {protocol.dose_count}" if protocol.dose_count > 1 else "Infusion"
        )
        if dose in given:
            steps.append(
                TimelineStep(
                    name,
                    StepStatus.DONE,
                    date_words(timezone.localdate(given[dose].started_at, zone)),
                    f"{given[dose].cells_given / 1e6:.0f} × 10⁶ cells",
                )
            )
            continue
        if dose == course.doses_given + 1 and booking and booking.status != VisitStatus.DONE:
            steps.append(
                _procedure_step(
                    name, pending=True, performed_at=None, visit=booking, today=today, zone=zone
                )
            )
            continue
        if held:
            steps.append(
                TimelineStep(
                    name,
                    StepStatus.UPCOMING,
                    f"held for {date_words(timezone.localdate(held.pop(0), zone))}",
                )
            )
            continue
        after = "after allocation" if dose == 1 else f"{protocol.dose_interval_days} days after"
        steps.append(TimelineStep(name, StepStatus.UPCOMING, detail=after))
    return steps


_TREATMENT_STEPS = {Therapy.P63: _p63_steps, Therapy.MSC: _msc_steps}


def _forecast_words(course) -> str:
    """The growth forecast of the course's batch in culture, when its counts allow one."""
    batch = course.batches.filter(status=BatchStatus.EXPANDING).first()
    forecast = batch_growth_forecast(batch=batch) if batch else None
    if forecast is None:
        return ""
    return (
        f"; target dose ({forecast.target_cells / 1e6:.0f} × 10⁶ cells) forecast for day "
        f"{forecast.day:.0f}, 90 % interval {forecast_interval_words(forecast)}"
    )


def _procedure_step(
    name: str, *, pending: bool, performed_at, visit: Visit | None, today: dt.date, zone
) -> TimelineStep:
    """A harvest or a transplant. While the course waits for one (again, after a rejected
    sample), its latest booking counts, not a procedure done before."""
    if not pending:
        if performed_at:
            return TimelineStep(
                name, StepStatus.DONE, date_words(timezone.localdate(performed_at, zone))
            )
        return TimelineStep(name, StepStatus.UPCOMING)
    if visit is None or visit.status == VisitStatus.DONE:
        earlier = (
            f"again: the sample of {date_words(timezone.localdate(performed_at, zone))} was "
            "not used"
            if performed_at
            else ""
        )
        return TimelineStep(name, StepStatus.UPCOMING, detail=earlier)
    booked_on = timezone.localdate(visit.scheduled_at, zone)
    if visit.status == VisitStatus.MISSED:
        return TimelineStep(
            name, StepStatus.MISSED, f"missed on {date_words(booked_on)}", visit.place
        )
    return TimelineStep(
        name,
        StepStatus.OVERDUE if visit.is_overdue(today=today) else StepStatus.DUE,
        f"booked for {date_words(booked_on)}",
        visit.place,
    )


def _follow_up_step(visit: Visit, today: dt.date, zone) -> TimelineStep:
    name = visit.label
    window = f"window {date_words(visit.window_opens_on)} – {date_words(visit.window_closes_on)}"
    if visit.status == VisitStatus.DONE:
        done_on = timezone.localdate(visit.done_at or visit.scheduled_at, zone)
        return TimelineStep(name, StepStatus.DONE, f"{date_words(done_on)}", window)
    if visit.status == VisitStatus.MISSED:
        return TimelineStep(name, StepStatus.MISSED, window)
    if visit.is_overdue(today=today):
        status = StepStatus.OVERDUE
    elif visit.window_opens_on and today >= visit.window_opens_on:
        status = StepStatus.DUE
    else:
        status = StepStatus.UPCOMING
    # A planned follow-up's time is only its due date until the patient is booked.
    booked = "booked for" if visit.status == VisitStatus.BOOKED else "due"
    return TimelineStep(
        name, status, window, f"{booked} {date_words(timezone.localdate(visit.scheduled_at, zone))}"
    )


def _anchor_words(course) -> str:
    """What the follow-up weeks count from, in words."""
    if course.protocol.therapy == Therapy.MSC:
        return f"the {course.protocol.get_follow_up_anchor_display().lower()}"
    return "the transplant"


def _next_action(course, steps, follow_up_steps, on) -> tuple[str, bool]:
    """What the coordinator or the lab does next, and whether it is already late."""
    state = course.state
    step = {s.name: s for s in steps}
    since = date_words(on(course.state_changed_at))
    if state in _ENDED:
        return f"None: the course was {_ENDED[state]} on {since}.", False
    if state == CourseState.COMPLETED:
        return "None: the course is complete.", False
    if state == CourseState.ON_HOLD:
        return f"On hold since {since}: resume it or withdraw it.", False
    if state == CourseState.REFERRED:
        return "Start the evaluation.", False
    if state == CourseState.EVALUATION:
        return "Review the eligibility checklist, then approve or decline.", False
    if state == CourseState.ELIGIBLE and course.protocol.therapy == Therapy.MSC:
        return "Allocate the product: units from a released lot in the site's stock.", False
    if state == CourseState.ELIGIBLE:
        return "Schedule the harvest bronchoscopy.", False
    if state in (CourseState.PRODUCT_ALLOCATED, CourseState.INFUSED):
        upcoming = next(
            (s for s in steps if s.name.startswith("Infusion") and s.status != StepStatus.DONE),
            None,
        )
        when = f" ({upcoming.when})" if upcoming and upcoming.when else ""
        which = "the next infusion" if state == CourseState.INFUSED else "the infusion"
        return f"Book {which}{when}.", False
    if state == CourseState.INFUSION_SCHEDULED:
        booked = next(
            (s for s in steps if s.name.startswith("Infusion") and s.status != StepStatus.DONE),
            None,
        )
        late = booked is not None and booked.status in _LATE
        return f"Record the infusion ({booked.when if booked else 'booked'}).", late
    if state == CourseState.HARVEST_SCHEDULED:
        harvest = step["Harvest"]
        return f"Record the harvest ({harvest.when}).", harvest.status in _LATE
    if state == CourseState.HARVESTED:
        return "Receive the sample at the lab.", False
    if state == CourseState.EXPANDING:
        release = step["Release"]
        if release.status == StepStatus.OVERDUE:
            return f"Release is overdue ({step['Expansion'].detail}): decide on the batch.", True
        return f"Record QC and release the batch ({release.when}).", False
    if state == CourseState.RELEASED:
        transplant = step["Transplant"]
        return (
            f"Schedule the transplant ({transplant.when}).",
            transplant.status == StepStatus.OVERDUE,
        )
    if state == CourseState.TRANSPLANT_SCHEDULED:
        transplant = step["Transplant"]
        return (
            f"Record the transplant ({transplant.when}).",
            transplant.status in _LATE,
        )
    for visit, follow_up in follow_up_steps:
        if visit.status in OPEN_VISIT_STATUSES:
            late = follow_up.status == StepStatus.OVERDUE
            return f"Record the {follow_up.name} ({follow_up.when}).", late
    return "Complete the course.", False
