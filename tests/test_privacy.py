"""No patient data in logs, in what Redis carries, or in an SMS beyond a first name."""

import base64
import datetime as dt
import io
import json
import logging

import pytest
import redis as redis_client
import time_machine
from django.core.management import call_command
from django.utils import timezone

from pathway import services
from pathway.scans import alerts_scan_overdue
from pathway.services import TransitionRefused
from pathway.states import CourseState
from scheduling.models import Notification, Visit
from scheduling.services import visit_mark_missed, visit_reschedule
from tests.factories import (
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
)
from tests.servers import (
    CeleryWorker,
    Gunicorn,
    RedisServer,
    SmtpSink,
    TwilioStub,
    sent_count,
    tick,
    wait_until,
    worker_env,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]
FIRST_NAME = "Zebedeeka"
CANARIES = {
    "last name": "Quixoticanary",
    "email": "canary.quixoticanary@example.com",
    "phone": "+447911999888",
    "MRN": "CANARY-4242",
    "date of birth": "1951-07-07",
}


def queued_messages(url):
    """Every message waiting in Redis, decoded: headers and body as text."""
    client = redis_client.Redis.from_url(url)
    texts = []
    for key in client.keys("*"):
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            texts.append(json.dumps(message.get("headers", {})))
            texts.append(base64.b64decode(message["body"]).decode())
    return texts


def test_canary_patient_data_stays_out_of_logs_queues_and_sms(pathway, coordinator, caplog):
    caplog.set_level(logging.DEBUG)
    patient = PatientFactory(
        first_name=FIRST_NAME,
        last_name=CANARIES["last name"],
        email=CANARIES["email"],
        phone=CANARIES["phone"],
        mrn=CANARIES["MRN"],
        date_of_birth=dt.date(1951, 7, 7),
    )
    for factory in (LungFunctionTestFactory, ChestCTFactory, ClinicalAssessmentFactory):
        factory(patient=patient, taken_on=pathway.at(0).date())
    course = services.course_create(patient=patient, by=coordinator)
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=coordinator,
        place="Suite 2",
        scheduled_at=timezone.now() + dt.timedelta(days=10),
    )
    visit = Visit.objects.get(course=course, kind="harvest")
    Notification.objects.filter(visit=visit).update(
        send_after=timezone.now() - dt.timedelta(minutes=1)
    )

    with RedisServer() as redis, SmtpSink() as smtp, TwilioStub() as twilio:
        tick(redis)  # no worker yet: the message waits in Redis, where we read it
        queue = queued_messages(redis.url)
        assert queue, "the tick should be waiting in the queue"
        worker = CeleryWorker("privacy", worker_env(redis, smtp, twilio, LOG_LEVEL="DEBUG"))
        with worker:
            wait_until(lambda: sent_count() == 4, timeout=60, what="the reminders")
            worker_log = worker.output()

    # The newer paths, logged by this process: a refused second person at the bedside (counted
    # by axes like a failed login), a follow-up booked outside its window with a reason, a
    # visit marked missed, the overdue scan and the audit verification.
    pathway.advance(course, CourseState.TRANSPLANT_SCHEDULED)
    with pytest.raises(TransitionRefused):
        pathway.transplant(course, second_person_password="not theirs")
    pathway.advance(course, CourseState.FOLLOW_UP)
    twelve = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=12)
    late = dt.datetime.combine(
        twelve.window_closes_on + dt.timedelta(days=3), dt.time(10), tzinfo=course.site.time_zone
    )
    visit_reschedule(
        visit=twelve, scheduled_at=late, by=coordinator, deviation_reason="Patient away"
    )
    four = Visit.objects.get(course=course, protocol_visit__weeks_after_transplant=4)
    with time_machine.travel(late, tick=False):
        alerts_scan_overdue()
        visit_mark_missed(visit=four, by=coordinator, reason="Did not attend")
    call_command("audit_verify", stdout=io.StringIO())

    sms_bodies = [m["Body"] for m in twilio.received]
    emails = [
        m.get_body(("plain",)).get_content() + m.get_body(("html",)).get_content()
        for m in smtp.messages
    ]
    places = {
        "test process logs": caplog.text,
        "worker log": worker_log,
        "Redis queue": "\n".join(queue),
        "SMS bodies": "\n".join(sms_bodies),
        "email bodies": "\n".join(emails),
    }
    found = [
        (what, where)
        for what, canary in CANARIES.items()
        for where, text in places.items()
        if canary in text
    ]
    print(f"\ncanary scan: {len(CANARIES)} canaries x {len(places)} places, {len(found)} found")
    assert found == []
    # The first name goes to the patient, and nowhere else.
    assert all(FIRST_NAME in body for body in sms_bodies) and len(sms_bodies) == 2
    for where in ("test process logs", "worker log", "Redis queue"):
        assert FIRST_NAME not in places[where], where


def test_gunicorns_access_log_keeps_the_path_and_drops_the_query(tmp_path):
    """Searches in the admin carry MRNs and names in the query string: the web server's access
    log, as the README tells operators to run it, never writes them."""
    log = tmp_path / "access.log"
    with Gunicorn({"GUNICORN_ACCESS_LOG": str(log)}, tmp_path) as web:
        web.request("GET", "/admin/patients/patient/?q=MRN771234+Okafor")
        wait_until(lambda: log.exists() and log.read_text(), timeout=10, what="the access log")
    written = log.read_text()
    assert "/admin/patients/patient/" in written
    assert "MRN771234" not in written and "Okafor" not in written and "q=" not in written
