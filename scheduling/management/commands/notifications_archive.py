"""Move notifications settled longer ago than NOTIFICATION_ARCHIVE_AFTER_DAYS to the archive,
then purge what archived ones hold about patients after NOTIFICATION_PURGE_AFTER_DAYS: what
beat runs every hour, by hand (after a long outage, or to work off a first backlog)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from scheduling.outbox_archive import ARCHIVE_BATCH_SIZE, archive_run


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=ARCHIVE_BATCH_SIZE,
            help="Rows per transaction (default %(default)s).",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="At most this many rows archived, and as many purged (default: all).",
        )

    def handle(self, *args, batch_size, limit, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        run = archive_run(batch_size=batch_size, limit=limit)
        self.stdout.write(
            f"Archived {run.archived} notification(s) settled more than "
            f"{settings.NOTIFICATION_ARCHIVE_AFTER_DAYS} days ago; purged {run.purged} archived "
            f"notification(s) settled more than {settings.NOTIFICATION_PURGE_AFTER_DAYS} days ago."
        )
