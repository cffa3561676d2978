"""Real local stand-ins for the outside world, and real processes of our own.

An SMTP sink (aiosmtpd), an HTTP stub that answers like Twilio's Messages API, a
redis-server on a spare port and Celery worker processes: the tests talk to them over
sockets exactly as production talks to the real thing.
"""

import asyncio
import contextlib
import datetime as dt
import email
import http.client
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import parse_qs, quote, urlencode
from urllib.request import Request, urlopen

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone
from kombu import Queue
from twilio.request_validator import RequestValidator

from config.celery import app
from delivery.tasks import dispatch_due_notifications
from scheduling.models import Channel, Notification, NotificationStatus, NotificationTemplate

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd narrates every command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class SmtpSink:
    """Accepts every message and keeps it; `delay` slows each one, like a busy relay.
    `refuse` maps an address to the SMTP reply its RCPT gets instead (e.g. "550 5.1.1 …");
    a message whose Message-ID is in `hang_up` is not accepted: the sink drops the connection
    instead, once. `sessions` holds, per message kept, the client's address and port: one
    entry per SMTP session."""

    def __init__(self, delay: float = 0.0):
        self.messages = []
        self.sessions = []
        self.refuse = {}
        self.hang_up = set()
        self.delay = delay
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            if parsed["Message-ID"] in self.hang_up:
                self.hang_up.discard(parsed["Message-ID"])
                server.transport.close()
                return "421 Closing the connection"
            self.messages.append(parsed)
            self.sessions.append(session.peer)
        return "250 OK"

    def message_ids(self) -> Counter:
        with self.lock:
            return Counter(message["Message-ID"] for message in self.messages)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


class TwilioStub:
    """Answers POST /2010-04-01/Accounts/<sid>/Messages.json like Twilio; `fail_next` requests
    get a 500 first; a number in `refuse` gets Twilio's 400 with that error code. Like a
    provider that honours idempotency keys, a message whose `Idempotency-Key` it has accepted
    before is not sent again: it answers with the first one's sid and counts it in `repeats`.

    With `per_second`, it caps each sending number as a provider does: a token bucket of
    `burst` messages (half a second's worth, at least 2: what reaches a provider a few
    milliseconds apart is not a burst to it) refilled at `per_second`, and a message beyond
    it refused with 429 and Twilio's error 20429 (counted in `refused_for_pace`).

    It speaks WhatsApp as Twilio does: `whatsapp:+E164` addresses on the same endpoint (To and
    From of one channel, else 21910); a template sent by ContentSid with ContentVariables
    instead of a body, from the account's own `content_templates` (ContentSid: words with
    {{1}}…; an unknown one 21655, a variable missing, empty or on two lines 21656), kept
    rendered as "Rendered"; and a free-form body accepted but then failed with 63016 when the
    user has not written in the last 24 hours (`whatsapp_sessions`: each user's last message,
    by the stub's clock, which a test's time-machine moves). `incoming` posts a user's message
    to the tracker's webhook, signed, as Twilio does (opening a WhatsApp user's session), and
    `send_status_callbacks` posts, signed, the reports (sent, then delivered or failed) of the
    messages that asked for them."""

    account_sid = "AC" + "0" * 32
    auth_token = "test-token"
    whatsapp_from = "whatsapp:+14155238886"

    def __init__(self, *, per_second: float | None = None, burst: int | None = None):
        self.received = []
        self.repeats = Counter()
        self.fail_next = 0
        self.refuse = {}
        self.per_second = per_second
        self.burst = burst or max(2, math.ceil((per_second or 0) / 2))
        self.buckets: dict[str, tuple[float, float]] = {}  # sender: (tokens, when)
        self.refused_for_pace = 0
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        self.sids_by_key = {}
        self.whatsapp_sessions: dict[str, dt.datetime] = {}
        self.content_templates: dict[str, str] = {}
        self.callbacks: list[tuple[str, dict]] = []  # (URL, form) waiting to be posted
        self.webhook_url = ""  # the tracker's incoming-message webhook
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                key = self.headers.get("Idempotency-Key", "")
                with stub.lock:
                    if key and key in stub.sids_by_key:
                        stub.repeats[key] += 1
                        self._reply(201, {"sid": stub.sids_by_key[key], "status": "queued"})
                        return
                    too_fast = not stub._within_pace(form.get("From", ""))
                    failing = stub.fail_next > 0
                    stub.fail_next -= failing
                    refused = None if failing else stub.refuse.get(form.get("To"))
                    if not (too_fast or failing) and refused is None:
                        refused = stub._content_refusal(form)
                    sid = "SM" + uuid.uuid4().hex
                    if not (too_fast or failing) and refused is None:
                        stub.received.append(form | {"Idempotency-Key": key, "Sid": sid})
                        stub.arrivals.append(time.monotonic())
                        if key:
                            stub.sids_by_key[key] = sid
                        stub._report_later(sid, form, key)
                if too_fast:
                    self._reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429})
                    return
                if failing:
                    self._reply(500, {"code": 20500, "message": "Internal error", "status": 500})
                    return
                if refused is not None:
                    self._reply(400, {"code": refused, "message": "Refused", "status": 400})
                    return
                self._reply(
                    201,
                    {
                        "sid": sid,
                        "status": "queued",
                        "to": form.get("To"),
                        "from": form.get("From"),
                        "body": form.get("Body"),
                        "account_sid": stub.account_sid,
                    },
                )

            def _reply(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _content_refusal(self, form: dict) -> int | None:
        """Twilio's error for a message it will not take as given (the caller holds the lock);
        a template is kept rendered in `form["Rendered"]`."""
        to, sender = form.get("To", ""), form.get("From", "")
        if to.startswith("whatsapp:") != sender.startswith("whatsapp:"):
            return 21910  # From and To of different channels
        sid = form.get("ContentSid")
        if sid is None:
            return None if form.get("Body") else 21602  # a body is needed
        if sid not in self.content_templates:
            return 21655
        try:
            variables = json.loads(form.get("ContentVariables") or "{}")
        except ValueError:
            return 21656
        words = self.content_templates[sid]
        for placeholder in set(re.findall(r"\{\{(\d+)\}\}", words)):
            value = variables.get(placeholder)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                return 21656
            words = words.replace("{{" + placeholder + "}}", value)
        form["Rendered"] = words
        return None

    def whatsapp_session_open(self, address: str) -> bool:
        """Whether `address` (a WhatsApp user) wrote within the last 24 hours."""
        wrote = self.whatsapp_sessions.get(address)
        return wrote is not None and dt.datetime.now(dt.UTC) - wrote < dt.timedelta(hours=24)

    def _report_later(self, sid: str, form: dict, key: str) -> None:
        """Queue the reports on an accepted message, if it asked for them: WhatsApp refuses a
        free-form message outside the user's session after accepting it, as Twilio reports.
        A message that failed is no longer known by its key: sent again, it is a new one."""
        to = form.get("To", "")
        free_form = to.startswith("whatsapp:") and "ContentSid" not in form
        refused = free_form and not self.whatsapp_session_open(to)
        if refused:
            self.sids_by_key.pop(key, None)
        url = form.get("StatusCallback")
        if not url:
            return
        reports = [{"MessageStatus": "sent"}]
        if refused:
            reports.append({"MessageStatus": "failed", "ErrorCode": "63016"})
        else:
            reports.append({"MessageStatus": "delivered"})
        for report in reports:
            base = {"MessageSid": sid, "AccountSid": self.account_sid, "To": to}
            self.callbacks.append((url, base | {"From": form.get("From", "")} | report))

    def _signed_post(self, url: str, params: dict) -> tuple[int, str]:
        """POST a form as Twilio does, with its X-Twilio-Signature; (status, body)."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        request = Request(
            url, data=urlencode(params).encode(), headers={"X-Twilio-Signature": signature}
        )
        try:
            with urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except HTTPError as error:
            return error.code, error.read().decode()

    def send_status_callbacks(self) -> list[tuple[str, int]]:
        """Post every report waiting; returns (status reported, HTTP status) for each."""
        with self.lock:
            waiting, self.callbacks = self.callbacks, []
        return [
            (params["MessageStatus"], self._signed_post(url, params)[0]) for url, params in waiting
        ]

    def incoming(self, *, sender: str, body: str, to: str = "") -> tuple[int, str]:
        """A user's message, posted to the tracker's webhook as Twilio does; a WhatsApp
        user's opens their 24-hour session. Returns (HTTP status, the TwiML answered)."""
        if sender.startswith("whatsapp:"):
            with self.lock:
                self.whatsapp_sessions[sender] = dt.datetime.now(dt.UTC)
        default_to = self.whatsapp_from if sender.startswith("whatsapp:") else "+15005550006"
        params = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to or default_to,
            "Body": body,
        }
        return self._signed_post(self.webhook_url, params)

    def _within_pace(self, sender: str) -> bool:
        """Take a token from the sender's bucket (the caller holds the lock)."""
        if self.per_second is None:
            return True
        now = time.monotonic()
        tokens, then = self.buckets.get(sender, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        if tokens < 1:
            self.buckets[sender] = (tokens, now)
            self.refused_for_pace += 1
            return False
        self.buckets[sender] = (tokens - 1, now)
        return True

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def settings(self) -> dict:
        return {
            "SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "WHATSAPP_FROM": self.whatsapp_from,
            "TWILIO_API_BASE_URL": self.url,
            # The pace the sending number is given: the stub's cap when it has one, else as
            # fast as the tests go.
            "SMS_SENDER_DEFAULT_PER_SECOND": str(self.per_second or 10_000),
        }


class RedisServer:
    """A redis-server of the test's own on a spare port, keeping nothing on disk."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def worker_env(self) -> dict:
        return {"REDIS_URL": self.url}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, timeout=10, what="redis-server")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(1024)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def kill(self):
        """SIGKILL, as a crash or an OOM kill would: nothing is flushed or said goodbye."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class RabbitMQ:
    """The machine's RabbitMQ (SERVICES.md), with a queue of the test's own; stopped and
    started with `rabbitmqctl stop_app` / `start_app`, which keep the shared node's settings."""

    url = "amqp://guest:guest@127.0.0.1:5672//"

    def __init__(self):
        self.queue = f"tracker-drill-{uuid.uuid4().hex[:8]}"

    def worker_env(self) -> dict:
        return {"CELERY_BROKER_URL": self.url, "CELERY_TASK_DEFAULT_QUEUE": self.queue}

    @property
    def task_queue(self) -> Queue:
        """The queue as the workers declare it: a quorum queue."""
        return Queue(self.queue, routing_key=self.queue, queue_arguments={"x-queue-type": "quorum"})

    def _ctl(self, *args):
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)

    def ping(self) -> bool:
        done = subprocess.run(
            ["rabbitmq-diagnostics", "-q", "check_running"], capture_output=True, timeout=60
        )
        return done.returncode == 0

    def stop(self):
        self._ctl("stop_app")

    def start(self):
        self._ctl("start_app")
        wait_until(self.ping, timeout=120, interval=1, what="RabbitMQ")

    def __enter__(self):
        if not self.ping():
            pytest.fail("RabbitMQ is not running: start it as SERVICES.md says")
        return self

    def __exit__(self, *exc):
        if not self.ping():  # a drill that failed half-way leaves the node as it found it
            self.start()
        with contextlib.suppress(Exception), app.connection_for_write(self.url) as broker:
            broker.default_channel.queue_delete(self.queue)


class CeleryWorker:
    """`celery worker` as its own process group, with the environment the test gives it."""

    def __init__(
        self,
        name: str,
        env: dict,
        concurrency: int = 2,
        log_dir: Path | None = None,
        app: str = "config",
    ):
        self.name = name
        self.env = env
        self.concurrency = concurrency
        self.log_dir = log_dir or ROOT / "var"
        self.app = app  # the Celery app: the tracker's, or a bench peer's
        self.process = None

    def start(self, *, wait: bool = True):
        """Start the worker; with `wait`, return once it is ready (see `wait_ready`)."""
        self.log_path = self.log_dir / f"worker-{self.name}-{uuid.uuid4().hex[:6]}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "INFO",
                "--hostname",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        wait_until(lambda: "ready." in self.output(), timeout=60, what=f"worker {self.name}")
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def restart_if_exited(self) -> bool:
        """What a process supervisor (systemd's Restart=always) does: start again a worker that
        died. kombu's Redis transport can still crash a worker when the broker restarts."""
        if self.process.poll() is None:
            return False
        with contextlib.suppress(ProcessLookupError):  # its pool, if it outlived the worker
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        self.start()
        return True

    def kill(self):
        """SIGKILL the worker and its pool at once, as a crash or an OOM kill would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Gunicorn:
    """gunicorn as production runs it (`config/gunicorn.conf.py`, DEBUG off), one worker on a
    spare loopback port, with the environment the test gives it. Everything it writes, its own
    logs and Django's, goes to one file the test reads (`output`)."""

    def __init__(self, env: dict, log_dir: Path):
        self.port = free_port()
        self.env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": "gunicorn-test-key",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "EMAIL_URL": "consolemail://",
            "SMS_BACKEND": "console",
            "OTP_REQUIRED": "0",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_ACCESS_LOG": "-",
            "WEB_CONCURRENCY": "1",
            **env,
        }
        self.log_path = log_dir / f"gunicorn-{uuid.uuid4().hex[:6]}.log"
        self.process = None

    def start(self):
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=30, what="gunicorn")
        return self

    def _answers(self) -> bool:
        try:
            self.request("GET", "/admin/login/")
        except OSError:
            return False
        return True

    def request(self, method, path, *, headers=None, body=None, source="127.0.0.1"):
        """One request from `source` (any 127.x address is this machine's loopback); returns
        (status, headers, body)."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=15, source_address=(source, 0)
        )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# Helpers the worker tests and the drills share: a worker's environment, beat's tick, counts.


def database_url() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"])
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(broker_server, smtp, twilio=None, **extra) -> dict:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "worker-test-key",
        "DATABASE_URL": database_url(),
        **broker_server.worker_env(),
        "EMAIL_URL": smtp.url,
        "SMS_BACKEND": "null",
    }
    if twilio:
        env |= twilio.settings()
    return env | {key: str(value) for key, value in extra.items()}


def tick(broker_server):
    """What beat does every minute: one dispatch tick, sent through the test's own broker
    (a Redis of its own, or a quorum queue of its own on the machine's RabbitMQ)."""
    with app.connection_for_write(broker_server.url) as broker:
        dispatch_due_notifications.apply_async(
            connection=broker, queue=getattr(broker_server, "task_queue", None)
        )


def sent_count() -> int:
    return Notification.objects.filter(status=NotificationStatus.SENT).count()


def due_emails(visit, count) -> list[str]:
    """`count` due email reminders for one visit, each with its own idempotency key."""
    keys = [f"drill.v{visit.pk}.{i}" for i in range(count)]
    Notification.objects.bulk_create(
        Notification(
            template=NotificationTemplate.VISIT_REMINDER,
            channel=Channel.EMAIL,
            patient=visit.course.patient,
            visit=visit,
            idempotency_key=key,
            send_after=timezone.now() - dt.timedelta(minutes=1),
        )
        for key in keys
    )
    return [f"<{key}@pathway-tracker>" for key in keys]
