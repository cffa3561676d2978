"""Work the all-sites weekly report's figures out again and again, as the bench's load beside
the tick (bench/scaling.py): on the replica when DATABASE_REPLICA_URL is set and fit to read
(common/replica.py), else on the primary. Prints, per pass, where it read; stops on SIGTERM.

    DATABASE_URL=… [DATABASE_REPLICA_URL=…] python bench/report_loop.py 2026-W49
"""

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    week = sys.argv[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from common.replica import replica_reads
    from reporting.weekly_report import weekly_figures

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        with replica_reads(purpose="the bench's report") as source:
            weekly_figures(week=week)
        print(source.alias, flush=True)


if __name__ == "__main__":
    main()
