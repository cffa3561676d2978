"""Patients reply by SMS: CONFIRM, CHANGE, STOP, HELP, or anything else."""

import datetime as dt

import pytest
from django.utils import timezone
from twilio.request_validator import RequestValidator

from pathway.states import CourseState
from patients.models import ConsentChange
from scheduling.models import (
    Channel,
    InboundMessage,
    Notification,
    NotificationStatus,
    PatientRequest,
    ReplyIntent,
    Visit,
    VisitKind,
)
from scheduling.replies import reply_intent
from scheduling.services import visit_reschedule

pytestmark = pytest.mark.django_db
PHONE = "+447700900123"


@pytest.fixture(autouse=True)
def _twilio(settings):
    settings.TWILIO_AUTH_TOKEN = "test-token"
    settings.SITE_URL = "https://tracker.example"


def text(client, settings, body, sid="SM0001", sender=PHONE):
    params = {"MessageSid": sid, "From": sender, "Body": body}
    url = "/sms/inbound/"
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(
        settings.SITE_URL.rstrip("/") + url, params
    )
    return client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def booked(course, pathway):
    """A patient with SMS consent and a harvest booked in three days."""
    patient = course.patient
    patient.phone, patient.consent_sms = PHONE, True
    patient.save(update_fields=["phone", "consent_sms"])
    pathway.advance(course, CourseState.ELIGIBLE)
    from pathway import services

    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy",
    )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


@pytest.mark.parametrize(
    ("body", "intent"),
    [
        ("confirm", ReplyIntent.CONFIRM),
        ("Yes!", ReplyIntent.CONFIRM),
        ("  CHANGE please", ReplyIntent.CHANGE),
        ("Stop", ReplyIntent.STOP),
        ("UNSUBSCRIBE", ReplyIntent.STOP),
        ("退订", ReplyIntent.STOP),
        ("ayuda", ReplyIntent.HELP),
        ("Can I bring my wife?", ReplyIntent.OTHER),
        ("", ReplyIntent.OTHER),
    ],
)
def test_the_first_word_decides(body, intent):
    assert reply_intent(body) == intent


def test_confirm_marks_the_next_visit_confirmed_and_says_when(client, settings, booked):
    response = text(client, settings, "CONFIRM")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/xml")
    booked.refresh_from_db()
    assert booked.confirmed_at is not None
    reply = response.content.decode()
    assert "is confirmed" in reply and ("GMT" in reply or "BST" in reply)
    assert "harvest" not in reply.lower() and "bronchoscopy" not in reply.lower()


def test_change_becomes_a_coordinators_task_on_the_worklist(client, settings, booked, pathway):
    text(client, settings, "CHANGE I am away that week")
    request = PatientRequest.objects.get()
    assert request.visit == booked and request.kind == "change" and "away" in request.text
    client.force_login(pathway.coordinator)
    page = client.get("/admin/").content.decode()
    assert "Another time, please" in page and "away that week" in page


def test_stop_withdraws_sms_consent_at_once_and_cancels_every_text_not_sent(
    client, settings, booked
):
    pending = Notification.objects.filter(
        visit=booked, channel=Channel.SMS, status=NotificationStatus.PENDING
    )
    assert pending.exists()
    response = text(client, settings, "STOP")
    patient = booked.course.patient
    patient.refresh_from_db()
    assert patient.consent_sms is False
    change = ConsentChange.objects.get(patient=patient)
    assert change.consents is False and change.source == "SMS reply STOP" and change.at
    assert not pending.exists()
    assert "no more texts" in response.content.decode()
    visit_reschedule(visit=booked, scheduled_at=booked.scheduled_at + dt.timedelta(hours=1))
    assert not Notification.objects.filter(
        visit=booked, channel=Channel.SMS, status=NotificationStatus.PENDING
    ).exists()


def test_help_gives_the_clinics_number(client, settings, booked):
    site = booked.course.site
    site.patient_phone = "+442079460000"
    site.save(update_fields=["patient_phone"])
    assert "+442079460000" in text(client, settings, "HELP").content.decode()


def test_anything_else_goes_to_a_coordinator_with_its_words(client, settings, booked):
    text(client, settings, "Can I bring my wife?")
    request = PatientRequest.objects.get()
    assert request.kind == "message" and request.text == "Can I bring my wife?"


def test_a_webhook_delivered_twice_acts_once(client, settings, booked):
    first = text(client, settings, "CHANGE", sid="SM0002")
    second = text(client, settings, "CHANGE", sid="SM0002")
    assert PatientRequest.objects.count() == 1 and InboundMessage.objects.count() == 1
    assert "<Message>" in first.content.decode() and "<Message>" not in second.content.decode()


def test_an_unsigned_or_forged_message_does_nothing(client, settings, booked):
    response = client.post("/sms/inbound/", {"MessageSid": "SM9", "From": PHONE, "Body": "STOP"})
    assert response.status_code == 403
    response = client.post(
        "/sms/inbound/",
        {"MessageSid": "SM9", "From": PHONE, "Body": "STOP"},
        HTTP_X_TWILIO_SIGNATURE="forged",
    )
    assert response.status_code == 403
    booked.course.patient.refresh_from_db()
    assert booked.course.patient.consent_sms is True
    assert not InboundMessage.objects.exists()


def test_a_number_we_do_not_know_gets_no_answer(client, settings, booked):
    response = text(client, settings, "CONFIRM", sender="+447700900999")
    assert "<Message>" not in response.content.decode()
    assert InboundMessage.objects.get().patient is None
    booked.refresh_from_db()
    assert booked.confirmed_at is None


def test_hostile_bodies_are_stored_not_a_500(client, settings, booked):
    for n, body in enumerate(["\\x00" * 10, "😀" * 5000, "<script>alert(1)</script>"]):
        assert text(client, settings, body, sid=f"SMX{n}").status_code == 200
    assert InboundMessage.objects.count() == 3


def test_moving_the_visit_answers_the_request_and_asks_for_a_new_confirmation(
    client, settings, booked, pathway
):
    text(client, settings, "CONFIRM", sid="SM1")
    text(client, settings, "CHANGE", sid="SM2")
    visit_reschedule(
        visit=booked,
        scheduled_at=booked.scheduled_at + dt.timedelta(days=1),
        by=pathway.coordinator,
    )
    request = PatientRequest.objects.get()
    assert request.done_at is not None and request.done_by == pathway.coordinator
    booked.refresh_from_db()
    assert booked.confirmed_at is None


def test_a_booking_not_confirmed_is_on_the_worklist_until_a_call_confirms_it(
    client, booked, pathway
):
    visit_reschedule(visit=booked, scheduled_at=timezone.now() + dt.timedelta(days=1, hours=2))
    client.force_login(pathway.coordinator)
    assert "Booking to confirm" in client.get("/admin/").content.decode()
    client.post("/admin/worklist/done/", {"key": f"confirm.v{booked.pk}"})
    booked.refresh_from_db()
    assert booked.confirmed_at is not None
    assert f"confirm.v{booked.pk}" not in client.get("/admin/").content.decode()


def test_a_message_is_ticked_off_and_a_made_up_key_does_nothing(client, settings, booked, pathway):
    text(client, settings, "Can I bring my wife?")
    request = PatientRequest.objects.get()
    client.force_login(pathway.coordinator)
    client.post("/admin/worklist/done/", {"key": "request.r999999"})
    client.post("/admin/worklist/done/", {"key": "request.r²"})
    request.refresh_from_db()
    assert request.done_at is None
    client.post("/admin/worklist/done/", {"key": f"request.r{request.pk}"})
    request.refresh_from_db()
    assert request.done_by == pathway.coordinator


@pytest.mark.parametrize(
    "body",
    ["Si no puedo ir el martes", "Cancel my appointment please", "OK but can we change it"],
)
def test_confirm_and_stop_act_only_when_said_alone(body):
    assert reply_intent(body) == ReplyIntent.OTHER


def test_stop_from_a_shared_phone_stops_everyone_on_it(client, settings, booked):
    from tests.factories import PatientFactory

    other = PatientFactory(site=booked.course.site, phone=PHONE, consent_sms=True)
    text(client, settings, "STOP")
    other.refresh_from_db()
    booked.course.patient.refresh_from_db()
    assert other.consent_sms is False and booked.course.patient.consent_sms is False


def test_an_answer_never_names_the_sites_own_name(client, settings, booked):
    site = booked.course.site
    site.name, site.patient_facing_name = "COPD Cell Therapy Unit", ""
    site.save(update_fields=["name", "patient_facing_name"])
    reply = text(client, settings, "HELP").content.decode()
    assert "COPD" not in reply and "your clinic" in reply


def test_a_stop_that_arrives_while_a_text_is_being_sent_stops_it(booked):
    from delivery.outbox import notification_send_claimed
    from scheduling.replies import sms_consent_withdraw

    sms = Notification.objects.filter(visit=booked, channel=Channel.SMS).first()
    Notification.objects.filter(pk=sms.pk).update(status="sending", claim_token="a" * 32)
    claimed = Notification.objects.select_related("patient", "visit__course").get(pk=sms.pk)
    sms_consent_withdraw(patient=booked.course.patient, at=timezone.now(), source="test")
    assert notification_send_claimed(claimed, channels={}) == NotificationStatus.CANCELLED


def test_a_text_with_nul_characters_is_kept_and_staff_are_told_what_was_removed(
    client, settings, booked, pathway
):
    """Twilio does not retry a 400: refusing the text would lose it."""
    response = text(client, settings, "Can I come\x00 later\x00?", sid="SMNUL")
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert (inbound.body, inbound.characters_removed) == ("Can I come later?", 2)
    request = PatientRequest.objects.get()
    assert request.text == "Can I come later?" and request.inbound == inbound
    client.force_login(pathway.coordinator)
    page = client.get("/admin/").content.decode()
    assert "Can I come later?" in page
    assert "2 NUL characters were removed from this text as it arrived." in page


def test_a_long_text_is_kept_whole_and_staff_can_read_all_of_it(client, settings, booked, pathway):
    words = "".join(f"word{n} " for n in range(800)).strip()  # about 6,000 characters
    assert len(words) > 5_000
    assert text(client, settings, words, sid="SMLONG").status_code == 200
    assert InboundMessage.objects.get().body == words
    assert PatientRequest.objects.get().text == words
    client.force_login(pathway.coordinator)
    page = client.get("/admin/").content.decode()
    assert f"The whole text ({len(words)} characters)" in page
    assert "word799" in page  # the end of it, not only the quoted start


def test_nul_elsewhere_in_a_webhook_is_still_refused(client, settings, booked):
    """Only the incoming-text webhook takes NUL characters (and stores the text without them);
    everywhere else they are refused before any view."""
    assert client.get("/admin/login/", {"next": "/admin/\x00"}).status_code == 400
    assert client.post("/sms/status/", {"MessageSid": "SM\x00"}).status_code == 400
