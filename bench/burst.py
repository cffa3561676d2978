"""The 08:00 burst (issue 31): texts held back by quiet hours fall due at once, and leave at
the provider's pace. Here they are all due at once, from one sending number, to a Twilio
stand-in that caps that number as a provider does and refuses what comes faster
(tests/servers.py: TwilioStub); the workers pace themselves on the shared token bucket
(delivery/pacing.py). Reported: how long the burst took against the ideal n ÷ rate, and how
many the provider refused, lost or got twice.
"""

import time

from tests.servers import CeleryWorker, RedisServer, SmtpSink, TwilioStub, tick

PROCESSES, CONCURRENCY = 2, 4  # pool processes wait for their slots: more of them than cores


def _texts_due(bench, count: int) -> None:
    """`count` SMS reminders due now, for visits still planned and ahead."""
    from bench import generate

    bench._due(0)
    generate.reminders_ahead(
        count, channel="sms", prefix="burst.", send_after="now() - interval '1 minute'"
    )


def measure(bench, *, small: bool) -> dict:
    from django.db import connection

    count, rate = (1_000, 100.0) if small else (50_000, 250.0)
    _texts_due(bench, count)
    with RedisServer() as redis, SmtpSink() as smtp, TwilioStub(per_second=rate) as provider:
        env = (
            bench._worker_env(batch=100)
            | provider.settings()
            | {
                "REDIS_URL": redis.url,
                "EMAIL_URL": smtp.url,
                "LOG_LEVEL": "WARNING",
            }
        )
        workers = [CeleryWorker(f"burst{i}", env, CONCURRENCY) for i in range(PROCESSES)]
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        started = time.monotonic()
        try:
            deadline = started + 20 * count / rate + 120
            while time.monotonic() < deadline:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM scheduling_notification "
                        "WHERE idempotency_key LIKE 'burst.%%' AND status IN ('pending', 'sending')"
                    )
                    if not cursor.fetchone()[0]:
                        break
                tick(redis)
                time.sleep(1)
            seconds = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
        bodies = [m.get("To", "") + m.get("Body", "") for m in provider.received]
        span = provider.arrivals[-1] - provider.arrivals[0] if provider.arrivals else 0.0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM scheduling_notification "
            "WHERE idempotency_key LIKE 'burst.%%' GROUP BY status"
        )
        statuses = dict(cursor.fetchall())
    ideal = count / rate
    return {
        "texts": count,
        "per_second_allowed": rate,
        "seconds": seconds,
        "first_to_last_seconds": span,
        "ideal_seconds": ideal,
        "ratio": seconds / ideal,
        "refused_by_provider": provider.refused_for_pace,
        "received": len(bodies),
        "statuses": statuses,
        "lost": count - statuses.get("sent", 0) - statuses.get("cancelled", 0),
        "duplicated": len(bodies) - statuses.get("sent", 0),
    }


def targets(r: dict) -> list[tuple[str, object, str]]:
    b = r["burst"]
    return [
        (
            f"15. {b['texts']:,} texts due at once from one number at "
            f"{b['per_second_allowed']:g}/s: seconds ÷ the ideal n ÷ rate",
            b["ratio"],
            "reported (1 is the provider's pace)",
        ),
        (
            "15. the burst: refused by the provider, lost, sent twice",
            f"{b['refused_by_provider']}, {b['lost']}, {b['duplicated']}",
            "0, 0, 0",
        ),
    ]
