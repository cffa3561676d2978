"""Check-ins between visits: the protocol's questionnaires, asked as links, answered once.

`checkins_tick` (beat, every 15 minutes) opens the invitations due now (a diary every week
after the transplant; mMRC as each follow-up's window opens), sends each by the patient's
consented channels, reminds once if it is unanswered, and closes it as missed when its time
is up. An answer is stored once, as a clinical record; one that needs a clinician (a score
past its threshold, an exacerbation) raises one alert at once.
"""

import datetime as dt
import hashlib
import secrets

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import Refused
from common.zones import date_words
from pathway.models import ProtocolInstrument, TreatmentCourse
from pathway.states import CourseState
from patients.models import QuestionnaireResponse
from patients.questionnaires import answers_errors, questionnaire_score
from scheduling.alerts import alert_raise
from scheduling.models import (
    AlertKind,
    InvitationLink,
    InvitationStatus,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    QuestionnaireInvitation,
    Severity,
    VisitKind,
)
from scheduling.outbox import notifications_write
from scheduling.rules import patient_send_after, told_channels

# Invitations open at this local time at the patient's site, on the day they are due.
OPENS_AT = dt.time(10, 0)


def _openings(course: TreatmentCourse, asked: ProtocolInstrument) -> list[dt.datetime]:
    """When this course's invitations to this instrument open."""
    zone = course.site.time_zone
    if asked.every_days:
        last = course.follow_ups_from_on + dt.timedelta(weeks=asked.until_weeks)
        days = []
        day = course.follow_ups_from_on + dt.timedelta(days=asked.every_days)
        while day <= last:
            days.append(day)
            day += dt.timedelta(days=asked.every_days)
    else:
        days = [
            visit.window_opens_on
            for visit in course.visits.all()
            if visit.kind == VisitKind.FOLLOW_UP and visit.window_opens_on
        ]
    return [dt.datetime.combine(day, OPENS_AT, tzinfo=zone) for day in sorted(set(days))]


def invitations_open_due(*, now: dt.datetime | None = None) -> int:
    """Open the invitations whose time has come (and not passed), each sent at once."""
    now = now or timezone.now()
    opened = 0
    courses = TreatmentCourse.objects.filter(
        Q(transplanted_on__isnull=False) | Q(follow_up_anchor_on__isnull=False),
        state=CourseState.FOLLOW_UP,
    ).select_related("site", "patient", "protocol")
    for course in courses.prefetch_related("visits", "protocol__instruments__instrument"):
        for asked in course.protocol.instruments.all():
            for opens in _openings(course, asked):
                closes = opens + dt.timedelta(days=asked.open_days)
                if not opens <= now < closes:
                    continue
                try:
                    with transaction.atomic():
                        invitation = QuestionnaireInvitation.objects.create(
                            course=course,
                            instrument=asked.instrument,
                            opens_at=opens,
                            closes_at=closes,
                        )
                        _send(invitation, now=now, reminder=False)
                except IntegrityError:
                    continue  # opened already
                opened += 1
    return opened


def _send(invitation: QuestionnaireInvitation, *, now, reminder: bool) -> None:
    course = invitation.course
    patient, protocol = course.patient, course.protocol
    channels = told_channels(patient)
    which = "reminder" if reminder else "first"
    for channel in channels:
        send_after = patient_send_after(now, channel=channel, patient=patient, protocol=protocol)
        if send_after >= invitation.closes_at:
            continue
        notifications_write(
            [
                Notification(
                    template=NotificationTemplate.QUESTIONNAIRE,
                    channel=channel,
                    patient=patient,
                    invitation=invitation,
                    send_after=send_after,
                    max_attempts=protocol.delivery_max_attempts,
                    idempotency_key=f"questionnaire.i{invitation.pk}.{which}.{channel}",
                )
            ]
        )


def invitations_remind_and_close(*, now: dt.datetime | None = None) -> tuple[int, int]:
    """Remind once what is still unanswered after the protocol's days; close as missed what
    is past its time (and cancel its messages not yet sent)."""
    now = now or timezone.now()
    reminded = 0
    open_ones = QuestionnaireInvitation.objects.filter(
        status=InvitationStatus.OPEN,
        reminded_at__isnull=True,
        closes_at__gt=now,
        course__state=CourseState.FOLLOW_UP,
    ).select_related("course__patient", "course__protocol", "course__site")
    remind_after = {
        (asked.protocol_id, asked.instrument_id): asked.remind_after_days
        for asked in ProtocolInstrument.objects.all()
    }
    for invitation in open_ones:
        days = remind_after.get((invitation.course.protocol_id, invitation.instrument_id))
        if days is None or now < invitation.opens_at + dt.timedelta(days=days):
            continue
        with transaction.atomic():
            if QuestionnaireInvitation.objects.filter(
                pk=invitation.pk, reminded_at__isnull=True
            ).update(reminded_at=now):
                _send(invitation, now=now, reminder=True)
                reminded += 1
    # Past its time, or its course held or withdrawn since it opened: closed unanswered.
    missed = QuestionnaireInvitation.objects.filter(status=InvitationStatus.OPEN).filter(
        Q(closes_at__lte=now) | ~Q(course__state=CourseState.FOLLOW_UP)
    )
    Notification.objects.filter(invitation__in=missed, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.CANCELLED
    )
    closed = missed.update(status=InvitationStatus.MISSED)
    return reminded, closed


def checkins_tick(*, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    opened = invitations_open_due(now=now)
    reminded, closed = invitations_remind_and_close(now=now)
    return {"opened": opened, "reminded": reminded, "closed": closed}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_link_issue(*, invitation: QuestionnaireInvitation) -> str:
    """A new link's token for a message; only its hash is kept."""
    token = secrets.token_urlsafe(18)
    InvitationLink.objects.create(invitation=invitation, token_hash=_hash(token))
    return token


def invitation_open(
    *, token: str, now: dt.datetime | None = None
) -> QuestionnaireInvitation | None:
    """The invitation a token names, while it can be answered."""
    if not token or len(token) > 64:
        return None
    now = now or timezone.now()
    link = (
        InvitationLink.objects.filter(token_hash=_hash(token))
        .select_related(
            "invitation__instrument", "invitation__course__patient__site", "invitation__course"
        )
        .first()
    )
    if link is None:
        return None
    invitation = link.invitation
    if invitation.status != InvitationStatus.OPEN or not (
        invitation.opens_at <= now < invitation.closes_at
    ):
        return None
    if invitation.course.state != CourseState.FOLLOW_UP:
        return None
    return invitation


def invitation_link_language(*, token: str) -> str | None:
    """The language of the patient a check-in link was sent to, answered, closed or open;
    None for a token no link has."""
    if not token or len(token) > 64:
        return None
    return (
        InvitationLink.objects.filter(token_hash=_hash(token))
        .values_list("invitation__course__patient__preferred_language", flat=True)
        .first()
    )


def invitation_answer(
    *, invitation: QuestionnaireInvitation, answers: dict, now: dt.datetime | None = None
) -> QuestionnaireResponse:
    """Store the answers once, as a clinical record with its score; answers that need a
    clinician raise one alert. Refused when incomplete, or already answered."""
    now = now or timezone.now()
    definition = invitation.instrument.definition
    errors = answers_errors(definition, answers)
    if errors:
        raise Refused(errors)
    score = questionnaire_score(definition, answers)
    course = invitation.course
    with transaction.atomic():
        answered = QuestionnaireInvitation.objects.filter(
            pk=invitation.pk, status=InvitationStatus.OPEN, closes_at__gt=now
        ).update(status=InvitationStatus.ANSWERED, answered_at=now)
        if not answered:
            raise Refused(["These questions have been answered already, or have closed."])
        response = QuestionnaireResponse.objects.create(
            patient=course.patient,
            instrument=invitation.instrument,
            answers={item["code"]: answers[item["code"]] for item in definition["items"]},
            score=score.value,
            needs_clinician=score.needs_clinician,
            taken_on=timezone.localdate(now, course.site.time_zone),
        )
        QuestionnaireInvitation.objects.filter(pk=invitation.pk).update(response=response)
        Notification.objects.filter(
            invitation=invitation, status=NotificationStatus.PENDING
        ).update(status=NotificationStatus.CANCELLED)
        if score.needs_clinician:
            alert_raise(
                kind=AlertKind.SYMPTOMS,
                severity=Severity.URGENT,
                course=course,
                condition_key=f"symptoms.i{invitation.pk}",
                message=(
                    f"{invitation.instrument}: the patient's answers on "
                    f"{date_words(response.taken_on)} need a clinician (score "
                    f"{score.value.normalize()}). Call the patient."
                ),
            )
    return response
