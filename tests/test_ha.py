"""PostgreSQL high availability, drilled: two PostgreSQL instances under Patroni on a one-node
etcd, with synchronous replication, all of the test's own (tests/clusters.py).

The web server (gunicorn) and the workers reach the primary through a multi-host
DATABASE_URL with target_session_attrs=read-write, and read the heavy pages from the
synchronous standby (DATABASE_REPLICA_URL). In order: the reads that belong on the replica go
there; a replica that lags past the bound, or is down, is passed over for the primary with a
log line, and the figures stay the same; then the primary is SIGKILLed under a stream of
transitions and due reminders, and nothing acknowledged is lost.
"""

import datetime as dt
import re
import time

import pytest

from tests.clusters import DRILL_ENV, Gunicorn, PatroniCluster, copy_database
from tests.ha_drill import (
    REPLICA_READS,
    AdminSession,
    failover_drill,
    prepare_in_process_of_its_own,
)
from tests.servers import RedisServer, SmtpSink, wait_until

# django_db: so that the run sets the test database up (the template is made beside it).
pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

LAG_BOUND_SECONDS = 2  # the drill's DATABASE_REPLICA_MAX_LAG_SECONDS: short, to be waited out


class HA:
    def __init__(self, cluster, plan, redis, web, folder):
        self.cluster, self.plan, self.redis, self.web, self.folder = (
            cluster,
            plan,
            redis,
            web,
            folder,
        )

    def session(self) -> AdminSession:
        session = AdminSession(self.web.url)
        session.log_in(self.plan["admin"]["username"], self.plan["admin"]["password"])
        return session


@pytest.fixture(scope="module")
def ha(drill_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ha")
    cluster = PatroniCluster(log_statements=True)
    redis = RedisServer()
    web = None
    try:
        t0 = time.monotonic()
        cluster.start()
        print(f"\n[timing] cluster {time.monotonic() - t0:.1f}")
        primary, standby = cluster.primary(), cluster.standby()
        copy_database(
            source_port=drill_template["port"],
            source_db=drill_template["name"],
            target_port=primary.pg_port,
            target_db="tracker",
        )
        plan = prepare_in_process_of_its_own(
            database_url=cluster.url("tracker"), clients=3, per_step=2, reminders=400
        )
        print(f"[timing] copied+prepared {time.monotonic() - t0:.1f}")
        redis.start()
        web = Gunicorn(
            DRILL_ENV
            | {
                "DATABASE_URL": cluster.url("tracker"),
                "DATABASE_REPLICA_URL": (
                    f"postgres://postgres@127.0.0.1:{standby.pg_port}/tracker?connect_timeout=2"
                ),
                "DATABASE_REPLICA_MAX_LAG_SECONDS": str(LAG_BOUND_SECONDS),
                "REDIS_URL": redis.url,
            },
            log_dir=folder,
        ).start()
        print(f"[timing] web {time.monotonic() - t0:.1f}")
        yield HA(cluster, plan, redis, web, folder)
    finally:
        if web:
            web.stop()
        redis.stop()
        cluster.stop()


def _read_on(ha, session, path, data=None):
    """Ask for `path`; returns the response and the statements the standby and the primary
    logged meanwhile."""
    primary, standby = ha.cluster.primary(), ha.cluster.standby()
    here, there = len(primary.log_text()), len(standby.log_text())
    status, _, body = session.request(path, data)
    time.sleep(0.3)  # the logging collector writes within moments
    return status, body, standby.log_text()[there:], primary.log_text()[here:]


def _report_path() -> str:
    return "/admin/reports/weekly/"


def test_the_heavy_reads_go_to_the_replica_and_the_rest_to_the_primary(ha):
    session = ha.session()
    patients = ha.plan["patients"][:3]
    entry_points = {
        "weekly report": (_report_path(), None),
        "CSV export": (
            "/admin/patients/patient/",
            [("action", "export_as_csv"), *(("_selected_action", p) for p in patients)],
        ),
        "FHIR export": (
            "/admin/patients/patient/",
            [("action", "export_fhir_bundle"), *(("_selected_action", p) for p in patients)],
        ),
        "calendar feed": (f"/calendar/{ha.plan['calendar_token']}.ics", None),
        "capacity heat map": ("/admin/scheduling/resource/capacity/", None),
    }
    for name, (path, data) in entry_points.items():
        status, body, on_replica, on_primary = _read_on(ha, session, path, data)
        assert status == 200, (name, status, body[:500])
        assert REPLICA_READS[name].search(on_replica), f"{name} did not read the replica"
        if name != "CSV export":  # the changelist the action is posted to reads its rows
            assert not REPLICA_READS[name].search(on_primary), f"{name} read the primary"
    # The report says where it read from, and how far behind that was.
    status, body, _, _ = _read_on(ha, session, _report_path())
    assert b"Read from the reading replica" in body
    # A course page, read right after acting, stays on the primary.
    course = ha.plan["clients"][0][0]["course"]
    status, _, on_replica, _ = _read_on(
        ha, session, f"/admin/pathway/treatmentcourse/{course}/change/"
    )
    assert status == 200
    assert "pathway_treatmentcourse" not in on_replica


def test_a_lagging_or_down_replica_is_passed_over_for_the_primary(ha):
    session = ha.session()
    # This week's report, worked out at each opening: the replica's figures and the
    # primary's are compared.
    year, week, _ = dt.date.today().isocalendar()
    csv = f"{_report_path()}?format=csv&week={year}-W{week:02d}"
    status, from_replica, _, _ = _read_on(ha, session, csv)
    assert status == 200
    primary, standby = ha.cluster.primary(), ha.cluster.standby()

    # Lagging: replay paused (Patroni told to leave it so), the primary writes on, the bound
    # passes.
    ha.cluster.maintenance(True)
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        primary.psql(
            "CREATE TABLE drill_lag (at timestamptz); INSERT INTO drill_lag VALUES (now())"
        )
        time.sleep(LAG_BOUND_SECONDS + 1)
        status, body, on_replica, _ = _read_on(ha, session, _report_path())
        assert status == 200
        assert b"Read from the primary database" in body, re.findall(rb"Read from[^<]*", body)
        assert not REPLICA_READS["weekly report"].search(on_replica)
        assert re.search(
            r"Reading the weekly report from the primary: the replica is \d+ s behind "
            rf"\(bound {LAG_BOUND_SECONDS} s\)",
            ha.web.output(),
        )
        _, lagging_csv, _, _ = _read_on(ha, session, csv)
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
        ha.cluster.maintenance(False)

    # Down: the standby's machine gone.
    standby.kill()
    try:
        status, body, _, _ = _read_on_primary_only(ha, session, _report_path())
        assert status == 200 and b"Read from the primary database" in body
        assert "Reading the weekly report from the primary: the replica is down" in (
            ha.web.output()
        )
        _, down_csv, _, _ = _read_on_primary_only(ha, session, csv)
    finally:
        standby.start()
        wait_until(ha.cluster.synchronous, timeout=120, interval=0.5, what="the standby back")
    # Never wrong or empty figures: the same report wherever it was read.
    assert from_replica == lagging_csv == down_csv
    assert len(from_replica.splitlines()) > len(ha.plan["patients"])  # a row per course


def _read_on_primary_only(ha, session, path):
    """Ask for `path` while the standby is down."""
    status, _, body = session.request(path)
    return status, body, "", ""


def test_the_primary_killed_under_a_stream_of_transitions_and_reminders_loses_nothing(ha):
    with SmtpSink(delay=0.04) as smtp:
        figures = failover_drill(
            cluster=ha.cluster,
            plan=ha.plan,
            web=ha.web,
            broker=ha.redis,
            smtp=smtp,
            folder=ha.folder,
        )
    print(
        "\nfailover drill: {old_primary} killed, {new_primary} primary after "
        "{promoted_after_seconds:.1f} s; steps acknowledged {steps_acknowledged}, lost "
        "{steps_lost}, taken unacknowledged {steps_taken_unacknowledged}; clients waited "
        "{clients_unavailable_seconds} s; reminders {reminders}: lost {reminders_lost}, "
        "duplicated {reminders_duplicated} (bound {duplicate_bound}); web {web_statuses}, "
        "unavailable {web_unavailable_seconds} s; audit chains verify: {audit_verify}".format(
            **figures
        )
    )
    assert figures["client_errors"] == []
    assert figures["new_primary"] != figures["old_primary"]
    assert figures["steps_acknowledged"] + figures["steps_taken_unacknowledged"] == sum(
        len(steps) for steps in ha.plan["clients"]
    )
    assert figures["steps_lost"] == 0
    assert figures["reminders_lost"] == 0
    assert figures["reminders_sent_in_database"] >= figures["reminders"]
    assert figures["reminders_duplicated"] <= figures["duplicate_bound"]
    assert figures["audit_verify"], figures["audit_verify_output"]
    assert "500" not in figures["web_statuses"] and "0" not in figures["web_statuses"]
    assert figures["web_statuses"].get("503", 0) >= 1  # the switch was seen, and said so
    assert figures["web_503_without_retry_after"] == 0
    assert figures["clients_unavailable_seconds"] is not None
