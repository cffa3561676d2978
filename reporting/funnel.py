"""The front door's funnel: of the enquiries received in a period, how many had a consultation
booked (and not cancelled), began an evaluation, were found eligible and were treated, per site
and therapy.

Each step is counted as of the period's end, from the rows: a step taken after it does not
change a closed week's figures. An enquiry not converted follows its site's default therapy
(the one it enquired about); a converted one, its course's."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from enquiries.models import Consultation, ConsultationStatus, Enquiry
from pathway.models import Protocol, TransitionLog
from pathway.therapies import PATHWAYS, pathway_of
from reporting.outcomes import MedianDuration

FUNNEL_STEPS = (
    ("enquiries", "Enquiries"),
    ("consultations", "Consultations booked"),
    ("evaluations", "Evaluations started"),
    ("eligible", "Eligible"),
    ("treated", "Treated"),
)
# The steps that treat a patient: the first of either therapy's.
TREATED_BY = ("record_transplant", "record_infusion")


@dataclass
class FunnelRow:
    site_code: str
    therapy: str
    counts: dict[str, int]
    median_days_to_consultation: float | None

    @property
    def therapy_name(self) -> str:
        return pathway_of(self.therapy).short_name

    @property
    def steps(self) -> list[tuple[str, int, int | None]]:
        """Each step's label, count and conversion from the step before (a whole per cent;
        None for the first step, or when the step before counted none)."""
        found, before = [], None
        for key, label in FUNNEL_STEPS:
            count = self.counts[key]
            rate = None if not before else round(100 * count / before)
            found.append((label, count, rate))
            before = count
        return found


def _first_consultation(end: dt.datetime):
    """The first consultation of an enquiry booked before `end` and not cancelled."""
    return Consultation.objects.filter(enquiry=OuterRef("pk"), booked_at__lt=end).exclude(
        status=ConsultationStatus.CANCELLED
    )


def enquiry_funnel(*, sites, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The funnel of the enquiries received in [start, end) at `sites`, one row per site and
    therapy, as plain values (the weekly report keeps them as JSON), in one query."""
    course_log = TransitionLog.objects.filter(course_id=OuterRef("course_id"), at__lt=end)
    first = _first_consultation(end)
    site_default = Protocol.objects.filter(default_at=OuterRef("site_id")).order_by("name")
    programme_default = (
        Protocol.objects.filter(is_default=True).values_list("therapy", flat=True).first()
    )
    rows = (
        Enquiry.objects.filter(site__in=sites, submitted_at__gte=start, submitted_at__lt=end)
        .annotate(
            therapy=Coalesce(
                F("course__protocol__therapy"),
                Subquery(site_default.values("therapy")[:1]),
                Value(programme_default or str(next(iter(PATHWAYS)))),
            ),
            consulted_at=Subquery(first.order_by("scheduled_at").values("scheduled_at")[:1]),
        )
        .values("site__code", "therapy")
        .annotate(
            enquiries=Count("id"),
            consultations=Count("id", filter=Q(Exists(first))),
            evaluations=Count("id", filter=Q(course__referred_at__lt=end)),
            eligible=Count("id", filter=Q(Exists(course_log.filter(transition="approve")))),
            treated=Count("id", filter=Q(Exists(course_log.filter(transition__in=TREATED_BY)))),
            to_consultation=MedianDuration(
                ExpressionWrapper(
                    F("consulted_at") - F("submitted_at"), output_field=DurationField()
                )
            ),
        )
    )
    order = {str(t): i for i, t in enumerate(PATHWAYS)}
    found = [
        {
            "site": row["site__code"],
            "therapy": str(row["therapy"]),
            "counts": {step: row[step] for step, _ in FUNNEL_STEPS},
            "median_days_to_consultation": _days(row["to_consultation"]),
        }
        for row in rows
    ]
    return sorted(found, key=lambda row: (row["site"], order.get(row["therapy"], len(order))))


def _days(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):  # SQLite hands back microseconds
        value = dt.timedelta(microseconds=value)
    return round(value.total_seconds() / 86400, 1)


def funnel_rows(figures: list[dict]) -> list[FunnelRow]:
    """The kept figures as rows to show."""
    return [
        FunnelRow(
            site_code=row["site"],
            therapy=row["therapy"],
            counts=row["counts"],
            median_days_to_consultation=row["median_days_to_consultation"],
        )
        for row in figures
    ]
