"""The audit trail cannot be rewritten unseen: append-only tables refuse UPDATE, DELETE and
TRUNCATE, the audit history tables too, and a hash chain names the first row changed even by
the database's owner with the guards switched off."""

import itertools

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from pathway.audit import audit_verify
from pathway.models import CustodyEvent, TransitionLog
from pathway.states import CourseState
from tests.conftest import APP_ROLE, owner_connection

# Transactional: a change "behind the application's back" is made on another connection (the
# database owner's), which sees only committed rows.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def followed(course, pathway):
    return pathway.advance(course, CourseState.FOLLOW_UP)


def _report(table):
    return next(r for r in audit_verify() if r.table == table)


def test_every_row_follows_the_one_before_it(followed):
    logs = list(TransitionLog.objects.order_by("id"))
    assert logs[0].previous_hash == "" and all(len(log.entry_hash) == 64 for log in logs)
    assert all(b.previous_hash == a.entry_hash for a, b in itertools.pairwise(logs))
    reports = audit_verify()
    assert all(r.intact for r in reports)
    assert {r.table: r.rows for r in reports} == {
        "pathway_transitionlog": TransitionLog.objects.count(),
        "pathway_custodyevent": CustodyEvent.objects.count(),
    }


def _with_guards_off(sql, params):
    """What the database's owner could do: lift the triggers, change a row, put them back.
    (The application's role can do none of it.)"""
    table = sql.split()[1] if sql.startswith("UPDATE") else sql.split()[2]
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    raw = owner_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            cursor.execute(sql, params)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys, checked now
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        raw.commit()
    finally:
        raw.close()


def test_a_row_changed_behind_the_applications_back_is_named(followed):
    release = TransitionLog.objects.get(course=followed, transition="release")
    _with_guards_off(
        "UPDATE pathway_transitionlog SET note = 'signed by someone else' WHERE id = %s",
        [release.pk],
    )
    report = _report("pathway_transitionlog")
    assert report.first_break == (
        f"pathway_transitionlog row {release.pk} was changed after it was written."
    )
    with pytest.raises(CommandError, match=f"row {release.pk} was changed"):
        call_command("audit_verify", stdout=open("/dev/null", "w"))  # noqa: SIM115


def test_a_row_removed_behind_the_applications_back_is_named(followed):
    events = list(CustodyEvent.objects.order_by("id"))
    removed, next_one = events[2], events[3]
    _with_guards_off("DELETE FROM pathway_custodyevent WHERE id = %s", [removed.pk])
    assert _report("pathway_custodyevent").first_break == (
        f"pathway_custodyevent row {next_one.pk} does not follow the row before it: "
        "a row was removed, added or reordered."
    )


APPEND_ONLY = [
    "pathway_transitionlog",
    "pathway_custodyevent",
    "pathway_historicaltreatmentcourse",
    "pathway_historicalbatch",
    "patients_historicalpatient",
    "patients_historicallungfunctiontest",
    "scheduling_historicalvisit",
]


@pytest.mark.postgres
@pytest.mark.parametrize("table", APPEND_ONLY)
@pytest.mark.parametrize("statement", ["UPDATE {} SET id = id", "DELETE FROM {}", "TRUNCATE {}"])
def test_the_application_role_may_not_change_an_append_only_table(followed, table, statement):
    assert connection.settings_dict["USER"] == APP_ROLE  # the tests run as the application
    with (
        pytest.raises(DatabaseError, match="permission denied"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(table))


@pytest.mark.postgres
def test_the_application_role_may_not_lift_a_trigger(followed):
    with (
        pytest.raises(DatabaseError, match=r"must be (the )?owner"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("ALTER TABLE pathway_transitionlog DISABLE TRIGGER USER")


@pytest.mark.postgres
@pytest.mark.parametrize("table", APPEND_ONLY)
@pytest.mark.parametrize("statement", ["UPDATE {} SET id = id", "DELETE FROM {}", "TRUNCATE {}"])
def test_even_the_owner_is_refused_by_the_triggers(followed, table, statement):
    if table.split("_", 1)[1] in ("transitionlog", "custodyevent") and statement.startswith(
        "UPDATE"
    ):
        statement = "UPDATE {} SET note = note"
    raw = owner_connection()
    try:
        with pytest.raises(Exception, match="append-only"), raw.cursor() as cursor:
            cursor.execute(statement.format(table))
    finally:
        raw.rollback()
        raw.close()


def test_an_auditor_verifies_the_trail_in_the_admin(client, followed):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="auditor3", role="auditor"))
    page = client.get(reverse("admin:pathway_audit_verify"))
    assert page.status_code == 200
    assert "pathway_transitionlog" in page.content.decode() and "intact" in page.content.decode()
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.get(reverse("admin:pathway_audit_verify")).status_code == 403
