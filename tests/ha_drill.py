"""The failover drill's moving parts: the clients that prepare and stream transitions against
the Patroni cluster (run as processes of their own, `python -m tests.ha_drill …`, as web
workers would be), a logged-in admin session over HTTP, and the drill itself, sized by its
caller (`tests/test_ha.py` small, `bench/` at full size).

The clients are the tracker's own services, called as the admin's forms call them: approve a
course, release a batch with the second lab user's signature, record a transplant with the
second clinician's confirmation. Each writes a line for every step the database acknowledged;
after the failover every acknowledged step must be in the new primary.
"""

import argparse
import datetime as dt
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "drill-admin-password-1"
STEPS = ("approve", "release", "transplant")


# Matched in a replica's statement log: a query each entry point sends.
REPLICA_READS = {
    "weekly report": re.compile(r'FROM "pathway_transitionlog"'),
    "CSV export": re.compile(r'FROM "patients_patient"'),
    "FHIR export": re.compile(r'FROM "patients_lungfunctiontest"'),
    "calendar feed": re.compile(r'FROM "scheduling_visit"'),
    "capacity heat map": re.compile(r'FROM "scheduling_slothold"'),
}


# The admin over HTTP.


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class AdminSession:
    """A member of staff's browser: cookies, CSRF, no redirects followed."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirects()
        )

    def request(self, path: str, data: dict | list | None = None, timeout: float = 30):
        """(status, headers, body) of a GET, or a POST of `data` with the CSRF token."""
        body = None
        if data is not None:
            fields = list(data.items()) if isinstance(data, dict) else list(data)
            fields.append(("csrfmiddlewaretoken", self.csrf_token()))
            body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(self.base_url + path, data=body)
        if body is not None:
            request.add_header("Referer", self.base_url + path)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def csrf_token(self) -> str:
        return next((c.value for c in self.cookies if c.name == "csrftoken"), "")

    def log_in(self, username: str, password: str) -> None:
        self.request("/admin/login/")
        status, _, _ = self.request(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password, "next": "/admin/"},
        )
        assert status == 302, f"login as {username} answered {status}"


# The clients, as processes of their own.


def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    # What the suite does too: password hashing is not what the drill measures.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def prepare(*, clients: int, per_step: int, reminders: int) -> dict:
    """The drill's data: staff, a site, each client's courses one step short of the step it
    will take, a calendar link, a resource, and `reminders` due emails. Returns the plan."""
    import time_machine
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.utils import timezone

    from pathway import services
    from pathway.states import CourseState
    from reporting.calendar_feed import calendar_feed_token_issue
    from scheduling.models import Resource, ResourceKind, Visit
    from tests.factories import (
        BodyMeasurementFactory,
        ChestCTFactory,
        ClinicalAssessmentFactory,
        LungFunctionTestFactory,
        PatientFactory,
        SiteFactory,
        UserFactory,
    )
    from tests.servers import due_emails
    from tests.support import Pathway

    site = SiteFactory(code="HAA", name="Failover Chest Unit")
    staff = {
        name: UserFactory(username=name, role=role)
        for name, role in (
            ("coordinator", "coordinator"),
            ("clinician", "clinician"),
            ("clinician2", "clinician"),
            ("lab", "lab"),
            ("lab2", "lab"),
        )
    }
    admin = get_user_model().objects.create_superuser("drill-admin", "drill-admin@clinic.test")
    # Hashed as the web server, with its production settings, checks it.
    admin.password = PBKDF2PasswordHasher().encode(ADMIN_PASSWORD, PBKDF2PasswordHasher().salt())
    admin.save(update_fields=["password"])
    site.coordinators.add(admin)
    pathway = Pathway(
        staff["coordinator"], staff["clinician"], staff["lab"], staff["lab2"], staff["clinician2"]
    )
    before = {
        "approve": CourseState.EVALUATION,
        "release": CourseState.EXPANDING,
        "transplant": CourseState.TRANSPLANT_SCHEDULED,
    }

    def course():
        patient = PatientFactory(site=site)
        for factory in (
            LungFunctionTestFactory,
            ChestCTFactory,
            ClinicalAssessmentFactory,
            BodyMeasurementFactory,
        ):
            factory(patient=patient)
        return services.course_create(patient=patient, by=staff["coordinator"])

    plan = {"start": pathway.start.isoformat(), "clients": []}
    for _ in range(clients):
        steps = []
        for index in range(per_step):
            for step in STEPS:
                c = pathway.advance(course(), before[step])
                if step == "release":
                    with time_machine.travel(pathway.at(30.5), tick=False):
                        pathway.record_qc(c)
                elif step == "transplant":
                    pathway.deliver_to_site(c)
                steps.append({"course": c.pk, "step": step, "order": index})
        plan["clients"].append(sorted(steps, key=lambda s: (s["order"], STEPS.index(s["step"]))))
    # The reminders: due emails for a harvest booked ten days ahead.
    harvest_course = pathway.advance(course(), CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=harvest_course,
        by=staff["coordinator"],
        place="Suite 2",
        scheduled_at=timezone.now() + dt.timedelta(days=10),
    )
    visit = Visit.objects.get(course=harvest_course, kind="harvest")
    plan["reminders"] = due_emails(visit, reminders)  # keyed drill.v<visit>.<n>
    plan["calendar_token"] = calendar_feed_token_issue(user=staff["coordinator"], site=site)
    other = SiteFactory(code="HAB", name="Second Chest Unit")
    Resource.objects.create(
        name="Lung-function clinic", kind=ResourceKind.LUNG_FUNCTION, site=other, time_zone="UTC"
    )
    plan["patients"] = list(site.patients.values_list("pk", flat=True)[:20])
    plan["admin"] = {"username": "drill-admin", "password": ADMIN_PASSWORD}
    return plan


def _step(kind: str, course, pathway):
    import time_machine

    from pathway import services
    from tests.factories import PASSWORD

    if kind == "approve":
        with time_machine.travel(pathway.at(0.1), tick=True):
            return services.course_approve(course=course, by=pathway.clinician)
    if kind == "release":
        with time_machine.travel(pathway.at(31), tick=True):
            return services.course_release(course=course, by=pathway.lab2, password=PASSWORD)
    with time_machine.travel(pathway.at(33.1), tick=True):
        return pathway.transplant(course)


def stream(*, plan: dict, client: int, acks: Path, pace: float) -> None:
    """Take this client's steps in turn, one every `pace` seconds. A step that meets the
    database gone is tried again on a new connection, as a user would press again after a
    503; one found already taken (its commit landed, its answer was lost) is noted as such.
    Each outcome is a JSON line in `acks`, written before the next step starts."""
    from django import db
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django_fsm import TransitionNotAllowed

    from common.errors import Refused
    from pathway.models import TransitionLog, TreatmentCourse
    from tests.support import Pathway

    transition = {"approve": "approve", "release": "release", "transplant": "record_transplant"}

    def load_pathway():
        users = {u.username: u for u in get_user_model().objects.all()}
        return Pathway(
            users["coordinator"],
            users["clinician"],
            users["lab"],
            users["lab2"],
            users["clinician2"],
            start=dt.datetime.fromisoformat(plan["start"]),
        )

    with acks.open("a", buffering=1) as out:

        def note(event: str, **fields):
            out.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
            out.flush()
            os.fsync(out.fileno())

        pathway = None
        for item in plan["clients"][client]:
            failed_before = False
            deadline = time.monotonic() + 180
            while True:
                try:
                    pathway = pathway or load_pathway()
                    course = TreatmentCourse.objects.select_related(
                        "patient", "site", "protocol"
                    ).get(pk=item["course"])
                    log = _step(item["step"], course, pathway)
                    note("ack", course=item["course"], step=item["step"], log=log.pk)
                    break
                except (db.OperationalError, db.InterfaceError) as error:
                    failed_before = True
                    note("error", course=item["course"], step=item["step"], error=str(error)[:200])
                    connection.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
                except (TransitionNotAllowed, Refused):
                    taken = TransitionLog.objects.filter(
                        course_id=item["course"], transition=transition[item["step"]]
                    ).exists()
                    if not (failed_before and taken):
                        raise
                    # Committed before the primary died, its answer lost with the connection.
                    note("taken", course=item["course"], step=item["step"])
                    break
            time.sleep(pace)
        note("done")


def client_process(*args: str, env: dict, stdout=subprocess.PIPE) -> subprocess.Popen:
    from tests.clusters import DRILL_ENV

    clean = {k: v for k, v in os.environ.items() if k not in DRILL_ENV and k != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ha_drill", *args],
        cwd=ROOT,
        env=clean | DRILL_ENV | env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def prepare_in_process_of_its_own(*, database_url: str, clients: int, per_step: int, reminders):
    run = client_process(
        "prepare",
        "--clients",
        str(clients),
        "--per-step",
        str(per_step),
        "--reminders",
        str(reminders),
        env={"DATABASE_URL": database_url},
    )
    out, err = run.communicate(timeout=600)
    if run.returncode:
        raise RuntimeError(f"prepare failed: {err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# The drill.


def failover_drill(*, cluster, plan: dict, web, broker, smtp, folder: Path, pace: float = 0.3):
    """SIGKILL the primary while the clients stream their steps and the workers deliver the
    plan's reminders; returns the figures. The caller has started the web server (`web`,
    against the cluster), the broker and the SMTP sink, and checks the figures."""
    from tests.clusters import manage, wait_for
    from tests.servers import CeleryWorker, tick, worker_env

    database_url = cluster.url("tracker")
    env = worker_env(
        broker,
        smtp,
        DATABASE_URL=database_url,
        NOTIFICATION_BATCH_SIZE=50,
        NOTIFICATION_CLAIM_TIMEOUT=5,
        # With a synchronous standby, a message's "sent" survives the failover only if its
        # commit waits for the standby (the production recipe sets it): off, the last fraction
        # of a second's writes die with the primary and those messages go again.
        NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT=1,
    )
    workers = [CeleryWorker(f"ha{i}", env, log_dir=folder) for i in range(2)]
    for worker in workers:
        worker.start(wait=False)  # side by side: each takes seconds to load
    for worker in workers:
        worker.wait_ready()
    probe = WebProbe(web.url, plan["admin"])
    clients, acks = [], []
    try:
        probe.start()
        for index in range(len(plan["clients"])):
            plan_path = folder / "plan.json"
            plan_path.write_text(json.dumps(plan))
            acks.append(folder / f"acks-{index}.jsonl")
            # The client appends as it goes: a file from an earlier drill in the same folder
            # (the bench's var/, run again) would count that drill's steps as this one's.
            acks[-1].unlink(missing_ok=True)
            clients.append(
                client_process(
                    "stream",
                    "--plan",
                    str(plan_path),
                    "--client",
                    str(index),
                    "--acks",
                    str(acks[-1]),
                    "--pace",
                    str(pace),
                    env={"DATABASE_URL": database_url},
                    stdout=subprocess.DEVNULL,
                )
            )
        tick(broker)
        expected = set(plan["reminders"])

        def under_way():
            acked = sum(1 for p in acks for e in read_events(p) if e["event"] == "ack")
            return acked >= len(acks) and len(smtp.message_ids()) >= len(expected) // 5

        wait_for(under_way, timeout=120, what="steps and deliveries under way")
        old_primary = cluster.primary()
        killed_at = time.monotonic()
        old_primary.kill()
        promoted_after = wait_for(
            lambda: cluster.primary() is not None, timeout=120, what="a new primary"
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            tick(broker)
            delivered = expected <= set(smtp.message_ids())
            finished = all(c.poll() is not None for c in clients)
            if delivered and finished:
                break
            time.sleep(1)
        for client in clients:
            client.wait(timeout=60)
        client_errors = [c.stderr.read()[-2000:] for c in clients if c.returncode]
        verified = manage("audit_verify", env={"DATABASE_URL": database_url})
    finally:
        probe.stop()
        for client in clients:
            if client.poll() is None:
                client.kill()
        for worker in workers:
            worker.stop()
    return _failover_figures(
        cluster=cluster,
        expected=expected,
        received=smtp.message_ids(),
        acks=acks,
        killed_at=killed_at,
        promoted_after=promoted_after,
        old_primary=old_primary,
        probe=probe,
        verified=verified,
        client_errors=client_errors,
        processes=sum(w.concurrency for w in workers),
    )


def _failover_figures(
    *,
    cluster,
    expected,
    received,
    acks,
    killed_at,
    promoted_after,
    old_primary,
    probe,
    verified,
    client_errors,
    processes,
):
    new_primary = cluster.primary()
    logged = {
        tuple(line.split("|"))
        for line in new_primary.psql(
            "SELECT course_id || '|' || transition FROM pathway_transitionlog", db="tracker"
        ).splitlines()
    }
    transition = {"approve": "approve", "release": "release", "transplant": "record_transplant"}
    events = [e for path in acks for e in read_events(path)]
    acked = [e for e in events if e["event"] == "ack"]
    lost = [e for e in acked if (str(e["course"]), transition[e["step"]]) not in logged]
    # Each client's wait: from its first failure after the kill to its next step acknowledged.
    waits = []
    for path in acks:
        mine = read_events(path)
        failures = [e["t"] for e in mine if e["event"] == "error" and e["t"] >= killed_at]
        if failures:
            after = [
                e["t"] for e in mine if e["event"] in ("ack", "taken") and e["t"] > failures[0]
            ]
            if after:
                waits.append(after[0] - killed_at)
    sent = new_primary.psql(
        "SELECT count(*) FROM scheduling_notification WHERE status = 'sent' "
        "AND idempotency_key LIKE 'drill.%'",
        db="tracker",
    )
    return {
        "old_primary": old_primary.name,
        "new_primary": new_primary.name,
        "promoted_after_seconds": promoted_after,
        "steps_acknowledged": len(acked),
        "steps_taken_unacknowledged": sum(1 for e in events if e["event"] == "taken"),
        "steps_lost": len(lost),
        "client_errors": client_errors,
        "clients_unavailable_seconds": max(waits) if waits else None,
        "reminders": len(expected),
        "reminders_sent_in_database": int(sent),
        "reminders_lost": len(expected - set(received)),
        "reminders_duplicated": sum(n - 1 for n in received.values()),
        # Per pool process, the messages sent and not yet written when the database went.
        # Each message is written before the next send: one in flight per pool process.
        "duplicate_bound": processes,
        "audit_verify": verified.returncode == 0,
        "audit_verify_output": (verified.stdout + verified.stderr).strip(),
        **probe.figures(),
    }


class WebProbe:
    """A logged-in coordinator's browser asking for the admin's front page every 0.1 s."""

    def __init__(self, base_url: str, admin: dict):
        self.session = AdminSession(base_url)
        self.admin = admin
        self.answers: list[tuple[float, int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.session.log_in(self.admin["username"], self.admin["password"])
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.1):
            started = time.monotonic()
            try:
                status, headers, _ = self.session.request("/admin/", timeout=10)
                self.answers.append((started, status, headers.get("Retry-After")))
            except OSError:
                self.answers.append((started, 0, None))  # no answer at all

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def figures(self) -> dict:
        statuses = [status for _, status, _ in self.answers]
        unavailable = [t for t, status, _ in self.answers if status != 200]
        seconds = None
        if unavailable:
            recovered = [t for t, status, _ in self.answers if status == 200 and t > unavailable[0]]
            seconds = (recovered[0] if recovered else self.answers[-1][0]) - unavailable[0]
        return {
            "web_requests": len(statuses),
            "web_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "web_503_without_retry_after": sum(
                1 for _, status, retry in self.answers if status == 503 and not retry
            ),
            "web_unavailable_seconds": seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare")
    prepare_parser.add_argument("--clients", type=int, default=3)
    prepare_parser.add_argument("--per-step", type=int, default=3)
    prepare_parser.add_argument("--reminders", type=int, default=300)
    stream_parser = commands.add_parser("stream")
    stream_parser.add_argument("--plan", type=Path, required=True)
    stream_parser.add_argument("--client", type=int, required=True)
    stream_parser.add_argument("--acks", type=Path, required=True)
    stream_parser.add_argument("--pace", type=float, default=0.3)
    args = parser.parse_args()
    _setup_django()
    if args.command == "prepare":
        plan = prepare(clients=args.clients, per_step=args.per_step, reminders=args.reminders)
        print(json.dumps(plan, default=str))
    else:
        plan = json.loads(args.plan.read_text())
        stream(plan=plan, client=args.client, acks=args.acks, pace=args.pace)


if __name__ == "__main__":
    main()
