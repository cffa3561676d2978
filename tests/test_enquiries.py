"""The front door: the public enquiry page, its acknowledgement, triage on the worklist, the
coordinator's reply, close and conversion, the unanswered alert and the purge."""

import time
from decimal import Decimal

import pytest
from django.core import signing
from django.urls import reverse

from delivery.outbox import notifications_dispatch_batch
from enquiries.forms import SIGNING_SALT, new_key
from enquiries.models import Enquiry, EnquiryStatus
from scheduling.models import Notification, NotificationStatus, NotificationTemplate
from tests.factories import SiteFactory
from tests.servers import SmtpSink, TwilioStub

pytestmark = pytest.mark.django_db

URL = "/enquire/"


def shown_seconds_ago(seconds: float) -> str:
    return signing.dumps(time.time() - seconds, salt=SIGNING_SALT)


def application(**changes) -> dict:
    """What a person fills in for an application, sent 10 s after the page was shown."""
    data = {
        "kind": "application",
        "first_name": "Ana",
        "last_name": "García",
        "email": "ana@example.com",
        "consent_email": "on",
        "phone": "+34612345678",
        "site": "",
        "message": "",
        "copd_diagnosed": "yes",
        "emphysema_on_ct": "yes",
        "smoking": "former",
        "smoking_quit_on": "2020-03-01",
        "fev1_pct_predicted": "35",
        "home_oxygen": "no",
        "bronchoscopy_ok": "yes",
        "chest_infection_now": "no",
        "time_zone": "Europe/Madrid",
        "key": new_key(),
        "started": shown_seconds_ago(10),
        "website": "",
    }
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


@pytest.fixture
def sites(db):
    london = SiteFactory(
        code="LDN",
        name="London Chest Clinic",
        time_zone="Europe/London",
        patient_facing_name="Harbour Clinic",
        patient_phone="+442071234567",
    )
    madrid = SiteFactory(
        code="MAD",
        name="Madrid Chest Clinic",
        time_zone="Europe/Madrid",
        patient_facing_name="Clínica del Puerto",
        patient_phone="+34911234567",
    )
    return {"london": london, "madrid": madrid}


def test_the_page_is_public_and_in_the_language_asked(client, sites):
    english = client.get(URL)
    spanish = client.get(URL, {"lang": "es"})
    chinese = client.get(URL, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
    assert english.status_code == spanish.status_code == chinese.status_code == 200
    assert "Ask a question or apply" in english.content.decode()
    assert '<html lang="es">' in spanish.content.decode()
    assert '<html lang="zh-hans">' in chinese.content.decode()
    assert "Accept-Language" in english["Vary"]


def test_an_application_is_stored_once_on_the_proposed_site(client, sites):
    data = application()
    first = client.post(URL + "?lang=es", data)
    again = client.post(URL + "?lang=es", data)
    assert first.status_code == again.status_code == 200
    assert Enquiry.objects.count() == 1
    enquiry = Enquiry.objects.get()
    assert enquiry.site == sites["madrid"] and enquiry.country == "ES"
    assert enquiry.language == "es" and enquiry.status == EnquiryStatus.NEW
    assert first.content == again.content
    assert "Clínica del Puerto" in first.content.decode()
    assert "+34 911 23 45 67" in first.content.decode()


@pytest.mark.parametrize(
    ("language", "zone", "site", "words"),
    [
        ("en", "Europe/London", "london", "Thank you, Ana"),
        ("es", "Europe/Madrid", "madrid", "Gracias, Ana"),
        ("zh-hans", "Asia/Shanghai", "london", "谢谢您，Ana"),
    ],
)
def test_an_enquiry_in_each_language_is_acknowledged_in_it(
    client, sites, language, zone, site, words
):
    answer = client.post(f"{URL}?lang={language}", application(time_zone=zone))
    assert answer.status_code == 200, answer.content.decode()[:2000]
    assert words in answer.content.decode()
    enquiry = Enquiry.objects.get()
    assert enquiry.language == language
    # The zone's site, else one in the zone's country, else the first by name (London).
    assert enquiry.site == sites[site]


def test_the_site_chosen_wins_over_the_zone(client, sites):
    client.post(URL, application(site="LDN", time_zone="Europe/Madrid"))
    assert Enquiry.objects.get().site == sites["london"]


def _refused(answer, words: str, status: int = 400):
    page = answer.content.decode()
    assert answer.status_code == status, page[:3000]
    assert words in page, page[:3000]
    assert Enquiry.objects.count() == 0
    return page


def test_before_any_site_is_set_up_the_page_says_so_and_writes_nothing(client, db):
    _refused(client.get(f"{URL}?lang=es"), "La clínica aún no recibe consultas", status=503)
    _refused(client.post(URL, application()), "not taking enquiries on this page yet", 503)


def test_the_honeypot_refuses_and_writes_nothing(client, sites):
    _refused(client.post(URL, application(website="http://spam.example")), "could not be sent")


def test_a_post_quicker_than_a_person_is_refused_and_keeps_what_was_typed(client, sites):
    page = _refused(
        client.post(URL, application(started=shown_seconds_ago(1), first_name="Zoë")),
        "sent very quickly",
    )
    assert 'value="Zoë"' in page
    # Shown again with a new timestamp: sent again after a pause, it goes through.
    stamp = page.split('name="started" value="')[1].split('"')[0]
    signing.loads(stamp, salt=SIGNING_SALT)


def test_a_forged_or_expired_timestamp_is_refused(client, sites, settings):
    _refused(client.post(URL, application(started="12345:forged")), "expired")
    settings.ENQUIRY_FORM_MAX_AGE_HOURS = 1
    _refused(client.post(URL, application(started=shown_seconds_ago(7200))), "expired")


def test_an_enquiry_needs_a_consented_way_to_reach_the_person(client, sites):
    page = _refused(
        client.post(URL, application(consent_email=None)), "at least one way to reach you"
    )
    assert 'value="ana@example.com"' in page
    page = _refused(
        client.post(URL, application(consent_sms="on", phone="")),
        "Give the address or number you ticked",
    )


def test_errors_are_beside_their_fields_and_read_out_with_them(client, sites):
    page = _refused(client.post(URL, application(email="not an email")), "valid email")
    assert 'aria-describedby="id_email-errors"' in page
    assert 'id="id_email-errors"' in page and 'aria-invalid="true"' in page


def _post_many(client, count):
    return [client.post(URL, application()).status_code for _ in range(count)]


def test_the_31st_post_from_one_address_is_refused_in_redis_and_without_it(client, sites, settings):
    from tests.servers import RedisServer

    with RedisServer() as redis:
        settings.RATE_LIMIT_STORAGE_URL = redis.url
        assert _post_many(client, 31) == [200] * 30 + [429]
        assert Enquiry.objects.count() == 30
        redis.kill()
        # Counted in this process alone while Redis is down: the limit still holds.
        statuses = _post_many(client, 31)
    assert statuses == [200] * 30 + [429]
    assert Enquiry.objects.count() == 60
    refused = client.post(URL, application(first_name="Last"))
    assert refused.status_code == 429 and "Too many forms" in refused.content.decode()
    assert 'value="Last"' in refused.content.decode()


HOSTILE = [
    "<script>alert(1)</script>",
    '=HYPERLINK("http://evil.example","x")',
    "a\x00b",
    "x" * 100_000,
    "\u202egnp.exe",
    "' OR 1=1 --",
    "../../etc/passwd",
    "{{ 7*7 }}",
    "🙂" * 3000,
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_in_every_field_is_never_a_server_error(client, sites, value):
    for name in application():
        answer = client.post(URL, application(**{name: value}))
        assert answer.status_code in (200, 400), (name, answer.status_code)
        assert "<script>alert(1)</script>" not in answer.content.decode()
    # Lists, where one value is expected; an empty post; a body that is not a form at all.
    assert client.post(URL, {"kind": ["question", "application"]}).status_code == 400
    assert client.post(URL, {}).status_code == 400
    assert client.post(URL, b"\xff\xfe\x00", content_type="application/json").status_code == 400
    assert client.get(URL, {"lang": "\xff" * 50}).status_code == 200


def test_bytes_that_are_not_utf8_are_never_a_server_error(client, sites):
    body = "&".join(f"{name}={value}" for name, value in application().items() if name != "started")
    body += "&started=" + application()["started"] + "&first_name=%FF%FE%C3"
    answer = client.post(URL, body, content_type="application/x-www-form-urlencoded")
    assert answer.status_code in (200, 400)


def enquiry_made(site, **changes) -> Enquiry:
    """An enquiry as the page stores it, made directly."""
    fields = {
        name: value
        for name, value in application(**changes).items()
        if name in {f.name for f in Enquiry._meta.fields} and name != "site"
    }
    fields.setdefault("smoking_quit_on", None)
    fields["consent_email"] = True
    enquiry = Enquiry.objects.create(**fields, site=site, submission_key=new_key())
    enquiry.refresh_from_db()
    return enquiry


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


def test_the_acknowledgement_goes_at_once_on_each_consented_channel_in_their_language(
    client, sites, smtp, twilio
):
    data = application(consent_sms="on", whatsapp="+34612345679")  # no WhatsApp consent
    client.post(URL + "?lang=es", data)
    client.post(URL + "?lang=es", data)  # retried: nothing written twice
    enquiry = Enquiry.objects.get()
    rows = Notification.objects.filter(enquiry=enquiry)
    assert sorted(rows.values_list("channel", "template")) == [
        ("email", NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT),
        ("sms", NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT),
    ]
    assert notifications_dispatch_batch(batch_size=10).sent == 2
    [email] = smtp.messages
    [sms] = twilio.received
    assert email["To"] == "ana@example.com"
    assert email["Subject"] == "Clínica del Puerto: hemos recibido su mensaje"
    body = email.get_body(("plain",)).get_content()
    assert "Hola, Ana:" in body and "2 día(s) laborable(s)" in body and "+34 911 23 45 67" in body
    assert sms["To"] == "+34612345678"
    assert sms["Body"].startswith("Clínica del Puerto: gracias, Ana")
    assert "EPOC" not in sms["Body"] and "enfisema" not in sms["Body"]
    assert set(rows.values_list("status", flat=True)) == {NotificationStatus.SENT}


def test_a_consent_withdrawn_before_sending_cancels_the_acknowledgement(client, sites, smtp):
    client.post(URL, application())
    Enquiry.objects.update(consent_email=False)
    notifications_dispatch_batch(batch_size=10)
    assert smtp.messages == []
    assert Notification.objects.get().status == NotificationStatus.CANCELLED


# Triage on the worklist.


@pytest.fixture
def coordinator_at(sites):
    """A coordinator of each site (and no other), and a lab user at both."""
    from tests.factories import UserFactory

    return {
        "london": UserFactory(username="ldn-coord", role="coordinator", sites=[sites["london"]]),
        "madrid": UserFactory(username="mad-coord", role="coordinator", sites=[sites["madrid"]]),
        "lab": UserFactory(username="lab-user", role="lab", sites=list(sites.values())),
    }


def _worklist_page(client, user):
    client.force_login(user)
    return client.get(reverse("admin:index")).content.decode()


@pytest.mark.parametrize(
    ("language", "site"), [("en", "london"), ("es", "madrid"), ("zh-hans", "london")]
)
def test_an_enquiry_in_each_language_is_on_its_sites_worklist_with_its_suggestion(
    client, sites, coordinator_at, language, site
):
    zone = {"london": "Europe/London", "madrid": "Europe/Madrid"}[site]
    client.post(f"{URL}?lang={language}", application(time_zone=zone, first_name="Wen"))
    enquiry = Enquiry.objects.get()
    mine = _worklist_page(client, coordinator_at[site])
    other = _worklist_page(client, coordinator_at["madrid" if site == "london" else "london"])
    lab = _worklist_page(client, coordinator_at["lab"])
    row = reverse("admin:enquiries_enquiry_change", args=[enquiry.pk])
    assert row in mine and "Wen García" in mine
    assert "Self-reported: likely fits" in mine
    assert row not in other and row not in lab


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({}, "Self-reported: likely fits"),
        (
            {"smoking": "current"},
            "Self-reported: unlikely: The patient smokes; the protocol needs 6 months",
        ),
        ({"smoking_quit_on": None}, "Self-reported: check: The date the patient quit smoking"),
        (
            {"fev1_pct_predicted": "85"},
            "Self-reported: unlikely: FEV1 is 85 % predicted; the protocol allows",
        ),
        ({"fev1_pct_predicted": "15"}, "Self-reported: check: FEV1 is 15 % predicted, below"),
        ({"bronchoscopy_ok": "no"}, "Self-reported: unlikely: Not able to have a bronchoscopy"),
        ({"chest_infection_now": "yes"}, "Self-reported: check: A chest infection now"),
        ({"emphysema_on_ct": "unsure"}, "Self-reported: check: Not known whether a CT showed"),
    ],
)
def test_the_suggestion_is_the_checklists_rules_on_the_answers(sites, changes, words):
    from enquiries.suggestions import enquiry_suggestion

    enquiry = enquiry_made(sites["london"], **changes)
    assert enquiry_suggestion(enquiry).words.startswith(words)


def test_the_worklist_makes_the_same_queries_for_1_and_20_enquiries(
    client, sites, coordinator_at, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from patients.access import user_sites
    from reporting.worklist import worklist

    user = coordinator_at["london"]
    enquiry_made(sites["london"])
    worklist(user=user, sites=user_sites(user))  # the user's permissions, read once and kept
    with CaptureQueriesContext(connection) as one:
        rows = worklist(user=user, sites=user_sites(user))
    assert len([r for r in rows if r.key.startswith("enquiry.")]) == 1
    for _ in range(19):
        enquiry_made(sites["london"], smoking="current")
    with CaptureQueriesContext(connection) as twenty:
        rows = worklist(user=user, sites=user_sites(user))
    assert len([r for r in rows if r.key.startswith("enquiry.")]) == 20
    assert [q["sql"][:60] for q in twenty.captured_queries] == [
        q["sql"][:60] for q in one.captured_queries
    ]
    assert len(one.captured_queries) > 5
    client.force_login(user)
    with CaptureQueriesContext(connection) as page:
        assert client.get(reverse("admin:enquiries_enquiry_changelist")).status_code == 200
    enquiry_made(sites["london"])
    with CaptureQueriesContext(connection) as page_again:
        client.get(reverse("admin:enquiries_enquiry_changelist"))
    assert len(page_again.captured_queries) == len(page.captured_queries) > 3


# The unanswered alert: once, after 2 working days in the site's calendar.


def test_an_enquiry_unanswered_past_two_working_days_alerts_its_coordinators_once(
    sites, coordinator_at, client
):
    import datetime as dt
    from zoneinfo import ZoneInfo

    import time_machine

    from delivery.tasks import scan_overdue
    from scheduling.models import Alert, AlertKind

    sites["london"].coordinators.add(coordinator_at["london"])
    friday = dt.datetime(2026, 12, 4, 16, 0, tzinfo=ZoneInfo("Europe/London"))
    with time_machine.travel(friday, tick=False):
        enquiry = enquiry_made(sites["london"])
    # Saturday and Sunday do not count: due Tuesday 16:00.
    with time_machine.travel(dt.datetime(2026, 12, 8, 15, 59, tzinfo=ZoneInfo("Europe/London"))):
        scan_overdue()
    assert not Alert.objects.filter(kind=AlertKind.ENQUIRY_UNANSWERED).exists()
    with time_machine.travel(dt.datetime(2026, 12, 8, 16, 1, tzinfo=ZoneInfo("Europe/London"))):
        scan_overdue()
        scan_overdue()
    alert = Alert.objects.get(kind=AlertKind.ENQUIRY_UNANSWERED)
    assert alert.enquiry == enquiry and alert.site == sites["london"] and alert.course is None
    assert "Tue 8 Dec 2026 16:00 GMT" in alert.message
    [email] = Notification.objects.filter(alert=alert)
    assert email.user == coordinator_at["london"]
    from delivery.messages import notification_message

    words = notification_message(email)
    assert "Enquiry #" in words.text and f"/admin/enquiries/enquiry/{enquiry.pk}/" in words.text
    # On the enquiry's worklist row, not a row of its own; acknowledged from it.
    page = _worklist_page(client, coordinator_at["london"])
    assert page.count(reverse("admin:enquiries_enquiry_change", args=[enquiry.pk])) >= 1
    assert reverse("admin:scheduling_alert_acknowledge", args=[alert.pk]) in page
    assert "An enquiry not answered in time" in page


def test_working_days_skip_the_weekend_in_the_sites_zone_across_a_change_of_clocks():
    import datetime as dt
    from zoneinfo import ZoneInfo

    from enquiries.rules import working_days_after

    london = ZoneInfo("Europe/London")
    friday = dt.datetime(2026, 10, 23, 10, 0, tzinfo=london)  # BST; clocks go back on the 25th
    assert working_days_after(friday, days=2, zone=london) == dt.datetime(
        2026, 10, 27, 10, 0, tzinfo=london
    )
    saturday = dt.datetime(2026, 10, 24, 10, 0, tzinfo=london)
    assert working_days_after(saturday, days=2, zone=london).date() == dt.date(2026, 10, 27)
    tokyo = ZoneInfo("Asia/Tokyo")  # Friday 23:30 UTC is Saturday in Tokyo
    late = dt.datetime(2026, 12, 4, 23, 30, tzinfo=dt.UTC)
    assert working_days_after(late, days=2, zone=tokyo).date() == dt.date(2026, 12, 8)


# The coordinator's actions: through the services, and through the admin's test client.


def test_a_reply_goes_on_a_consented_channel_is_logged_and_marks_it_answered(
    client, sites, coordinator_at, smtp
):
    from common.errors import Refused
    from enquiries.services import enquiry_reply

    enquiry = enquiry_made(sites["madrid"], language="es")
    coordinator = coordinator_at["madrid"]
    with pytest.raises(Refused) as refused:
        enquiry_reply(enquiry=enquiry, by=coordinator, text="Hola", channel="sms")
    assert "did not give and consent to sms" in refused.value.reasons[0]
    client.force_login(coordinator)
    url = reverse("admin:enquiries_enquiry_reply", args=[enquiry.pk])
    assert client.get(url).status_code == 200
    answer = client.post(url, {"channel": "email", "text": "Hola Ana, ¿podemos llamarle?"})
    assert answer.status_code == 302
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.ANSWERED and enquiry.first_answered_at
    reply = Notification.objects.get(template=NotificationTemplate.ENQUIRY_REPLY)
    notifications_dispatch_batch(batch_size=10)
    reply_mail = next(m for m in smtp.messages if "respuesta" in m["Subject"])
    assert reply_mail["Subject"] == "Clínica del Puerto: respuesta a su mensaje"
    assert "¿podemos llamarle?" in reply_mail.get_body(("plain",)).get_content()
    page = client.get(reverse("admin:enquiries_enquiry_change", args=[enquiry.pk])).content
    assert "¿podemos llamarle?" in page.decode() and reply.channel in page.decode()
    # The lab, and another site's coordinator, may not.
    client.force_login(coordinator_at["lab"])
    assert client.post(url, {"channel": "email", "text": "x"}).status_code in (302, 403)
    assert client.get(reverse("admin:enquiries_enquiry_changelist")).status_code == 403
    client.force_login(coordinator_at["london"])
    assert (
        client.get(reverse("admin:enquiries_enquiry_change", args=[enquiry.pk])).status_code == 404
    )
    assert Notification.objects.filter(template=NotificationTemplate.ENQUIRY_REPLY).count() == 1


def test_closing_sends_the_reasons_kind_reply_in_their_language_and_refuses_twice(
    client, sites, coordinator_at
):
    enquiry = enquiry_made(sites["london"], language="zh-hans")
    client.force_login(coordinator_at["london"])
    url = reverse("admin:enquiries_enquiry_close", args=[enquiry.pk])
    assert client.post(url, {"reason": "not_eligible", "personal_line": "祝好"}).status_code == 302
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.CLOSED and enquiry.close_reason == "not_eligible"
    reply = enquiry.replies.get()
    assert reply.kind == "closing" and "此治疗目前并不适合您" in reply.text and "祝好" in reply.text
    assert Notification.objects.filter(
        template=NotificationTemplate.ENQUIRY_REPLY, enquiry=enquiry
    ).exists()
    again = client.post(url, {"reason": "spam"}, follow=True).content.decode()
    assert "cannot be closed: it was closed" in again and "GMT" in again
    convert = client.post(
        reverse("admin:enquiries_enquiry_convert", args=[enquiry.pk]),
        {"mrn": "M1", "date_of_birth": "1960-01-01"},
    ).content.decode()
    assert "cannot be converted: it was closed" in convert
    assert enquiry.replies.count() == 1


def test_spam_is_closed_without_a_reply(sites, coordinator_at):
    from enquiries.services import enquiry_close

    enquiry = enquiry_made(sites["london"])
    assert enquiry_close(enquiry=enquiry, by=coordinator_at["london"], reason="spam") is None
    assert not enquiry.replies.exists()


def test_converting_makes_a_patient_and_a_course_in_evaluation_keeping_the_answers(
    client, sites, coordinator_at
):
    from pathway.states import CourseState

    enquiry = enquiry_made(sites["madrid"], language="es", message="Tengo EPOC grave.")
    client.force_login(coordinator_at["madrid"])
    url = reverse("admin:enquiries_enquiry_convert", args=[enquiry.pk])
    bad = client.post(url, {"mrn": "", "date_of_birth": "2999-01-01"})
    assert bad.status_code == 200 and "This field is required" in bad.content.decode()
    assert client.post(url, {"mrn": "MAD-77", "date_of_birth": "1958-04-12"}).status_code == 302
    enquiry.refresh_from_db()
    course = enquiry.course
    assert enquiry.status == EnquiryStatus.CONVERTED and enquiry.patient == course.patient
    assert course.state == CourseState.EVALUATION and course.site == sites["madrid"]
    patient = course.patient
    assert (patient.mrn, patient.first_name, patient.last_name) == ("MAD-77", "Ana", "García")
    assert patient.preferred_language == "es" and patient.email == "ana@example.com"
    assert patient.smoking_status == "former" and str(patient.smoking_quit_date) == "2020-03-01"
    for words in (
        "self-reported",
        "COPD diagnosed by a doctor: Yes",
        "Last FEV1 (% predicted): 35",
        "Able to have a bronchoscopy: Yes",
        "Self-reported: likely fits",
        "Tengo EPOC grave.",
    ):
        assert words in course.notes, words
    again = client.post(url, {"mrn": "MAD-78", "date_of_birth": "1958-04-12"}).content.decode()
    assert "already a patient" in again


def test_an_mrn_taken_at_the_site_is_refused_beside_nothing_lost(client, sites, coordinator_at):
    from tests.factories import PatientFactory

    PatientFactory(site=sites["london"], mrn="L-1")
    enquiry = enquiry_made(sites["london"])
    client.force_login(coordinator_at["london"])
    page = client.post(
        reverse("admin:enquiries_enquiry_convert", args=[enquiry.pk]),
        {"mrn": "L-1", "date_of_birth": "1958-04-12"},
    ).content.decode()
    assert "already exists at this site" in page and 'value="L-1"' in page
    enquiry.refresh_from_db()
    assert enquiry.status == EnquiryStatus.NEW and enquiry.patient is None


def test_hostile_names_are_escaped_on_the_worklist_and_in_the_admin_and_csv_is_defused(
    client, sites, coordinator_at
):
    enquiry = enquiry_made(
        sites["london"],
        first_name="<script>alert(1)</script>",
        last_name='=HYPERLINK("http://evil.example","x")',
        message="<img src=x onerror=alert(2)>",
    )
    client.force_login(coordinator_at["london"])
    for url in (
        reverse("admin:index"),
        reverse("admin:enquiries_enquiry_changelist"),
        reverse("admin:enquiries_enquiry_change", args=[enquiry.pk]),
        reverse("admin:enquiries_enquiry_reply", args=[enquiry.pk]),
    ):
        page = client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in page, url
        assert "<img src=x" not in page, url
    csv = client.post(
        reverse("admin:enquiries_enquiry_changelist"),
        {"action": "export_as_csv", "_selected_action": [enquiry.pk]},
    )
    text = csv.content.decode()
    assert csv["Content-Type"] == "text/csv"
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


# Privacy: the purge.


def test_the_purge_deletes_closed_unconverted_enquiries_past_retention_and_keeps_counts(
    sites, coordinator_at
):
    import datetime as dt

    import time_machine
    from django.core.management import call_command
    from django.utils import timezone

    from enquiries.models import EnquiryCount, EnquiryReply
    from enquiries.services import enquiry_close, enquiry_convert, enquiry_reply
    from scheduling.models import NotificationArchive
    from scheduling.outbox_archive import notifications_archive

    coordinator = coordinator_at["london"]
    long_ago = timezone.now() - dt.timedelta(days=400)
    with time_machine.travel(long_ago, tick=False):
        answered = enquiry_made(sites["london"])
        enquiry_reply(enquiry=answered, by=coordinator, text="Call us?", channel="email")
        enquiry_close(enquiry=answered, by=coordinator, reason="no_reply")
        unanswered = enquiry_made(sites["london"], kind="question", message="Cost?")
        enquiry_close(enquiry=unanswered, by=coordinator, reason="answered_only")
        converted = enquiry_made(sites["london"])
        enquiry_convert(
            enquiry=converted, by=coordinator, mrn="K-1", date_of_birth=dt.date(1950, 1, 1)
        )
    Notification.objects.filter(enquiry=answered).update(
        status=NotificationStatus.SENT, sent_at=long_ago
    )
    assert notifications_archive(after_days=90) >= 1  # some of its messages in the archive
    recent = enquiry_made(sites["london"])
    enquiry_close(enquiry=recent, by=coordinator, reason="declined")
    week = f"{long_ago.isocalendar()[0]}-W{long_ago.isocalendar()[1]:02d}"
    gone = [answered.pk, unanswered.pk]

    call_command("enquiries_purge")
    call_command("enquiries_purge")  # again: nothing more

    assert set(Enquiry.objects.values_list("pk", flat=True)) == {converted.pk, recent.pk}
    assert not Enquiry.history.filter(id__in=gone).exists()
    assert not EnquiryReply.objects.filter(enquiry_id__in=gone).exists()
    assert not Notification.objects.filter(enquiry_id__in=gone).exists()
    assert not NotificationArchive.objects.filter(enquiry_id__in=gone).exists()
    assert Enquiry.history.filter(id=converted.pk).exists()
    kept = {
        (c.week, c.kind, c.step): c.count for c in EnquiryCount.objects.filter(site=sites["london"])
    }
    assert kept == {(week, "application", "answered"): 1, (week, "question", "enquired"): 1}


def test_the_fev1_an_enquirer_gives_has_the_measures_possible_range():
    """One range for FEV1 % predicted (patients/measures.py), on the public page as on the
    clinic's forms."""
    from enquiries.forms import EnquiryForm
    from patients.measures import measure

    field = EnquiryForm.base_fields["fev1_pct_predicted"]
    low, high = measure("fev1_pct_predicted").possible
    assert (field.min_value, field.max_value) == (Decimal(low), Decimal(high))
    assert field.clean("") is None and field.clean("175") == Decimal("175")
