"""The backup and restore drill: the demo dumped with pg_dump, restored into a new database
with pg_restore, and every row, every pending reminder and both audit chains found intact."""

import os
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import OWNER
from tests.servers import ROOT

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _counts(cursor) -> dict[str, int]:
    cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    tables = [row[0] for row in cursor.fetchall()]
    counts = {}
    for table in tables:
        cursor.execute(f'SELECT count(*) FROM "{table}"')
        counts[table] = cursor.fetchone()[0]
    cursor.execute("SELECT count(*) FROM scheduling_notification WHERE status = 'pending'")
    counts["pending reminders"] = cursor.fetchone()[0]
    return counts


def test_a_dump_restores_whole(tmp_path):
    call_command("seed_demo")
    settings = connection.settings_dict
    owner = OWNER.get("USER") or settings["USER"]
    where = ["-h", settings["HOST"] or "127.0.0.1", "-p", str(settings["PORT"] or 5432)]
    where += ["-U", owner]
    dump, restored = tmp_path / "tracker.dump", f"restore_drill_{uuid.uuid4().hex[:8]}"
    env = os.environ | {"PGPASSWORD": OWNER.get("PASSWORD") or settings["PASSWORD"] or ""}
    subprocess.run(
        ["pg_dump", *where, "-Fc", "-d", settings["NAME"], "-f", str(dump)], check=True, env=env
    )
    subprocess.run(["createdb", *where, restored], check=True, env=env)
    try:
        subprocess.run(
            ["pg_restore", *where, "--exit-on-error", "-d", restored, str(dump)],
            check=True,
            env=env,
        )
        with connection.cursor() as cursor:
            before = _counts(cursor)
        params = connection.get_connection_params() | {"dbname": restored, "user": owner}
        copy = connection.get_new_connection(params)
        try:
            with copy.cursor() as cursor:
                after = _counts(cursor)
        finally:
            copy.close()
        assert before["scheduling_notification"] > 0 and before["pending reminders"] > 0
        assert before["pathway_transitionlog"] > 0 and before["pathway_custodyevent"] > 0
        assert after == before
        url = f"postgres://{owner}@{where[1]}:{where[3]}/{restored}"
        verified = subprocess.run(
            [sys.executable, "manage.py", "audit_verify"],
            cwd=ROOT,
            env=env | {"DATABASE_URL": url, "DEBUG": "1"},
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.count("intact") == 2
    finally:
        subprocess.run(["dropdb", *where, "--if-exists", restored], env=env, check=False)
