"""End-to-end dispatch throughput: tick → Redis → one Celery worker → PostgreSQL, delivering
to the no-op SMS channel. Writes bench/results/dispatch_throughput.{md,json}.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tracker make bench

Runs in its own database (<name>_bench, recreated) and its own redis-server.
"""

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import django
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


COLUMNS = ("worker_processes", "batch_size", "notifications", "seconds", "per_second")


def bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit(
            "bench: set DATABASE_URL to a PostgreSQL server (the numbers mean nothing on SQLite)"
        )
    base, name = url.rsplit("/", 1)
    bench_name = f"{name}_bench"
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
        cursor.execute(f'CREATE DATABASE "{bench_name}"')
    admin.close()
    return f"{base}/{bench_name}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = bench_database_url()
    os.environ.setdefault("SECRET_KEY", "bench-only-key")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from config.celery import app
    from scheduling.models import (
        Channel,
        Notification,
        NotificationStatus,
        NotificationTemplate,
    )
    from scheduling.tasks import dispatch_due_notifications
    from tests.servers import CeleryWorker, RedisServer, wait_until

    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0)
    visit = (
        __import__("scheduling.models", fromlist=["Visit"])
        .Visit.objects.filter(
            status="booked", scheduled_at__gt=timezone.now() + dt.timedelta(hours=1)
        )
        .select_related("course__patient")
        .first()
    )
    rows = []
    for concurrency in (1, 2):
        Notification.objects.all().delete()
        Notification.objects.bulk_create(
            Notification(
                template=NotificationTemplate.VISIT_REMINDER,
                channel=Channel.SMS,
                patient=visit.course.patient,
                visit=visit,
                idempotency_key=f"bench.{concurrency}.{i}",
                send_after=timezone.now() - dt.timedelta(minutes=1),
            )
            for i in range(args.notifications)
        )
        with RedisServer() as redis:
            env = {
                "DATABASE_URL": os.environ["DATABASE_URL"],
                "REDIS_URL": redis.url,
                "SECRET_KEY": "bench-only-key",
                "EMAIL_URL": "consolemail://",
                "DEBUG": "0",
                "SMS_BACKEND": "null",
                "NOTIFICATION_BATCH_SIZE": str(args.batch_size),
                "LOG_LEVEL": "WARNING",
            }
            with CeleryWorker(f"bench{concurrency}", env, concurrency=concurrency):
                started = time.monotonic()
                with app.connection_for_write(redis.url) as broker:
                    dispatch_due_notifications.apply_async(connection=broker)
                wait_until(
                    lambda: (
                        not Notification.objects.exclude(status=NotificationStatus.SENT).exists()
                    ),
                    timeout=600,
                    interval=0.05,
                    what="all sent",
                )
                elapsed = time.monotonic() - started
        rows.append(
            {
                "worker_processes": concurrency,
                "batch_size": args.batch_size,
                "notifications": args.notifications,
                "seconds": round(elapsed, 2),
                "per_second": round(args.notifications / elapsed),
            }
        )
        print(rows[-1])

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "dispatch_throughput.json").write_text(
        json.dumps({"machine": machine, "runs": rows}, indent=2)
    )
    lines = [
        "# Dispatch throughput (no-op SMS channel, end to end)",
        "",
        f"Machine: {machine}",
        "",
        "| worker processes | batch | notifications | seconds | per second |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(str(r[key]) for key in COLUMNS) + " |" for r in rows),
    ]
    (results / "dispatch_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
