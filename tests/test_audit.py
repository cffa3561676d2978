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
from tests.conftest import APP_ROLE, OWNER, owner_connection

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


def _append_only_tables():
    import django

    django.setup()
    from common.db_roles import append_only_tables

    return append_only_tables()


# Every append-only table: the transition log, the chain of custody and each audit history.
APPEND_ONLY = _append_only_tables()


@pytest.mark.postgres
# In the test's own transaction: the refusal needs no other connection, and each case is then
# a savepoint rolled back, not a whole database emptied and restored (2 s a case).
@pytest.mark.django_db
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


# An enquiry's history holds a person's health answers, and the privacy purge must take it once
# the enquiry is gone: the owner's SECURITY DEFINER function deletes it (enquiries/purge.py),
# so it has no owner's trigger. The application role still may not change it (the test above).
OWNER_REFUSED = [table for table in APPEND_ONLY if table != "enquiries_historicalenquiry"]


@pytest.mark.postgres
@pytest.mark.parametrize("statement", ["UPDATE {} SET id = id", "DELETE FROM {}", "TRUNCATE {}"])
def test_even_the_owner_is_refused_by_the_triggers(followed, statement):
    """Every append-only table, on the owner's connection (which sees only committed rows,
    hence one transactional test per statement, each table's attempt rolled back)."""
    raw = owner_connection()
    outcomes = {}
    try:
        for table in OWNER_REFUSED:
            sql = statement
            if table.split("_", 1)[1] in ("transitionlog", "custodyevent") and sql.startswith(
                "UPDATE"
            ):
                sql = "UPDATE {} SET note = note"
            with raw.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {table}")
                if not cursor.fetchone()[0] and not sql.startswith("TRUNCATE"):
                    # A row trigger has no row to fire on here: it must at least be there.
                    cursor.execute(
                        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass "
                        "AND tgname LIKE '%%append_only'",
                        [table],
                    )
                    outcomes[table] = (
                        "append-only trigger" if cursor.fetchone()[0] == 1 else "no trigger"
                    )
                    continue
                try:
                    cursor.execute(sql.format(table))
                    outcomes[table] = "allowed"
                except Exception as error:  # the driver's own: a raw connection
                    outcomes[table] = str(error)
                finally:
                    raw.rollback()
    finally:
        raw.rollback()
        raw.close()
    assert set(outcomes) == set(OWNER_REFUSED)
    refused = {table: "append-only" in outcome for table, outcome in outcomes.items()}
    assert refused == dict.fromkeys(OWNER_REFUSED, True), outcomes


def test_an_auditor_verifies_the_trail_in_the_admin(client, followed):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="auditor3", role="auditor"))
    listed = client.get(reverse("admin:pathway_transitionlog_changelist")).content.decode()
    assert reverse("admin:pathway_audit_verify") in listed  # the auditor's way there
    page = client.get(reverse("admin:pathway_audit_verify"))
    assert page.status_code == 200
    assert "pathway_transitionlog" in page.content.decode() and "intact" in page.content.decode()
    for other in (UserFactory(username="nobody"), UserFactory(username="c2", role="coordinator")):
        client.force_login(other)
        assert client.get(reverse("admin:pathway_audit_verify")).status_code == 403
        listed = client.get(reverse("admin:pathway_transitionlog_changelist")).content.decode()
        assert reverse("admin:pathway_audit_verify") not in listed


@pytest.mark.postgres
def test_one_command_makes_the_owner_and_the_application_roles(followed):
    """`manage.py db_roles`, run as a superuser: the owner owns every table; the application
    role reads and writes ordinary tables, and only reads and adds to the append-only ones."""
    _manage(
        "db_roles",
        "--owner",
        "tt_owner",
        "--app",
        "tt_app",
        DB_OWNER_PASSWORD="owner-secret-for-the-test",
        DB_APP_PASSWORD="app-secret-for-the-test",
    )
    params = connection.get_connection_params()
    app = connection.get_new_connection(params | {"user": "tt_app", "password": ""})
    try:
        with app.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pathway_transitionlog")
            assert cursor.fetchone()[0] > 0
            cursor.execute("UPDATE scheduling_visit SET place = place")  # an ordinary table
            with pytest.raises(Exception, match="permission denied"):
                cursor.execute("UPDATE pathway_transitionlog SET note = note")
        app.rollback()
    finally:
        app.close()
    owner = connection.get_new_connection(params | {"user": "tt_owner", "password": ""})
    try:
        with owner.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                "AND tableowner <> 'tt_owner'"
            )
            assert cursor.fetchone()[0] == 0
    finally:
        owner.close()


@pytest.mark.postgres
def test_a_migration_takes_back_any_grant_to_change_an_append_only_table(followed):
    """Default privileges give a role UPDATE and DELETE on every table made later, history
    tables included; each migrate takes them back from everyone but the owner."""
    raw = owner_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute(f"GRANT UPDATE, DELETE ON pathway_historicalbatch TO {APP_ROLE}")
        raw.commit()
    finally:
        raw.close()
    _manage("migrate", "--noinput")  # as the owner, nothing left to apply: post_migrate runs
    with (
        pytest.raises(DatabaseError, match="permission denied"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM pathway_historicalbatch")


def _manage(*args, **env):
    """`manage.py` in a subprocess, on the test database, as its owner (a superuser here)."""
    import os
    import subprocess
    import sys

    from tests.servers import ROOT

    settings = connection.settings_dict
    owner = OWNER.get("USER") or "postgres"
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ
        | {"DATABASE_URL": f"postgres://{owner}@{host}:{port}/{settings['NAME']}"}
        | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.postgres
def test_a_row_slipped_in_with_an_id_of_its_choosing_takes_the_next_id_instead(followed):
    last = TransitionLog.objects.order_by("-id").first()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pathway_transitionlog (id, course_id, transition, source_state, "
            "target_state, by_id, at, note, data, entry_hash, previous_hash) "
            "SELECT 9000000000000000, course_id, transition, source_state, target_state, by_id, "
            "at, note, data, '', '' FROM pathway_transitionlog WHERE id = %s RETURNING id",
            [last.pk],
        )
        slipped = cursor.fetchone()[0]
    assert last.pk < slipped < 9000000000000000
