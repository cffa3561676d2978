"""Secrets in paths stay out of every log: the one list, the filter, and a live server's output."""

import logging
import os
import secrets
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from common.secret_paths import SECRET_PATH_PREFIXES, SecretPathFilter, text_without_secrets
from tests.servers import Gunicorn, free_port, wait_until


def test_no_line_a_live_server_writes_carries_a_links_secret(tmp_path):
    """Django's request logger writes the path of every 4xx and 5xx into the same output as
    the access log ("Forbidden: /v/<token>/"): a live gunicorn's whole output, for a refused
    cross-site post (403), a guesser slowed down (429) and a server that cannot answer (503:
    its database is unreachable), holds no token."""
    token = secrets.token_urlsafe(16)
    gone = f"postgres://nobody@127.0.0.1:{free_port()}/gone"
    cross_site = {
        "Sec-Fetch-Site": "cross-site",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    with Gunicorn({"DATABASE_URL": gone, "REDIS_URL": ""}, tmp_path) as web:
        statuses = {
            "403 /v/": web.request("POST", f"/v/{token}/", headers=cross_site, body="a=1")[0],
            "403 /q/": web.request("POST", f"/q/{token}/", headers=cross_site, body="a=1")[0],
            "503 /v/": web.request("GET", f"/v/{token}/")[0],
            "503 /q/": web.request("GET", f"/q/{token}/")[0],
            "503 /calendar/": web.request("GET", f"/calendar/{token}.ics")[0],
        }
        guesses = [web.request("GET", f"/v/{token}/")[0] for _ in range(30)]
        statuses["429 /v/"] = guesses[-1]
        wait_until(lambda: "Too Many Requests" in web.output(), timeout=10, what="the 429's line")
        written = web.output()
    assert statuses == {key: int(key[:3]) for key in statuses}, statuses
    assert token not in written
    for line in (
        "Forbidden: /v/…/",
        "Forbidden: /q/…/",
        "Service Unavailable: /v/…/",
        "Service Unavailable: /q/…/",
        "Service Unavailable: /calendar/….ics",
        "Too Many Requests: /v/…/",
        '"GET /v/…/ HTTP/1.1" 429',  # the access log, in the same output
        '"GET /calendar/….ics HTTP/1.1" 503',
    ):
        assert line in written, line


@pytest.fixture
def a_database_without_its_tables():
    """An empty database on the suite's PostgreSQL server, as a deploy meets it before
    `migrate`: every query fails as an error of the code's, a 500, not an unreachable server."""
    url = urlsplit(os.environ["DATABASE_URL"])
    name = f"empty_{uuid.uuid4().hex[:8]}"
    server = psycopg2.connect(
        host=url.hostname, port=url.port or 5432, user=url.username, dbname="postgres"
    )
    server.autocommit = True
    server.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(url._replace(path=f"/{name}"))
    finally:
        server.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.close()


def test_a_500_on_a_live_server_keeps_the_secret_out_of_its_line_and_traceback(
    tmp_path, a_database_without_its_tables
):
    token = secrets.token_urlsafe(16)
    with Gunicorn(
        {"DATABASE_URL": a_database_without_its_tables, "REDIS_URL": ""}, tmp_path
    ) as web:
        statuses = [
            web.request("GET", path)[0]
            for path in (f"/v/{token}/", f"/q/{token}/", f"/calendar/{token}.ics")
        ]
        written = web.output()
    assert statuses == [500, 500, 500]
    assert token not in written
    for line in (
        "Internal Server Error: /v/…/",
        "Internal Server Error: /q/…/",
        "Internal Server Error: /calendar/….ics",
        "Traceback (most recent call last)",
    ):
        assert line in written, line


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("/v/AbC-123_xyz/", "/v/…/"),
        ("/q/AbC-123_xyz/", "/q/…/"),
        ("/calendar/AbC-123_xyz.ics", "/calendar/….ics"),
        ("Forbidden: /v/0zMMKGhfPteaLwKkZ_CbvalP/", "Forbidden: /v/…/"),
        ('"GET /q/AbC HTTP/1.1" 429', '"GET /q/… HTTP/1.1" 429'),
        ("/admin/patients/patient/", "/admin/patients/patient/"),
    ],
)
def test_the_secrets_in_paths_are_masked_in_any_text(text, logged):
    assert text_without_secrets(text) == logged


def test_the_filter_masks_a_records_message_and_its_traceback():
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "%s: %s", None, None)
    record.args = ("Internal Server Error", "/v/SeCrEt/")
    try:
        raise ValueError("no visit for /v/SeCrEt/")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert SecretPathFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "SeCrEt" not in formatted and "Internal Server Error: /v/…/" in formatted


def test_every_link_with_a_secret_in_its_path_is_masked():
    """A URL that takes a token is a secret link: its first segment must be in the one list
    the logs mask, or a later link would leak into them."""
    from config.urls import urlpatterns

    routes = [str(pattern.pattern) for pattern in urlpatterns]
    secret_routes = [route for route in routes if "token>" in route]
    assert len(secret_routes) == 3
    assert {route.split("/")[0] for route in secret_routes} <= set(SECRET_PATH_PREFIXES)


CONSOLE_SEND = """
import django
django.setup()
from django.conf import settings
from delivery.channels import OutgoingMessage
from delivery.channels.sms import ConsoleSmsBackend
ConsoleSmsBackend().send(OutgoingMessage("+447700900123", "Go: https://x.test/v/{token}/", "k"))
print("redirected:", getattr(settings, "CELERY_WORKER_REDIRECT_STDOUTS", True))
"""


@pytest.mark.parametrize(("debug", "whole"), [("1", True), ("0", False)])
def test_the_console_backends_print_links_whole_only_in_development(debug, whole):
    """`make run` (DEBUG on) prints what the console backends send with its links whole, so a
    newcomer opens the patient's side from the worker's output; anywhere else that output is a
    log and masked. The phone number is masked in both."""
    token = secrets.token_urlsafe(16)
    ran = subprocess.run(
        [sys.executable, "-c", CONSOLE_SEND.format(token=token)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": debug},
        check=True,
    )
    written = ran.stdout + ran.stderr
    assert (f"/v/{token}/" in written) is whole and ("/v/…/" in written) is not whole
    assert "+447700900123" not in written and "+44…123" in written
    # Django's console email writes to standard output, which a worker hands to the logger
    # unless told not to.
    assert f"redirected: {not whole}" in written
