"""The scaling-out drills of issue 31 at the bench's size, on servers of the bench's own
(tests/clusters.py): the Patroni failover with 10,000 due reminders, the tick on the primary
while the all-sites report runs on the replica, a RabbitMQ cluster losing nodes with 10,000
due, and delivery through PgBouncer beside delivery straight to PostgreSQL. `--small` runs
each at a twentieth or so.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The programme written to the Patroni cluster for the replica's measurement: full-size
# courses and visits, and a million notifications (the outbox's size is target 1's business).
CLUSTER_PROGRAMME = {"patients": 100_000, "pending": 200_000, "sent": 800_000}
PROGRAMME_DATABASE = "programme"


def _cluster_connection(url: str):
    """A Django connection to the cluster's database, to run the bench's own functions on
    (`run.using`)."""
    import environ
    from django.db import connections

    main = connections["default"]
    settings = dict(main.settings_dict) | environ.Env.db_url_config(url)
    return type(main)(settings, "default")


def replica_tick(bench_cls, cluster, *, small: bool, week: str) -> dict:
    """The tick (claim and mark 500) on the primary: idle, while the all-sites report is
    worked out over and over on the replica, and while it is on the primary itself."""
    from bench.run import TICK, using

    sizes = {k: v // 50 if small else v for k, v in CLUSTER_PROGRAMME.items()}
    programme = bench_cls({"visits_per_course": 10, **sizes})
    wrapper = _cluster_connection(cluster.url(PROGRAMME_DATABASE))
    try:
        with using(wrapper):
            generated = programme.grow(**sizes)
            programme._due(TICK * 40)
            idle = programme.tick(repeat=9)
        figures = {"programme": sizes, "generate_seconds": generated, "idle_tick": idle}
        standby = cluster.standby()
        replica_url = (
            f"postgres://postgres@127.0.0.1:{standby.pg_port}/{PROGRAMME_DATABASE}"
            "?connect_timeout=2"
        )
        for where, extra in (
            ("replica", {"DATABASE_REPLICA_URL": replica_url}),
            ("primary", {}),
        ):
            loop = _report_loop(cluster.url(PROGRAMME_DATABASE), week, extra)
            try:
                time.sleep(3)  # the report well under way
                with using(wrapper):
                    figures[f"tick_report_on_{where}"] = programme.tick(repeat=9)
            finally:
                passes = _stop(loop)
            figures[f"report_passes_on_{where}"] = passes
        with using(wrapper):
            programme._due(0)  # what the ticks left due is marked sent: the drill's alone
    finally:
        wrapper.close()
    figures["ratio_replica"] = figures["tick_report_on_replica"] / idle
    figures["ratio_primary"] = figures["tick_report_on_primary"] / idle
    return figures


def _report_loop(database_url: str, week: str, extra: dict) -> subprocess.Popen:
    from tests.clusters import DRILL_ENV

    clean = {k: v for k, v in os.environ.items() if k not in DRILL_ENV}
    return subprocess.Popen(
        [sys.executable, "bench/report_loop.py", week],
        cwd=ROOT,
        env=clean | DRILL_ENV | {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"} | extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(loop: subprocess.Popen) -> dict:
    loop.send_signal(signal.SIGTERM)
    out, err = loop.communicate(timeout=120)
    if loop.returncode:
        raise RuntimeError(f"report loop: {err[-2000:]}")
    lines = out.split()
    return {alias: lines.count(alias) for alias in set(lines)}


def failover_and_replica(bench_cls, *, small: bool, week: str, folder: Path) -> dict:
    """One Patroni cluster: the replica's effect on the tick, then the failover drill."""
    from tests.clusters import DRILL_ENV, Gunicorn, PatroniCluster, manage
    from tests.ha_drill import failover_drill, prepare_in_process_of_its_own
    from tests.servers import RedisServer, SmtpSink

    reminders = 500 if small else 10_000
    with PatroniCluster() as cluster:
        # The programme the replica is timed on is generated in SQL, its audit chain's hashes
        # placeholders: it has a database of its own, and the failover drill's ("tracker")
        # holds only what the drill's clients and workers wrote, whose chains must verify.
        for name in (PROGRAMME_DATABASE, "tracker"):
            cluster.primary().psql(f'CREATE DATABASE "{name}"')
            migrated = manage("migrate", "--noinput", env={"DATABASE_URL": cluster.url(name)})
            if migrated.returncode:
                raise RuntimeError(migrated.stderr[-3000:])
        figures = {"replica": replica_tick(bench_cls, cluster, small=small, week=week)}
        plan = prepare_in_process_of_its_own(
            database_url=cluster.url("tracker"),
            clients=3 if small else 4,
            per_step=2 if small else 4,
            reminders=reminders,
        )
        with RedisServer() as redis, SmtpSink(delay=0.02 if small else 0) as smtp:
            web = Gunicorn(
                DRILL_ENV | {"DATABASE_URL": cluster.url("tracker"), "REDIS_URL": redis.url},
                log_dir=folder,
            )
            with web:
                figures["failover"] = failover_drill(
                    cluster=cluster, plan=plan, web=web, broker=redis, smtp=smtp, folder=folder
                )
    return figures


def rabbitmq_cluster(bench, *, small: bool, folder: Path) -> dict:
    """10,000 due on the bench's database, two workers on a RabbitMQ cluster of three: a node
    they are not on SIGKILLed, then theirs, each restarted."""
    from django.db import connection

    from tests.clusters import RabbitCluster
    from tests.servers import CeleryWorker, SmtpSink, tick, wait_until

    due = 500 if small else 10_000
    bench._due(due)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key, channel = 'email' FROM scheduling_notification "
            "WHERE status = 'pending' AND send_after <= now()"
        )
        rows = cursor.fetchall()
    keys = [key for key, _ in rows]
    emails = {key for key, is_email in rows if is_email}  # the texts go to the no-op channel

    def sent():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM scheduling_notification WHERE idempotency_key = ANY(%s) "
                "AND status IN ('sent', 'cancelled', 'failed')",
                [keys],
            )
            return cursor.fetchone()[0]

    def deliver_for(rabbit, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and sent() < len(keys):
            tick(rabbit)
            time.sleep(1)

    started = time.monotonic()
    with RabbitCluster() as rabbit, SmtpSink(delay=0.01 if small else 0.002) as smtp:
        env = (
            bench._worker_env(batch=100)
            | rabbit.worker_env()
            | {
                "EMAIL_URL": smtp.url,
                "NOTIFICATION_CLAIM_TIMEOUT": "10",
            }
        )
        env.pop("REDIS_URL", None)
        workers = [CeleryWorker(f"bq{i}", env, log_dir=folder) for i in range(2)]
        try:
            for worker in workers:
                worker.start(wait=False)
            for worker in workers:
                worker.wait_ready()
            delivery_started = time.monotonic()
            tick(rabbit)
            wait_until(lambda: sent() >= len(keys) // 10, timeout=120, what="delivery under way")
            members = rabbit.queue_members()
            first = rabbit.connected_nodes()
            spare = next(n for n in rabbit.nodes if n not in first)
            spare.kill()
            deliver_for(rabbit, 2)
            spare.start().wait_booted()
            [theirs] = list(rabbit.connected_nodes() or first)[:1]
            theirs.kill()
            deliver_for(rabbit, 2)
            theirs.start().wait_booted()
            deliver_for(rabbit, 600)
            delivery_seconds = time.monotonic() - delivery_started
            alive = all(w.process.poll() is None for w in workers)
        finally:
            for worker in workers:
                worker.stop()
        received = smtp.message_ids()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key FROM scheduling_notification "
            "WHERE idempotency_key = ANY(%s) AND status = 'sent'",
            [keys],
        )
        sent_keys = {row[0] for row in cursor.fetchall()}
    expected = {f"<{key}@pathway-tracker>" for key in sent_keys & emails}
    return {
        "due": len(keys),
        "emails_sent": len(expected),
        "settled": sent(),
        "quorum_members": members,
        "lost": len(expected - set(received)) if expected else None,
        "duplicated": sum(n - 1 for n in received.values()),
        "workers_alive": alive,
        "seconds": delivery_seconds,
        "total_seconds": time.monotonic() - started,
    }


def pgbouncer_delivery(bench, *, small: bool) -> dict:
    """Delivery end to end (2 worker processes, the no-op channels) straight to PostgreSQL and
    through PgBouncer in transaction pooling with 4 server connections, one after the other."""
    from django.db import connection

    from config.celery import app
    from delivery.tasks import dispatch_due_notifications
    from tests.clusters import PgBouncer
    from tests.servers import CeleryWorker, RedisServer, wait_until

    count = 1_000 if small else 10_000

    def all_sent():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM scheduling_notification "
                "WHERE status IN ('pending', 'sending') AND send_after <= now())"
            )
            return cursor.fetchone()[0]

    figures = {}
    db = connection.settings_dict
    with PgBouncer(server_port=int(db["PORT"] or 5432), pool_size=4, users=(db["USER"],)) as pgb:
        for name, url_port, extra in (
            ("direct", db["PORT"] or 5432, {}),
            ("pgbouncer", pgb.port, {"DATABASE_TRANSACTION_POOLING": "1"}),
        ):
            bench._due(count)
            env = bench._worker_env(batch=100) | extra
            env["DATABASE_URL"] = f"postgres://{db['USER']}@127.0.0.1:{url_port}/{db['NAME']}"
            with RedisServer() as redis:
                env["REDIS_URL"] = redis.url
                with CeleryWorker(f"pgb-{name}", env, concurrency=2):
                    started = time.perf_counter()
                    with app.connection_for_write(redis.url) as broker:
                        dispatch_due_notifications.apply_async(connection=broker)
                    wait_until(all_sent, timeout=600, interval=0.05, what="all due sent")
                    figures[name] = count / (time.perf_counter() - started)
        stats = {row["database"]: row for row in pgb.show("STATS")}.get(db["NAME"], {})
    figures["pgbouncer_transactions"] = int(stats.get("total_xact_count", 0))
    figures["ratio"] = figures["pgbouncer"] / figures["direct"]
    return figures


def measure(bench, *, small: bool, week: str) -> dict:
    from bench.run import Bench

    folder = ROOT / "var" / "bench-scaling"
    folder.mkdir(parents=True, exist_ok=True)
    figures = failover_and_replica(Bench, small=small, week=week, folder=folder)
    figures["pgbouncer"] = pgbouncer_delivery(bench, small=small)
    figures["rabbitmq"] = rabbitmq_cluster(bench, small=small, folder=folder)
    return figures


def targets(r: dict) -> list[tuple[str, object, str]]:
    s = r["scaling"]
    f, replica, mq, pgb = s["failover"], s["replica"], s["rabbitmq"], s["pgbouncer"]
    return [
        (
            f"10. failover: primary SIGKILLed with {f['reminders']} reminders due and "
            f"{f['steps_acknowledged'] + f['steps_taken_unacknowledged']} transitions streaming: "
            "acknowledged transitions lost",
            f["steps_lost"],
            "0",
        ),
        ("10. failover: reminders lost", f["reminders_lost"], "0"),
        (
            "10. failover: reminders sent twice (bound: 10 per pool process)",
            f"{f['reminders_duplicated']} (≤ {f['duplicate_bound']})",
            "within the bound",
        ),
        ("10. failover: audit hash chains verify", f["audit_verify"], "yes"),
        (
            "10. failover: seconds to a new primary (Patroni ttl 10 s)",
            f["promoted_after_seconds"],
            "reported",
        ),
        (
            "10. failover: seconds the clients could not write",
            f["clients_unavailable_seconds"],
            "reported",
        ),
        (
            "10. failover: seconds the web answered 503 (with Retry-After), and 500s",
            f"{f['web_unavailable_seconds']:.1f}, {f['web_statuses'].get('500', 0)}",
            "reported, 0",
        ),
        (
            "11. tick while the all-sites report runs on the replica ÷ idle tick",
            replica["ratio_replica"],
            "reported (≤ 3)",
        ),
        (
            "11. tick while the all-sites report runs on the primary ÷ idle tick",
            replica["ratio_primary"],
            "(for reference)",
        ),
        (
            "12. RabbitMQ cluster: a node killed, then the workers': lost, duplicated",
            f"{mq['lost']}, {mq['duplicated']}",
            "0, within the bound",
        ),
        ("12. RabbitMQ cluster: workers reconnected by themselves", mq["workers_alive"], "yes"),
        (
            "13. delivery through PgBouncer (transaction pooling, 4 server connections) ÷ straight",
            pgb["ratio"],
            "reported",
        ),
    ]
