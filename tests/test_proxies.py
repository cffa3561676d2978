"""Forwarded headers are believed only from TRUSTED_PROXIES (common/proxies.py)."""

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory

from common.proxies import client_address
from tests.servers import Gunicorn, database_url

FORGED = "203.0.113.9, 127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.50", FORGED, "192.0.2.50"),  # straight to gunicorn: the header is ignored
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),  # through the proxy on this machine
        ("127.0.0.1", f"{FORGED}, 198.51.100.7", "198.51.100.7"),  # forged, then appended
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),  # two proxies, both ours
        ("127.0.0.1", "not-an-address, 10.1.2.3", "10.1.2.3"),  # the walk stops at garbage
        ("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("127.0.0.1", "198.51.100.7:51234", "198.51.100.7"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("", FORGED, ""),
    ],
)
def test_the_client_is_read_past_trusted_proxies_only(settings, peer, forwarded, client):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "::1", "10.0.0.0/8"]
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == client


@pytest.mark.django_db
def test_a_direct_client_forging_the_header_is_not_this_machine(client, settings):
    settings.BEHIND_TLS_PROXY = True
    forged = {"REMOTE_ADDR": "192.0.2.50", "HTTP_X_FORWARDED_FOR": FORGED}
    assert client.get("/metrics", **forged).status_code == 403
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics").status_code == 200  # this machine, no proxy in between


@pytest.mark.django_db
def test_https_is_believed_only_from_the_proxy(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    says_https = {"HTTP_X_FORWARDED_PROTO": "https"}
    assert client.get("/admin/login/", REMOTE_ADDR="192.0.2.50", **says_https).status_code == 301
    assert client.get("/admin/login/", **says_https).status_code == 200


@pytest.mark.django_db
def test_failed_logins_count_against_the_real_address_whatever_the_header_says(client):
    for n in range(3):
        client.post(
            "/admin/login/",
            {"username": "coordinator", "password": "wrong"},
            REMOTE_ADDR="192.0.2.50",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        )
    [attempt] = AccessAttempt.objects.all()
    assert (attempt.ip_address, attempt.failures_since_start) == ("192.0.2.50", 3)


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_live_server_behind_its_proxy_ignores_a_header_forged_on_a_direct_connection(
    tmp_path,
):
    """gunicorn as production runs it behind the TLS proxy (BEHIND_TLS_PROXY, loopback trusted):
    a client on another address that reaches it directly and writes `X-Forwarded-For:
    203.0.113.9, 127.0.0.1` is judged by its own address (127.0.0.2 is not the proxy)."""
    env = {"DATABASE_URL": database_url(), "REDIS_URL": "", "BEHIND_TLS_PROXY": "1"}
    forged = {"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"}
    with Gunicorn(env, tmp_path) as web:
        direct = web.request("GET", "/metrics", headers=forged, source="127.0.0.2")
        via_proxy = web.request(
            "GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, source="127.0.0.1"
        )
        local = web.request("GET", "/metrics", source="127.0.0.1")
    assert direct[0] == 403 and b"tracker_outbox_due" not in direct[2]
    assert via_proxy[0] == 403
    assert local[0] == 200 and b"tracker_outbox_due" in local[2]
