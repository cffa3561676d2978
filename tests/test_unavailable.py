"""A database that cannot be reached (a failover under way) is a 503 with Retry-After, in
words, never a 500; the next request finds the database again (common/unavailable.py). The
connection is really lost here: the server ends it, as a primary's death would."""

import pytest
from django import db
from django.db import connection, transaction
from django.test import Client, RequestFactory

from common.unavailable import RETRY_AFTER_SECONDS, database_unavailable, server_error
from reporting.calendar_feed import calendar_feed_token_issue
from tests.conftest import owner_connection
from tests.factories import SiteFactory, UserFactory

pytestmark = pytest.mark.postgres


def _connection_lost():
    """The server ends this thread's connection, from another connection."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    raw = owner_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        raw.commit()
    finally:
        raw.close()


def _said_unavailable(response):
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert b"cannot reach its database just now" in response.content


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_view_that_loses_the_database_answers_503_and_the_next_request_works():
    site = SiteFactory()
    token = calendar_feed_token_issue(user=UserFactory(role="coordinator"), site=site)
    client = Client()
    _connection_lost()
    _said_unavailable(client.get(f"/calendar/{token}.ics"))  # the view's first query fails
    assert client.get(f"/calendar/{token}.ics").status_code == 200


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_middleware_that_loses_the_database_answers_503_too():
    """A signed-in user's session is read by middleware, before any view: handler500 says
    the same as the middleware, because the error is a lost database."""
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory(role="coordinator"))
    _connection_lost()
    _said_unavailable(client.get("/admin/"))
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_only_an_unreachable_or_read_only_database_counts():
    with (
        pytest.raises(db.InternalError) as read_only,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute("INSERT INTO pathway_protocol (name) VALUES ('x')")
    assert database_unavailable(read_only.value)  # a server that is no longer the primary
    assert database_unavailable(db.OperationalError("server closed the connection"))
    assert database_unavailable(db.InterfaceError("connection already closed"))
    assert not database_unavailable(db.IntegrityError("duplicate key"))
    assert not database_unavailable(ValueError("a bug"))


def test_any_other_error_is_still_a_500():
    request = RequestFactory().get("/admin/")
    try:
        raise ValueError("a bug")
    except ValueError:
        response = server_error(request)
    assert response.status_code == 500
