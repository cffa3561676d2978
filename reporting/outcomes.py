"""Change from baseline at each follow-up, per course and per cohort, computed in the database.

Baseline is the evaluation: the latest record of each kind not taken at a follow-up visit, on
or before the transplant date. A follow-up's value is the record entered against that visit.

One course's changes are worked out when asked. The cohort's are aggregated from
`FollowUpOutcome`, where each done follow-up's changes are stored by the same SQL whenever a
patient's measurements, visits or transplant date change (the receivers are in apps.py).
"""

from django.db import transaction
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce, NullIf

from pathway.models import OutcomeMeasure, ReferenceFigure, TreatmentCourse
from pathway.states import Therapy
from patients.models import CReactiveProtein, LungFunctionTest, SixMinuteWalkTest, SymptomScore
from patients.selectors import baseline_records
from reporting.models import FollowUpOutcome
from reporting.statistics import summarise
from scheduling.models import Visit, VisitKind, VisitStatus


class Median(Aggregate):
    """PostgreSQL's percentile_cont(0.5); on SQLite an aggregate registered at connect."""

    function = "PERCENTILE_CONT"
    name = "Median"
    output_field = FloatField()
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"

    def as_sqlite(self, compiler, connection, **extra):
        sqlite = self.copy()
        sqlite.function, sqlite.template = "MEDIAN", "%(function)s(%(expressions)s)"
        return super(Median, sqlite).as_sql(compiler, connection, **extra)


class MedianDuration(Median):
    """The median of a duration (SQLite hands back microseconds)."""

    output_field = DurationField()


class SqliteMedian:
    """The MEDIAN aggregate for SQLite connections."""

    def __init__(self):
        self.values = []

    def step(self, value):
        if value is not None:
            self.values.append(value)

    def finalize(self):
        if not self.values:
            return None
        ordered, middle = sorted(self.values), len(self.values) // 2
        if len(ordered) % 2:
            return float(ordered[middle])
        return (ordered[middle - 1] + ordered[middle]) / 2


def _value(model, field: str, *, baseline: bool):
    if baseline:
        # Before the product was first given: the transplant, or the first infusion.
        records = baseline_records(
            model,
            patient_id=OuterRef("course__patient_id"),
            transplanted_on=Coalesce(
                OuterRef("course__transplanted_on"), OuterRef("course__first_infused_on")
            ),
        )
    else:
        records = model.objects.filter(
            patient_id=OuterRef("course__patient_id"), visit_id=OuterRef("pk")
        ).order_by("-taken_on", "-id")
    return Cast(Subquery(records.values(field)[:1]), FloatField())


def _change(model, field: str, scale: float = 1):
    return ExpressionWrapper(
        (_value(model, field, baseline=False) - _value(model, field, baseline=True)) * Value(scale),
        output_field=FloatField(),
    )


def _relative_change(model, field: str):
    baseline = _value(model, field, baseline=True)
    return ExpressionWrapper(
        (_value(model, field, baseline=False) - baseline)
        * Value(100.0)
        / NullIf(baseline, Value(0.0)),
        output_field=FloatField(),
    )


CHANGES = {
    OutcomeMeasure.DLCO_RELATIVE: lambda: _relative_change(LungFunctionTest, "dlco_pct_predicted"),
    OutcomeMeasure.DLCO_POINTS: lambda: _change(LungFunctionTest, "dlco_pct_predicted"),
    OutcomeMeasure.FEV1_ML: lambda: _change(LungFunctionTest, "fev1_l", scale=1000),
    OutcomeMeasure.WALK_M: lambda: _change(SixMinuteWalkTest, "distance_m"),
    OutcomeMeasure.CAT: lambda: _change(SymptomScore, "cat"),
    OutcomeMeasure.MMRC: lambda: _change(SymptomScore, "mmrc"),
    OutcomeMeasure.CRP: lambda: _change(CReactiveProtein, "crp_mg_l"),
}


def follow_up_changes(*, courses):
    """Done follow-up visits of `courses`, each annotated with its change for every measure."""
    return Visit.objects.filter(
        course__in=courses, kind=VisitKind.FOLLOW_UP, status=VisitStatus.DONE
    ).annotate(**{measure.value: change() for measure, change in CHANGES.items()})


def course_outcomes(*, course) -> list[dict]:
    """Per done follow-up of one course: its name, weeks and change for every measure."""
    visits = follow_up_changes(courses=[course.pk]).select_related("protocol_visit")
    return [
        {
            "visit": visit.protocol_visit.name,
            "weeks": visit.protocol_visit.weeks_after_transplant,
            **{measure.value: getattr(visit, measure.value) for measure in CHANGES},
        }
        for visit in visits.order_by("protocol_visit__weeks_after_transplant")
    ]


def _stored_rows(courses) -> list[FollowUpOutcome]:
    rows = follow_up_changes(courses=courses).values(
        "pk", "course_id", "course__site_id", "protocol_visit_id", "done_at", *CHANGES
    )
    return [
        FollowUpOutcome(
            visit_id=row["pk"],
            course_id=row["course_id"],
            site_id=row["course__site_id"],
            protocol_visit_id=row["protocol_visit_id"],
            done_at=row["done_at"],
            **{measure: row[measure] for measure in CHANGES},
        )
        for row in rows
    ]


def follow_up_outcomes_refresh(*, patient_ids) -> int:
    """Store again the changes of every done follow-up of these patients' courses. Three
    queries; called whenever something a change is worked out from is written."""
    courses = TreatmentCourse.objects.filter(patient_id__in=patient_ids)
    with transaction.atomic():
        FollowUpOutcome.objects.filter(course__in=courses).delete()
        return len(FollowUpOutcome.objects.bulk_create(_stored_rows(courses)))


def follow_up_outcomes_rebuild(*, chunk: int = 2000) -> int:
    """Store every course's changes afresh (after bulk loads, or to check nothing drifted)."""
    stored = 0
    with transaction.atomic():
        FollowUpOutcome.objects.all().delete()
        ids = list(TreatmentCourse.objects.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), chunk):
            rows = _stored_rows(ids[start : start + chunk])
            stored += len(FollowUpOutcome.objects.bulk_create(rows, batch_size=chunk))
    return stored


def cohort_outcomes(*, courses, before=None, therapy: str = Therapy.P63) -> list[dict]:
    """Per follow-up of the protocol: n, mean, median and 95 % CI of each measure's change,
    with the reference figures of `therapy` (and those of every therapy, as an MCID) beside
    them; only follow-ups done `before`, when given. `courses` are of that one therapy: each
    therapy is compared with its own published figures. Two queries, whatever the cohort's
    size."""
    aggregates = {}
    for measure in CHANGES:
        aggregates |= {
            f"{measure.value}__n": Count(measure.value),
            f"{measure.value}__mean": Avg(measure.value),
            # Mean of squares, not StdDev: SQLite's sample deviation fails on a single value.
            f"{measure.value}__mean_sq": Avg(F(measure.value) * F(measure.value)),
            f"{measure.value}__median": Median(measure.value),
        }
    stored = FollowUpOutcome.objects.filter(course__in=courses)
    if before is not None:
        stored = stored.filter(done_at__lt=before)
    rows = (
        stored.values("protocol_visit__name", "protocol_visit__weeks_after_transplant")
        .annotate(**aggregates)
        .order_by("protocol_visit__weeks_after_transplant", "protocol_visit__name")
    )
    references = list(ReferenceFigure.objects.filter(therapy__in=["", therapy]))
    results = []
    for row in rows:
        weeks = row["protocol_visit__weeks_after_transplant"]
        measures = {}
        for measure in CHANGES:
            key = measure.value
            measures[key] = {
                "summary": summarise(
                    n=row[f"{key}__n"],
                    mean=row[f"{key}__mean"],
                    mean_of_squares=row[f"{key}__mean_sq"],
                    median=row[f"{key}__median"],
                ),
                "references": [
                    r
                    for r in references
                    if r.measure == key and r.weeks_after_transplant in (None, weeks)
                ],
            }
        results.append({"visit": row["protocol_visit__name"], "weeks": weeks, "measures": measures})
    return results
