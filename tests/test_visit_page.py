"""The one-tap page: a reminder's link, no login, one visit, answered once."""

import datetime as dt
import hashlib

import pytest
import time_machine
from django.utils import timezone

from delivery.messages import notification_message
from pathway import services
from pathway.states import CourseState
from scheduling.models import (
    Channel,
    Notification,
    PatientRequest,
    Visit,
    VisitKind,
    VisitLink,
)
from scheduling.visit_links import visit_link_issue

pytestmark = pytest.mark.django_db


@pytest.fixture
def harvest(course, pathway):
    patient = course.patient
    patient.phone, patient.consent_sms = "+447700900123", True
    patient.save(update_fields=["phone", "consent_sms"])
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy unit, level 2",
    )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def test_a_reminder_carries_a_link_whose_token_is_kept_only_as_a_hash(harvest):
    reminder = Notification.objects.filter(visit=harvest, channel=Channel.SMS).first()
    text = notification_message(reminder).text
    token = text.split("/v/")[1].split("/")[0]
    link = VisitLink.objects.get()
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not VisitLink.objects.filter(token_hash=token).exists()
    assert link.expires_at == harvest.scheduled_at


def test_the_page_shows_the_visit_and_nothing_that_identifies_beyond_it(client, harvest):
    token = visit_link_issue(visit=harvest)
    page = client.get(f"/v/{token}/").content.decode()
    patient = harvest.course.patient
    assert f"Hello {patient.first_name}" in page
    assert patient.last_name not in page and patient.mrn not in page
    assert "Endoscopy unit, level 2" in page
    assert "GMT" in page or "BST" in page
    assert "I will come" in page and "Ask for another time" in page


def test_confirming_once_marks_the_visit_and_the_link_is_spent(client, harvest):
    token = visit_link_issue(visit=harvest)
    client.post(f"/v/{token}/", {"answer": "confirm"})
    harvest.refresh_from_db()
    first = harvest.confirmed_at
    assert first is not None
    page = client.post(f"/v/{token}/", {"answer": "change"}).content.decode()
    assert "You have answered already" in page
    assert not PatientRequest.objects.exists()


def test_asking_for_another_time_reaches_the_worklist(client, harvest, pathway):
    token = visit_link_issue(visit=harvest)
    page = client.post(f"/v/{token}/", {"answer": "change"}).content.decode()
    assert "will contact you to find another time" in page
    request = PatientRequest.objects.get()
    assert request.source == "link" and request.visit == harvest
    client.force_login(pathway.coordinator)
    assert "Another time, please (link)" in client.get("/admin/").content.decode()


def test_the_link_stops_working_after_the_visit_and_for_made_up_tokens(client, harvest):
    token = visit_link_issue(visit=harvest)
    with time_machine.travel(harvest.scheduled_at + dt.timedelta(minutes=1)):
        assert client.get(f"/v/{token}/").status_code == 404
    for made_up in ("x", "a" * 500, "%00", token[:-1]):
        assert client.get(f"/v/{made_up}/").status_code == 404


def test_guessing_is_slowed_down(client, harvest):
    with time_machine.travel(timezone.now(), tick=False):  # all within one minute
        codes = [client.get(f"/v/guess{n}/").status_code for n in range(35)]
    assert codes[:30] == [404] * 30 and codes[-1] == 429


def test_a_later_reminders_link_does_not_ask_again(client, harvest):
    client.post(f"/v/{visit_link_issue(visit=harvest)}/", {"answer": "confirm"})
    page = client.get(f"/v/{visit_link_issue(visit=harvest)}/").content.decode()
    assert "You have answered already" in page and "I will come" not in page


def test_a_form_posted_from_another_site_is_refused(client, harvest):
    token = visit_link_issue(visit=harvest)
    response = client.post(f"/v/{token}/", {"answer": "confirm"}, HTTP_SEC_FETCH_SITE="cross-site")
    assert response.status_code == 403
    harvest.refresh_from_db()
    assert harvest.confirmed_at is None


def test_the_limit_is_a_moving_window_not_the_clocks_minute(client, harvest):
    """30 guesses in the last second of a minute, then 10 in the first second of the next: a
    fixed minute would let the 10 through; the window lets none until a minute has passed."""
    start = timezone.now().replace(second=59, microsecond=500_000)
    with time_machine.travel(start, tick=False):
        assert {client.get(f"/v/guess{n}/").status_code for n in range(30)} == {404}
    with time_machine.travel(start + dt.timedelta(seconds=1), tick=False):
        assert [client.get(f"/v/late{n}/").status_code for n in range(10)] == [429] * 10
    with time_machine.travel(start + dt.timedelta(seconds=61), tick=False):
        assert client.get("/v/again/").status_code == 404


@pytest.mark.parametrize("path", ["/v/{token}/", "/v/made-up/", "/q/made-up/"])
def test_patient_pages_are_never_kept_by_a_browser_or_a_proxy(client, harvest, path):
    response = client.get(path.format(token=visit_link_issue(visit=harvest)))
    assert "no-store" in response.headers["Cache-Control"]
    assert "private" in response.headers["Cache-Control"]


def test_a_guesser_slowed_down_is_told_so_without_being_kept_either(client, harvest):
    with time_machine.travel(timezone.now(), tick=False):
        for n in range(30):
            client.get(f"/q/guess{n}/")
        refused = client.get("/q/one-more/")
    assert refused.status_code == 429 and "no-store" in refused.headers["Cache-Control"]
