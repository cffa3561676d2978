"""WhatsApp as a third channel: through the SMS provider's stand-in, over real HTTP."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from delivery.models import SenderPace, WhatsAppTemplate
from delivery.outbox import notifications_dispatch_batch
from delivery.whatsapp import (
    WINDOW_MARGIN,
    SendForm,
    whatsapp_address,
    whatsapp_send_form,
    whatsapp_send_unsafe,
)
from pathway import services
from pathway.states import CourseState
from patients.models import ConsentChange, Patient
from scheduling.models import (
    Alert,
    AlertKind,
    Channel,
    InboundMessage,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Visit,
    VisitKind,
)
from tests.servers import TwilioStub

pytestmark = pytest.mark.django_db
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
WHATSAPP = "+447700900456"
ADDRESS = f"whatsapp:{WHATSAPP}"
# Booked on 1 June for 11:00 on 11 June: the 7-day reminders fall due at 11:00 on 4 June.
REMINDERS_DUE = dt.datetime(2026, 6, 4, 12, tzinfo=LONDON)
REMINDER_SID = "HX" + "a1" * 16


@pytest.fixture
def twilio(settings):
    with TwilioStub() as stub:
        for name, value in stub.settings().items():
            setattr(settings, name, value)
        yield stub


@pytest.fixture
def on_whatsapp(course):
    """The course's patient, on WhatsApp as well as email and SMS."""
    patient = course.patient
    patient.whatsapp, patient.consent_whatsapp = WHATSAPP, True
    patient.save()
    return patient


def book_harvest(course, pathway, *, at=dt.datetime(2026, 6, 11, 11, tzinfo=LONDON)):
    with time_machine.travel(dt.datetime(2026, 6, 1, 9, tzinfo=LONDON), tick=False):
        pathway.starting(timezone.now() - dt.timedelta(days=1)).advance(
            course, CourseState.ELIGIBLE
        )
        services.course_schedule_harvest(
            course=course, by=pathway.coordinator, place="Suite 2", scheduled_at=at
        )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


@pytest.fixture
def harvest(on_whatsapp, course, pathway, coordinator):
    on_whatsapp.coordinator = coordinator
    on_whatsapp.save()
    return book_harvest(course, pathway)


def approve(twilio, *, name="visit_reminder", language="en", sid=REMINDER_SID):
    """What an administrator does once WhatsApp approved the template: its ContentSid in, and
    approved ticked; the provider's account holds the same template."""
    template = WhatsAppTemplate.objects.get(name=name, language=language)
    template.content_sid, template.approved = sid, True
    template.full_clean()
    template.save()
    twilio.content_templates[sid] = template.body
    return template


def only_whatsapp(visit):
    """The visit's first WhatsApp reminder; every other reminder cancelled."""
    first = (
        Notification.objects.filter(visit=visit, channel=Channel.WHATSAPP)
        .order_by("send_after")
        .first()
    )
    Notification.objects.exclude(pk=first.pk).update(status=NotificationStatus.CANCELLED)
    return first


def test_a_reminder_goes_on_each_consented_channel_with_its_own_key(harvest):
    stamp = int(harvest.scheduled_at.timestamp())
    rows = Notification.objects.filter(visit=harvest, idempotency_key__contains=".7d.")
    assert sorted(rows.values_list("channel", flat=True)) == ["email", "sms", "whatsapp"]
    whatsapp = rows.get(channel=Channel.WHATSAPP)
    assert whatsapp.idempotency_key == f"reminder.v{harvest.pk}.7d.whatsapp.{stamp}"
    assert Notification.objects.filter(visit=harvest, channel=Channel.WHATSAPP).count() == 2


def test_outside_the_window_a_reminder_goes_as_the_approved_template(harvest, twilio):
    template = approve(twilio)
    whatsapp = only_whatsapp(harvest)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 1
    [sent] = twilio.received
    patient = harvest.course.patient
    assert (sent["To"], sent["From"]) == (ADDRESS, "whatsapp:+14155238886")
    assert sent["ContentSid"] == template.content_sid and "Body" not in sent
    variables = json.loads(sent["ContentVariables"])
    assert set(variables) == {str(n) for n in range(1, 10)}
    assert variables["1"] == patient.first_name and variables["5"] in {"11:00 BST"}
    assert "\n" not in "".join(variables.values())
    words = sent["Rendered"]
    assert words.startswith(f"Hi {patient.first_name}, a reminder from your clinic:")
    assert "/v/" in words and "Suite 2" in words
    assert "harvest" not in words.lower() and "bronchoscopy" not in words.lower()
    assert "COPD" not in words and "cell" not in words.lower()
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.SENT and whatsapp.provider_message_id


def test_without_an_approved_template_outside_the_window_the_send_fails_and_is_alerted(
    harvest, twilio, coordinator
):
    patient = harvest.course.patient
    Patient.objects.filter(pk=patient.pk).update(preferred_language="es")
    approve(twilio, language="en")  # English only: the patient reads Spanish
    whatsapp = only_whatsapp(harvest)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert (result.sent, result.failed) == (0, 1)
    assert twilio.received == []  # never sent free-form where WhatsApp would refuse it
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.FAILED and whatsapp.attempts == 1
    assert "no approved WhatsApp template for the appointment reminder in es" in whatsapp.last_error
    alert = Alert.objects.get(kind=AlertKind.DELIVERY_FAILED)
    assert alert.message.startswith(f"A WhatsApp reminder to {patient.first_name}")
    assert "will not be retried: WhatsApp takes only an approved template" in alert.message
    assert "refused the address" not in alert.message
    assert Notification.objects.filter(alert=alert, user=coordinator).exists()


def test_a_template_not_yet_approved_is_not_used(harvest, twilio):
    template = approve(twilio)
    WhatsAppTemplate.objects.filter(pk=template.pk).update(approved=False)
    whatsapp = only_whatsapp(harvest)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        notifications_dispatch_batch(batch_size=10)
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.FAILED and twilio.received == []


def test_inside_the_window_the_reminder_goes_free_form_with_the_sms_words(harvest, twilio):
    patient = harvest.course.patient
    wrote = REMINDERS_DUE - dt.timedelta(hours=23)
    Patient.objects.filter(pk=patient.pk).update(whatsapp_last_inbound_at=wrote)
    twilio.whatsapp_sessions[ADDRESS] = wrote
    only_whatsapp(harvest)
    with time_machine.travel(REMINDERS_DUE, tick=False):
        notifications_dispatch_batch(batch_size=10)
    [sent] = twilio.received
    assert "ContentSid" not in sent and sent["To"] == ADDRESS
    assert sent["Body"].startswith(f"Hi {patient.first_name}, reminder:")
    assert "Confirm or ask for another time: http" in sent["Body"]


@pytest.mark.parametrize(
    ("wrote_ago", "form"),
    [
        (None, SendForm.TEMPLATE),
        (dt.timedelta(minutes=1), SendForm.FREE_FORM),
        (dt.timedelta(hours=24) - WINDOW_MARGIN - dt.timedelta(seconds=1), SendForm.FREE_FORM),
        (dt.timedelta(hours=24) - WINDOW_MARGIN, SendForm.TEMPLATE),
        (dt.timedelta(hours=24), SendForm.TEMPLATE),
        (dt.timedelta(days=3), SendForm.TEMPLATE),
    ],
)
def test_the_24_hour_rule(wrote_ago, form):
    now = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)  # the night the clocks go forward
    last = None if wrote_ago is None else now - wrote_ago
    assert whatsapp_send_form(last_inbound_at=last, now=now) == form


def test_quiet_hours_are_whatsapps_own_in_the_patients_zone(on_whatsapp, course, pathway):
    on_whatsapp.time_zone = NEW_YORK
    on_whatsapp.save()
    protocol = course.protocol
    protocol.whatsapp_quiet_hours_start, protocol.whatsapp_quiet_hours_end = (
        dt.time(22),
        dt.time(9),
    )
    protocol.save()
    harvest = book_harvest(course, pathway)
    seven_days = Notification.objects.filter(visit=harvest, idempotency_key__contains=".7d.")
    # Due 11:00 in London, which is 06:00 in New York: inside both channels' quiet hours.
    send_after = {n.channel: n.send_after.astimezone(NEW_YORK) for n in seven_days}
    assert send_after["email"].time() == dt.time(6)
    assert send_after["sms"].time() == dt.time(8)  # SMS's quiet hours end at 08:00
    assert send_after["whatsapp"].time() == dt.time(9)  # WhatsApp's own, at 09:00
    assert send_after["whatsapp"].date() == dt.date(2026, 6, 4)


def test_a_retry_waits_for_whatsapps_quiet_hours(harvest, twilio, settings):
    settings.NOTIFICATION_RETRY_BASE_SECONDS = 60
    twilio.fail_next = 1
    approve(twilio)
    whatsapp = only_whatsapp(harvest)
    late = dt.datetime(2026, 6, 4, 20, 59, 30, tzinfo=LONDON)
    Notification.objects.filter(pk=whatsapp.pk).update(send_after=late)
    with time_machine.travel(late, tick=False):
        notifications_dispatch_batch(batch_size=10)
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.PENDING
    assert whatsapp.send_after == dt.datetime(2026, 6, 5, 8, tzinfo=LONDON)


def test_consent_to_whatsapp_is_apart_from_sms(client, settings, on_whatsapp, course, pathway):
    on_whatsapp.consent_sms = False
    on_whatsapp.save()
    harvest = book_harvest(course, pathway)
    channels = set(Notification.objects.filter(visit=harvest).values_list("channel", flat=True))
    assert channels == {"email", "whatsapp"}
    # An SMS STOP from their phone leaves WhatsApp as it is.
    Patient.objects.filter(pk=on_whatsapp.pk).update(consent_sms=True)
    settings.TWILIO_AUTH_TOKEN, settings.SITE_URL = "test-token", "https://tracker.example"
    params = {"MessageSid": "SM1", "From": str(on_whatsapp.phone), "Body": "STOP"}
    signature = RequestValidator("test-token").compute_signature(
        "https://tracker.example/sms/inbound/", params
    )
    client.post("/sms/inbound/", params, HTTP_X_TWILIO_SIGNATURE=signature)
    on_whatsapp.refresh_from_db()
    assert (on_whatsapp.consent_sms, on_whatsapp.consent_whatsapp) == (False, True)
    assert Notification.objects.filter(
        visit=harvest, channel=Channel.WHATSAPP, status=NotificationStatus.PENDING
    ).exists()
    [change] = ConsentChange.objects.filter(patient=on_whatsapp)
    assert (change.channel, change.source) == ("sms", "SMS reply STOP")


def test_the_whatsapp_sender_keeps_its_own_pace(harvest, twilio, settings):
    settings.WHATSAPP_SENDER_DEFAULT_PER_SECOND = 50
    approve(twilio)
    Notification.objects.filter(visit=harvest, channel=Channel.EMAIL).update(
        status=NotificationStatus.CANCELLED
    )
    with time_machine.travel(REMINDERS_DUE, tick=False):
        notifications_dispatch_batch(batch_size=10)
    assert {m["From"] for m in twilio.received} == {"+15005550006", "whatsapp:+14155238886"}
    paces = dict(SenderPace.objects.values_list("sender", "per_second"))
    assert paces == {"+15005550006": 10_000, "whatsapp:+14155238886": 50}


def test_the_seam_sends_to_a_raw_address_with_the_same_rule(twilio, settings):
    approve(twilio)
    provider_id = whatsapp_send_unsafe(
        to="+34600000001",
        text="free words",
        idempotency_key="enquiry.1.ack",
        message=NotificationTemplate.VISIT_REMINDER,
        words={"first_name": "Ana"},
    )
    [sent] = twilio.received
    assert provider_id == sent["Sid"] and sent["To"] == "whatsapp:+34600000001"
    assert sent["ContentSid"] == REMINDER_SID and "Body" not in sent
    assert json.loads(sent["ContentVariables"])["2"] == "–"  # a word not given: a dash
    assert whatsapp_address("whatsapp:+34600000001") == "whatsapp:+34600000001"


# Through the stand-in both ways: the tracker sends to it, and it posts the patient's replies
# and its delivery reports to the tracker, signed, over HTTP.
live = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def provider(twilio, live_server, settings):
    settings.SITE_URL = live_server.url
    settings.TWILIO_STATUS_CALLBACK = True
    twilio.webhook_url = f"{live_server.url}/sms/inbound/"
    return twilio


def booked_soon(course, pathway):
    """A harvest in three days, booked now; its WhatsApp reminder due now."""
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Endoscopy",
    )
    visit = Visit.objects.get(course=course, kind=VisitKind.HARVEST)
    whatsapp = only_whatsapp(visit)
    Notification.objects.filter(pk=whatsapp.pk).update(send_after=timezone.now())
    return visit, whatsapp


@live
def test_a_reminder_a_confirm_and_a_stop_through_the_stand_in(provider, on_whatsapp, pathway):
    approve(provider)
    visit, whatsapp = booked_soon(on_whatsapp.courses.get(), pathway)
    assert notifications_dispatch_batch(batch_size=10).sent == 1
    assert provider.received[0]["StatusCallback"] == provider.webhook_url.replace(
        "inbound", "status"
    )
    assert provider.send_status_callbacks() == [("sent", 204), ("delivered", 204)]
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.SENT and whatsapp.delivered_at

    status, answer = provider.incoming(sender=ADDRESS, body="CONFIRM")
    assert status == 200 and "is confirmed" in answer
    assert "harvest" not in answer.lower() and "bronchoscopy" not in answer.lower()
    visit.refresh_from_db()
    assert visit.confirmed_at is not None
    inbound = InboundMessage.objects.get()
    assert (inbound.channel, inbound.patient) == ("whatsapp", on_whatsapp)
    assert inbound.from_number == ADDRESS
    on_whatsapp.refresh_from_db()
    assert on_whatsapp.whatsapp_last_inbound_at == inbound.received_at

    # Inside the window the clinic writes freely: the next message goes as a body.
    Notification.objects.create(
        template=NotificationTemplate.VISIT_REMINDER,
        channel=Channel.WHATSAPP,
        patient=on_whatsapp,
        visit=visit,
        send_after=timezone.now(),
        idempotency_key="test.after-confirm",
    )
    notifications_dispatch_batch(batch_size=10)
    assert "Body" in provider.received[1] and "ContentSid" not in provider.received[1]
    assert provider.send_status_callbacks() == [("sent", 204), ("delivered", 204)]

    Notification.objects.filter(visit=visit, channel=Channel.SMS).update(
        status=NotificationStatus.PENDING
    )
    sms = Notification.objects.filter(visit=visit, channel=Channel.SMS)
    later = Notification.objects.create(
        template=NotificationTemplate.VISIT_REMINDER,
        channel=Channel.WHATSAPP,
        patient=on_whatsapp,
        visit=visit,
        send_after=timezone.now() + dt.timedelta(days=1),
        idempotency_key="test.later",
    )
    status, answer = provider.incoming(sender=ADDRESS, body="stop")
    assert status == 200 and "no more WhatsApp messages" in answer
    on_whatsapp.refresh_from_db()
    assert (on_whatsapp.consent_whatsapp, on_whatsapp.consent_sms) == (False, True)
    change = ConsentChange.objects.get(patient=on_whatsapp)
    assert (change.channel, change.consents, change.source) == (
        "whatsapp",
        False,
        "WhatsApp reply STOP",
    )
    later.refresh_from_db()
    assert later.status == NotificationStatus.CANCELLED
    assert {n.status for n in sms} == {NotificationStatus.PENDING}  # SMS left as it was


@live
def test_a_body_whatsapp_refuses_with_63016_is_retried_as_the_template(
    provider, on_whatsapp, pathway
):
    approve(provider)
    # The tracker believes the patient wrote an hour ago; the provider knows no session.
    Patient.objects.filter(pk=on_whatsapp.pk).update(
        whatsapp_last_inbound_at=timezone.now() - dt.timedelta(hours=1)
    )
    _, whatsapp = booked_soon(on_whatsapp.courses.get(), pathway)
    notifications_dispatch_batch(batch_size=10)
    assert "Body" in provider.received[0]
    assert provider.send_status_callbacks() == [("sent", 204), ("failed", 204)]
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.PENDING and whatsapp.attempts == 1
    assert "failed: 63016" in whatsapp.last_error
    on_whatsapp.refresh_from_db()
    assert on_whatsapp.whatsapp_last_inbound_at is None  # the provider's word on the window

    Notification.objects.filter(pk=whatsapp.pk).update(send_after=timezone.now())
    notifications_dispatch_batch(batch_size=10)
    assert provider.received[1]["ContentSid"] == REMINDER_SID
    assert provider.send_status_callbacks() == [("sent", 204), ("delivered", 204)]
    whatsapp.refresh_from_db()
    assert whatsapp.status == NotificationStatus.SENT and whatsapp.delivered_at


# The admin: the patient's form, and the templates.


def _patient_form(site, **overrides):
    return {
        "site": site.pk,
        "mrn": "W-100",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "date_of_birth": "1955-03-02",
        "sex": "female",
        "phone": "+44 7911 123456",
        "consent_sms": "on",
        "whatsapp": "07911 223456",
        "consent_whatsapp": "on",
        "preferred_language": "en",
        "smoking_status": "never",
        **{
            f"{prefix}-{key}": value
            for prefix in (
                "bodymeasurements",
                "lungfunctiontests",
                "sixminutewalktests",
                "symptomscores",
                "chestcts",
                "clinicalassessments",
                "medications",
            )
            for key, value in (("TOTAL_FORMS", 0), ("INITIAL_FORMS", 0))
        },
    } | overrides


def test_the_patients_form_takes_a_whatsapp_number_and_its_consent(client, admin_user):
    from tests.factories import SiteFactory

    site = SiteFactory()
    client.force_login(admin_user)
    page = client.get(reverse("admin:patients_patient_add")).content.decode()
    assert "WhatsApp number" in page and "Consents to WhatsApp reminders" in page
    response = client.post(reverse("admin:patients_patient_add"), _patient_form(site))
    assert response.status_code == 302, response.context["adminform"].form.errors
    patient = Patient.objects.get(mrn="W-100")
    assert str(patient.whatsapp) == "+447911223456" and patient.consent_whatsapp
    assert patient.consents_to("whatsapp") and patient.consents_to("sms")


@pytest.mark.parametrize(
    ("whatsapp", "error"),
    [
        ("", "Consent to WhatsApp reminders needs a WhatsApp number."),
        ("12345", "Enter a valid phone number"),
    ],
)
def test_the_patients_form_refuses_a_whatsapp_consent_it_cannot_use(
    client, admin_user, whatsapp, error
):
    from tests.factories import SiteFactory

    client.force_login(admin_user)
    response = client.post(
        reverse("admin:patients_patient_add"), _patient_form(SiteFactory(), whatsapp=whatsapp)
    )
    assert response.status_code == 200
    assert error in str(response.context["adminform"].form.errors["whatsapp"])
    assert not Patient.objects.exists()


def test_the_templates_are_seeded_and_edited_in_the_admin(client, admin_user):
    seeded = set(WhatsAppTemplate.objects.values_list("name", "language"))
    assert {("visit_reminder", code) for code in ("en", "es", "zh-hans")} <= seeded
    assert not WhatsAppTemplate.objects.filter(approved=True).exists()
    template = WhatsAppTemplate.objects.get(name="visit_reminder", language="es")
    url = reverse("admin:delivery_whatsapptemplate_change", args=[template.pk])
    client.force_login(admin_user)
    page = client.get(url)
    assert page.status_code == 200 and "first_name" in page.content.decode()
    form = {
        "name": template.name,
        "language": template.language,
        "body": template.body,
        "variables": json.dumps(template.variables | {"3": "diagnosis"}),
        "content_sid": "HX123",
        "approved": "on",
    }
    refused = client.post(url, form)
    errors = refused.context["adminform"].form.errors
    assert "Not a word this message has: diagnosis" in str(errors["variables"])
    assert "HX and 32 hexadecimal digits" in str(errors["content_sid"])
    template.refresh_from_db()
    assert not template.approved
    for hostile in ("[1, 2]", '{"1": ["first_name"]}', '{"1": "first_name"'):
        refused = client.post(url, form | {"variables": hostile})
        assert refused.status_code == 200 and refused.context["adminform"].form.errors
    form |= {"variables": json.dumps(template.variables), "content_sid": REMINDER_SID}
    assert client.post(url, form).status_code == 302
    template.refresh_from_db()
    assert template.usable


def test_a_batch_of_whatsapp_messages_costs_its_writes_and_paces_and_a_fixed_number_else(
    harvest, twilio
):
    """The templates are read once a batch, the consent and last messages once: 3 messages
    or 30 cost the same but for one outcome write and one pace reservation each."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    approve(twilio)
    Notification.objects.filter(visit=harvest).update(status=NotificationStatus.CANCELLED)
    fixed = []
    for count in (3, 30):
        Notification.objects.bulk_create(
            Notification(
                template=NotificationTemplate.VISIT_REMINDER,
                channel=Channel.WHATSAPP,
                patient=harvest.course.patient,
                visit=harvest,
                send_after=REMINDERS_DUE,
                idempotency_key=f"many.{count}.{n}",
            )
            for n in range(count)
        )
        with (
            time_machine.travel(REMINDERS_DUE, tick=False),
            CaptureQueriesContext(connection) as captured,
        ):
            result = notifications_dispatch_batch(batch_size=100)
        assert result.sent == count
        per_message = [
            q
            for q in captured
            if "INSERT INTO scheduling_deliveryattempt" in q["sql"]
            or "delivery_senderpace" in q["sql"]
        ]
        assert len(per_message) == 2 * count
        fixed.append(len(captured) - len(per_message))
    assert fixed[0] == fixed[1]
    assert len(twilio.received) == 33 and all("ContentSid" in m for m in twilio.received)


def test_an_amendment_writes_whatsapp_reminders_as_the_one_course_path_does(
    on_whatsapp, course, pathway
):
    from pathway.amendments import follow_ups_recompute
    from scheduling.services import reminders_cancel, reminders_schedule, visit_reschedule

    on_whatsapp.time_zone = NEW_YORK  # 10:00 in London is 05:00 there: quiet on both
    on_whatsapp.save()
    protocol = course.protocol
    protocol.whatsapp_quiet_hours_start, protocol.whatsapp_quiet_hours_end = (
        dt.time(22),
        dt.time(9, 30),
    )
    protocol.save()
    pathway.advance(course, CourseState.FOLLOW_UP)
    twelve = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    visit_reschedule(
        visit=twelve,
        scheduled_at=dt.datetime.combine(
            twelve.window_opens_on + dt.timedelta(days=2), dt.time(10), tzinfo=LONDON
        ),
    )

    def pending():
        return sorted(
            Notification.objects.filter(
                visit__course=course, status=NotificationStatus.PENDING
            ).values_list("idempotency_key", "send_after")
        )

    follow_ups_recompute(protocol=protocol)
    after_sql = pending()
    whatsapp = [at for key, at in after_sql if ".whatsapp." in key]
    assert whatsapp and {at.astimezone(NEW_YORK).time() for at in whatsapp} == {dt.time(9, 30)}
    reminders_cancel(visits=Visit.objects.filter(course=course))
    for visit in Visit.objects.filter(course=course, kind="follow_up"):
        reminders_schedule(visit=visit)
    assert pending() == after_sql


def test_a_check_in_goes_on_whatsapp_too_as_its_template_outside_the_window(
    on_whatsapp, course, pathway, twilio
):
    from pathway.checkins import checkins_tick

    approve(twilio, name="questionnaire", sid="HX" + "b2" * 16)
    pathway.advance(course, CourseState.FOLLOW_UP)
    day = course.transplanted_on + dt.timedelta(days=7)
    with time_machine.travel(
        dt.datetime.combine(day, dt.time(11), tzinfo=course.site.time_zone), tick=False
    ):
        checkins_tick()
        whatsapp = Notification.objects.filter(
            template=NotificationTemplate.QUESTIONNAIRE, channel=Channel.WHATSAPP
        )
        assert whatsapp.exists()
        Notification.objects.exclude(pk__in=whatsapp).update(status=NotificationStatus.CANCELLED)
        notifications_dispatch_batch(batch_size=10)
    sent = twilio.received[0]
    assert sent["ContentSid"] == "HX" + "b2" * 16 and "/q/" in sent["Rendered"]
    assert "COPD" not in sent["Rendered"] and "cell" not in sent["Rendered"].lower()
