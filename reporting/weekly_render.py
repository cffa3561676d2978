"""The weekly report rendered: CSV rows, the chart, and the HTML and text bodies."""

import csv
import datetime as dt
import io

from django.template.loader import render_to_string
from django.utils import timezone

from pathway.models import OutcomeMeasure, expansion_day
from pathway.states import CourseState, Therapy
from pathway.therapies import pathway_of
from reporting.funnel import FUNNEL_STEPS
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
            "state_at_week_end",
            "days_in_state_at_week_end",
            "referred_on",
            "harvested_on",
            "released_on",
            "transplanted_on",
            "coi_id",
        ]
    )
    moved = report.courses_moved_since()
    for course in report.courses().iterator(chunk_size=2000):
        zone = course.site.time_zone

        def day(value, zone=zone):
            return timezone.localdate(value, zone).isoformat() if value else ""

        writer.writerow(
            [
                course.pk,
                course.site.code,
                course.patient.mrn,
                moved.get(course.pk, course.state),
                _days_in_state_at_end(report, course, moved),
                day(course.referred_at),
                day(course.harvested_at),
                day(course.released_at),
                day(course.transplanted_at),
                course.coi_id or "",
            ]
        )
    return out.getvalue()


def _days_in_state_at_end(report: WeeklyReport, course, moved: dict[int, str]) -> int | str:
    """Whole days in its state at the week's end; blank for a course that has moved since (the
    step into that state is not read: the CSV stays one query per 2,000 courses)."""
    if course.pk in moved:
        return ""
    return max((report.end - course.state_changed_at).days, 0)


def report_chart_png(report: WeeklyReport) -> bytes:
    """Courses by state, and the latest follow-up's outcomes against the reference figures."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib.figure import Figure

    # A site or visit named in Chinese is drawn in a CJK font where one is installed (the
    # Containerfile brings Noto CJK), not as boxes. Any CJK face draws the Chinese: matplotlib
    # reads only the first face of a collection (Debian's Noto .ttc shows as "Noto Sans CJK
    # JP"), so SC is preferred when it is seen at all, then sans, not mono.
    cjk = sorted(
        {f.name for f in font_manager.fontManager.ttflist if "CJK" in f.name},
        key=lambda name: ("SC" not in name.split(), "Mono" in name, "Sans" not in name, name),
    )[:1]
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", *cjk]}):
        return _chart(report, Figure)


def _chart(report: WeeklyReport, Figure) -> bytes:

    # One panel per measure, each on its own axis and unit: DLCO %, walk metres and FEV1 mL
    # on one axis made the smaller changes unreadable.
    measures = (
        ("dlco_relative_pct", "DLCO", "%"),
        ("walk_m", "6-minute walk", "metres"),
        ("fev1_ml", "FEV1", "mL"),
    )
    figure = Figure(figsize=(15, 4), dpi=100)
    states, *panels, funnel = figure.subplots(
        1, 5, gridspec_kw={"width_ratios": [3, 1.2, 1.2, 1.2, 2.4]}
    )
    labels = [label for label, _ in report.courses_by_state]
    counts = [count for _, count in report.courses_by_state]
    states.barh(labels[::-1], counts[::-1], color="#417690")
    states.set_title(f"Courses by state: {report.scope}")
    states.set_xlabel("courses")

    latest = next(
        (row for row in reversed(report.outcomes) if row["measures"]["walk_m"]["summary"].n), None
    )
    for panel, (key, label, unit) in zip(panels, measures, strict=True):
        if latest is None:
            panel.text(0.5, 0.5, "not measured yet", ha="center", va="center", fontsize=9)
            panel.set_axis_off()
            continue
        summary = latest["measures"][key]["summary"]
        reported = [r.value for r in latest["measures"][key]["references"] if r.kind == "reported"]
        mean = summary.mean or 0
        error = (summary.ci_high - summary.mean) if summary.ci_high is not None else 0
        panel.bar([0], [mean], yerr=[error], color="#79aec8", capsize=4, width=0.6)
        if reported:
            panel.axhline(float(reported[0]), color="#ba2121", linewidth=2)
        panel.axhline(0, color="#999", linewidth=0.5)
        panel.set_xticks([])
        whose = f"{pathway_of(latest['therapy']).short_name}, " if latest.get("therapy") else ""
        panel.set_title(f"{label}\n{whose}{latest['visit']}", fontsize=9)
        panel.set_ylabel(f"change from baseline ({unit})", fontsize=8)
    _funnel_panel(funnel, report)
    if latest is not None:
        figure.text(0.99, 0.01, "bars: programme, 95 % CI; red: published", ha="right", fontsize=8)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _funnel_panel(panel, report: WeeklyReport) -> None:
    """The front door's funnel, every site and therapy of the report together."""
    totals = [sum(row.counts[key] for row in report.funnel) for key, _ in FUNNEL_STEPS]
    labels = [label for _, label in FUNNEL_STEPS]
    panel.set_title(f"The front door, last {THROUGHPUT_WEEKS} weeks", fontsize=9)
    if not totals[0]:
        panel.text(0.5, 0.5, "no enquiries", ha="center", va="center", fontsize=9)
        panel.set_axis_off()
        return
    panel.barh(labels[::-1], totals[::-1], color="#79aec8")
    for y, count in enumerate(totals[::-1]):
        panel.text(count, y, f" {count}", va="center", fontsize=8)
    panel.set_xlabel("people", fontsize=8)
    panel.tick_params(labelsize=8)


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
                "on_hold": report.state_at_end(batch.course) == CourseState.ON_HOLD,
            }
        )
    outcomes, by_therapy = [], {}
    for row in report.outcomes:
        lines = [
            {"label": OutcomeMeasure(key).label, **values}
            for key, values in row["measures"].items()
            if values["summary"].n
        ]
        if lines:
            outcomes.append({"visit": row["visit"], "lines": lines})
            therapy = row.get("therapy") or report.therapies[0]
            by_therapy.setdefault(therapy, []).append(outcomes[-1])
    # Each therapy apart, each against its own published figures.
    outcome_groups = [
        {"name": pathway_of(therapy).short_name, "label": Therapy(therapy).label, "rows": rows}
        for therapy, rows in by_therapy.items()
    ]
    throughput_groups = [
        {"name": pathway_of(therapy).short_name, "rows": rows}
        for therapy, rows in report.throughput_by_therapy
    ]
    return {
        "report": report,
        "last_day": report.end - dt.timedelta(days=1),
        "upcoming_days": LOOKAHEAD_DAYS,
        "throughput_weeks": THROUGHPUT_WEEKS,
        "batches": batches,
        "outcomes": outcomes,
        "outcome_groups": outcome_groups,
        "throughput_groups": throughput_groups,
        "several_therapies": len(report.therapies) > 1,
        "funnel_labels": [label for _, label in FUNNEL_STEPS],
    }


def report_html(report: WeeklyReport) -> str:
    return render_to_string("reporting/report/body.html", report_context(report))


def report_text(report: WeeklyReport) -> str:
    return render_to_string("reporting/report/email.txt", report_context(report))
