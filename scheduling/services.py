"""Visits and their reminders. Called inside the pathway's transactions, so a visit and its
reminders are written, moved or cancelled together with the change that causes them."""

import copy
import datetime as dt

from django.db import transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from common.errors import Refused
from common.zones import date_words, local_words
from scheduling.chains import (
    chain_release,
    course_resource,
    visit_places_follow,
    visit_places_release,
)
from scheduling.models import (
    OPEN_VISIT_STATUSES,
    DeviationKind,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    PatientRequest,
    PatientRequestKind,
    ProtocolDeviation,
    ResourceKind,
    Visit,
    VisitKind,
    VisitStatus,
    WorkAssignment,
)
from scheduling.outbox import notifications_write
from scheduling.rules import (
    booking_deviations,
    booking_notice_refusals,
    inside_last_reminder,
    patient_send_after,
    reminder_time,
    told_channels,
)
from scheduling.windows import follow_up_slot


def reminders_schedule(*, visit: Visit, now: dt.datetime | None = None) -> list[Notification]:
    """Outbox rows for the protocol's reminders of one visit, on each consented channel.

    A visit nobody booked (a follow-up still only due within its window) gets none: a patient
    is told only of real appointments. Reminders whose time has already passed are not
    written. An SMS due in the patient's quiet hours waits until they end, in the patient's
    own time zone.
    """
    if visit.status != VisitStatus.BOOKED or not visit.course.takes_appointments:
        return []
    now = now or timezone.now()
    course = visit.course
    patient, protocol = course.patient, course.protocol
    channels = told_channels(patient)
    stamp = int(visit.scheduled_at.timestamp())
    times = [
        (
            f"{lead_days}d",
            reminder_time(
                appointment_at=visit.scheduled_at, lead_days=lead_days, zone=course.site.time_zone
            ),
        )
        for lead_days in sorted(set(protocol.reminder_lead_days), reverse=True)
    ]
    # Too soon for any reminder: told at once, unless told of this time already.
    if inside_last_reminder(course=course, scheduled_at=visit.scheduled_at, now=now) and not (
        Notification.objects.filter(
            visit=visit,
            idempotency_key__endswith=f".{stamp}",
            status__in=[
                NotificationStatus.PENDING,
                NotificationStatus.SENDING,
                NotificationStatus.SENT,
            ],
        ).exists()
    ):
        times.append(("booked", now))
    reminders = []
    for key, send_at in times:
        for channel in channels:
            send_after = patient_send_after(
                send_at, channel=channel, patient=patient, protocol=protocol
            )
            if (send_after <= now and key != "booked") or send_after >= visit.scheduled_at:
                continue
            reminders.append(
                Notification(
                    template=NotificationTemplate.VISIT_REMINDER,
                    channel=channel,
                    patient=patient,
                    visit=visit,
                    send_after=send_after,
                    max_attempts=protocol.delivery_max_attempts,
                    idempotency_key=f"reminder.v{visit.pk}.{key}.{channel}.{stamp}",
                )
            )
    # A key that exists (the visit moved back to a time it had) revives its reminder if it was
    # cancelled, and leaves it alone if it was sent, is pending, or is archived.
    return notifications_write(reminders, revive_cancelled=True)


def reminders_cancel(*, visits) -> int:
    """Cancel reminders not yet sent for these visits."""
    return Notification.objects.filter(visit__in=visits, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.CANCELLED
    )


def _procedure_window(scheduled_at: dt.datetime, zone) -> dict:
    day = timezone.localdate(scheduled_at, zone)
    return {"window_opens_on": day, "window_closes_on": day}


def _booking_deviations(*, course, scheduled_at: dt.datetime, window) -> list[tuple[str, str]]:
    site = course.site
    return booking_deviations(
        scheduled_at=scheduled_at,
        zone=site.time_zone,
        clinic_hours=site.clinic_hours.all(),
        window_opens_on=window[0],
        window_closes_on=window[1],
    )


def _window(visit: Visit) -> tuple[dt.date | None, dt.date | None]:
    """The window a booking of this visit must keep to: a follow-up's; a procedure has none."""
    if visit.kind == VisitKind.FOLLOW_UP:
        return visit.window_opens_on, visit.window_closes_on
    return None, None


def visit_move_refusals(
    *, visit: Visit, scheduled_at: dt.datetime, deviation_reason: str = ""
) -> list[str]:
    """Why this visit may not be booked or moved to `scheduled_at`; empty if it may. Forms
    show these beside the field; `visit_reschedule` raises them."""
    refusals = _move_refusals(visit=visit, scheduled_at=scheduled_at)
    if not refusals and visit.status in OPEN_VISIT_STATUSES:
        refusals = booking_notice_refusals(
            course=visit.course,
            kind=visit.kind,
            scheduled_at=scheduled_at,
            protocol_visit=visit.protocol_visit,
        )
    if not refusals and visit.status in OPEN_VISIT_STATUSES:
        refusals = _place_refusals(visit=visit, scheduled_at=scheduled_at)
    if refusals or visit.status == VisitStatus.DONE or (deviation_reason or "").strip():
        return refusals
    deviations = _booking_deviations(
        course=visit.course, scheduled_at=scheduled_at, window=_window(visit)
    )
    return _refusals(deviations)


def _move_refusals(*, visit: Visit, scheduled_at: dt.datetime) -> list[str]:
    """What refuses a move whatever the reason given: the visit's status, a closed or held
    course, or a correction that breaks the record."""
    if visit.status not in (*OPEN_VISIT_STATUSES, VisitStatus.DONE):
        again = ": book it again instead." if visit.status == VisitStatus.MISSED else "."
        return [f"A {visit.get_status_display().lower()} visit cannot be moved{again}"]
    if visit.status == VisitStatus.DONE:
        return _correction_refusals(visit=visit, scheduled_at=scheduled_at)
    if not visit.course.takes_appointments:
        return [_NO_APPOINTMENTS.format(state=visit.course.get_state_display().lower())]
    return []


_NO_APPOINTMENTS = "The course is {state}: no visit is booked for it."


class _OnlyTried(Exception):
    pass


def _place_refusals(*, visit: Visit, scheduled_at: dt.datetime) -> list[str]:
    """What the calendars refuse of this move (a time that is not a free slot; a harvest
    whose chain is not free), found by making the move in a savepoint that is always rolled
    back: the same function decides as when the move is made. No reason excuses these."""
    moved = copy.copy(visit)
    moved.scheduled_at = scheduled_at
    try:
        with transaction.atomic():
            visit_places_follow(visit=moved)
            raise _OnlyTried
    except _OnlyTried:
        return []
    except Refused as refusal:
        return refusal.reasons


def _correction_refusals(*, visit: Visit, scheduled_at: dt.datetime) -> list[str]:
    """Moving a visit that took place corrects when it happened: only a transplant's time is
    corrected here (its follow-ups' windows follow), never into the future or before the
    product's release."""
    if visit.kind != VisitKind.TRANSPLANT:
        return ["A visit that took place cannot be moved: correct its records' dates instead."]
    if scheduled_at > timezone.now():
        return ["A transplant that took place cannot be moved into the future."]
    released_at = visit.course.released_at
    if released_at and scheduled_at < released_at:
        return ["The transplant cannot come before the product's release."]
    return []


def _refusals(deviations) -> list[str]:
    if not deviations:
        return []
    return [detail for _, detail in deviations] + [
        "Choose another time, or give a reason to book it anyway (a protocol deviation)."
    ]


def booking_allow(
    *,
    course,
    scheduled_at: dt.datetime,
    by,
    deviation_reason: str = "",
    visit: Visit | None = None,
    window: tuple[dt.date | None, dt.date | None] = (None, None),
) -> list[ProtocolDeviation]:
    """Check a booking against the notice it leaves the patient (refused, whatever the
    reason), then the visit's window and the site's clinic hours: refused with what is wrong,
    or, given a reason, allowed and logged as a protocol deviation."""
    kind = visit.kind if visit is not None else VisitKind.HARVEST
    notice = booking_notice_refusals(
        course=course,
        kind=kind,
        scheduled_at=scheduled_at,
        protocol_visit=visit.protocol_visit if visit is not None else None,
    )
    if notice:
        raise Refused(by_field={"scheduled_at": notice})
    deviations = _booking_deviations(course=course, scheduled_at=scheduled_at, window=window)
    if not deviations:
        return []
    reason = (deviation_reason or "").strip()
    if not reason or by is None:
        raise Refused(_refusals(deviations))
    return deviation_record(course=course, visit=visit, by=by, reason=reason, deviations=deviations)


def deviation_record(*, course, visit, by, reason: str, deviations) -> list[ProtocolDeviation]:
    """Log steps taken outside the protocol's plan, each with the plan and the reason."""
    return ProtocolDeviation.objects.bulk_create(
        ProtocolDeviation(
            course=course, visit=visit, kind=kind, detail=detail[:300], reason=reason, by=by
        )
        for kind, detail in deviations
    )


def visit_book(
    *,
    course,
    kind: VisitKind,
    scheduled_at: dt.datetime,
    place: str,
    by=None,
    deviation_reason: str = "",
) -> Visit:
    """Book a procedure and its reminders, replacing any open booking of the same kind.
    Outside the site's clinic hours it needs a reason."""
    with transaction.atomic():
        replaced = Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES)
        reminders_cancel(visits=replaced)
        _change_each(replaced, status=VisitStatus.CANCELLED)
        visit = Visit.objects.create(
            course=course,
            kind=kind,
            scheduled_at=scheduled_at,
            place=place,
            status=VisitStatus.BOOKED,
            **_procedure_window(scheduled_at, course.site.time_zone),
        )
        booking_allow(
            course=course,
            visit=visit,
            scheduled_at=scheduled_at,
            by=by,
            deviation_reason=deviation_reason,
        )
        reminders_schedule(visit=visit)
        return visit


def open_booking(*, course, kind: VisitKind) -> Visit | None:
    """The course's open booking of a procedure, if any."""
    return Visit.objects.open().filter(course=course, kind=kind).order_by("-scheduled_at").first()


def visit_mark_done(*, course, kind: VisitKind, done_at: dt.datetime) -> int:
    """Mark the open booking of a procedure done; its remaining reminders are cancelled. A
    follow-up is not marked done: its measurement does that (`visit_record_done`)."""
    if kind == VisitKind.FOLLOW_UP:
        raise Refused([FOLLOW_UP_NEEDS_ITS_MEASUREMENT])
    visits = Visit.objects.filter(course=course, kind=kind, status__in=OPEN_VISIT_STATUSES)
    reminders_cancel(visits=visits)
    return _change_each(visits, status=VisitStatus.DONE, done_at=done_at)


FOLLOW_UP_NEEDS_ITS_MEASUREMENT = (
    "A follow-up is done when a measurement taken at it is recorded, not by marking it done."
)


def _measured_before_window(visit: Visit, measurement) -> bool:
    return visit.window_opens_on is not None and measurement.taken_on < visit.window_opens_on


def _follow_up_done_refusals(visit: Visit, measurement, early_reason: str) -> list[str]:
    """Why this measurement does not make the follow-up done: there is none (saved, and taken
    at this visit), or it was taken before the window opened and no clinician's reason says
    why it counts."""
    if measurement is None or measurement.pk is None or measurement.visit_id != visit.pk:
        return [FOLLOW_UP_NEEDS_ITS_MEASUREMENT]
    if _measured_before_window(visit, measurement) and not early_reason.strip():
        return [
            f"The {visit.label} is still open: this was measured on "
            f"{date_words(measurement.taken_on)}, before its window opens on "
            f"{date_words(visit.window_opens_on)}. To count it, give a clinician's reason (a "
            "protocol deviation)."
        ]
    return []


def _measured_at(visit: Visit, taken_on: dt.date) -> dt.datetime:
    """The visit's booked local time of day, on the day it was measured."""
    zone = visit.course.site.time_zone
    local_time = timezone.localtime(visit.scheduled_at, zone).time().replace(tzinfo=None)
    return dt.datetime.combine(taken_on, local_time, tzinfo=zone)


def visit_record_done(
    *,
    visit: Visit,
    done_at: dt.datetime | None = None,
    measurement=None,
    by=None,
    early_reason: str = "",
) -> Visit:
    """A visit took place: it is done and its remaining reminders are cancelled.

    A follow-up is done only by a measurement taken at it (`measurement`: a clinical record
    saved against this visit), at the visit's booked time of day on the day it was taken; one
    taken before the window opened counts only with a clinician's `early_reason`, kept as a
    protocol deviation. Otherwise it is refused with the reason (`Refused`), and stays open.
    A procedure is done at `done_at`.
    """
    follow_up = visit.kind == VisitKind.FOLLOW_UP
    if follow_up:
        refusals = _follow_up_done_refusals(visit, measurement, early_reason)
        if refusals:
            raise Refused(refusals)
        done_at = _measured_at(visit, measurement.taken_on)
    elif done_at is None:
        raise ValueError("A procedure is done at a time: give done_at.")
    with transaction.atomic():
        if follow_up and _measured_before_window(visit, measurement):
            deviation_record(
                course=visit.course,
                visit=visit,
                by=by,
                reason=early_reason.strip(),
                deviations=[
                    (
                        DeviationKind.BEFORE_WINDOW,
                        f"Measured on {date_words(measurement.taken_on)}; the window opens "
                        f"on {date_words(visit.window_opens_on)}.",
                    )
                ],
            )
        reminders_cancel(visits=[visit])
        visit.status, visit.done_at = VisitStatus.DONE, done_at
        visit.save(update_fields=["status", "done_at"])
        visit_places_release(visit=visit)  # done before its booked time: the place is free
    return visit


def visits_schedule_follow_ups(*, course) -> list[Visit]:
    """Create the protocol's follow-up visits from the actual transplant: each due within its
    window, at the transplant's time of day, until a coordinator books it (no reminders yet)."""
    zone = course.site.time_zone
    visits = []
    for protocol_visit in course.protocol.visits.all():
        slot = follow_up_slot(
            transplanted_at=course.follow_ups_from,
            zone=zone,
            weeks_after=protocol_visit.weeks_after_transplant,
            window_days=protocol_visit.window_days,
        )
        visits.append(
            Visit(
                course=course,
                kind=VisitKind.FOLLOW_UP,
                protocol_visit=protocol_visit,
                scheduled_at=slot.scheduled_at,
                window_opens_on=slot.window_opens_on,
                window_closes_on=slot.window_closes_on,
                status=VisitStatus.PLANNED,
            )
        )
    return bulk_create_with_history(visits, Visit)


def visit_reschedule(
    *,
    visit: Visit,
    scheduled_at: dt.datetime,
    place: str | None = None,
    by=None,
    deviation_reason: str = "",
) -> Visit:
    """Book or move an appointment and what hangs on it.

    Giving a follow-up that is only due a time books it. The time must be inside the visit's
    window and the site's clinic hours, or come with a reason (a protocol deviation). Pending
    reminders are cancelled and written anew for the new time. Moving a done transplant (a
    correction of when it happened) moves the course's open follow-ups' windows with it.
    """
    course = visit.course
    zone = course.site.time_zone
    books = visit.status == VisitStatus.PLANNED
    if scheduled_at == visit.scheduled_at and not books:
        return visit_set_place(visit=visit, place=place)
    refusals = _move_refusals(visit=visit, scheduled_at=scheduled_at)
    if refusals:
        raise Refused(refusals)
    with transaction.atomic():
        if visit.status in OPEN_VISIT_STATUSES:
            booking_allow(
                course=course,
                visit=visit,
                scheduled_at=scheduled_at,
                by=by,
                deviation_reason=deviation_reason,
                window=_window(visit),
            )
        reminders_cancel(visits=[visit])
        visit.scheduled_at = scheduled_at
        if books:
            visit.status = VisitStatus.BOOKED
        if place is not None:
            visit.place = place
        if visit.kind != VisitKind.FOLLOW_UP:
            for field, value in _procedure_window(scheduled_at, zone).items():
                setattr(visit, field, value)
        if visit.status == VisitStatus.DONE:
            visit.done_at = scheduled_at
        else:
            visit.confirmed_at = None  # a new time is confirmed anew
        visit.save()
        if visit.status == VisitStatus.BOOKED:
            visit_places_follow(visit=visit)
            # The patient asked for another time: moved, the request is answered.
            PatientRequest.objects.filter(
                visit=visit, kind=PatientRequestKind.CHANGE, done_at__isnull=True
            ).update(done_at=timezone.now(), done_by=by)
        if visit.status in OPEN_VISIT_STATUSES:
            reminders_schedule(visit=visit)
        if visit.kind == VisitKind.TRANSPLANT and visit.status == VisitStatus.DONE:
            transplanted_on = timezone.localdate(scheduled_at, zone)
            course.transplanted_at, course.transplanted_on = scheduled_at, transplanted_on
            course.save(update_fields=["transplanted_at", "transplanted_on"])
            follow_ups_move(course=course)
    return visit


def visit_set_place(*, visit: Visit, place: str | None) -> Visit:
    """Only the place changes: nothing is booked, and reminders read it when they are sent."""
    if place is not None and visit.status in (*OPEN_VISIT_STATUSES, VisitStatus.DONE):
        visit.place = place
        visit.save(update_fields=["place"])
    return visit


def follow_ups_move(*, course) -> None:
    """Move a course's open follow-ups' windows to the dates its transplant and protocol now
    give. One only due moves with its window; a booked one keeps the time the patient was
    given (its reminders are written anew, for lead times the protocol may have changed)."""
    follow_ups = list(
        Visit.objects.filter(
            course=course, kind=VisitKind.FOLLOW_UP, status__in=OPEN_VISIT_STATUSES
        ).select_related("protocol_visit")
    )
    reminders_cancel(visits=follow_ups)
    for visit in follow_ups:
        slot = follow_up_slot(
            transplanted_at=course.follow_ups_from,
            zone=course.site.time_zone,
            weeks_after=visit.protocol_visit.weeks_after_transplant,
            window_days=visit.protocol_visit.window_days,
        )
        if visit.status == VisitStatus.PLANNED:
            visit.scheduled_at = slot.scheduled_at
        visit.window_opens_on, visit.window_closes_on = slot.window_opens_on, slot.window_closes_on
    bulk_update_with_history(
        follow_ups, Visit, ["scheduled_at", "window_opens_on", "window_closes_on"]
    )
    for visit in follow_ups:
        reminders_schedule(visit=visit)


def visit_missed_refusals(*, visit: Visit, now: dt.datetime | None = None) -> list[str]:
    """Why this visit cannot be marked missed now; empty if it can. A visit can be once its
    window has closed, or its booked time has passed. Pages offer "Mark missed" only when
    this is empty; `visit_mark_missed` refuses the same."""
    now = now or timezone.now()
    if visit.status not in OPEN_VISIT_STATUSES:
        return [f"A {visit.get_status_display().lower()} visit cannot be marked missed."]
    today = timezone.localdate(now, visit.course.site.time_zone)
    passed = visit.status == VisitStatus.BOOKED and visit.scheduled_at < now
    if visit.is_overdue(today=today) or passed:
        return []
    zone = visit.course.site.time_zone
    until = (
        f"its booked time, {local_words(visit.scheduled_at, zone)}, has passed"
        if visit.status == VisitStatus.BOOKED
        else f"its window has closed ({date_words(visit.window_closes_on)})"
    )
    return [f"This visit can still take place: it can be marked missed once {until}."]


def visit_mark_missed(*, visit: Visit, by, reason: str, now: dt.datetime | None = None) -> Visit:
    """The patient did not come: a visit whose window has closed, or whose booked time has
    passed, is marked missed with the reason; its reminders are cancelled. It can then be
    booked again (`visit_book_again`)."""
    now = now or timezone.now()
    refusals = visit_missed_refusals(visit=visit, now=now)
    if refusals:
        raise Refused(refusals)
    if not reason.strip():
        raise Refused(["Give the reason the visit was missed."])
    with transaction.atomic():
        reminders_cancel(visits=[visit])
        visit.status, visit.missed_reason = VisitStatus.MISSED, reason.strip()
        visit._history_user = by
        visit.save(update_fields=["status", "missed_reason"])
        visit_places_release(visit=visit, now=now)
        if visit.kind == VisitKind.HARVEST:
            chain_release(course=visit.course, now=now)  # booked again, it is taken anew
    return visit


def visit_book_again(
    *, visit: Visit, scheduled_at: dt.datetime, by, place: str = "", deviation_reason: str = ""
) -> Visit:
    """Book a missed visit again: a new booking, the missed one kept as it was. A follow-up
    keeps its protocol visit and window, and outside the window (it has closed) it needs a
    reason; a harvest or transplant is booked like any procedure, in the clinic's hours."""
    refusals = _book_again_refusals(visit=visit, scheduled_at=scheduled_at)
    if refusals:
        raise Refused(refusals)
    with transaction.atomic():
        if visit.kind != VisitKind.FOLLOW_UP:
            again = visit_book(
                course=visit.course,
                kind=visit.kind,
                scheduled_at=scheduled_at,
                place=place or visit.place,
                by=by,
                deviation_reason=deviation_reason,
            )
            visit_places_follow(visit=again)
            return again
        again = Visit.objects.create(
            course=visit.course,
            kind=visit.kind,
            protocol_visit=visit.protocol_visit,
            scheduled_at=scheduled_at,
            place=place or visit.place,
            window_opens_on=visit.window_opens_on,
            window_closes_on=visit.window_closes_on,
            status=VisitStatus.BOOKED,
        )
        booking_allow(
            course=visit.course,
            visit=again,
            scheduled_at=scheduled_at,
            by=by,
            deviation_reason=deviation_reason,
            window=(visit.window_opens_on, visit.window_closes_on),
        )
        visit_places_follow(visit=again)
        reminders_schedule(visit=again)
    return again


def _book_again_refusals(*, visit: Visit, scheduled_at: dt.datetime) -> list[str]:
    if visit.status != VisitStatus.MISSED:
        return ["Only a missed visit is booked again; move an open visit instead."]
    course = visit.course
    if not course.takes_appointments:
        return [_NO_APPOINTMENTS.format(state=course.get_state_display().lower())]
    if scheduled_at <= timezone.now():
        return ["The new booking must be in the future."]
    same = Visit.objects.filter(course=course, kind=visit.kind).exclude(pk=visit.pk)
    if visit.protocol_visit_id:
        same = same.filter(protocol_visit_id=visit.protocol_visit_id)
    if same.filter(status__in=OPEN_VISIT_STATUSES).exists():
        return ["This visit is already booked again: move that booking instead."]
    if same.filter(status=VisitStatus.DONE, scheduled_at__gt=visit.scheduled_at).exists():
        return ["This visit has taken place since it was missed."]
    return []


def reminders_suspend(*, course) -> int:
    """A course on hold sends no reminders; its visits stay as booked."""
    return reminders_cancel(
        visits=Visit.objects.filter(course=course, status__in=OPEN_VISIT_STATUSES)
    )


def reminders_resume(*, course) -> None:
    """Write again the reminders of a resumed course's open visits that are still ahead."""
    for visit in Visit.objects.filter(
        course=course, status__in=OPEN_VISIT_STATUSES, scheduled_at__gt=timezone.now()
    ).select_related("course__patient", "course__protocol", "course__site"):
        reminders_schedule(visit=visit)


def visits_cancel_open(*, course) -> int:
    """Cancel a course's open visits and every reminder not yet sent."""
    visits = Visit.objects.filter(course=course, status__in=OPEN_VISIT_STATUSES)
    reminders_cancel(visits=visits)
    return _change_each(visits, status=VisitStatus.CANCELLED)


def _change_each(visits, **fields) -> int:
    """Change a course's few visits one by one, so that the audit history records each."""
    changed = list(visits)
    for visit in changed:
        for name, value in fields.items():
            setattr(visit, name, value)
        visit.save(update_fields=list(fields))
    return len(changed)


def follow_ups_book(*, course, by, picks: dict[int, dt.datetime]) -> list:
    """Book the follow-ups picked (visit id → a slot's start) at the clinic, all or none:
    each through `visit_reschedule`, so each keeps its window and takes its slot."""
    clinic = course_resource(site=course.site, kind=ResourceKind.LUNG_FUNCTION)
    if clinic is None:
        raise Refused(["The site keeps no calendar for its clinic: book each visit by time."])
    visits = list(
        Visit.objects.filter(
            course=course, kind=VisitKind.FOLLOW_UP, status=VisitStatus.PLANNED, pk__in=list(picks)
        ).select_related("course__site", "course__patient", "course__protocol")
    )
    if len(visits) != len(picks):
        raise Refused(["A follow-up picked has been booked meanwhile: look at the set again."])
    with transaction.atomic():
        return [
            visit_reschedule(visit=visit, scheduled_at=picks[visit.pk], place=str(clinic), by=by)
            for visit in visits
        ]


def work_assign(*, key: str, to, by) -> None:
    """Give a worklist row to `to` (taking it from whoever had it); `to=None` frees it."""
    if to is None:
        WorkAssignment.objects.filter(key=key).delete()
        return
    WorkAssignment.objects.update_or_create(
        key=key, defaults={"assigned_to": to, "assigned_by": by, "assigned_at": timezone.now()}
    )


def worklist_row_done(*, key: str, by) -> None:
    """A patient's request answered ("request.r12"), or a booking confirmed by phone
    ("confirm.v34")."""
    kind, _, ident = key.partition(".")
    pk = int(ident[1:]) if ident[1:].isdecimal() else None
    now = timezone.now()
    if kind == "request":
        PatientRequest.objects.filter(pk=pk, done_at__isnull=True).update(done_at=now, done_by=by)
    elif kind == "confirm":
        Visit.objects.filter(pk=pk, confirmed_at__isnull=True).update(confirmed_at=now)
