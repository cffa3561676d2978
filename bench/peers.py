"""The outbox against its peers, side by side in one run (issue 31): the same due reminders to
the same SMTP sink delivered by the outbox, by Celery ETA tasks (one `apply_async(eta=…)` per
reminder, the common way: bench/peer_celery.py) and by procrastinate (a PostgreSQL task
queue: bench/peer_procrastinate.py), each with two worker processes of two: throughput;
worker memory with reminders scheduled in the future; and what each loses when one of its two
workers is SIGKILLed mid-delivery and started again.

All three send the same words (delivery/messages.py) to the same aiosmtpd sink. The peers'
task is one reminder per task on an SMTP connection of its own, as such tasks are written;
the outbox claims a batch, renders and sends it on one SMTP session and writes outcomes in
groups. The reminders are email reminders for visits still ahead, so none is cancelled.
"""

import os
import subprocess
import time
import uuid
from pathlib import Path

from tests.servers import CeleryWorker, RedisServer, SmtpSink, wait_until

ROOT = Path(__file__).resolve().parent.parent
PROCESSES, CONCURRENCY = 2, 2
# procrastinate runs in a virtualenv of its own (requirements-peers.txt: it needs psycopg 3).
PEERS_PYTHON = ROOT / "var" / "peers-venv" / "bin" / "python"
PROCRASTINATE = [str(PEERS_PYTHON), "-m", "procrastinate", "--app=bench.peer_procrastinate.app"]


def _reminders(bench, count: int, *, due: bool) -> str:
    """`count` email reminders, due now or a day ahead, for visits still planned and ahead;
    returns their idempotency keys' prefix."""
    from bench import generate

    bench._due(0)  # nothing else due
    prefix = f"peer.{uuid.uuid4().hex[:6]}."
    when = "now() - interval '1 minute'" if due else "now() + interval '1 day'"
    generate.reminders_ahead(count, channel="email", prefix=prefix, send_after=when)
    return prefix


def _unsettled(prefix: str) -> int:
    from scheduling.models import Notification

    return Notification.objects.filter(
        idempotency_key__startswith=prefix, status__in=("pending", "sending")
    ).count()


def _ids(prefix: str) -> list[int]:
    from scheduling.models import Notification

    return list(
        Notification.objects.filter(idempotency_key__startswith=prefix).values_list("pk", flat=True)
    )


def _sent(prefix: str) -> int:
    from scheduling.models import Notification

    return Notification.objects.filter(idempotency_key__startswith=prefix, status="sent").count()


def _clear(prefix: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE scheduling_notification SET status = 'cancelled' "
            "WHERE idempotency_key LIKE %s AND status IN ('pending', 'sending')",
            [prefix + "%"],
        )


# Each peer: start its workers, hand it the reminders, and say how to count.


class Outbox:
    name = "outbox"

    def __init__(self, bench, smtp, folder):
        self.bench, self.smtp, self.folder = bench, smtp, folder
        self.redis = RedisServer().start()

    def env(self):
        return self.bench._worker_env(batch=100) | {
            "REDIS_URL": self.redis.url,
            "EMAIL_URL": self.smtp.url,
            "NOTIFICATION_CLAIM_TIMEOUT": "10",
        }

    def worker(self, index):
        return CeleryWorker(f"outbox{index}", self.env(), CONCURRENCY, self.folder)

    def schedule(self, prefix, *, eta):  # the rows are the schedule
        pass

    def nudge(self):
        """What beat does every minute (here every second)."""
        from tests.servers import tick

        tick(self.redis)

    def stop(self):
        self.redis.stop()


class CeleryEta(Outbox):
    name = "Celery ETA tasks"

    def worker(self, index):
        return CeleryWorker(
            f"eta{index}", self.env(), CONCURRENCY, self.folder, app="bench.peer_celery"
        )

    def schedule(self, prefix, *, eta):
        from bench.peer_celery import app, send_reminder

        with app.connection_for_write(self.redis.url) as broker, broker.Producer() as producer:
            for pk in _ids(prefix):
                send_reminder.apply_async(args=[pk], eta=eta, producer=producer)

    def nudge(self):
        pass


class Procrastinate(Outbox):
    name = "procrastinate"

    def __init__(self, bench, smtp, folder):
        super().__init__(bench, smtp, folder)
        self.dsn = self._dsn()
        done = subprocess.run(
            [*PROCRASTINATE, "schema", "--apply"],
            cwd=ROOT,
            env=os.environ | self.env(),
            capture_output=True,
            text=True,
        )
        if done.returncode and "already exists" not in done.stderr:
            raise RuntimeError(done.stderr[-2000:])
        self.workers = []

    def _dsn(self):
        from django.db import connection

        db = connection.settings_dict
        return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"

    def env(self):
        return super().env() | {"PROCRASTINATE_DSN": self.dsn}

    def worker(self, index):
        return ProcrastinateWorker(f"proc{index}", self.env(), self.folder)

    def schedule(self, prefix, *, eta):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
                SELECT 'default', 'send_reminder', jsonb_build_object('notification_id', id), %s
                FROM scheduling_notification WHERE idempotency_key LIKE %s
                """,
                [eta, prefix + "%"],
            )

    def nudge(self):
        pass

    def stop(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM procrastinate_jobs")
        super().stop()


class ProcrastinateWorker(CeleryWorker):
    """`procrastinate worker` as its own process group (the CeleryWorker helpers' shape)."""

    def __init__(self, name, env, log_dir):
        super().__init__(name, env, CONCURRENCY, log_dir)

    def start(self, *, wait: bool = True):
        self.log_path = self.log_dir / f"worker-{self.name}-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*PROCRASTINATE, "--verbose", "worker", "--concurrency", str(CONCURRENCY)],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        # The bench's workers log at WARNING, so procrastinate's own "Starting worker" (INFO)
        # is not written: its command line's "Launching a worker" is, once the app has loaded.
        # The reminders fall due seconds later, and a worker still connecting then is timed.
        wait_until(
            lambda: "Launching a worker" in self.output() or "Starting worker" in self.output(),
            timeout=60,
            what=f"worker {self.name}",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited: {self.output()[-2000:]}")
        return self


PEERS = (Outbox, CeleryEta, Procrastinate)


def _start(peer) -> list:
    workers = [peer.worker(i) for i in range(PROCESSES)]
    for worker in workers:
        worker.start(wait=False)
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:  # none is left running, holding the bench's database
            worker.stop()
        raise
    return workers


def throughput(bench, peer, count: int) -> dict:
    """`count` reminders due at once: from the moment they are due to the last one sent."""
    import datetime as dt

    from django.utils import timezone

    prefix = _reminders(bench, count, due=False)
    eta = timezone.now() + dt.timedelta(seconds=30 if count > 5_000 else 10)
    workers = _start(peer)
    try:
        peer.schedule(prefix, eta=eta)  # ETA tasks reach the workers' memory beforehand
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE scheduling_notification SET send_after = %s WHERE idempotency_key LIKE %s",
                [eta, prefix + "%"],
            )
        while timezone.now() < eta:
            time.sleep(0.05)
        started = time.perf_counter()
        deadline = started + 1800
        while _unsettled(prefix) and time.perf_counter() < deadline:
            peer.nudge()
            time.sleep(0.5)
        seconds = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.stop()
    _clear(prefix)
    return {"reminders": count, "seconds": seconds, "per_second": _sent(prefix) / seconds}


def memory(bench, peer, future: int) -> dict:
    """Both workers' resident memory with nothing scheduled, then with `future` reminders
    scheduled a day ahead (for Celery, once the workers hold every ETA message)."""
    import datetime as dt

    from django.utils import timezone

    from bench.run import worker_rss_mb

    def rss(workers):
        return sum(worker_rss_mb(w.process.pid) for w in workers)

    workers = _start(peer)
    try:
        time.sleep(3)
        without = rss(workers)
    finally:
        for worker in workers:
            worker.stop()
    prefix = _reminders(bench, future, due=False)
    started = time.perf_counter()
    peer.schedule(prefix, eta=timezone.now() + dt.timedelta(days=1))
    scheduled_seconds = time.perf_counter() - started
    workers = _start(peer)
    try:
        if isinstance(peer, CeleryEta):
            # Until the broker's queue is empty: every message is in a worker's memory.
            wait_until(
                lambda: int(peer.redis.command("LLEN", "celery").split(b"\r\n")[0][1:] or 0) == 0,
                timeout=1800,
                interval=2,
                what="the ETA messages taken",
            )
        time.sleep(5)
        with_future = rss(workers)
    finally:
        for worker in workers:
            worker.stop()
    _clear(prefix)
    return {
        "future": future,
        "rss_mb_without": without,
        "rss_mb_with": with_future,
        "ratio": with_future / without,
        "scheduling_seconds": scheduled_seconds,
    }


def kill_drill(bench, peer, count: int) -> dict:
    """`count` due; once a fifth are sent, one of the two workers is SIGKILLed and started
    again; then a minute for everything to arrive. Lost: never reached the sink."""
    import datetime as dt

    from django.utils import timezone

    prefix = _reminders(bench, count, due=False)
    eta = timezone.now() + dt.timedelta(seconds=5)
    peer.smtp.messages.clear()
    workers = _start(peer)
    try:
        peer.schedule(prefix, eta=eta)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE scheduling_notification SET send_after = %s WHERE idempotency_key LIKE %s",
                [eta, prefix + "%"],
            )

        def progress():
            peer.nudge()
            return _sent(prefix) >= count // 5

        wait_until(progress, timeout=300, interval=0.5, what="a fifth sent")
        workers[0].kill()
        workers[0] = peer.worker(9).start()
        deadline = time.monotonic() + 60
        last, still = -1, time.monotonic()
        while time.monotonic() < deadline and _sent(prefix) < count:
            peer.nudge()
            time.sleep(1)
            now_sent = _sent(prefix)
            if now_sent != last:
                last, still = now_sent, time.monotonic()
            elif time.monotonic() - still > 20:
                break  # nothing moves any more
    finally:
        for worker in workers:
            worker.stop()
    from scheduling.models import Notification

    keys = {
        f"<{key}@pathway-tracker>"
        for key in Notification.objects.filter(idempotency_key__startswith=prefix).values_list(
            "idempotency_key", flat=True
        )
    }
    received = peer.smtp.message_ids()
    mine = {k: n for k, n in received.items() if k in keys}
    _clear(prefix)
    return {
        "due": count,
        "lost": len(keys - set(mine)),
        "duplicated": sum(n - 1 for n in mine.values()),
    }


def measure(bench, *, small: bool) -> dict:
    count = 2_000 if small else 100_000
    future = 20_000 if small else 1_000_000
    eta_future = 20_000 if small else 200_000
    drill = 300 if small else 3_000
    folder = ROOT / "var" / "bench-peers"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    with SmtpSink() as smtp:
        for kind in PEERS:
            peer = kind(bench, smtp, folder)
            try:
                smtp.messages.clear()
                figures[peer.name] = {
                    "throughput": throughput(bench, peer, count),
                    "memory": memory(
                        bench, peer, eta_future if isinstance(peer, CeleryEta) else future
                    ),
                    "kill": kill_drill(bench, peer, drill),
                }
            finally:
                peer.stop()
    return figures


def targets(r: dict) -> list[tuple[str, object, str]]:
    peers = r["peers"]
    outbox = peers["outbox"]
    rows = []
    for name, figures in peers.items():
        t, m, k = figures["throughput"], figures["memory"], figures["kill"]
        rows += [
            (
                f"14. {name}: {t['reminders']:,} due reminders to the SMTP sink (per second)",
                t["per_second"],
                "reported" if name == "outbox" else "the outbox's is higher",
            ),
            (
                f"14. {name}: worker memory with {m['future']:,} in the future ÷ with none",
                m["ratio"],
                "≤ 1.1" if name == "outbox" else "reported",
            ),
            (
                f"14. {name}: a worker SIGKILLed mid-delivery of {k['due']:,}: lost, duplicated",
                f"{k['lost']}, {k['duplicated']}",
                "0, within the bound" if name == "outbox" else "reported",
            ),
        ]
    for name, figures in peers.items():
        if name != "outbox":
            rows.append(
                (
                    f"14. outbox throughput ÷ {name}",
                    outbox["throughput"]["per_second"] / figures["throughput"]["per_second"],
                    "> 1",
                )
            )
    return rows
