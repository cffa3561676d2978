"""The outbox archive's measurements for `make bench` (issue 20): the tick once the sent rows
have moved to the archive, the tick while an archive run moves rows beside it, and what a
10,000-row batch costs. Run at the end of bench/run.py's `main()`, on the full-size database.

The bench's retention is 0 days: generate.py's sent rows were sent between now and 300 days
ago, so every one of them has settled past it, as a real outbox's would after its first runs.
"""

import statistics
import threading
import time

BATCH = 10_000  # rows per archive transaction, as beat's runs use


def _vacuum() -> None:
    """Reclaim the space the first move left (VACUUM FULL of the outbox, as the README's
    operations section says to do once after the first archive of an outbox that has grown for
    years), then ANALYZE: 9 million dead rows are what an outbox archived hourly never
    accumulates, and fresh statistics give the claim the plan it has in service."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (FULL, ANALYZE) scheduling_notification, scheduling_deliveryattempt")
        cursor.execute("VACUUM (ANALYZE) scheduling_notificationarchive")


def archive_everything(bench) -> dict:
    """Archive every settled row (the generated sent ones), then time the tick."""
    from scheduling.models import NotificationArchive
    from scheduling.outbox_archive import notifications_archive

    started = time.perf_counter()
    moved = notifications_archive(after_days=0, batch_size=BATCH)
    seconds = time.perf_counter() - started
    _vacuum()
    return {
        "moved": moved,
        "seconds": seconds,
        "seconds_per_batch": seconds / max(1, -(-moved // BATCH)),
        "archive_rows": NotificationArchive.objects.count(),
        **bench.tick_beside_base(),
    }


def tick_during_archiving(bench, *, rows: int) -> dict:
    """Add `rows` more sent rows, then archive them in a thread in 10,000-row batches while
    the main thread times ticks: the median tick during the run, and the idle tick before."""
    from django.db import connection

    from bench import generate
    from scheduling.outbox_archive import notifications_archive

    n = bench.rows["notifications"]
    generate.notifications(
        n + 1,
        n + rows,
        status="sent",
        per_course_visits=bench.sizes["visits_per_course"],
        visits_total=bench.rows["visits"],
    )
    bench.rows["notifications"] += rows
    generate.reset_sequences()
    bench._due(30_000)  # enough for the ticks below: 2,500 rows each
    bench.settle()
    idle = bench.tick()

    outcome = {}

    def archive():
        try:
            started = time.perf_counter()
            outcome["moved"] = notifications_archive(after_days=0, batch_size=BATCH)
            outcome["seconds"] = time.perf_counter() - started
        finally:
            connection.close()

    archiver = threading.Thread(target=archive)
    archiver.start()
    time.sleep(0.2)  # the first batch under way
    ticks = []
    while (archiver.is_alive() and len(ticks) < 10) or not ticks:
        ticks.append(bench.tick())
        time.sleep(0.5)  # spread over the run, not only its first batches
    archiver.join()
    during = statistics.median(ticks)
    return {
        "rows": rows,
        "moved": outcome["moved"],
        "seconds": outcome["seconds"],
        "seconds_per_batch": outcome["seconds"] / max(1, -(-outcome["moved"] // BATCH)),
        "idle_tick": idle,
        "tick_during": during,
        "ticks_measured": len(ticks),
        "ratio": during / idle,
    }


def measure(bench) -> dict:
    """Both measurements: the sent rows archived, then 1,000,000 more (a fiftieth when small)
    archived beside the tick."""
    figures = {"archived": archive_everything(bench)}
    figures["during"] = tick_during_archiving(bench, rows=bench.sizes["pending"])
    return figures


def targets(r: dict) -> list[tuple[str, object, str]]:
    """The rows bench/run.py's `write()` adds to its table."""
    archive = r["archive"]
    return [
        (
            "9. tick full ÷ 10k rows, the sent rows archived (VACUUM FULL once after the move),"
            " timed in turn",
            archive["archived"]["ratio"],
            "≤ 1.2",
        ),
        (
            "9. tick while archiving 1M rows beside it ÷ idle tick",
            archive["during"]["ratio"],
            "≤ 2",
        ),
        ("9. rows in the archive", archive["archived"]["archive_rows"], "reported"),
        (
            "9. archiving, per 10,000-row batch (ms)",
            archive["archived"]["seconds_per_batch"] * 1000,
            "reported",
        ),
    ]
