"""A coordinator's day in a real browser: Debian's Chromium, driven by Playwright, against a
live server on PostgreSQL.

Screenshots of each step go to var/screenshots/ (git-ignored). With UPDATE_DOCS_SCREENSHOTS=1,
the ones the manual shows (FOR_THE_DOCS) are copied to docs/screenshots/.
"""

import datetime as dt
import io
import json
import os
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.db import connections
from django.utils import timezone, translation

from common.zones import date_words
from pathway import services
from pathway.scans import alerts_scan_overdue
from pathway.states import CourseState
from reporting.weekly_report import week_label
from scheduling.alerts import alert_raise
from scheduling.models import AlertKind, Resource, ResourceKind, ResourceSession
from scheduling.services import visit_reschedule
from tests.factories import (
    PASSWORD,
    BodyMeasurementFactory,
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    SiteFactory,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
FOR_THE_DOCS = (
    "01-dashboard",
    "05-schedule-harvest-form",
    "06-harvest-booked",
    "07-follow-ups",
    "10-label",
    "12-capacity",
    "13-one-tap-page",
    "14-worklist-1366",
    "04-course",
    "09-weekly-report",
    "14-one-tap-confirmed",
    "15-another-time-asked",
    "16-one-tap-page-zh",
    "16-did-you-mean",
    "17-release-to-sign",
    "18-transplant-at-the-bedside",
    "21-msc-book-infusion",
    "22-msc-record-infusion",
)
CHANGE_PAGE = re.compile(r"/\d+/change/(\?|$)")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is not installed: apt-get install -y chromium (.ci/run does)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # still synchronous, so Django's guard against async contexts does not apply to them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
        # While Playwright's loop runs, asgiref keeps this thread's database connections per
        # context, apart from the ones Django's test teardown closes: the test's connection is
        # closed here, or the next browser test would take it up again, even after the server
        # ended it (CI: the enquiry page's tests after the drill that drops connections).
        connections.close_all()


class Shots:
    def __init__(self):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.taken = []

    def __call__(self, page, name):
        """A screenshot to var/screenshots/; with UPDATE_DOCS_SCREENSHOTS=1, one the docs show
        is copied into docs/screenshots/ at once."""
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=path)
        self.taken.append(path)
        if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and name in FOR_THE_DOCS:
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_SCREENSHOTS / path.name)


# What Chromium reports blocking under the Content-Security-Policy, on any page of the test.
CSP_VIOLATIONS: list[str] = []


def _watch_csp(message):
    if "Content Security Policy" in message.text:
        CSP_VIOLATIONS.append(message.text)


def calendars_for(site):
    """The site's suite, Tuesdays and Thursdays 08:00–13:00 with two places; the lab's
    expansion capacity, six batches a day."""
    suite = Resource.objects.create(
        name="Leeds bronchoscopy suite",
        kind=ResourceKind.BRONCHOSCOPY,
        site=site,
        time_zone=site.time_zone,
    )
    for weekday in (1, 3):
        ResourceSession.objects.create(
            resource=suite, weekday=weekday, starts_at=dt.time(8), ends_at=dt.time(13), capacity=2
        )
    lab = Resource.objects.create(
        name="Cell lab expansion", kind=ResourceKind.EXPANSION, time_zone="Europe/London"
    )
    for weekday in range(7):
        ResourceSession.objects.create(
            resource=lab, weekday=weekday, starts_at=dt.time(0), ends_at=dt.time(23, 59), capacity=6
        )
    return suite, lab


def log_in(context, base, user):
    context.on("console", _watch_csp)
    page = context.new_page()
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    return page


def test_a_coordinators_day(django_db_setup, browser, live_server, pathway, settings):
    # django_db_setup first, so the live server (and its connection) stops before the test
    # database is dropped.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    CSP_VIOLATIONS.clear()
    coordinator, clinician = pathway.coordinator, pathway.clinician
    site = SiteFactory(name="Leeds Chest Clinic", code="LDS")
    other_site = SiteFactory(name="Bristol Lung Unit", code="BRS", staff=[])
    now = timezone.now()

    def course_at(mrn, state, start):
        patient = PatientFactory(site=site, mrn=mrn, last_name=f"Patient{mrn[-2:]}")
        LungFunctionTestFactory(patient=patient)
        ChestCTFactory(patient=patient)
        ClinicalAssessmentFactory(patient=patient)
        BodyMeasurementFactory(patient=patient)
        with time_machine.travel(start - dt.timedelta(days=3), tick=False):
            course = services.course_create(patient=patient, by=coordinator)
        return pathway.starting(start).advance(course, state)

    to_book = course_at("LDS-1001", CourseState.ELIGIBLE, now - dt.timedelta(days=2))
    to_transplant = course_at(
        "LDS-1002", CourseState.TRANSPLANT_SCHEDULED, now - dt.timedelta(days=34)
    )
    pathway.starting(now - dt.timedelta(days=34)).deliver_to_site(to_transplant)
    site.members.add(pathway.clinician2)
    overdue = course_at("LDS-1003", CourseState.FOLLOW_UP, now - dt.timedelta(days=130))
    assert alerts_scan_overdue() >= 1
    stranger = PatientFactory(site=other_site, mrn="BRS-2001", last_name="Elsewhere")

    base = live_server.url
    shots = Shots()
    context = browser.new_context(viewport={"width": 1400, "height": 900})

    # 1. The coordinator signs in and lands on the dashboard of their site.
    page = log_in(context, base, coordinator)
    dashboard = page.locator("#pathway-dashboard")
    assert "Leeds Chest Clinic" in dashboard.inner_text()
    assert "Bristol Lung Unit" not in dashboard.inner_text()
    shots(page, "01-dashboard")

    # 2. Finds a patient by MRN.
    page.goto(f"{base}/admin/patients/patient/")
    page.fill("#searchbar", "LDS-1001")
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"q=LDS-1001"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "LDS-1001" in rows.first.inner_text()
    shots(page, "02-patient-search")

    # 3. Opens the course from the course list, found by the same MRN.
    page.goto(f"{base}/admin/pathway/treatmentcourse/?q=LDS-1001")
    assert page.locator(".state-badge").first.inner_text() == "Eligible"
    shots(page, "03-course-list")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_url(CHANGE_PAGE)

    # 4. Reads the eligibility checklist and the timeline.
    checklist = page.locator("table.eligibility-checklist").inner_text()
    assert "✔" in checklist and "✘" not in checklist
    assert "FEV1" in checklist
    timeline = page.locator(".pathway-timeline")
    assert "Schedule the harvest bronchoscopy." in timeline.inner_text()
    assert "step-upcoming" in (
        timeline.locator("li", has_text="Harvest").first.get_attribute("class")
    )
    shots(page, "04-course")

    # 5. Books the harvest through the transition's form; the timeline moves.
    #    The site keeps calendars: the form offers the earliest chains, all free.
    _suite, lab = calendars_for(site)
    page.click("button[name=_fsm_transition_to][value=schedule_harvest]")
    page.wait_for_url(re.compile(r"/transition/schedule_harvest/$"))
    chains = page.locator("input[name=chain]")
    assert chains.count() == 3
    assert "provisional transplant" in page.inner_text("#id_chain")
    assert re.search(
        r"Harvest \w{3} \d\d \w{3} \d{4} 0[89]:00 (GMT|BST)", page.inner_text("#id_chain")
    )
    chains.nth(1).check()
    picked = chains.nth(1).get_attribute("value")
    harvest_day = dt.date.fromisoformat(picked[:10])
    shots(page, "05-schedule-harvest-form")
    page.click('input[type=submit][value="Schedule harvest"]')
    page.wait_for_url(CHANGE_PAGE)
    assert "Schedule harvest: the course is now harvest scheduled." in page.inner_text(
        ".messagelist"
    )
    harvest = page.locator(".pathway-timeline li", has_text="Harvest").first
    assert "step-due" in harvest.get_attribute("class")
    assert f"booked for {date_words(harvest_day)}" in harvest.inner_text()
    to_book.refresh_from_db()
    assert to_book.state == CourseState.HARVEST_SCHEDULED
    assert "provisional transplant" in page.inner_text(".field-capacity")
    assert to_book.reservations.filter(resource=lab).count() == 36
    shots(page, "06-harvest-booked")

    # 6. The clinician records a transplant at the bedside, a second clinician of the site
    #    confirming; the coordinator then sees the follow-ups appear on the timeline.
    bedside = log_in(browser.new_context(), base, clinician)
    bedside.goto(f"{base}/admin/pathway/treatmentcourse/{to_transplant.pk}/change/")
    follow_up_steps = page.locator(".pathway-timeline li", has_text="week lung function")
    bedside.click("button[name=_fsm_transition_to][value=record_transplant]")
    # An hour ago, in the site's time: "today at 08:15" is in the future before 08:15.
    performed = timezone.localtime(now - dt.timedelta(hours=1), site.time_zone)
    bedside.fill("#id_performed_at_0", performed.date().isoformat())
    bedside.fill("#id_performed_at_1", performed.strftime("%H:%M"))
    bedside.fill("#id_bedside_coi_id", to_transplant.coi_id)
    bedside.fill("#id_cells_administered", "140000000")
    bedside.fill("#id_weight_kg", str(Decimal("70.0")))
    bedside.fill("#id_weighed_on", performed.date().isoformat())
    assert bedside.locator("#id_second_person option").all_inner_texts()[1:] == [
        str(pathway.clinician2)
    ]
    bedside.select_option("#id_second_person", label=str(pathway.clinician2))
    bedside.fill("#id_second_person_password", PASSWORD)
    bedside.click('input[type=submit][value="Record transplant"]')
    bedside.wait_for_url(CHANGE_PAGE)
    assert "the course is now follow-up" in bedside.inner_text(".messagelist")
    bedside.context.close()

    page.goto(f"{base}/admin/pathway/treatmentcourse/{to_transplant.pk}/change/")
    four_weeks = performed.date() + dt.timedelta(weeks=4)  # counted from the transplant
    first = follow_up_steps.first
    assert first.inner_text().startswith("4-week lung function")
    assert (
        f"window {date_words(four_weeks - dt.timedelta(days=7))} – "
        f"{date_words(four_weeks + dt.timedelta(days=7))}" in first.inner_text()
    )
    assert follow_up_steps.count() == 3
    transplant = page.locator(".pathway-timeline li", has_text="Transplant").first
    assert "step-done" in transplant.get_attribute("class")
    shots(page, "07-follow-ups")

    # 7. Acknowledges the overdue alert from the dashboard.
    page.goto(f"{base}/admin/")
    open_alerts = page.locator("#pathway-dashboard tbody tr", has_text="Leeds").locator("td").nth(1)
    assert int(open_alerts.inner_text()) >= 1
    open_alerts.locator("a").click()
    page.wait_for_url(re.compile(r"/alert/\?"))
    alert_rows = page.locator("#result_list tbody tr", has_text="4-week lung function")
    assert alert_rows.count() == 1
    shots(page, "08-alerts")
    alert_rows.first.locator("input.action-select").check()
    page.select_option("select[name=action]", "acknowledge")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert "acknowledged" in page.inner_text(".messagelist")
    assert overdue.alerts.filter(acknowledged_by=coordinator).count() == 1

    # 8. Opens the weekly report page.
    page.goto(f"{base}/admin/")
    page.click("text=Weekly status report")
    page.wait_for_url(re.compile(r"/reports/weekly/"))
    assert "Leeds Chest Clinic" in page.inner_text("#content")
    assert "Bristol Lung Unit" not in page.inner_text("#content")
    shots(page, "09-weekly-report")
    # … opens a closed week's (two weeks back: always past its Monday 07:00, so kept), sees
    # when its figures were worked out, in the site's zone, and works them out again.
    closed = week_label(timezone.localdate(now, site.time_zone) - dt.timedelta(weeks=2))
    page.goto(f"{base}/admin/reports/weekly/?week={closed}&site=LDS")
    content = page.inner_text("#content")
    assert f"({site.time_zone}), as recorded by" in content
    page.click("input[value^='Work the figures out again']")
    page.wait_for_selector(".messagelist .success")
    assert f"Week {closed}'s figures were worked out again" in page.inner_text(".messagelist")
    assert page.url.endswith(f"?week={closed}&site=LDS")
    shots(page, "09b-weekly-report-worked-out-again")

    # 8b. Sees how full the suite and the lab are for the next 8 weeks.
    page.goto(f"{base}/admin/scheduling/resource/")
    page.click("text=Capacity, the next 8 weeks")
    page.wait_for_url(re.compile(r"/resource/capacity/$"))
    heat_map = page.inner_text("#content")
    assert "Leeds bronchoscopy suite" in heat_map and "1/2" in heat_map
    assert page.locator("td.band-busy").count() >= 1
    shots(page, "12-capacity")

    # 9. Prints the product label, which fits one 100 × 60 mm label.
    page.goto(f"{base}/admin/pathway/treatmentcourse/{to_transplant.pk}/change/")
    with context.expect_page() as opened:
        page.click("text=Print the label")
    label = opened.value
    label.wait_for_load_state()
    assert to_transplant.coi_id in label.inner_text("body")
    assert label.locator(".code svg").count() == 1
    shots(label, "10-label")
    pdf = label.pdf(prefer_css_page_size=True, print_background=True)
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    (SCREENSHOTS / "10-label.pdf").write_bytes(pdf)

    # 10. Another site's patient is out of reach: not found, not openable.
    page.goto(f"{base}/admin/patients/patient/?q=BRS-2001")
    assert "0 patients" in page.inner_text("#changelist")
    assert page.locator("#result_list tbody tr").count() == 0
    response = page.goto(f"{base}/admin/patients/patient/{stranger.pk}/change/")
    assert response.status == 404
    assert "Elsewhere" not in page.content()
    assert "BRS-2001" not in page.content()
    shots(page, "11-other-site")

    context.close()
    # The admin, the transition forms, the timeline, the report and the label all work under
    # the policy: nothing they need was blocked.
    assert CSP_VIOLATIONS == []


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
LAPTOP = {"width": 1366, "height": 900}  # the clinic's screens


def axe_serious(page) -> list[str]:
    """axe-core's serious and critical violations on the page, as "rule: where"."""
    if not AXE.exists():
        pytest.fail("axe-core is not installed: `make test` runs npm ci (package.json)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['id']}: {v['nodes'][0]['target']}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


def test_the_pages_people_work_in_pass_axe_and_fit_1366(
    django_db_setup, browser, live_server, pathway, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    site = SiteFactory(name="Leeds Chest Clinic", code="LDS")
    patient = PatientFactory(site=site, mrn="LDS-2001", last_name="Okafor")
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    now = timezone.now()
    with time_machine.travel(now - dt.timedelta(days=34), tick=False):
        course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.starting(now - dt.timedelta(days=31)).advance(course, CourseState.EXPANDING)
    assert alerts_scan_overdue() >= 0
    base = live_server.url
    # axe is injected as a script: the test's own context lets it past the page's policy.
    context = browser.new_context(viewport=LAPTOP, bypass_csp=True)
    page = log_in(context, base, pathway.coordinator)
    pages = {
        "worklist": "/admin/",
        "course": f"/admin/pathway/treatmentcourse/{course.pk}/change/",
        "transition": f"/admin/pathway/treatmentcourse/{course.pk}/transition/hold/",
        "patient": f"/admin/patients/patient/{patient.pk}/change/",
        "patient list": "/admin/patients/patient/",
        "alert list": "/admin/scheduling/alert/",
        "report": "/admin/reports/weekly/",
    }
    found, widths = {}, {}
    for name, path in pages.items():
        page.goto(base + path)
        found[name] = axe_serious(page)
        widths[name] = page.evaluate("document.documentElement.scrollWidth")
    # The operator's two pages answer in the browser too.
    health = page.goto(base + "/healthz")
    assert health.status in (200, 503) and "beat" in health.json()["checks"]
    metrics = page.goto(base + "/metrics")
    assert metrics.status == 200 and "tracker_outbox_due" in page.content()
    context.close()
    assert found == {name: [] for name in pages}
    assert all(width <= 1366 for width in widths.values()), widths


class Actions:
    """Counts what a person does: each click, each field typed or chosen, each key."""

    def __init__(self, page):
        self.page, self.count = page, 0

    def click(self, selector):
        self.page.click(selector)
        self.count += 1

    def fill(self, selector, value):
        self.page.fill(selector, value)
        self.count += 1

    def check(self, selector):
        self.page.check(selector)
        self.count += 1

    def choose(self, selector, label):
        self.page.select_option(selector, label=label)
        self.count += 1

    def press(self, selector, key):
        self.page.press(selector, key)
        self.count += 1


def test_actions_per_task_from_the_worklist(
    django_db_setup, browser, live_server, pathway, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    site = SiteFactory(name="Leeds Chest Clinic", code="LDS")
    now = timezone.now()

    def course_at(mrn, last_name, state, start):
        patient = PatientFactory(site=site, mrn=mrn, last_name=last_name, first_name="Grace")
        LungFunctionTestFactory(patient=patient)
        ChestCTFactory(patient=patient)
        ClinicalAssessmentFactory(patient=patient)
        BodyMeasurementFactory(patient=patient)
        with time_machine.travel(start - dt.timedelta(days=3), tick=False):
            course = services.course_create(patient=patient, by=pathway.coordinator)
        return pathway.starting(start).advance(course, state)

    to_release = course_at("LDS-3001", "Okafor", CourseState.EXPANDING, now - dt.timedelta(days=26))
    pathway.record_qc(to_release)
    to_transplant = course_at(
        "LDS-3002", "Walsh", CourseState.TRANSPLANT_SCHEDULED, now - dt.timedelta(days=34)
    )
    pathway.starting(now - dt.timedelta(days=34)).deliver_to_site(to_transplant)
    site.members.add(pathway.clinician2)
    to_book = course_at("LDS-3003", "Nguyen", CourseState.ELIGIBLE, now - dt.timedelta(days=2))
    to_measure = course_at("LDS-3004", "Santos", CourseState.FOLLOW_UP, now - dt.timedelta(days=61))
    four_weeks = to_measure.visits.filter(kind="follow_up").order_by("scheduled_at").first()
    with time_machine.travel(now - dt.timedelta(days=2), tick=False):  # booked with notice
        visit_reschedule(visit=four_weeks, scheduled_at=now + dt.timedelta(hours=2))
    alert, _ = alert_raise(
        kind=AlertKind.COLD_CHAIN_BROKEN,
        course=to_book,
        condition_key="actions.alert",
        message="A test alert to acknowledge.",
    )
    calendars_for(site)
    base = live_server.url
    measured = {}

    shots = Shots()
    # A coordinator: books a harvest, acknowledges an alert, finds a patient by name.
    page = log_in(
        browser.new_context(viewport={"width": 1366, "height": 900}), base, pathway.coordinator
    )
    act = Actions(page)
    act.click('#worklist tr:has-text("Nguyen") a:has-text("Schedule harvest")')
    act.check("input[name=chain] >> nth=0")
    act.click('input[type=submit][value="Schedule harvest"]')
    page.wait_for_url(CHANGE_PAGE)
    to_book.refresh_from_db()
    assert to_book.state == CourseState.HARVEST_SCHEDULED
    measured["book a harvest"] = act.count

    page.goto(f"{base}/admin/")
    act = Actions(page)
    act.click(f'#worklist tr:has-text("{alert.get_kind_display()}") button:has-text("Acknowledge")')
    page.wait_for_url(f"{base}/admin/")
    alert.refresh_from_db()
    assert alert.acknowledged_by == pathway.coordinator
    measured["acknowledge an alert"] = act.count

    act = Actions(page)
    act.fill("#find-patient", "grace okafor")
    act.press("#find-patient", "Enter")
    page.wait_for_url(re.compile(r"/patient/\?q="))
    assert page.locator("#result_list tbody tr").count() == 1
    assert "LDS-3001" in page.inner_text("#result_list")
    measured["find a patient by name"] = act.count
    page.context.close()

    # The second lab user signs the release.
    page = log_in(browser.new_context(viewport=LAPTOP), base, pathway.lab2)
    act = Actions(page)
    act.click('#worklist tr:has-text("Okafor") a:has-text("Sign the release")')
    assert "Every result meets the specification." in page.inner_text("#content")
    shots(page, "17-release-to-sign")
    act.fill("#id_password", PASSWORD)
    act.click('input[type=submit][value="Release"]')
    page.wait_for_url(CHANGE_PAGE)
    to_release.refresh_from_db()
    assert to_release.state == CourseState.RELEASED
    measured["sign a release"] = act.count
    page.context.close()

    # The clinician records the transplant at the bedside.
    page = log_in(
        browser.new_context(viewport={"width": 1366, "height": 900}), base, pathway.clinician
    )
    act = Actions(page)
    act.click('#worklist tr:has-text("Walsh") a:has-text("Record transplant")')
    # An hour ago, in the site's time: "today at 08:15" is in the future before 08:15.
    performed = timezone.localtime(now - dt.timedelta(hours=1), site.time_zone)
    act.fill("#id_performed_at_0", performed.date().isoformat())
    act.fill("#id_performed_at_1", performed.strftime("%H:%M"))
    act.fill("#id_bedside_coi_id", to_transplant.coi_id)
    act.fill("#id_cells_administered", "140000000")
    act.fill("#id_weight_kg", "70.0")
    assert "2.00 × 10⁶ cells per kg (within the range)" in page.inner_text("#dose-per-kg")
    act.fill("#id_weighed_on", performed.date().isoformat())
    act.choose("#id_second_person", str(pathway.clinician2))
    act.fill("#id_second_person_password", PASSWORD)
    shots(page, "18-transplant-at-the-bedside")
    act.click('input[type=submit][value="Record transplant"]')
    page.wait_for_url(CHANGE_PAGE)
    to_transplant.refresh_from_db()
    assert to_transplant.state == CourseState.FOLLOW_UP
    measured["record a transplant"] = act.count

    # ...and the 4-week lung function, from the worklist.
    page.goto(f"{base}/admin/")
    act = Actions(page)
    act.click('#worklist tr:has-text("Santos") a:has-text("Record the measurements")')
    act.fill('input[name$="-0-taken_on"]', timezone.localdate(now, site.time_zone).isoformat())
    act.fill('input[name$="-0-fev1_l"]', "1.45")
    act.fill('input[name$="-0-fev1_pct_predicted"]', "52")
    act.fill('input[name$="-0-fvc_l"]', "2.90")
    act.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    four_weeks.refresh_from_db()
    assert four_weeks.status == "done"
    measured["record a follow-up's lung function"] = act.count
    page.context.close()

    (SCREENSHOTS / "actions.json").write_text(json.dumps(measured, indent=2))
    assert measured["acknowledge an alert"] <= 2
    assert measured["book a harvest"] <= 4
    assert measured["find a patient by name"] <= 2


def test_the_one_tap_page_on_a_phone(django_db_setup, browser, live_server, pathway, settings):
    from scheduling.visit_links import visit_link_issue

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    patient = PatientFactory(first_name="Mei", last_name="Zhang", mrn="LDS-4001")
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.evaluate(course)
    services.course_approve(course=course, by=pathway.clinician)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy unit, level 2",
    )
    harvest = course.visits.get(kind="harvest")
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    shots = Shots()

    checked = browser.new_context(**phone, bypass_csp=True)
    page = checked.new_page()
    page.goto(f"{live_server.url}/v/{visit_link_issue(visit=harvest)}/")
    assert axe_serious(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    checked.close()

    context = browser.new_context(**phone)
    context.on("console", _watch_csp)
    CSP_VIOLATIONS.clear()
    page = context.new_page()
    page.goto(f"{live_server.url}/v/{visit_link_issue(visit=harvest)}/")
    assert "Hello Mei" in page.inner_text("h1") and "Zhang" not in page.content()
    shots(page, "13-one-tap-page")
    page.tap("button.confirm")
    page.wait_for_selector(".done")
    assert "confirmed" in page.inner_text(".done")
    shots(page, "14-one-tap-confirmed")
    context.close()
    harvest.refresh_from_db()
    assert harvest.confirmed_at is not None
    assert CSP_VIOLATIONS == []


def test_the_weekly_diary_on_a_phone(django_db_setup, browser, live_server, pathway, settings):
    from pathway.checkins import invitation_link_issue
    from patients.models import Instrument
    from scheduling.models import QuestionnaireInvitation

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    patient = PatientFactory(first_name="Lucía", preferred_language="es")
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    now = timezone.now()
    with time_machine.travel(now - dt.timedelta(days=43), tick=False):
        course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.advance(course, CourseState.FOLLOW_UP)  # check-ins are asked after the transplant
    diary = QuestionnaireInvitation.objects.create(
        course=course,
        instrument=Instrument.objects.get(code="exacerbation-diary"),
        opens_at=now - dt.timedelta(hours=1),
        closes_at=now + dt.timedelta(days=2),
    )
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    checked = browser.new_context(**phone, bypass_csp=True)
    page = checked.new_page()
    page.goto(f"{live_server.url}/q/{invitation_link_issue(invitation=diary)}/")
    assert "¿ha respirado peor que de costumbre?" in page.inner_text("main")
    assert axe_serious(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for code in ("breathless", "sputum", "colour", "medicine", "visit"):
        page.check(f"input[name={code}][value='0']")
    page.click("button[type=submit]")
    page.wait_for_selector(".done")
    assert "Gracias" in page.inner_text(".done")
    checked.close()
    diary.refresh_from_db()
    assert diary.status == "answered"


# What sticks out past the right edge of the window, or overlaps: none of it may.
OFF_THE_EDGE = """() => {
  const right = document.documentElement.clientWidth;
  const out = [...document.querySelectorAll('#worklist *')]
    .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > right + 1)
    .map(e => e.tagName + ' ' + (e.textContent || '').trim().slice(0, 40));
  const box = s => document.querySelector(s).getBoundingClientRect();
  const a = box('.worklist-find'), b = box('.worklist-filters');
  const apart = a.right <= b.left || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top;
  const overlap = !apart;
  const spilling = [...document.querySelectorAll('#worklist td')]
    .filter(td => td.scrollWidth > td.clientWidth + 1)
    .map(td => td.textContent.trim().slice(0, 40));
  return {scrollWidth: document.documentElement.scrollWidth, out, overlap, spilling};
}"""


def test_the_demos_worklist_fits_a_1366_laptop_one_row_per_thing(
    django_db_setup, browser, live_server, settings
):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    call_command("seed_demo", stdout=io.StringIO())
    coordinator = get_user_model().objects.get(username="coordinator")
    coordinator.set_password(PASSWORD)
    coordinator.save()
    context = browser.new_context(viewport=LAPTOP)
    page = log_in(context, live_server.url, coordinator)
    shots = Shots()
    measured = page.evaluate(OFF_THE_EDGE)
    shots(page, "14-worklist-1366")
    rows = page.locator("#worklist tbody tr").count()
    overdue_alone = (
        page.locator("#worklist tbody tr", has_text="Visit overdue")
        .filter(has_not_text="Mark missed")
        .count()
    )
    context.close()
    assert rows > 10
    assert measured["scrollWidth"] <= 1366, measured
    assert measured["out"] == [], measured
    assert measured["spilling"] == [], measured
    assert not measured["overlap"], "Find a patient overlaps the filters"
    # An overdue visit and its alert are one row: no "Visit overdue" row without its visit.
    assert overdue_alone == 0


def _clinic_with_words(site):
    """The site's lung-function clinic (weekday mornings, half-hour slots), named for
    patients in Spanish."""
    from scheduling.models import ResourceWording

    clinic = Resource.objects.create(
        name="LDS Lung-function clinic",
        kind=ResourceKind.LUNG_FUNCTION,
        site=site,
        time_zone=site.time_zone,
    )
    ResourceSession.objects.bulk_create(
        ResourceSession(
            resource=clinic,
            weekday=day,
            starts_at=dt.time(9 + half // 2, 30 * (half % 2)),
            ends_at=dt.time(9 + (half + 1) // 2, 30 * ((half + 1) % 2)),
        )
        for day in range(5)
        for half in range(6)
    )
    ResourceWording.objects.create(
        resource=clinic,
        language="es",
        name="Clínica de Leeds, consultas externas (planta 1)",
        address="1 Example Road\nLeeds LS1 1AA",
    )
    return clinic


def test_a_spanish_patient_asks_for_another_time_on_a_phone(
    django_db_setup, browser, live_server, pathway, settings
):
    from delivery.messages import visit_other_times
    from scheduling.chains import follow_ups_proposal
    from scheduling.models import PatientRequest, Visit
    from scheduling.services import follow_ups_book
    from scheduling.visit_links import visit_link_issue

    site = SiteFactory(name="Leeds Chest Clinic", code="LDS", patient_facing_name="Leeds Clinic")
    patient = PatientFactory(site=site, first_name="Lucía", preferred_language="es")
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    with time_machine.travel(timezone.now() - dt.timedelta(days=43), tick=False):
        course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.advance(course, CourseState.FOLLOW_UP)
    _clinic_with_words(site)
    visit, slot = follow_ups_proposal(course=course)[0]
    follow_ups_book(course=course, by=pathway.coordinator, picks={visit.pk: slot.starts_at})
    visit = Visit.objects.select_related("course__patient", "course__site").get(pk=visit.pk)
    with translation.override("es"):
        picked = visit_other_times(visit=visit)[1]
    token = visit_link_issue(visit=visit)

    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    shots = Shots()
    context = browser.new_context(**phone, bypass_csp=True, locale="es-ES")
    page = context.new_page()
    page.goto(f"{live_server.url}/v/{token}/")
    where = page.inner_text("dl")
    assert "Clínica de Leeds, consultas externas (planta 1)" in where and "LS1 1AA" in where
    assert "Lung-function" not in page.content()
    page.check(f"input[name=slot][value='{picked.value}']")
    page.tap("button.change")
    page.wait_for_selector(".done")
    thanks = page.inner_text(".done")
    assert picked.words in thanks and "sigue siendo" in thanks
    assert axe_serious(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shots(page, "15-another-time-asked")
    assert PatientRequest.objects.get().wanted_at == picked.starts_at
    # Once the visit is moved, the link is spent: it says so, still in Spanish.
    Visit.objects.filter(pk=visit.pk).update(status="cancelled")
    response = page.goto(f"{live_server.url}/v/{token}/")
    assert response.status == 404 and "Este enlace ya no funciona" in page.inner_text("h1")
    context.close()

    # A link nobody issued answers in the browser's language.
    chinese = browser.new_context(**phone, locale="zh-CN")
    page = chinese.new_page()
    response = page.goto(f"{live_server.url}/v/never-issued/")
    assert response.status == 404 and "此链接已失效" in page.inner_text("h1")
    chinese.close()


def test_a_typo_in_find_a_patient_offers_the_patient_it_meant(
    django_db_setup, browser, live_server, pathway, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    site = SiteFactory(name="Leeds Chest Clinic", code="LDS")
    elizabeth = PatientFactory(
        site=site, first_name="Elizabeth", last_name="Moore", mrn="LDS100021"
    )
    PatientFactory(
        site=SiteFactory(name="Elsewhere", code="ELS", staff=[]),
        first_name="Elizabeth",
        last_name="Moor",
        mrn="ELS100021",
    )
    context = browser.new_context(viewport=LAPTOP)
    page = log_in(context, live_server.url, pathway.coordinator)
    page.fill("#find-patient", "elizbeth")
    page.press("#find-patient", "Enter")
    page.wait_for_selector(".search-no-match")
    offered = page.inner_text(".search-no-match")
    assert offered == "No patient matches “elizbeth”. Did you mean: Elizabeth Moore (LDS100021)?"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    Shots()(page, "16-did-you-mean")
    page.click("text=Elizabeth Moore (LDS100021)")
    page.wait_for_url(f"**/admin/patients/patient/{elizabeth.pk}/change/")
    context.close()


# A CJK character drawn in the page's own font, against characters no font has (they draw as
# the missing-glyph box): equal widths mean the Chinese is boxes.
GLYPH_CHECK = """() => {
  const canvas = document.createElement('canvas').getContext('2d');
  canvas.font = getComputedStyle(document.body).font;
  const width = text => canvas.measureText(text).width;
  const boxes = width('\\uE000\\uE001\\uE002\\uE003\\uE004\\uE005');
  return {chinese: width('您好预约时间'), boxes};
}"""


def test_a_chinese_patients_page_is_drawn_in_a_cjk_font_not_boxes(
    django_db_setup, browser, live_server, pathway, settings
):
    from scheduling.visit_links import visit_link_issue

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    patient = PatientFactory(first_name="美", last_name="王", preferred_language="zh-hans")
    for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
        factory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    course = services.course_create(patient=patient, by=pathway.coordinator)
    pathway.evaluate(course)
    services.course_approve(course=course, by=pathway.clinician)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy unit, level 2",
    )
    harvest = course.visits.get(kind="harvest")
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/v/{visit_link_issue(visit=harvest)}/")
    widths = page.evaluate(GLYPH_CHECK)
    Shots()(page, "16-one-tap-page-zh")
    lang = page.get_attribute("html", "lang")
    context.close()
    assert lang.startswith("zh")
    assert widths["chinese"] != pytest.approx(widths["boxes"], rel=0.02), (
        "Chinese draws as boxes: install a CJK font (Debian fonts-noto-cjk; .ci/run does)"
    )


def test_an_msc_infusion_allocated_booked_and_given_in_the_browser(
    django_db_setup, browser, live_server, msc, msc_site, settings
):
    """A clinic that gives MSC infusions: the coordinator allocates the units from the
    worklist and books the infusion in the chairs; the clinician records it at the bedside,
    every label scanned and a second clinician confirming."""
    from pathway.custody import units_custody_record, units_on_their_way
    from pathway.models import CustodyKind
    from tests.conftest import VITALS
    from tests.support import chair_for

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    msc.lot(msc_site, number="UC-BROWSER")
    chair_for(msc_site)
    course = msc.starting(timezone.now() - dt.timedelta(hours=3)).course(msc_site)
    msc.starting(timezone.now() - dt.timedelta(hours=2)).advance(course, CourseState.ELIGIBLE)
    msc_site.members.add(msc.clinician2)
    base, shots = live_server.url, Shots()

    # 1. The coordinator allocates from the worklist: only the MSC steps are offered.
    page = log_in(browser.new_context(viewport=LAPTOP), base, msc.coordinator)
    row = page.locator("#worklist tbody tr", has_text="Allocate the product")
    row.get_by_role("link", name="Allocate product").click()
    assert "UC-BROWSER" in page.inner_text("section[aria-label='The dose']")
    shots(page, "20-msc-allocate")
    page.click('input[type=submit][value="Allocate product"]')
    page.wait_for_url(CHANGE_PAGE)
    assert "the course is now product allocated" in page.inner_text(".messagelist")
    buttons = page.locator("button[name=_fsm_transition_to]").evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert set(buttons) == {"schedule_infusion", "hold", "withdraw"}

    # 2. It books the infusion: the earliest free chair slot, held as the course's chain.
    page.click("button[name=_fsm_transition_to][value=schedule_infusion]")
    page.locator("input[name=chain]").first.check()
    shots(page, "21-msc-book-infusion")
    page.click('input[type=submit][value="Schedule infusion"]')
    page.wait_for_url(CHANGE_PAGE)
    assert "the course is now infusion scheduled" in page.inner_text(".messagelist")
    page.context.close()

    # The units reach the site, each label scanned (the worklist's custody rows).
    course.refresh_from_db()
    for kind in (CustodyKind.SHIPPED_TO_SITE, CustodyKind.RECEIVED_AT_SITE):
        units_custody_record(
            course=course,
            kind=kind,
            by=msc.coordinator,
            scanned_unit_ids=[u.unit_id for u in units_on_their_way(course=course, kind=kind)],
            at=timezone.now() - dt.timedelta(hours=2),
            location=msc_site.name,
        )
    [unit] = course.units.all()

    # 3. At the bedside, an hour ago in the site's time (before its booked day: a reason).
    bedside = log_in(browser.new_context(viewport=LAPTOP), base, msc.clinician)
    bedside.goto(f"{base}/admin/pathway/treatmentcourse/{course.pk}/change/")
    bedside.click("button[name=_fsm_transition_to][value=record_infusion]")
    started = timezone.localtime(timezone.now() - dt.timedelta(hours=1), msc_site.time_zone)
    thawed = started - dt.timedelta(minutes=35)
    bedside.fill("#id_scanned_unit_ids", unit.unit_id)
    bedside.fill("#id_scanned_coi_id", course.coi_id)
    for name, moment in (("thawed_at", thawed), ("started_at", started)):
        bedside.fill(f"#id_{name}_0", moment.date().isoformat())
        bedside.fill(f"#id_{name}_1", moment.strftime("%H:%M"))
    bedside.fill("#id_cells_given", "70000000")
    bedside.fill("#id_weight_kg", "70.0")
    bedside.fill("#id_weighed_on", started.date().isoformat())
    assert "1.00 × 10⁶ cells per kg (within the range)" in bedside.inner_text("#dose-per-kg")
    for moment in ("before", "during", "after"):
        for name, value in VITALS.items():
            bedside.fill(f"#id_{moment}_{name}", str(value))
    bedside.fill("#id_early_reason", "The patient came a day early; the chair was free.")
    bedside.select_option("#id_second_person", label=str(msc.clinician2))
    bedside.fill("#id_second_person_password", PASSWORD)
    shots(bedside, "22-msc-record-infusion")
    bedside.click('input[type=submit][value="Record infusion"]')
    bedside.wait_for_url(CHANGE_PAGE)
    assert "the course is now follow-up" in bedside.inner_text(".messagelist")
    timeline = bedside.inner_text(".pathway-timeline")
    assert "Allocation" in timeline and "Infusion" in timeline and "Harvest" not in timeline
    assert "4 weeks after the first infusion" not in timeline  # the visits exist now
    bedside.context.close()
    course.refresh_from_db()
    assert course.state == CourseState.FOLLOW_UP
    unit.refresh_from_db()
    assert unit.status == "infused"
