"""The front door's funnel in the weekly report, against a hand count."""

import datetime as dt
import os
import uuid

import pytest
import time_machine
from django.utils import timezone

from enquiries.models import Consultation, ConsultationStatus, Enquiry, EnquiryKind
from pathway import services
from pathway.states import CourseState
from reporting.funnel import enquiry_funnel, funnel_rows
from reporting.weekly_render import report_chart_png, report_html, report_text
from reporting.weekly_report import week_label, weekly_report
from tests.factories import (
    BodyMeasurementFactory,
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    SiteFactory,
)
from tests.test_browser import DOCS_SCREENSHOTS


def enquiry(site, *, days_ago: float, **fields) -> Enquiry:
    return Enquiry.objects.create(
        site=site,
        kind=EnquiryKind.APPLICATION,
        first_name="Ana",
        email="ana@example.org",
        consent_email=True,
        submission_key=uuid.uuid4().hex,
        submitted_at=timezone.now() - dt.timedelta(days=days_ago),
        **fields,
    )


def consultation(enquiry, *, days_after: float, by, status=ConsultationStatus.DONE):
    return Consultation.objects.create(
        enquiry=enquiry,
        scheduled_at=enquiry.submitted_at + dt.timedelta(days=days_after),
        mode="video",
        video_link="https://video.example.org/room",
        status=status,
        booked_by=by,
        booked_at=enquiry.submitted_at + dt.timedelta(hours=1),
    )


def converted(enquiry, pathway, *, to=None):
    patient = PatientFactory(site=enquiry.site)
    for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
        factory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    with time_machine.travel(pathway.at(-1), tick=False):  # converted 41 days ago
        course = services.course_create(patient=patient, by=pathway.coordinator)
    if to is not None:
        pathway.advance(course, to)
    enquiry.patient, enquiry.course = patient, course
    enquiry.save()
    return course


@pytest.fixture
def front_door(pathway, msc, msc_site):
    """At London: seven enquiries in the window (one before it) at every step; at Madrid,
    whose default protocol gives MSC, two."""
    london = SiteFactory(code="LDN", time_zone="Europe/London")
    by = pathway.coordinator
    enquiry(london, days_ago=200)  # before the window: not counted
    enquiry(london, days_ago=50)  # asked, never seen
    consultation(enquiry(london, days_ago=50), days_after=1, by=by, status="cancelled")
    consultation(enquiry(london, days_ago=50), days_after=3, by=by)
    seen_and_converted = enquiry(london, days_ago=50)
    consultation(seen_and_converted, days_after=2, by=by)
    converted(seen_and_converted, pathway)
    treated = enquiry(london, days_ago=50)
    consultation(treated, days_after=4, by=by)
    converted(treated, pathway, to=CourseState.FOLLOW_UP)
    declined = enquiry(london, days_ago=45)
    consultation(declined, days_after=10, by=by)
    # Madrid's courses follow MSC: its enquiries count there, under MSC.
    madrid_protocol = msc.protocol()
    madrid_protocol.default_at.add(msc_site)
    consultation(enquiry(msc_site, days_ago=20), days_after=5, by=by)
    enquiry(msc_site, days_ago=3)
    return london


def test_the_funnel_counts_each_step_as_a_hand_count_does(front_door, msc_site):
    end = timezone.now() + dt.timedelta(hours=1)
    rows = enquiry_funnel(sites=[front_door, msc_site], start=end - dt.timedelta(weeks=13), end=end)
    assert rows == [
        {
            "site": "LDN",
            "therapy": "p63",
            "counts": {
                "enquiries": 6,
                "consultations": 4,  # the cancelled one is not a consultation
                "evaluations": 2,
                "eligible": 1,
                "treated": 1,
            },
            # 3, 2, 4 and 10 days: the median of four is the mean of the middle two.
            "median_days_to_consultation": 3.5,
        },
        {
            "site": "MAD",
            "therapy": "msc",
            "counts": {
                "enquiries": 2,
                "consultations": 1,
                "evaluations": 0,
                "eligible": 0,
                "treated": 0,
            },
            "median_days_to_consultation": 5.0,
        },
    ]
    london = funnel_rows(rows)[0]
    assert london.therapy_name == "P63+"
    assert london.steps == [
        ("Enquiries", 6, None),
        ("Consultations booked", 4, 67),
        ("Evaluations started", 2, 50),
        ("Eligible", 1, 50),
        ("Treated", 1, 100),
    ]


def test_a_step_taken_after_the_end_is_not_counted(front_door):
    # 30 days ago: both converted and one approved (40 days ago), none treated yet (7).
    end = timezone.now() - dt.timedelta(days=30)
    [row] = enquiry_funnel(sites=[front_door], start=end - dt.timedelta(weeks=13), end=end)
    assert row["counts"] == {
        "enquiries": 6,
        "consultations": 4,  # each booked an hour after its enquiry
        "evaluations": 2,
        "eligible": 1,
        "treated": 0,
    }


def test_the_weekly_report_shows_the_funnel_in_html_text_and_chart(front_door, msc_site):
    week = week_label(timezone.localdate())
    report = weekly_report(week=week)
    by_site = {(row.site_code, row.therapy): row for row in report.funnel}
    assert by_site["LDN", "p63"].counts["enquiries"] == 6
    assert by_site["MAD", "msc"].counts["consultations"] == 1
    text = report_text(report)
    assert "THE FRONT DOOR" in text
    assert (
        "LDN, P63+: Enquiries 6 → Consultations booked 4 (67 %) → Evaluations started 2 (50 %) → "
        "Eligible 1 (50 %) → Treated 1 (100 %); median days from enquiry to consultation: 3.5"
    ) in text
    assert "Median days, enquiry to consultation" in report_html(report)
    chart = report_chart_png(report)
    assert chart.startswith(b"\x89PNG")
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":  # the README's picture: the panel
        from matplotlib.figure import Figure

        from reporting.weekly_render import _funnel_panel

        figure = Figure(figsize=(5.5, 2.6), layout="constrained")
        _funnel_panel(figure.subplots(), report)
        figure.savefig(DOCS_SCREENSHOTS / "32-the-funnel.png", dpi=110)


def test_a_week_kept_before_the_front_door_reads_without_a_funnel(pathway):
    from reporting.weekly_report import _report_from, weekly_figures

    site = SiteFactory()
    week = week_label(timezone.localdate() - dt.timedelta(days=14))
    figures = weekly_figures(week=week, site=site)
    del figures["funnel"]
    report = _report_from(week, site, figures, computed_at=timezone.now(), kept=True)
    assert report.funnel == []
    assert "No enquiries." in report_text(report)
