"""WhatsApp for someone who is not a patient yet: the acknowledgement, a coordinator's reply and
a consultation's reminders go on it where they consented, under the 24-hour rule (read from
their own messages), in their quiet hours; their STOP and their words reach the enquiry; a
message that cannot be delivered alerts the site's coordinators. Through the provider's
stand-in over real HTTP, and the signed webhook."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from delivery.outbox import notifications_dispatch_batch
from enquiries.consultations import consultation_book, enquirer_send_after
from enquiries.models import ConsultationMode
from enquiries.services import enquiry_reply
from pathway.models import Protocol
from scheduling.models import (
    Alert,
    AlertKind,
    Channel,
    InboundMessage,
    Notification,
    NotificationStatus,
    NotificationTemplate,
)
from tests.test_consultations import booker, make_enquiry, site  # noqa: F401 (fixtures)
from tests.test_whatsapp import approve, twilio  # noqa: F401 (the stand-in's fixture)

pytestmark = pytest.mark.django_db
LONDON = ZoneInfo("Europe/London")
WHATSAPP = "+447700900777"
ACK_SID = "HX" + "b2" * 16
VIDEO_LINK = "https://video.example.org/room/42"


@pytest.fixture(autouse=True)
def a_tuesday_morning_in_london():
    """Outside the enquirer's quiet hours, so what is sent goes now (CI runs at night, when a
    reply rightly waits for the morning)."""
    with time_machine.travel(dt.datetime(2027, 1, 12, 10, 30, tzinfo=LONDON), tick=True):
        yield


def on_whatsapp_only(site):  # noqa: F811 (the fixture's value)
    return make_enquiry(
        site, email="", phone="", consent_email=False, consent_sms=False,
        whatsapp=WHATSAPP, consent_whatsapp=True,
    )  # fmt: skip


def texted(client, settings, body, sid):
    """The provider's webhook, signed, for a WhatsApp message from the enquirer's number."""
    settings.TWILIO_AUTH_TOKEN, settings.SITE_URL = "test-token", "https://tracker.example"
    params = {"MessageSid": sid, "From": f"whatsapp:{WHATSAPP}", "Body": body}
    signature = RequestValidator("test-token").compute_signature(
        "https://tracker.example/sms/inbound/", params
    )
    return client.post("/sms/inbound/", params, HTTP_X_TWILIO_SIGNATURE=signature)


def test_the_acknowledgement_goes_on_whatsapp_as_the_approved_template(site, twilio):  # noqa: F811
    approve(twilio, name="enquiry_ack", language="en", sid=ACK_SID)
    enquiry = on_whatsapp_only(site)
    Notification.objects.create(
        template=NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT,
        channel=Channel.WHATSAPP,
        enquiry=enquiry,
        send_after=timezone.now(),
        idempotency_key=f"enquiry_ack.e{enquiry.pk}.whatsapp",
    )
    assert notifications_dispatch_batch(batch_size=10).sent == 1
    [sent] = twilio.received
    assert sent["To"] == f"whatsapp:{WHATSAPP}"
    assert sent["ContentSid"] == ACK_SID and "Body" not in sent
    assert "Ana" in sent["ContentVariables"] and "Harbour Clinic" in sent["ContentVariables"]


def test_without_an_approved_template_it_fails_and_the_coordinators_are_alerted(
    site,  # noqa: F811
    booker,  # noqa: F811
    twilio,  # noqa: F811
):
    enquiry = on_whatsapp_only(site)
    row = Notification.objects.create(
        template=NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT,
        channel=Channel.WHATSAPP,
        enquiry=enquiry,
        send_after=timezone.now(),
        idempotency_key=f"enquiry_ack.e{enquiry.pk}.whatsapp",
    )
    notifications_dispatch_batch(batch_size=10)
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED and twilio.received == []
    assert "no approved WhatsApp template for the enquiry acknowledgement in en" in row.last_error
    alert = Alert.objects.get(enquiry=enquiry)
    assert alert.kind == AlertKind.DELIVERY_FAILED and alert.site == site
    assert "Ana Ruiz" in alert.message and "will not be retried" in alert.message
    assert Notification.objects.filter(alert=alert, user=booker).exists()


def test_their_whatsapp_message_opens_the_window_and_the_reply_goes_free_form(
    client,
    settings,
    site,  # noqa: F811
    booker,  # noqa: F811
    twilio,  # noqa: F811
):
    enquiry = on_whatsapp_only(site)
    texted(client, settings, "Can I come on a Saturday?", "SMwa1")
    inbound = InboundMessage.objects.get(provider_message_id="SMwa1")
    assert inbound.enquiry == enquiry and inbound.channel == Channel.WHATSAPP
    enquiry_reply(
        enquiry=enquiry, by=booker, text="Yes, on the first of the month.", channel="whatsapp"
    )
    assert notifications_dispatch_batch(batch_size=10).sent == 1
    [sent] = twilio.received
    assert "Yes, on the first of the month." in sent["Body"] and "ContentSid" not in sent
    # The coordinator reads what they wrote, on the enquiry.
    client.force_login(booker)
    page = client.get(reverse("admin:enquiries_enquiry_change", args=[enquiry.pk]))
    assert "Can I come on a Saturday?" in page.content.decode()


def test_a_day_after_their_message_the_reply_needs_the_template(
    client,
    settings,
    site,  # noqa: F811
    booker,  # noqa: F811
    twilio,  # noqa: F811
):
    enquiry = on_whatsapp_only(site)
    with time_machine.travel(timezone.now() - dt.timedelta(hours=25)):
        texted(client, settings, "Hello?", "SMwa2")
    approve(twilio, name="enquiry_reply", language="en", sid="HX" + "c3" * 16)
    enquiry_reply(enquiry=enquiry, by=booker, text="Hello Ana.", channel="whatsapp")
    notifications_dispatch_batch(batch_size=10)
    [sent] = twilio.received
    assert sent["ContentSid"] == "HX" + "c3" * 16 and "Hello Ana." in sent["ContentVariables"]


def test_stop_on_whatsapp_withdraws_that_consent_and_cancels_what_was_to_go(
    client,
    settings,
    site,  # noqa: F811
    booker,  # noqa: F811
):
    enquiry = make_enquiry(site, whatsapp=WHATSAPP, consent_whatsapp=True)
    day = timezone.localdate(timezone.now(), LONDON) + dt.timedelta(days=14)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    consultation = consultation_book(
        enquiry=enquiry,
        by=booker,
        scheduled_at=dt.datetime.combine(day, dt.time(10), tzinfo=LONDON),
        mode=ConsultationMode.VIDEO,
        video_link=VIDEO_LINK,
    )
    channels = {
        n.channel
        for n in Notification.objects.filter(
            consultation=consultation, status=NotificationStatus.PENDING
        )
    }
    assert channels == {"email", "sms", "whatsapp"}
    response = texted(client, settings, "STOP", "SMwa3")
    assert response.status_code == 200
    enquiry.refresh_from_db()
    assert (enquiry.consent_whatsapp, enquiry.consent_sms, enquiry.consent_email) == (
        False,
        True,
        True,
    )
    assert enquiry.channels() == ["email", "sms"]
    left = Notification.objects.filter(consultation=consultation, status=NotificationStatus.PENDING)
    assert {n.channel for n in left} == {"email", "sms"}
    assert enquiry.history.first().history_change_reason == "WhatsApp reply STOP"


def test_a_whatsapp_reminder_waits_for_the_whatsapp_quiet_hours_to_end(site):  # noqa: F811
    enquiry = make_enquiry(site, time_zone="Europe/London")
    protocol = Protocol(
        quiet_hours_start=dt.time(21), quiet_hours_end=dt.time(8),
        whatsapp_quiet_hours_start=dt.time(20), whatsapp_quiet_hours_end=dt.time(9),
    )  # fmt: skip
    at = dt.datetime(2026, 3, 10, 20, 30, tzinfo=LONDON)
    assert enquirer_send_after(at, channel="whatsapp", enquiry=enquiry, protocol=protocol) == (
        dt.datetime(2026, 3, 11, 9, tzinfo=LONDON)
    )
    assert enquirer_send_after(at, channel="sms", enquiry=enquiry, protocol=protocol) == at
    assert enquirer_send_after(at, channel="email", enquiry=enquiry, protocol=protocol) == at


def test_a_text_reply_waits_for_the_morning_in_the_persons_zone(site, booker):  # noqa: F811
    enquiry = make_enquiry(site, time_zone="Asia/Shanghai", language="zh-hans")
    at = dt.datetime(2026, 3, 10, 17, tzinfo=LONDON)  # 01:00 on the 11th in Shanghai
    with time_machine.travel(at, tick=False):
        by_text = enquiry_reply(enquiry=enquiry, by=booker, text="您好", channel="sms")
        by_email = enquiry_reply(enquiry=enquiry, by=booker, text="您好", channel="email")
    due = dict(
        Notification.objects.filter(enquiry=enquiry).values_list("idempotency_key", "send_after")
    )
    assert due[by_email.idempotency_key] == at
    assert due[by_text.idempotency_key] == dt.datetime(
        2026, 3, 11, 8, tzinfo=ZoneInfo("Asia/Shanghai")
    )


def test_an_enquirers_text_with_nul_characters_is_kept_and_the_coordinator_told(
    client,
    settings,
    site,  # noqa: F811
    booker,  # noqa: F811
):
    enquiry = on_whatsapp_only(site)
    assert texted(client, settings, "Is\x00 Saturday\x00 open?", "SMwaNUL").status_code == 200
    inbound = InboundMessage.objects.get(provider_message_id="SMwaNUL")
    assert (inbound.enquiry, inbound.body) == (enquiry, "Is Saturday open?")
    client.force_login(booker)
    page = client.get(reverse("admin:enquiries_enquiry_change", args=[enquiry.pk]))
    assert "2 NUL characters were removed from this text as it arrived." in page.content.decode()
