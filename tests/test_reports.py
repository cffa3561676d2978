"""The weekly status report, figure by figure, on a cohort built by hand."""

import csv
import datetime as dt
import io
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pathway import services
from pathway.models import TreatmentCourse
from pathway.records import adverse_event_record, clinical_record_save
from pathway.scans import alerts_scan_overdue
from pathway.states import CourseState
from patients.models import AdverseEvent, LungFunctionTest, SixMinuteWalkTest, SymptomScore
from reporting.weekly_render import report_csv, report_html, report_text
from reporting.weekly_report import weekly_report, weekly_reports_queue
from scheduling.models import Notification, NotificationStatus, NotificationTemplate, Visit
from tests.factories import (
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    SiteFactory,
)

pytestmark = pytest.mark.django_db
LONDON = ZoneInfo("Europe/London")
WEEK = "2026-W11"  # Monday 9 to Sunday 15 March 2026


def london(*args):
    return dt.datetime(*args, tzinfo=LONDON)


def new_course(pathway, site, start, mrn, records=True):
    """A patient referred at `start`, with evaluation records dated that day."""
    with time_machine.travel(start, tick=False):
        patient = PatientFactory(site=site, mrn=mrn)
        if records:
            for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
                factory(patient=patient, taken_on=start.date())
        return services.course_create(patient=patient, by=pathway.coordinator)


def measure(visit, on, fev1, dlco, walk, cat, mmrc, by):
    common = {"taken_on": on, "visit": visit, "patient": visit.course.patient if visit else None}
    if visit is None:
        common.pop("patient")
    for record in (
        LungFunctionTest(
            fev1_l=Decimal(fev1),
            fev1_pct_predicted=45,
            fvc_l=Decimal("2.80"),
            dlco_pct_predicted=Decimal(dlco),
            **common,
        ),
        SixMinuteWalkTest(distance_m=walk, **common),
        SymptomScore(cat=cat, mmrc=mmrc, **common),
    ):
        clinical_record_save(record=record, by=by)


@pytest.fixture
def cohort(pathway, coordinator, clinician):
    site = SiteFactory(code="LDN", name="North London Chest Clinic", time_zone="Europe/London")
    other_site = SiteFactory(code="OXF", name="Oxford", time_zone="Europe/London")
    courses = {}
    # A: referred and into evaluation in the week.
    courses["A"] = new_course(pathway, site, london(2026, 3, 9, 10), "A-1")
    with time_machine.travel(london(2026, 3, 9, 11), tick=False):
        services.course_start_evaluation(course=courses["A"], by=pathway.coordinator)
    # B: released the week before, transplanted on Tuesday 10 March.
    courses["B"] = new_course(pathway, site, london(2026, 2, 5, 10), "B-1")
    pathway.starting(london(2026, 2, 5, 10)).advance(courses["B"], CourseState.FOLLOW_UP)
    # C: released on Sunday 15 March.
    courses["C"] = new_course(pathway, site, london(2026, 2, 12, 10), "C-1")
    pathway.starting(london(2026, 2, 12, 10)).advance(courses["C"], CourseState.RELEASED)
    # D: expanding since 26 February.
    courses["D"] = new_course(pathway, site, london(2026, 2, 23, 10), "D-1")
    pathway.starting(london(2026, 2, 23, 10)).advance(courses["D"], CourseState.EXPANDING)
    # E: transplanted on 3 January; its 4-week visit was missed and alerted on 10 February.
    courses["E"] = new_course(pathway, site, london(2025, 12, 1, 10), "E-1")
    pathway.starting(london(2025, 12, 1, 10)).advance(courses["E"], CourseState.FOLLOW_UP)
    with time_machine.travel(london(2026, 2, 10, 9), tick=False):
        alerts_scan_overdue()
    # F: transplanted on 3 November, measured at 4 and 12 weeks; two adverse events.
    courses["F"] = new_course(pathway, site, london(2025, 10, 1, 10), "F-1", records=False)
    with time_machine.travel(london(2025, 10, 1, 12), tick=False):
        for factory in (ChestCTFactory, ClinicalAssessmentFactory):
            factory(patient=courses["F"].patient, taken_on=dt.date(2025, 10, 1))
        for record in (
            LungFunctionTest(
                patient=courses["F"].patient,
                taken_on=dt.date(2025, 10, 1),
                fev1_l=Decimal("1.20"),
                fev1_pct_predicted=45,
                fvc_l=Decimal("2.80"),
                dlco_pct_predicted=Decimal(40),
            ),
            SixMinuteWalkTest(
                patient=courses["F"].patient, taken_on=dt.date(2025, 10, 1), distance_m=300
            ),
            SymptomScore(
                patient=courses["F"].patient, taken_on=dt.date(2025, 10, 1), cat=20, mmrc=3
            ),
        ):
            clinical_record_save(record=record, by=clinician)
    pathway.starting(london(2025, 10, 1, 10)).advance(courses["F"], CourseState.FOLLOW_UP)
    f_visits = {
        v.protocol_visit.weeks_after_transplant: v
        for v in Visit.objects.filter(course=courses["F"], kind="follow_up")
    }
    with time_machine.travel(london(2026, 3, 12, 12), tick=False):
        measure(f_visits[4], dt.date(2025, 12, 1), "1.30", "44", 340, 18, 2, clinician)
        measure(f_visits[12], dt.date(2026, 1, 26), "1.35", "46", 360, 15, 2, clinician)
        for onset, grade in ((dt.date(2026, 1, 1), 1), (dt.date(2026, 3, 10), 2)):
            adverse_event_record(
                event=AdverseEvent(
                    course=courses["F"],
                    onset_on=onset,
                    grade=grade,
                    serious=False,
                    outcome="recovered",
                    description="Cough",
                ),
                by=clinician,
            )
    # Another site's patient, referred in the same week.
    courses["G"] = new_course(pathway, other_site, london(2026, 3, 10, 10), "OTHER-999")
    # Reminders: only these count.
    Notification.objects.filter(template=NotificationTemplate.VISIT_REMINDER).update(
        status=NotificationStatus.CANCELLED
    )
    visit = Visit.objects.filter(course=courses["E"], kind="follow_up").first()
    g_visit = Visit.objects.create(
        course=courses["G"], kind="follow_up", scheduled_at=london(2026, 3, 20, 10)
    )
    rows = [
        (visit, NotificationStatus.SENT, {"sent_at": london(2026, 3, 10, 9)}),
        (visit, NotificationStatus.SENT, {"sent_at": london(2026, 3, 15, 23, 59)}),
        (visit, NotificationStatus.SENT, {"sent_at": london(2026, 3, 8, 23, 59)}),  # week before
        (visit, NotificationStatus.FAILED, {"failed_at": london(2026, 3, 11, 9)}),
        (visit, NotificationStatus.PENDING, {}),
        (visit, NotificationStatus.PENDING, {}),
        (visit, NotificationStatus.PENDING, {}),
        (g_visit, NotificationStatus.SENT, {"sent_at": london(2026, 3, 10, 9)}),  # other site
    ]
    Notification.objects.bulk_create(
        Notification(
            template=NotificationTemplate.VISIT_REMINDER,
            channel="email",
            patient=v.course.patient,
            visit=v,
            status=status,
            send_after=london(2026, 3, 1),
            created_at=london(2026, 3, 1),
            idempotency_key=f"test.{i}",
            **extra,
        )
        for i, (v, status, extra) in enumerate(rows)
    )
    return site, courses


def test_every_figure_of_a_sites_week(cohort):
    site, courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        report = weekly_report(week=WEEK, site=site)

    assert (report.start, report.end) == (london(2026, 3, 9), london(2026, 3, 16))
    states = dict(report.courses_by_state)
    assert {label: n for label, n in states.items() if n} == {
        "In evaluation": 1,
        "Released": 1,
        "Expanding": 1,
        "Follow-up": 3,
    }
    assert report.referrals == 1  # A; G is another site's
    assert dict(report.transitions) == {"Start evaluation": 1, "Release": 1, "Record transplant": 1}
    assert report.completions == 0

    [upcoming] = report.upcoming  # E's 12-week visit, due Saturday 28 March
    assert (upcoming.course, upcoming.protocol_visit.weeks_after_transplant) == (courses["E"], 12)
    [overdue] = report.overdue_visits  # E's 4-week visit, window closed 7 February
    assert (overdue.course, overdue.window_closes_on) == (courses["E"], dt.date(2026, 2, 7))
    [alert] = report.open_alerts
    assert alert.visit == overdue and (report.end - alert.created_at).days == 33

    [batch] = report.batches_in_expansion
    assert batch.course == courses["D"]
    from reporting.weekly_render import report_context

    [row] = report_context(report)["batches"]
    assert (row["day"], row["opens"], row["closes"]) == (
        17,
        dt.date(2026, 3, 19),
        dt.date(2026, 4, 2),
    )

    outcomes = {row["weeks"]: row["measures"] for row in report.outcomes}
    four, twelve = outcomes[4], outcomes[12]
    assert four["fev1_ml"]["summary"].n == 1 and four["fev1_ml"]["summary"].mean == pytest.approx(
        100
    )
    assert four["dlco_relative_pct"]["summary"].mean == pytest.approx(10)
    assert four["dlco_pct_points"]["summary"].mean == pytest.approx(4)
    assert four["walk_m"]["summary"].mean == pytest.approx(40)
    assert (four["cat"]["summary"].mean, four["mmrc"]["summary"].mean) == (
        pytest.approx(-2),
        pytest.approx(-1),
    )
    assert twelve["fev1_ml"]["summary"].mean == pytest.approx(150)
    assert twelve["dlco_relative_pct"]["summary"].mean == pytest.approx(15)
    assert twelve["walk_m"]["summary"].median == pytest.approx(60)
    assert four["fev1_ml"]["summary"].ci_low is None  # one patient: no interval

    assert report.adverse_events_by_grade == [(1, 0, 1), (2, 1, 1), (3, 0, 0), (4, 0, 0), (5, 0, 0)]
    assert report.reminders == {"sent": 2, "failed": 1, "pending": 3}
    assert report.throughput_days == [
        ("Referral → harvest", 2.0),
        ("Harvest → release", 29.0),
        ("Release → transplant", 2.0),
    ]


def test_a_sites_report_never_shows_another_sites_patients(cohort):
    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        report = weekly_report(week=WEEK, site=site)
        rendered = report_text(report) + report_html(report) + report_csv(report)
        everyone = report_csv(weekly_report(week=WEEK))
    assert "OTHER-999" not in rendered and "OXF" not in rendered
    assert "OTHER-999" in everyone
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert sorted(r["mrn"] for r in rows) == ["A-1", "B-1", "C-1", "D-1", "E-1", "F-1"]


def test_the_report_from_the_command_line(cohort, capsys):
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        call_command("weekly_report", "--week", WEEK, "--site", "LDN")
    out = capsys.readouterr().out
    assert "Weekly status report: North London Chest Clinic" in out and "Referrals: 1" in out
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="A week looks like 2026-W48"):
        call_command("weekly_report", "--week", "March")


def test_the_report_in_the_admin(client, cohort, admin_user):
    client.force_login(admin_user)
    url = reverse("weekly-report")
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        page = client.get(url, {"week": WEEK, "site": "LDN"})
        download = client.get(url, {"week": WEEK, "site": "LDN", "format": "csv"})
    assert (
        page.status_code == 200
        and "Weekly status report: North London Chest Clinic" in page.content.decode()
    )
    assert "data:image/png;base64," in page.content.decode()
    assert download["Content-Type"] == "text/csv" and b"A-1" in download.content


def _bulk_courses(site, n):
    patients = PatientFactory.create_batch(n, site=site)
    TreatmentCourse.objects.bulk_create(
        TreatmentCourse(patient=p, site=site, protocol_id=1, referred_at=london(2026, 3, 10))
        for p in patients
    )


def test_the_report_costs_the_same_queries_for_10_and_1000_courses(pathway):
    site = SiteFactory()
    counts = []
    weekly_report(week=WEEK, site=site)  # each count below then rewrites the kept row
    for n in (10, 990):
        _bulk_courses(site, n)
        with CaptureQueriesContext(connection) as queries:
            report = weekly_report(week=WEEK, site=site, recompute=True)
        counts.append(len(queries))
    assert report.referrals == 1000
    assert counts[0] == counts[1], counts


# Delivery.


@pytest.fixture
def recipients(coordinator, django_user_model):
    from django.contrib.auth.models import Group

    london_site = SiteFactory(code="LDN", time_zone="Europe/London")
    shanghai = SiteFactory(code="SHA", time_zone="Asia/Shanghai")
    london_site.coordinators.add(coordinator)
    shanghai.coordinators.add(coordinator)
    lead = django_user_model.objects.create_user("lead", email="lead@clinic.test")
    lead.groups.add(Group.objects.get(name="programme lead"))
    return london_site, shanghai, lead


def queued(week="2026-W13"):
    """The report rows queued for `week` (last week's were due all this week, and are ignored)."""
    return sorted(
        Notification.objects.filter(
            template=NotificationTemplate.WEEKLY_REPORT, report_week=week
        ).values_list("idempotency_key", flat=True)
    )


def test_reports_go_out_at_07_00_on_monday_in_each_sites_time_across_dst(recipients, coordinator):
    # British Summer Time began on Sunday 29 March 2026: 07:00 in London is 06:00 UTC.
    with time_machine.travel(dt.datetime(2026, 3, 29, 22, 59, tzinfo=dt.UTC), tick=False):
        weekly_reports_queue()  # Monday 06:59 in Shanghai: nothing yet
    assert queued() == []
    with time_machine.travel(dt.datetime(2026, 3, 29, 23, 0, tzinfo=dt.UTC), tick=False):
        weekly_reports_queue()  # Monday 07:00 in Shanghai
    assert queued() == [f"weekly.2026-W13.SHA.u{coordinator.pk}"]
    with time_machine.travel(dt.datetime(2026, 3, 30, 5, 59, tzinfo=dt.UTC), tick=False):
        weekly_reports_queue()  # 06:59 BST
    assert len(queued()) == 1
    with time_machine.travel(dt.datetime(2026, 3, 30, 6, 0, tzinfo=dt.UTC), tick=False):
        weekly_reports_queue()  # 07:00 BST: London's coordinator and (TIME_ZONE London) the lead
    lead = recipients[2]
    assert queued() == sorted(
        [
            f"weekly.2026-W13.SHA.u{coordinator.pk}",
            f"weekly.2026-W13.LDN.u{coordinator.pk}",
            f"weekly.2026-W13.all.u{lead.pk}",
        ]
    )


def test_a_second_run_sends_nothing_new(recipients):
    monday = dt.datetime(2026, 3, 30, 7, 30, tzinfo=LONDON)
    with time_machine.travel(monday, tick=False):
        weekly_reports_queue()
        first = queued()
        weekly_reports_queue()
    with time_machine.travel(monday + dt.timedelta(days=2), tick=False):
        weekly_reports_queue()
    assert queued() == first and len(first) == 3


def test_the_email_arrives_with_html_text_csv_and_chart(recipients, coordinator, settings):
    from delivery.outbox import notifications_dispatch_batch
    from tests.servers import SmtpSink

    with SmtpSink() as smtp:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        with time_machine.travel(dt.datetime(2026, 3, 30, 7, 30, tzinfo=LONDON), tick=False):
            weekly_reports_queue()
            notifications_dispatch_batch(batch_size=10)
            notifications_dispatch_batch(batch_size=10)
    assert len(smtp.messages) == 3
    message = next(
        m
        for m in smtp.messages
        if m["To"] == coordinator.email
        and "North" not in m["Subject"]
        and "Chest Clinic" in m["Subject"]
    )
    assert message["Subject"].startswith("Weekly status report 2026-W13")
    assert "Courses by state" in message.get_body(("html",)).get_content()
    assert "COURSES BY STATE" in message.get_body(("plain",)).get_content()
    parts = {part.get_filename(): part for part in message.iter_attachments()}
    csv_name = next(name for name in parts if name.endswith(".csv"))
    assert parts[csv_name].get_content().startswith("course,site,mrn")
    assert parts["weekly-chart.png"].get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Notification.objects.filter(status=NotificationStatus.SENT).count() == 3


def test_the_chart_gives_each_measure_its_own_panel_and_unit(monkeypatch):
    """DLCO %, walk metres and FEV1 mL each on an axis of their own, beside the states."""
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from reporting import weekly_render

    drawn = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    report = SimpleNamespace(
        courses_by_state=[("Referred", 1)], outcomes=[], scope="All sites", funnel=[]
    )
    png = weekly_render.report_chart_png(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    [figure] = drawn
    assert len(figure.axes) == 5  # states, three measures, the front door's funnel
    assert [t.get_text() for t in figure.axes[1].texts] == ["not measured yet"]
    assert [t.get_text() for t in figure.axes[4].texts] == ["no enquiries"]


def test_a_chart_titled_in_chinese_draws_every_glyph():
    """A scope named in Chinese is drawn in the CJK font the machine has (Debian's Noto CJK
    shows to matplotlib as "Noto Sans CJK JP"), not as boxes: matplotlib warns of each glyph
    missing from the fonts it was given."""
    import shutil
    import subprocess
    import warnings
    from types import SimpleNamespace

    from reporting import weekly_render

    if (
        not shutil.which("fc-list")
        or not subprocess.run(
            ["fc-list", ":lang=zh"], capture_output=True, text=True
        ).stdout.strip()
    ):
        pytest.skip("no CJK font on this machine (the Containerfile and .ci/run install one)")
    report = SimpleNamespace(
        courses_by_state=[("转诊", 1)], outcomes=[], scope="浦东诊所 北伦敦诊所", funnel=[]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = weekly_render.report_chart_png(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]


# As of the end of the week.


def test_a_weeks_report_read_later_says_what_was_true_at_its_end(cohort, pathway):
    """Everything that happened after Sunday leaves the week's figures as they were."""
    site, courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        then = weekly_report(week=WEEK, site=site)
    with time_machine.travel(london(2026, 3, 17, 10), tick=False):
        # C, released on Sunday, is booked for transplant on Tuesday.
        services.course_schedule_transplant(
            course=courses["C"],
            by=pathway.coordinator,
            scheduled_at=london(2026, 3, 19, 10),
            place="Endoscopy 1",
        )
        [alert] = then.open_alerts
        alert.acknowledged_at, alert.acknowledged_by = london(2026, 3, 17, 10), pathway.coordinator
        alert.save()
        overdue = then.overdue_visits[0]
        overdue.status, overdue.done_at = "done", london(2026, 3, 17, 10)
        overdue.save()
        new_course(pathway, site, london(2026, 3, 17, 10), "LATE-1")  # referred after the week
    with time_machine.travel(london(2026, 3, 20, 10), tick=False):
        pathway.release(courses["D"])  # D's batch, expanding on Sunday, released on Friday
    with time_machine.travel(london(2026, 3, 30, 9), tick=False):
        kept = weekly_report(week=WEEK, site=site)
        later = weekly_report(week=WEEK, site=site, recompute=True)
    assert report_text(kept) == report_text(then)  # kept as it was worked out on the 16th

    assert later.courses_by_state == then.courses_by_state
    assert dict(later.courses_by_state)["Released"] == 1
    assert dict(later.courses_by_state)["Transplant scheduled"] == 0
    assert [b.course for b in later.batches_in_expansion] == [courses["D"]]
    assert later.open_alerts == then.open_alerts
    assert later.overdue_visits == then.overdue_visits
    assert later.outcomes == then.outcomes
    assert later.totals == then.totals
    with time_machine.travel(london(2026, 3, 30, 9), tick=False):
        rows = {row["mrn"]: row for row in csv.DictReader(io.StringIO(report_csv(later)))}
    assert rows["C-1"]["state_at_week_end"] == "released"
    assert rows["C-1"]["days_in_state_at_week_end"] == ""  # moved on since: not read back
    assert rows["A-1"]["state_at_week_end"] == "evaluation"
    assert "LATE-1" not in rows
    # And this week's report, as of its own end, has them all moved on.
    with time_machine.travel(london(2026, 3, 30, 9), tick=False):
        now = weekly_report(week="2026-W12", site=site)
    states = dict(now.courses_by_state)
    assert (states["Released"], states["Transplant scheduled"], states["Referred"]) == (1, 1, 1)
    assert now.batches_in_expansion == [] and now.open_alerts == []


def test_the_report_says_its_moment_and_zone_and_each_reference_once(cohort):
    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        report = weekly_report(week=WEEK, site=site)
        text, html = report_text(report), report_html(report)
    moment = (
        "Every figure is as of the end of the week, Mon 16 Mar 2026 00:00 GMT (Europe/London),"
        " as recorded by Mon 16 Mar 2026 09:00 GMT, when they were worked out."
    )
    assert moment in text and moment in html
    assert "published 30.0 (Minimal clinically important difference)" in text
    assert html.count("Minimal clinically important difference") == text.count(
        "Minimal clinically important difference"
    )
    assert "difference; Minimal clinically important difference" not in html


def test_a_long_list_shows_its_first_rows_and_says_how_many_in_all(cohort, monkeypatch):
    from reporting import weekly_report as module

    site, _courses = cohort
    monkeypatch.setattr(module, "LIST_ROWS", 0)
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        report = weekly_report(week=WEEK, site=site)
        text = report_text(report)
    assert report.upcoming == [] and report.totals["upcoming"] == 1
    assert "OPEN ALERTS (the first 0 of 1)" in text


# A closed week's figures, kept.


def _ack_the_open_alert(then, by):
    [alert] = then.open_alerts
    # Recorded late: acknowledged on Saturday of the week, entered on the Tuesday after.
    alert.acknowledged_at, alert.acknowledged_by = london(2026, 3, 14, 10), by
    alert.save()


def test_a_closed_weeks_figures_are_kept_until_worked_out_again(cohort, pathway):
    from reporting.models import WeeklyFigures

    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        then = weekly_report(week=WEEK, site=site)
    with time_machine.travel(london(2026, 3, 17, 10), tick=False):
        _ack_the_open_alert(then, pathway.coordinator)
        with CaptureQueriesContext(connection) as queries:
            kept = weekly_report(week=WEEK, site=site)
        assert len(queries) <= 6  # the kept row, the listed rows, the reference figures
        assert kept.open_alerts == then.open_alerts and kept.totals == then.totals
        assert kept.computed_at == london(2026, 3, 16, 9)
        again = weekly_report(week=WEEK, site=site, recompute=True)
    assert again.open_alerts == [] and again.totals["open_alerts"] == 0
    assert again.computed_at == london(2026, 3, 17, 10)
    assert WeeklyFigures.objects.filter(week=WEEK).count() == 1
    # Kept and worked out are read the same way: nothing else differs.
    with time_machine.travel(london(2026, 3, 18, 10), tick=False):
        assert report_text(weekly_report(week=WEEK, site=site)) == report_text(again)


def test_a_week_not_over_is_worked_out_each_time_and_never_kept(cohort):
    from reporting.models import WeeklyFigures

    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 15, 18), tick=False):
        report = weekly_report(week=WEEK, site=site)
        text = report_text(report)
    assert not WeeklyFigures.objects.exists()
    assert "The week is not over: every figure is as of Sun 15 Mar 2026 18:00 GMT" in text


def test_the_report_page_works_a_weeks_figures_out_again(client, cohort, pathway, admin_user):
    site, _courses = cohort
    client.force_login(admin_user)
    url = reverse("weekly-report")
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        page = client.get(url, {"week": WEEK, "site": "LDN"}).content.decode()
    assert "Work the figures out again from today" in page
    assert "as recorded by Mon 16 Mar 2026 09:00 GMT" in page
    then = weekly_report(week=WEEK, site=site)
    with time_machine.travel(london(2026, 3, 17, 10), tick=False):
        client.force_login(admin_user)
        _ack_the_open_alert(then, pathway.coordinator)
        assert "Open alerts (1)" in client.get(url, {"week": WEEK, "site": "LDN"}).content.decode()
        done = client.post(url, {"week": WEEK, "site": "LDN"}, follow=True)
    page = done.content.decode()
    assert done.redirect_chain[-1][0] == f"{url}?week={WEEK}&site=LDN"
    assert "were worked out again from today" in page
    assert "Open alerts (0)" in page and "as recorded by Tue 17 Mar 2026 10:00 GMT" in page


def test_a_refused_recompute_writes_nothing(client, cohort, admin_user):
    from reporting.models import WeeklyFigures

    client.force_login(admin_user)
    url = reverse("weekly-report")
    for week in ("March", "2026-W99", "2026-W11\x00", "x" * 5000):
        done = client.post(url, {"week": week, "site": "LDN"})
        assert done.status_code in (302, 400)  # a NUL is refused before the view
        assert not WeeklyFigures.objects.exists()
    page = client.get(done.url if done.status_code == 302 else url).content.decode()
    assert "worked out again" not in page
    assert client.put(url).status_code == 405


def test_the_command_works_a_weeks_figures_out_again(cohort, pathway):
    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        then = weekly_report(week=WEEK, site=site)
    with time_machine.travel(london(2026, 3, 17, 10), tick=False):
        _ack_the_open_alert(then, pathway.coordinator)
        out = io.StringIO()
        call_command("weekly_report", "--week", WEEK, "--site", "LDN", stdout=out)
        assert "OPEN ALERTS (1)" in out.getvalue()
        call_command("weekly_report", "--week", WEEK, "--site", "LDN", "--recompute", stdout=out)
        assert "OPEN ALERTS (0)" in out.getvalue()


def test_only_coordinators_and_leads_work_a_weeks_figures_out_again(
    client, cohort, django_user_model
):
    from django.contrib.auth.models import Group

    from reporting.models import WeeklyFigures

    site, _courses = cohort
    url = reverse("weekly-report")
    auditor = django_user_model.objects.create_user("audit", is_staff=True)
    auditor.groups.add(Group.objects.get(name="auditor"))
    coordinator = django_user_model.objects.create_user("coord", is_staff=True)
    coordinator.groups.add(Group.objects.get(name="coordinator"))
    site.coordinators.add(coordinator)
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        client.force_login(auditor)
        page = client.get(url, {"week": WEEK, "site": "LDN"}).content.decode()
        assert "as recorded by" in page and "Work the figures out again" not in page
        assert client.post(url, {"week": WEEK, "site": "LDN"}).status_code == 403
        assert WeeklyFigures.objects.get().computed_at == london(2026, 3, 16, 9)
    with time_machine.travel(london(2026, 3, 16, 10), tick=False):
        client.force_login(coordinator)
        page = client.get(url, {"week": WEEK}).content.decode()
        assert "Work the figures out again" in page
        assert client.post(url, {"week": WEEK, "site": "LDN"}).status_code == 302
        assert WeeklyFigures.objects.get().computed_at == london(2026, 3, 16, 10)


def test_a_kept_week_says_on_hold_as_it_was_then(cohort, pathway):
    from reporting.weekly_render import report_context

    site, courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        weekly_report(week=WEEK, site=site)
    with time_machine.travel(london(2026, 3, 17, 10), tick=False):
        services.course_hold(course=courses["D"], by=pathway.coordinator, reason="Infection")
        kept = weekly_report(week=WEEK, site=site)
        [row] = report_context(kept)["batches"]
    assert row["batch"].course == courses["D"] and row["on_hold"] is False


def test_a_week_is_kept_from_its_mondays_sending_time(cohort):
    from reporting.models import WeeklyFigures

    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 6, 59), tick=False):
        early = weekly_report(week=WEEK, site=site)
        text = report_text(early)
    assert not early.kept and not WeeklyFigures.objects.exists()
    assert "as recorded by Mon 16 Mar 2026 06:59 GMT" in text  # over, but not kept yet
    with time_machine.travel(london(2026, 3, 16, 7), tick=False):
        assert weekly_report(week=WEEK, site=site).kept
    assert WeeklyFigures.objects.count() == 1


def test_the_latest_week_sent_turns_over_at_mondays_sending_time():
    """What the bench times as a kept week: the week before last until Monday 07:00, in the
    zone asked (Monday 06:59 in Sydney is Sunday evening in London)."""
    from reporting.weekly_report import latest_sent_week

    assert latest_sent_week(london(2026, 3, 16, 6, 59), LONDON) == "2026-W10"
    assert latest_sent_week(london(2026, 3, 16, 7), LONDON) == WEEK
    assert latest_sent_week(london(2026, 3, 22, 23, 59), LONDON) == WEEK
    sydney = ZoneInfo("Australia/Sydney")
    monday_7_sydney = dt.datetime(2026, 3, 16, 7, tzinfo=sydney)
    assert latest_sent_week(monday_7_sydney - dt.timedelta(minutes=1), sydney) == "2026-W10"
    assert latest_sent_week(monday_7_sydney, sydney) == WEEK


def test_a_kept_week_keeps_the_zone_it_was_worked_out_in(cohort):
    site, _courses = cohort
    with time_machine.travel(london(2026, 3, 16, 9), tick=False):
        weekly_report(week=WEEK, site=site)
        site.time_zone = ZoneInfo("Asia/Tokyo")
        site.save()
        text = report_text(weekly_report(week=WEEK, site=site))
    assert "Week 2026-W11 (Mon 9 Mar 2026 – Sun 15 Mar 2026), times in Europe/London" in text


@pytest.mark.parametrize(
    "week", ["2026-W10\n", "٢٠٢٦-W10", "2026-W１０", "9999-W52", "0001-W01", "2025-W53"]
)
def test_a_week_that_is_not_one_is_refused_plainly(client, cohort, admin_user, week):
    from reporting.models import WeeklyFigures

    with pytest.raises(ValueError):
        weekly_report(week=week)
    client.force_login(admin_user)
    url = reverse("weekly-report")
    assert client.get(url, {"week": week}).status_code == 302
    assert client.post(url, {"week": week}).status_code == 302
    assert not WeeklyFigures.objects.exists()


# Two therapies in one programme.


def _measured(visit, on, *, by, fev1, walk, crp=None):
    from patients.models import CReactiveProtein

    records = [
        LungFunctionTest(
            visit=visit,
            taken_on=on,
            fev1_l=Decimal(fev1),
            fev1_pct_predicted=45,
            fvc_l=Decimal("2.80"),
            dlco_pct_predicted=Decimal(45),
        ),
        SixMinuteWalkTest(visit=visit, taken_on=on, distance_m=walk),
    ]
    if crp is not None:
        records.append(CReactiveProtein(visit=visit, taken_on=on, crp_mg_l=Decimal(crp)))
    for record in records:
        if visit is None:
            raise AssertionError("a baseline is entered with its patient")
        clinical_record_save(record=record, by=by)


def _baseline(patient, on, *, by, fev1, walk, crp=None):
    from patients.models import CReactiveProtein

    records = [
        LungFunctionTest(
            patient=patient,
            taken_on=on,
            fev1_l=Decimal(fev1),
            fev1_pct_predicted=45,
            fvc_l=Decimal("2.80"),
            dlco_pct_predicted=Decimal(40),
        ),
        SixMinuteWalkTest(patient=patient, taken_on=on, distance_m=walk),
    ]
    if crp is not None:
        records.append(CReactiveProtein(patient=patient, taken_on=on, crp_mg_l=Decimal(crp)))
    for record in records:
        clinical_record_save(record=record, by=by)


def test_the_weekly_report_shows_both_therapies_apart(pathway, msc, clinician):
    from django.utils import timezone

    from reporting.weekly_report import week_label

    site = SiteFactory(code="MIX", name="Both Therapies Clinic", time_zone="Europe/London")
    now = timezone.now()
    # A P63+ course transplanted 37 days ago, its 4-week visit measured.
    p63 = pathway.starting(now - dt.timedelta(days=70))
    patient = PatientFactory(site=site)
    for factory in (ChestCTFactory, ClinicalAssessmentFactory):
        factory(patient=patient, taken_on=p63.at(-1).date())
    _baseline(patient, p63.at(-1).date(), by=clinician, fev1="1.20", walk=300)
    with time_machine.travel(p63.at(-1), tick=False):
        course = services.course_create(patient=patient, by=pathway.coordinator)
    p63.advance(course, CourseState.FOLLOW_UP)
    four = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    _measured(
        four, four.window_opens_on + dt.timedelta(days=7), by=clinician, fev1="1.30", walk=330
    )
    # An MSC course infused 38 days ago, its 4-week visit measured with CRP.
    msc.lot(site)
    infused = msc.course(site)
    _baseline(infused.patient, msc.at(-1).date(), by=clinician, fev1="1.00", walk=280, crp="12.0")
    msc.advance(infused, CourseState.FOLLOW_UP)
    four = Visit.objects.get(course=infused, protocol_visit__weeks_after_transplant=4)
    _measured(
        four,
        four.window_opens_on + dt.timedelta(days=7),
        by=clinician,
        fev1="1.08",
        walk=340,
        crp="4.5",
    )
    # And one MSC course allocated, between steps.
    msc.advance(msc.course(site), CourseState.PRODUCT_ALLOCATED)

    report = weekly_report(week=week_label(timezone.localdate()), site=site)
    assert report.therapies == ["p63", "msc"]
    by_therapy = {row["therapy"]: row["measures"] for row in report.outcomes if row["weeks"] == 4}
    p63_four, msc_four = by_therapy["p63"], by_therapy["msc"]
    assert p63_four["walk_m"]["summary"].mean == pytest.approx(30)
    assert msc_four["walk_m"]["summary"].mean == pytest.approx(60)
    assert msc_four["fev1_ml"]["summary"].mean == pytest.approx(80)
    assert msc_four["crp_mg_l"]["summary"].mean == pytest.approx(-7.5)
    # Each against its own published figures: the MSC meta-analysis, no DLCO reference.
    msc_refs = {
        (r.measure, r.kind, r.value, r.therapy) for m in msc_four.values() for r in m["references"]
    }
    assert msc_refs == {
        ("walk_m", "reported", 52, "msc"),
        ("fev1_ml", "reported", 71, "msc"),
        ("walk_m", "mcid", 30, ""),
    }
    assert msc_four["dlco_relative_pct"]["references"] == []
    assert all(r.therapy in ("", "p63") for m in p63_four.values() for r in m["references"])
    states = dict(report.courses_by_state)
    assert states["Follow-up"] == 2 and states["Product allocated"] == 1
    labels = [label for label, _ in report.throughput_days]
    assert "P63+: Referral → harvest" in labels and "MSC: Referral → allocation" in labels
    text = report_text(report)
    assert "Autologous P63+ airway progenitor cells" in text
    assert "Allogeneic mesenchymal stem cells" in text
    assert "C-reactive protein, change (mg/L): n=1, mean -7.5" in text
    html = report_html(report)
    assert html.count("<h4>") == 2
