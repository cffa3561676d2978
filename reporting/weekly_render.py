"""The weekly report rendered: CSV rows, the chart, and the HTML and text bodies."""

import csv
import datetime as dt
import io

from django.template.loader import render_to_string
from django.utils import timezone

from pathway.models import OutcomeMeasure, expansion_day
from pathway.states import CourseState
from reporting.weekly_report import LOOKAHEAD_DAYS, THROUGHPUT_WEEKS, WeeklyReport


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
                "day": expansion_day(
                    received_at=batch.received_at,
                    at=report.end - dt.timedelta(seconds=1),  # the week's last day
                    zone=zone,
                ),
                "opens": opens,
                "closes": closes,
                "on_hold": batch.course.state == CourseState.ON_HOLD,
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
        "upcoming_days": LOOKAHEAD_DAYS,
        "throughput_weeks": THROUGHPUT_WEEKS,
        "batches": batches,
        "outcomes": outcomes,
    }


def report_html(report: WeeklyReport) -> str:
    return render_to_string("reporting/report/body.html", report_context(report))


def report_text(report: WeeklyReport) -> str:
    return render_to_string("reporting/report/email.txt", report_context(report))
