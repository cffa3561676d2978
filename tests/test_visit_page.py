"""The one-tap page: a reminder's link, no login, one visit, answered once."""

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
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


# Asking for another time: the slot picked, to the patient and to the staff.


@pytest.fixture
def follow_up(course, pathway):
    """The 4-week follow-up of a course, booked at the site's clinic (half-hour slots on
    weekday mornings), for a patient in New York of a London site."""
    from scheduling.chains import follow_ups_proposal
    from scheduling.models import Resource, ResourceKind, ResourceSession
    from scheduling.services import follow_ups_book

    pathway.advance(course, CourseState.FOLLOW_UP)
    patient = course.patient
    patient.time_zone = "America/New_York"
    patient.save(update_fields=["time_zone"])
    clinic = Resource.objects.create(
        name="Lung-function clinic", kind=ResourceKind.LUNG_FUNCTION, site=course.site
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
    visit, slot = follow_ups_proposal(course=course)[0]
    follow_ups_book(course=course, by=pathway.coordinator, picks={visit.pk: slot.starts_at})
    return Visit.objects.select_related("course__site", "course__patient").get(pk=visit.pk)


def test_the_slot_picked_is_on_the_thank_you_page_and_the_visit_page(
    client, follow_up, coordinator
):
    from common.zones import local_words
    from delivery.messages import visit_other_times

    token = visit_link_issue(visit=follow_up)
    page = client.get(f"/v/{token}/").content.decode()
    picked = visit_other_times(visit=follow_up)[1]
    assert f'value="{picked.value}"' in page
    page = client.post(f"/v/{token}/", {"answer": "change", "slot": picked.value}).content
    page = page.decode()
    # In the patient's zone, named; the booking stands until the clinic moves it.
    new_york = ZoneInfo("America/New_York")
    asked, booked = (
        timezone.localtime(at, new_york) for at in (picked.starts_at, follow_up.scheduled_at)
    )
    assert "you have asked" in page and f"{asked:%H:%M %Z}" in page
    assert "Until" in page and "stays on" in page and f"{booked:%H:%M %Z}" in page
    request = PatientRequest.objects.get()
    assert request.wanted_at == picked.starts_at and request.visit == follow_up
    # A later look at the link says what was asked, not only "answered already".
    again = client.get(f"/v/{token}/").content.decode()
    assert f"{asked:%H:%M %Z}" in again and "Ask for another time" not in again
    # Staff read the slot in the site's zone, named: on the visit page and the worklist.
    in_london = local_words(picked.starts_at, follow_up.course.site.time_zone)
    client.force_login(coordinator)
    visit_page = client.get(
        reverse("admin:scheduling_visit_change", args=[follow_up.pk])
    ).content.decode()
    assert "The patient asks" in visit_page and in_london in visit_page
    assert "Another time, please" in visit_page
    assert f"Asked for {in_london}." in client.get("/admin/").content.decode()


def test_a_slot_the_page_did_not_offer_is_no_slot_at_all(client, follow_up):
    token = visit_link_issue(visit=follow_up)
    made_up = (follow_up.scheduled_at + dt.timedelta(minutes=7)).isoformat()
    page = client.post(f"/v/{token}/", {"answer": "change", "slot": made_up}).content.decode()
    assert "will contact you to find another time" in page and "stays on" in page
    request = PatientRequest.objects.get()
    assert request.wanted_at is None and request.text == "Asked for another time."


def test_the_thank_you_page_is_in_the_patients_language(client, follow_up):
    from delivery.messages import visit_other_times

    patient = follow_up.course.patient
    patient.preferred_language = "es"
    patient.save(update_fields=["preferred_language"])
    token = visit_link_issue(visit=follow_up)
    picked = visit_other_times(visit=follow_up)[0]
    page = client.post(f"/v/{token}/", {"answer": "change", "slot": picked.value}).content
    assert "ha pedido a" in page.decode() and "su cita sigue siendo el" in page.decode()


# A link that no longer works says so in the patient's language, or the browser's.


def _speaking(visit, language):
    patient = visit.course.patient
    patient.preferred_language = language
    patient.save(update_fields=["preferred_language"])


def test_a_spanish_patients_spent_link_answers_in_spanish(client, harvest):
    _speaking(harvest, "es")
    token = visit_link_issue(visit=harvest)
    with time_machine.travel(harvest.scheduled_at + dt.timedelta(minutes=1)):
        response = client.get(f"/v/{token}/", HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.9")
    page = response.content.decode()
    assert response.status_code == 404
    assert '<html lang="es">' in page and "Este enlace ya no funciona" in page


def test_a_chinese_patients_link_to_a_cancelled_visit_answers_in_chinese(client, harvest):
    _speaking(harvest, "zh-hans")
    token = visit_link_issue(visit=harvest)
    Visit.objects.filter(pk=harvest.pk).update(status="cancelled")
    response = client.get(f"/v/{token}/")
    assert response.status_code == 404 and "此链接已失效" in response.content.decode()


@pytest.mark.parametrize(
    ("accept", "words"),
    [
        ("es-ES,es;q=0.9,en;q=0.5", "Este enlace ya no funciona"),
        ("zh-CN,zh;q=0.9", "此链接已失效"),
        ("fr-FR,fr;q=0.9", "This link no longer works"),
        ("", "This link no longer works"),
    ],
)
def test_an_unknown_link_answers_in_the_browsers_language(client, accept, words):
    response = client.get("/v/never-issued/", HTTP_ACCEPT_LANGUAGE=accept)
    assert response.status_code == 404 and words in response.content.decode()
    assert "Accept-Language" in response["Vary"]


def test_a_closed_check_in_link_answers_in_the_patients_language(client, course, pathway):
    from pathway.checkins import invitation_link_issue
    from patients.models import Instrument
    from scheduling.models import QuestionnaireInvitation

    pathway.advance(course, CourseState.FOLLOW_UP)
    patient = course.patient
    patient.preferred_language = "es"
    patient.save(update_fields=["preferred_language"])
    now = timezone.now()
    closed = QuestionnaireInvitation.objects.create(
        course=course,
        instrument=Instrument.objects.get(code="exacerbation-diary"),
        opens_at=now - dt.timedelta(days=4),
        closes_at=now - dt.timedelta(days=1),
    )
    response = client.get(f"/q/{invitation_link_issue(invitation=closed)}/")
    assert response.status_code == 404 and "Este enlace ya no funciona" in response.content.decode()


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
