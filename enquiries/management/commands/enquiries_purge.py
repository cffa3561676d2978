"""Delete enquiries closed more than ENQUIRY_RETENTION_DAYS ago and never converted into a
patient, with their messages and audit history, keeping their counts for the weekly report:
what beat runs every night, by hand."""

from django.conf import settings
from django.core.management.base import BaseCommand

from enquiries.purge import enquiries_purge


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        deleted = enquiries_purge()
        self.stdout.write(
            f"Deleted {deleted} enquiry(ies) closed more than {settings.ENQUIRY_RETENTION_DAYS} "
            "days ago and never converted; their counts are kept."
        )
