"""Celery ETA tasks as the outbox's peer (bench/peers.py): one `apply_async(eta=…)` per
reminder, the common way, run by `celery -A bench.peer_celery worker`."""

from config.celery import app


@app.task(name="bench.send_reminder", ignore_result=True)
def send_reminder(notification_id: int) -> None:
    from bench.peer_tasks import reminder_send_one  # once Django has set up

    reminder_send_one(notification_id)
