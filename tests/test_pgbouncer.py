"""PgBouncer in transaction pooling: the parts of the suite that pooling could break, run
again through a PgBouncer of the test's own.

In transaction pooling each transaction may run on a different server connection, so
anything that outlives a transaction breaks: session advisory locks, server-side cursors kept
across statements, session SETs, prepared statements, LISTEN. The named subset covers every
feature of the tracker that touches one of those: the audit chain's advisory lock, the app
role and the append-only triggers; two connections racing with select_for_update; the
outbox's SKIP LOCKED claims, its outcomes and its archive; real Celery workers delivering;
the admin (sessions, the second factor, history, CSV export, whose `.iterator()` would open a
server-side cursor). The run sets DATABASE_TRANSACTION_POOLING, as production behind
PgBouncer would, and connects every process (the tests, the live server, the workers) to
PgBouncer; its test database is a copy of the migrated template.
"""

import os
import subprocess
import sys
import threading

import pytest

from tests.clusters import PgBouncer, psql
from tests.conftest import APP_ROLE
from tests.servers import ROOT

# django_db: so that the run sets the test database up, whose server the copy is made on.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# What transaction pooling could break, and the tests that use it.
_AUDIT = "tests/test_audit.py::test_"
POOLED_SUBSET = [
    # The hash chain's advisory lock, and walking the chain (an iterator over the table).
    f"{_AUDIT}every_row_follows_the_one_before_it",
    f"{_AUDIT}a_row_changed_behind_the_applications_back_is_named",
    f"{_AUDIT}a_row_removed_behind_the_applications_back_is_named",
    f"{_AUDIT}an_auditor_verifies_the_trail_in_the_admin",
    # The app role refused, and the triggers.
    *(
        f"{_AUDIT}the_application_role_may_not_change_an_append_only_table"
        f"[{statement}-pathway_transitionlog]"
        for statement in ("UPDATE {} SET id = id", "DELETE FROM {}", "TRUNCATE {}")
    ),
    f"{_AUDIT}the_application_role_may_not_lift_a_trigger",
    # select_for_update, ConcurrentTransition, two connections racing.
    "tests/test_concurrency.py",
    # SKIP LOCKED claims, batch outcomes and renewals, the archive racing a writer.
    "tests/test_outbox.py",
    "tests/test_outbox_archive.py",
    # Real Celery workers delivering through Redis, each row once.
    "tests/test_worker.py::test_two_workers_deliver_each_of_1000_rows_exactly_once",
    # The admin: sessions, history, transition forms, CSV export.
    "tests/test_admin.py",
]
POOL_SIZE = 6


def test_the_pooled_subset_passes_through_pgbouncer_in_transaction_mode(drill_template):
    port, user = drill_template["port"], drill_template["user"]
    name = drill_template["name"].removesuffix("_drill_template") + "_pooled"
    test_database = f"test_{name}"  # what pytest-django calls the database of DATABASE_URL
    psql(port, f'DROP DATABASE IF EXISTS "{test_database}" WITH (FORCE)', user=user)
    psql(port, f'CREATE DATABASE "{test_database}" TEMPLATE "{drill_template["name"]}"', user=user)
    peaks = {"clients": 0, "servers": 0}
    try:
        with PgBouncer(server_port=port, pool_size=POOL_SIZE, users=(user, APP_ROLE)) as bouncer:
            stop = threading.Event()

            def watch_pools():
                while not stop.wait(0.5):
                    for pool in bouncer.show("POOLS"):
                        if pool.get("database") == test_database:
                            clients = int(pool["cl_active"]) + int(pool["cl_waiting"])
                            kinds = ("sv_active", "sv_idle", "sv_used")
                            servers = sum(int(pool[k]) for k in kinds if k in pool)
                            peaks["clients"] = max(peaks["clients"], clients)
                            peaks["servers"] = max(peaks["servers"], servers)

            watcher = threading.Thread(target=watch_pools, daemon=True)
            watcher.start()
            env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"} | {
                "DATABASE_URL": f"postgres://{user}@127.0.0.1:{bouncer.port}/{name}",
                "DATABASE_TRANSACTION_POOLING": "1",
            }
            pytest_options = ["--reuse-db", "-q", "-p", "no:cacheprovider"]
            run = subprocess.run(
                [sys.executable, "-m", "pytest", *pytest_options, *POOLED_SUBSET],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            stop.set()
            watcher.join()
            mode = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}["pool_mode"]
            stats = {row["database"]: row for row in bouncer.show("STATS")}[test_database]
    finally:
        psql(port, f'DROP DATABASE IF EXISTS "{test_database}" WITH (FORCE)', user=user)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    transactions = int(stats["total_xact_count"])
    print(
        f"\nPgBouncer ({mode} pooling, {POOL_SIZE} server connections per pool): {summary}; "
        f"{transactions} transactions; at most {peaks['clients']} clients on "
        f"{peaks['servers']} server connections"
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert mode == "transaction"
    assert " passed" in summary and "skipped" not in summary
    assert transactions > 1000  # the suite really went through PgBouncer
    assert peaks["servers"] <= POOL_SIZE
