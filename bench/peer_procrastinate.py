"""procrastinate (a PostgreSQL task queue) as the outbox's peer (bench/peers.py), run by
`procrastinate --app=bench.peer_procrastinate.app worker`. Its jobs live in the bench's
database (`procrastinate schema --apply`); the worker polls them and LISTENs for new ones."""

import os

import django
import procrastinate

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.db import close_old_connections  # noqa: E402

from bench.peer_tasks import reminder_send_one  # noqa: E402

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["PROCRASTINATE_DSN"])
)


@app.task(name="send_reminder")
def send_reminder(notification_id: int) -> None:
    try:
        reminder_send_one(notification_id)
    finally:
        close_old_connections()
