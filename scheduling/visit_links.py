"""The one-tap page's links: issued with a reminder, opened without a login, answered once."""

import datetime as dt
import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from common.errors import Refused
from common.zones import local_words
from scheduling.models import (
    PatientRequest,
    PatientRequestKind,
    Visit,
    VisitLink,
    VisitStatus,
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def visit_link_issue(*, visit: Visit) -> str:
    """A new link's token (only its hash is kept); it works until the visit's time. Once
    the patient has answered (confirmed, or asked for another time still to be dealt with),
    a later reminder's link shows the visit but does not ask again."""
    return visit_links_issue(visits=[visit])[0]


def visit_links_issue(*, visits: list[Visit]) -> list[str]:
    """`visit_link_issue` for many visits at once (a batch of reminders): a new token for
    each entry, in order, in three queries whatever their number."""
    if not visits:
        return []
    ids = {visit.pk for visit in visits}
    # Read from the database: the caller's copies of the visits may predate the answers.
    answered = set(
        Visit.objects.filter(pk__in=ids, confirmed_at__isnull=False).values_list("pk", flat=True)
    ) | set(
        PatientRequest.objects.filter(
            visit__in=ids, done_at__isnull=True, kind=PatientRequestKind.CHANGE
        ).values_list("visit_id", flat=True)
    )
    now = timezone.now()
    tokens = [secrets.token_urlsafe(18) for _ in visits]
    VisitLink.objects.bulk_create(
        VisitLink(
            visit=visit,
            token_hash=_hash(token),
            expires_at=visit.scheduled_at,
            used_at=now if visit.pk in answered else None,
        )
        for visit, token in zip(visits, tokens, strict=True)
    )
    return tokens


def visit_link_open(*, token: str, now: dt.datetime | None = None) -> VisitLink | None:
    """The link a token names, if it still works: not expired, its visit still booked."""
    if not token or len(token) > 64:
        return None
    now = now or timezone.now()
    link = (
        VisitLink.objects.filter(token_hash=_hash(token), expires_at__gt=now)
        .select_related(
            "visit__course__patient",
            "visit__course__site",
            "visit__course__protocol",
            "visit__protocol_visit",
        )
        .first()
    )
    if link is None or link.visit.status != VisitStatus.BOOKED:
        return None
    return link


def visit_link_language(*, token: str) -> str | None:
    """The language of the patient a token's link was issued to, whether or not the link
    still works (spent, expired, its visit moved or cancelled); None for a token no link
    has. The page saying a link no longer works is in it."""
    if not token or len(token) > 64:
        return None
    return (
        VisitLink.objects.filter(token_hash=_hash(token))
        .values_list("visit__course__patient__preferred_language", flat=True)
        .first()
    )


def visit_link_answer(
    *,
    link: VisitLink,
    confirm: bool,
    wanted_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> PatientRequest | None:
    """The patient confirms, or asks for another time (`wanted_at`: the free slot they
    picked, if they picked one); asking returns the request put on the worklist. Once: the
    visit's links stop acting, whichever was used. The booking stands until a coordinator
    moves it."""
    now = now or timezone.now()
    with transaction.atomic():
        used = VisitLink.objects.filter(
            visit=link.visit, used_at__isnull=True, expires_at__gt=now
        ).update(used_at=now)
        if not used:
            raise Refused(["This link has been used already."])
        visit = link.visit
        if confirm:
            Visit.objects.filter(pk=visit.pk).update(confirmed_at=now)
            return None
        # The worklist shows the text: the slot as the site's staff read it.
        zone = visit.course.site.time_zone
        text = f"Asked for {local_words(wanted_at, zone)}." if wanted_at else ""
        return PatientRequest.objects.create(
            kind=PatientRequestKind.CHANGE,
            patient=visit.course.patient,
            visit=visit,
            text=text or "Asked for another time.",
            wanted_at=wanted_at,
            source="link",
            created_at=now,
        )


def visit_change_asked(*, visit: Visit) -> PatientRequest | None:
    """The patient's latest request for another time for `visit`, not dealt with yet."""
    return (
        PatientRequest.objects.filter(
            visit=visit, kind=PatientRequestKind.CHANGE, done_at__isnull=True
        )
        .order_by("-created_at", "-pk")
        .first()
    )
