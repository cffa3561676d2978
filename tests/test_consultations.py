"""The consultation: booked from an enquiry in the clinic's hours, with reminders in the
enquirer's zone and language, moved and cancelled with them, delivered through the outbox."""

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from common.errors import Refused
from delivery.outbox import notifications_dispatch_batch
from enquiries.consultations import (
    consultation_book,
    consultation_cancel,
    consultation_mark_done,
    consultation_mark_missed,
    consultation_move,
)
from enquiries.models import (
    Consultation,
    ConsultationMode,
    ConsultationStatus,
    Enquiry,
    EnquiryKind,
    EnquiryStatus,
)
from pathway.models import Protocol
from patients.models import ClinicHours
from scheduling.models import (
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Resource,
    ResourceKind,
    ResourceWording,
)
from tests.factories import SiteFactory, UserFactory
from tests.servers import SmtpSink, TwilioStub

pytestmark = pytest.mark.django_db

LONDON, NEW_YORK = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")
# Friday 20 March 2026, noon in London: British Summer Time starts on Sunday 29 March; New
# York's daylight time began on 8 March.
BOOKED_ON = dt.datetime(2026, 3, 20, 12, tzinfo=LONDON)
VIDEO_LINK = "https://meet.example.org/harbour-42"


def local(zone, *args):
    return dt.datetime(*args, tzinfo=zone)


@pytest.fixture
def site(db):
    site = SiteFactory(
        name="Harbour Chest Clinic",
        code="HCC",
        time_zone="Europe/London",
        patient_facing_name="Harbour Clinic",
        patient_phone="+442079460000",
    )
    for weekday in range(5):
        ClinicHours.objects.create(
            site=site, weekday=weekday, opens_at=dt.time(9), closes_at=dt.time(17)
        )
    return site


@pytest.fixture
def booker(site):
    user = UserFactory(username="consult-coordinator", role="coordinator", sites=[])
    site.coordinators.add(user)
    return user


def make_enquiry(site, **fields):
    values = {
        "site": site,
        "kind": EnquiryKind.APPLICATION,
        "first_name": "Ana",
        "last_name": "Ruiz",
        "email": "ana@example.org",
        "phone": "+447700900123",
        "consent_email": True,
        "consent_sms": True,
        "copd_diagnosed": "yes",
        "smoking": "former",
        "submission_key": uuid.uuid4().hex,
        "status": EnquiryStatus.ANSWERED,
    } | fields
    return Enquiry.objects.create(**values)


@pytest.fixture
def enquiry(site):
    return make_enquiry(site)


def book(enquiry, by, at, **kwargs):
    values = {"mode": ConsultationMode.VIDEO, "video_link": VIDEO_LINK} | kwargs
    return consultation_book(enquiry=enquiry, by=by, scheduled_at=at, **values)


def pending(consultation):
    return sorted(
        Notification.objects.filter(
            consultation=consultation, status=NotificationStatus.PENDING
        ).values_list("send_after", "channel")
    )


# Booking, and what it refuses


def test_booking_writes_reminders_at_the_persons_clock_time_across_dst(enquiry, booker):
    """2 April 14:00 BST; its 7-day reminder falls before the clocks change, at 14:00 GMT."""
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
    assert pending(consultation) == [
        (local(LONDON, 2026, 3, 26, 14), "email"),
        (local(LONDON, 2026, 3, 26, 14), "sms"),
        (local(LONDON, 2026, 4, 1, 14), "email"),
        (local(LONDON, 2026, 4, 1, 14), "sms"),
    ]
    assert local(LONDON, 2026, 3, 26, 14) == dt.datetime(2026, 3, 26, 14, tzinfo=dt.UTC)
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.CONSULTATION
    keys = set(
        Notification.objects.filter(consultation=consultation).values_list(
            "idempotency_key", flat=True
        )
    )
    stamp = int(consultation.scheduled_at.timestamp())
    assert f"consultation.c{consultation.pk}.7d.sms.{stamp}" in keys
    assert {n.template for n in consultation.notifications.all()} == {
        NotificationTemplate.CONSULTATION_REMINDER
    }


def test_a_text_in_the_persons_quiet_hours_waits_for_their_morning(site, booker):
    """10:00 in London is 06:00 in New York (before London's clocks change, 05:00 after)."""
    enquiry = make_enquiry(site, time_zone="America/New_York")
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 10))
    assert timezone.localtime(consultation.scheduled_at, NEW_YORK).hour == 5
    assert pending(consultation) == [
        (local(NEW_YORK, 2026, 3, 26, 5), "email"),
        (local(NEW_YORK, 2026, 3, 26, 8), "sms"),
        (local(NEW_YORK, 2026, 4, 1, 5), "email"),
        (local(NEW_YORK, 2026, 4, 1, 8), "sms"),
    ]


def test_only_consented_channels_with_an_address_are_reminded(site, booker):
    enquiry = make_enquiry(site, consent_sms=False, email="")
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
    assert pending(consultation) == []
    enquiry = make_enquiry(site, consent_sms=False)
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
    assert {channel for _, channel in pending(consultation)} == {"email"}


def test_booked_too_soon_for_a_reminder_it_is_told_at_once(site, booker):
    Protocol.objects.filter(is_default=True).update(consultation_notice_hours=4)
    enquiry = make_enquiry(site)
    at_nine = local(LONDON, 2026, 3, 20, 9)
    with time_machine.travel(at_nine, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 3, 20, 15))
    assert pending(consultation) == [(at_nine, "email"), (at_nine, "sms")]
    assert all(".booked." in n.idempotency_key for n in consultation.notifications.all())


@pytest.mark.parametrize(
    ("at", "words"),
    [
        (local(LONDON, 2026, 3, 19, 10), "must be in the future"),
        (local(LONDON, 2026, 3, 20, 16), "needs 24 h notice"),
        (local(LONDON, 2026, 3, 28, 10), "outside the clinic's hours"),  # a Saturday
        (local(LONDON, 2026, 3, 24, 18), "outside the clinic's hours"),
    ],
    ids=["past", "too-soon", "saturday", "evening"],
)
def test_refused_in_the_past_too_soon_or_outside_clinic_hours(enquiry, booker, at, words):
    with time_machine.travel(BOOKED_ON, tick=False), pytest.raises(Refused) as refused:
        book(enquiry, booker, at)
    assert any(words in reason for reason in refused.value.by_field["scheduled_at"])
    assert not Consultation.objects.exists() and not Notification.objects.exists()
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.ANSWERED


def test_outside_clinic_hours_with_a_reason_it_is_booked_and_the_reason_kept(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(
            enquiry, booker, local(LONDON, 2026, 3, 24, 18), reason="Works days; asked for 6pm"
        )
    assert consultation.outside_hours_reason == "Works days; asked for 6pm"
    assert consultation.history.first().outside_hours_reason == "Works days; asked for 6pm"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"video_link": "http://meet.example.org/x"}, "video_link", "https://"),
        ({"video_link": "meet me on zoom"}, "video_link", "https://"),
        ({"video_link": "javascript:alert(1)"}, "video_link", "https://"),
        ({"video_link": ""}, "video_link", "needs the link"),
        ({"mode": ConsultationMode.IN_PERSON, "video_link": ""}, "place", "needs a place"),
        ({"mode": "by pigeon"}, "mode", "in person or by video"),
    ],
)
def test_a_video_needs_an_https_link_and_in_person_a_place(enquiry, booker, fields, field, words):
    with time_machine.travel(BOOKED_ON, tick=False), pytest.raises(Refused) as refused:
        book(enquiry, booker, local(LONDON, 2026, 4, 2, 14), **fields)
    assert any(words in reason for reason in refused.value.by_field[field])
    assert not Consultation.objects.exists()


def test_in_person_defaults_to_the_sites_clinic(enquiry, booker, site):
    Resource.objects.create(site=site, kind=ResourceKind.LUNG_FUNCTION, name="LF clinic")
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(
            enquiry, booker, local(LONDON, 2026, 4, 2, 14), mode=ConsultationMode.IN_PERSON
        )
    assert (consultation.place, consultation.video_link) == ("LF clinic", "")


def test_only_the_sites_coordinators_book(enquiry, site, clinician):
    elsewhere = SiteFactory(name="Another clinic", code="ANC", staff=[])
    other = UserFactory(username="other-coordinator", role="coordinator", sites=[])
    elsewhere.coordinators.add(other)
    site.members.add(clinician)
    for user in (other, clinician):
        with time_machine.travel(BOOKED_ON, tick=False), pytest.raises(Refused) as refused:
            book(enquiry, user, local(LONDON, 2026, 4, 2, 14))
        assert "Only the coordinators of Harbour Chest Clinic" in refused.value.reasons[0]
    assert not Consultation.objects.exists()


@pytest.mark.parametrize("status", [EnquiryStatus.CLOSED, EnquiryStatus.CONVERTED])
def test_not_for_a_closed_or_converted_enquiry(site, booker, status):
    enquiry = make_enquiry(site, status=status)
    with time_machine.travel(BOOKED_ON, tick=False), pytest.raises(Refused) as refused:
        book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
    assert "no consultation is booked for it" in refused.value.reasons[0]


def test_one_booked_consultation_per_enquiry(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        with pytest.raises(Refused, match="move it instead"):
            book(enquiry, booker, local(LONDON, 2026, 4, 3, 14))


# Moving, cancelling, done and missed


def test_moving_replans_the_reminders_and_moving_back_revives_them(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        first = pending(consultation)
        consultation_move(
            consultation=consultation, by=booker, scheduled_at=local(LONDON, 2026, 4, 9, 11)
        )
        assert pending(consultation) == [
            (local(LONDON, 2026, 4, 2, 11), "email"),
            (local(LONDON, 2026, 4, 2, 11), "sms"),
            (local(LONDON, 2026, 4, 8, 11), "email"),
            (local(LONDON, 2026, 4, 8, 11), "sms"),
        ]
        assert consultation.notifications.filter(status=NotificationStatus.CANCELLED).count() == 4
        consultation_move(
            consultation=consultation, by=booker, scheduled_at=local(LONDON, 2026, 4, 2, 14)
        )
    assert pending(consultation) == first
    assert consultation.notifications.count() == 8  # revived, not written twice


def test_a_move_is_refused_like_a_booking_and_changes_nothing(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        before = pending(consultation)
        with pytest.raises(Refused) as refused:
            consultation_move(
                consultation=consultation,
                by=booker,
                scheduled_at=local(LONDON, 2026, 4, 4, 14),  # a Saturday
            )
    assert "outside the clinic's hours" in refused.value.by_field["scheduled_at"][0]
    consultation.refresh_from_db()
    assert consultation.scheduled_at == local(LONDON, 2026, 4, 2, 14)
    assert pending(consultation) == before


def test_cancelling_cancels_the_pending_reminders(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        consultation_cancel(consultation=consultation, by=booker, reason="They asked to")
    consultation.refresh_from_db()
    assert consultation.status == ConsultationStatus.CANCELLED
    assert consultation.status_reason == "They asked to"
    assert pending(consultation) == []
    assert consultation.notifications.filter(status=NotificationStatus.CANCELLED).count() == 4
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.ANSWERED
    with pytest.raises(Refused, match="cancelled already"):
        consultation_cancel(consultation=consultation, by=booker)
    with pytest.raises(Refused, match="cannot be moved"):
        consultation_move(
            consultation=consultation, by=booker, scheduled_at=local(LONDON, 2026, 4, 9, 11)
        )


def test_closing_an_enquiry_cancels_its_booked_consultation(enquiry, booker):
    from enquiries.consultations import consultations_cancel_open

    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        assert consultations_cancel_open(enquiry=enquiry, by=booker, reason="Closed") == 1
    consultation.refresh_from_db()
    assert (consultation.status, consultation.status_reason) == ("cancelled", "Closed")
    assert pending(consultation) == []


def test_done_or_missed_only_once_its_time_has_come(enquiry, booker):
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        with pytest.raises(Refused, match="has not taken place yet"):
            consultation_mark_done(consultation=consultation, by=booker)
        with pytest.raises(Refused, match="can still take place"):
            consultation_mark_missed(consultation=consultation, by=booker)
    with time_machine.travel(local(LONDON, 2026, 4, 2, 15), tick=False):
        consultation_mark_missed(consultation=consultation, by=booker, reason="Did not join")
    consultation.refresh_from_db()
    assert (consultation.status, consultation.status_reason) == ("missed", "Did not join")
    assert pending(consultation) == []
    with pytest.raises(Refused, match="missed already"):
        consultation_mark_done(consultation=consultation, by=booker)


# Delivered through the outbox, to the SMTP sink and the SMS provider's stand-in


@pytest.fixture
def smtp(settings):
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        yield sink


@pytest.fixture
def twilio(settings):
    with TwilioStub() as stub:
        for name, value in stub.settings().items():
            setattr(settings, name, value)
        yield stub


def test_a_video_reminder_reaches_the_enquirer_in_their_zone(site, booker, smtp, twilio):
    enquiry = make_enquiry(site, time_zone="America/New_York")
    with time_machine.travel(BOOKED_ON, tick=False):
        book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))  # 09:00 in New York
    with time_machine.travel(local(NEW_YORK, 2026, 3, 26, 12), tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert (result.claimed, result.sent) == (2, 2)
    [email] = smtp.messages
    assert email["To"] == "ana@example.org"
    assert email["Subject"] == "Harbour Clinic: your consultation on Thu 2 Apr 2026"
    body = email.get_body(("plain",)).get_content()
    assert "Dear Ana," in body and "09:00 EDT" in body and VIDEO_LINK in body
    assert "+44 20 7946 0000" in body
    [sms] = twilio.received
    assert sms["To"] == "+447700900123"
    assert sms["Body"] == (
        "Hi Ana, reminder: your consultation with Harbour Clinic is on Thu 2 Apr 2026 at "
        f"09:00 EDT. By video: {VIDEO_LINK} Questions or another time: Harbour Clinic, "
        "+44 20 7946 0000."
    )
    for words in ("COPD", "stem", "cell", "emphysema"):
        assert words.casefold() not in sms["Body"].casefold()


def test_an_in_person_reminder_in_spanish_names_the_clinic_for_patients(site, booker, smtp, twilio):
    clinic = Resource.objects.create(site=site, kind=ResourceKind.LUNG_FUNCTION, name="LF-2")
    ResourceWording.objects.create(
        resource=clinic, language="es", name="Clínica del Puerto", address="Calle Mayor 1\nMadrid"
    )
    enquiry = make_enquiry(site, language="es", email="", consent_email=False)
    with time_machine.travel(BOOKED_ON, tick=False):
        book(enquiry, booker, local(LONDON, 2026, 4, 2, 14), mode=ConsultationMode.IN_PERSON)
    with time_machine.travel(local(LONDON, 2026, 3, 26, 15), tick=False):
        notifications_dispatch_batch(batch_size=10)
    [sms] = twilio.received
    assert sms["Body"].startswith(
        "Hola, Ana. Recordatorio: su consulta con Harbour Clinic es el 2 de abril"
    )
    assert "Clínica del Puerto, Calle Mayor 1, Madrid" in sms["Body"]
    assert "14:00 BST" in sms["Body"] and "LF-2" not in sms["Body"]


def test_a_reminder_in_chinese_when_the_enquiry_was_written_in_chinese(site, booker):
    from delivery.messages import notification_message

    enquiry = make_enquiry(site, language="zh-hans", time_zone="Asia/Shanghai")
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 9))  # 16:00 CST
    email, sms = (
        notification_message(consultation.notifications.get(idempotency_key__contains=key))
        for key in (".7d.email.", ".7d.sms.")
    )
    assert email.subject == "Harbour Clinic：您在 2026年4月2日 的咨询"
    assert "提醒您：您与 Harbour Clinic 的咨询时间为 2026年4月2日 16:00 CST。" in email.text
    assert sms.text.startswith(
        "Ana您好，提醒：您与 Harbour Clinic 的咨询在 2026年4月2日 16:00 CST。"
    )
    assert VIDEO_LINK in sms.text


def test_a_cancelled_or_withdrawn_reminder_is_not_sent(site, booker, twilio, smtp):
    enquiry = make_enquiry(site)
    with time_machine.travel(BOOKED_ON, tick=False):
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
    enquiry.consent_sms = False
    enquiry.save()
    with time_machine.travel(local(LONDON, 2026, 3, 26, 15), tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 1 and twilio.received == [] and len(smtp.messages) == 1
    consultation_cancel(consultation=consultation, by=booker)
    with time_machine.travel(local(LONDON, 2026, 4, 1, 15), tick=False):
        assert notifications_dispatch_batch(batch_size=10).claimed == 0


# Through the admin


def add_url(enquiry):
    from enquiries.admin_consultations import consultation_book_url

    return consultation_book_url(enquiry)


def form_data(at: dt.datetime, **fields) -> dict:
    at = timezone.localtime(at, LONDON)
    return {
        "scheduled_at_0": at.date().isoformat(),
        "scheduled_at_1": at.strftime("%H:%M"),
        "mode": ConsultationMode.VIDEO,
        "place": "",
        "video_link": VIDEO_LINK,
        "reason": "",
    } | fields


def test_the_booking_form_shows_whom_it_books_and_the_zone(client, booker, site):
    enquiry = make_enquiry(site, time_zone="America/New_York", message="<script>x()</script>")
    with time_machine.travel(BOOKED_ON, tick=False):
        client.force_login(booker)
        response = client.get(add_url(enquiry))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Whom you book: Ana Ruiz" in page and "self-reported" in page
    assert "COPD diagnosed" in page and "Stopped smoking" in page
    assert "Local time at Harbour Chest Clinic (Europe/London, GMT now)" in page
    assert "America/New_York" in page
    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page


def test_booked_through_the_admin_with_its_reminders(client, booker, enquiry):
    with time_machine.travel(BOOKED_ON, tick=False):
        client.force_login(booker)
        response = client.post(add_url(enquiry), form_data(local(LONDON, 2026, 4, 2, 14)))
        consultation = Consultation.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse(
            "admin:enquiries_consultation_change", args=[consultation.pk]
        )
        page = client.get(response["Location"]).content.decode()
        listing = client.get(reverse("admin:enquiries_consultation_changelist")).content.decode()
    assert consultation.scheduled_at == local(LONDON, 2026, 4, 2, 14)  # read in BST
    assert consultation.booked_by == booker and len(pending(consultation)) == 4
    assert "Consultation booked for Thu 2 Apr 2026 14:00 BST. They will be reminded." in page
    assert "Whom it is for (self-reported)" in page and "Ana Ruiz" in page
    assert 'name="_save"' not in page
    assert "Thu 2 Apr 2026 14:00 BST" in listing
    with time_machine.travel(BOOKED_ON, tick=False):
        outbox = client.get(reverse("admin:scheduling_notification_changelist"))
    assert outbox.content.decode().count("Consultation, by video") == 4
    assert "Thu 26 Mar 2026 14:00 GMT" in outbox.content.decode()  # in the site's zone


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"scheduled_at_1": "18:00"}, "outside the clinic&#x27;s hours"),
        ({"scheduled_at_0": "2026-03-20", "scheduled_at_1": "16:00"}, "needs 24 h notice"),
        ({"video_link": "http://meet.example.org/x"}, "https://"),
        ({"scheduled_at_0": "not a date"}, "Enter a valid date"),
        ({"mode": "<b>x</b>"}, "Select a valid choice"),
    ],
)
def test_refused_through_the_admin_writes_nothing(client, booker, enquiry, fields, words):
    with time_machine.travel(BOOKED_ON, tick=False):
        client.force_login(booker)
        response = client.post(
            add_url(enquiry), form_data(local(LONDON, 2026, 3, 24, 14), **fields)
        )
    assert response.status_code == 200
    assert words in response.content.decode()
    assert not Consultation.objects.exists() and not Notification.objects.exists()


def test_another_sites_or_no_enquiry_is_not_found_without_a_500(client, booker):
    elsewhere = make_enquiry(SiteFactory(name="Another clinic", code="ANC", staff=[]))
    client.force_login(booker)
    for query in (
        f"?enquiry={elsewhere.pk}",
        "?enquiry=abc",
        "?enquiry=99999999",
        "?enquiry=" + "9" * 40,
        "",
    ):
        response = client.get(reverse("admin:enquiries_consultation_add") + query)
        assert response.status_code == 302
    nul = client.get(reverse("admin:enquiries_consultation_add") + "?enquiry=%00")
    assert nul.status_code == 400  # refused at the door (common/middleware.py)
    response = client.post(
        reverse("admin:enquiries_consultation_add") + f"?enquiry={elsewhere.pk}",
        form_data(local(LONDON, 2026, 4, 2, 14)),
    )
    assert response.status_code == 302 and not Consultation.objects.exists()
    for ident in ("abc", "9" * 40):
        move = reverse("admin:enquiries_consultation_move", args=[ident])
        assert client.get(move).status_code == 404


def test_moved_and_settled_through_the_admin(client, booker, enquiry):
    with time_machine.travel(BOOKED_ON, tick=False):
        client.force_login(booker)
        consultation = book(enquiry, booker, local(LONDON, 2026, 4, 2, 14))
        move = reverse("admin:enquiries_consultation_move", args=[consultation.pk])
        refused = client.post(move, form_data(local(LONDON, 2026, 4, 4, 14)))
        assert "outside the clinic" in refused.content.decode()
        client.post(move, form_data(local(LONDON, 2026, 4, 9, 11)))
        consultation.refresh_from_db()
        assert consultation.scheduled_at == local(LONDON, 2026, 4, 9, 11)
        changelist = reverse("admin:enquiries_consultation_changelist")
        response = client.post(
            changelist,
            {"action": "mark_done", "_selected_action": [consultation.pk]},
            follow=True,
        )
        assert "has not taken place yet" in response.content.decode()
        client.post(changelist, {"action": "cancel", "_selected_action": [consultation.pk]})
    consultation.refresh_from_db()
    assert consultation.status == ConsultationStatus.CANCELLED
    assert pending(consultation) == []


# The worklist, and constant query counts


def test_todays_and_tomorrows_consultations_are_on_the_worklist(client, site, booker):
    from patients.access import user_sites
    from reporting.worklist import worklist

    with time_machine.travel(BOOKED_ON, tick=False):
        days = [local(LONDON, 2026, 3, day, 14) for day in (24, 25, 26)]  # Tue, Wed, Thu
        booked = [
            book(make_enquiry(site, first_name=f"P{day}"), booker, at)
            for day, at in zip((24, 25, 26), days, strict=True)
        ]
    with time_machine.travel(local(LONDON, 2026, 3, 24, 16), tick=False):
        rows = [
            row
            for row in worklist(user=booker, sites=user_sites(booker))
            if row.key.startswith("consultation.")
        ]
    assert [row.key for row in rows] == [f"consultation.c{c.pk}" for c in booked[:2]]
    assert rows[0].what == "Consultation, by video: mark it done or missed"
    assert rows[1].what == "Consultation, by video" and rows[1].subject == "P25 Ruiz (enquiry)"
    assert rows[1].due_words == "Wed 25 Mar 2026 14:00 GMT"
    with time_machine.travel(local(LONDON, 2026, 3, 24, 16), tick=False):
        client.force_login(booker)
        page = client.get(reverse("admin:index")).content.decode()
    change = reverse("admin:enquiries_consultation_change", args=[booked[1].pk])
    assert "P25 Ruiz (enquiry)" in page and change in page and VIDEO_LINK in page


def _queries(action) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        action()
    return [query["sql"] for query in captured]


def test_the_list_the_worklist_and_the_outbox_make_a_constant_number_of_queries(
    client, site, booker, smtp, twilio
):
    """Each message sent is written before the next (one statement each, as every reminder),
    and each text takes its turn in the provider's pace (one statement); all else is the
    batch's, whatever the number of consultations."""
    from patients.access import user_sites
    from reporting.worklist import worklist

    listing = reverse("admin:enquiries_consultation_changelist")
    counts = {}
    for many in (1, 4):
        Notification.objects.all().delete()
        Consultation.objects.all().delete()
        with time_machine.travel(BOOKED_ON, tick=False):
            for n in range(many):
                book(make_enquiry(site), booker, local(LONDON, 2026, 4, 2, 10 + n))
            client.force_login(booker)
            page = _queries(lambda: client.get(listing))
        with time_machine.travel(local(LONDON, 2026, 4, 1, 9), tick=False):
            rows = _queries(lambda: worklist(user=booker, sites=user_sites(booker)))
        with time_machine.travel(local(LONDON, 2026, 3, 26, 16), tick=False):
            sent = _queries(lambda: notifications_dispatch_batch(batch_size=100))
        writes = [sql for sql in sent if "INSERT INTO scheduling_deliveryattempt" in sql]
        paces = [sql for sql in sent if "INSERT INTO delivery_senderpace" in sql]
        assert (len(writes), len(paces)) == (2 * many, many)
        counts[many] = (len(page), len(rows), len(sent) - len(writes) - len(paces))
    assert counts[1] == counts[4]


def test_so_soon_it_must_be_told_at_once_and_cannot_be_without_consent(site, booker):
    Protocol.objects.filter(is_default=True).update(consultation_notice_hours=4)
    silent = make_enquiry(site, consent_email=False, consent_sms=False)
    with (
        time_machine.travel(local(LONDON, 2026, 3, 20, 9), tick=False),
        pytest.raises(Refused) as refused,
    ):
        book(silent, booker, local(LONDON, 2026, 3, 20, 15))
    assert "has not consented to email or SMS" in refused.value.by_field["scheduled_at"][0]


def test_a_text_only_person_in_their_quiet_hours_cannot_be_told_in_time(site, booker):
    """At 06:00 in London their texts wait until 08:00; 08:00 + 4 h notice is after 11:00."""
    Protocol.objects.filter(is_default=True).update(consultation_notice_hours=4)
    texts_only = make_enquiry(site, consent_email=False)
    with time_machine.travel(local(LONDON, 2026, 3, 20, 6), tick=False):
        with pytest.raises(Refused) as refused:
            book(texts_only, booker, local(LONDON, 2026, 3, 20, 11))
        assert "their quiet hours" in refused.value.by_field["scheduled_at"][0]
        consultation = book(texts_only, booker, local(LONDON, 2026, 3, 20, 12))
    assert pending(consultation) == [(local(LONDON, 2026, 3, 20, 8), "sms")]


def test_outside_clinic_hours_with_a_reason_through_the_admin(client, booker, enquiry):
    with time_machine.travel(BOOKED_ON, tick=False):
        client.force_login(booker)
        response = client.post(
            add_url(enquiry),
            form_data(local(LONDON, 2026, 3, 24, 18), reason="Works days; asked for 6pm"),
        )
    assert response.status_code == 302
    consultation = Consultation.objects.get()
    assert consultation.outside_hours_reason == "Works days; asked for 6pm"
    assert consultation.scheduled_at == local(LONDON, 2026, 3, 24, 18)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_coordinators_booking_at_once_book_one_consultation(site, booker):
    import threading

    from django.db import connection

    second = UserFactory(username="second-coordinator", role="coordinator", sites=[])
    site.coordinators.add(second)
    enquiry = make_enquiry(site)
    day = timezone.localdate(timezone.now(), LONDON) + dt.timedelta(days=10)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    at = dt.datetime.combine(day, dt.time(10), tzinfo=LONDON)
    barrier, outcomes = threading.Barrier(2), []

    def attempt(user, hour):
        try:
            barrier.wait(timeout=10)
            book(enquiry, user, at + dt.timedelta(hours=hour))
            outcomes.append("booked")
        except Refused as refused:
            outcomes.append(refused.reasons[0])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=attempt, args=(user, hour))
        for user, hour in ((booker, 0), (second, 1))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [
        "A consultation is already booked for this enquiry: move it instead.",
        "booked",
    ]
    assert Consultation.objects.filter(enquiry=enquiry).count() == 1
