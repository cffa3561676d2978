from django.core.management.base import BaseCommand

from reporting.outcomes import follow_up_outcomes_rebuild


class Command(BaseCommand):
    help = (
        "Work out and store again every done follow-up's change from baseline (after a bulk "
        "load or a bulk SQL correction, which the receivers do not see)."
    )

    def handle(self, *args, **options):
        stored = follow_up_outcomes_rebuild()
        self.stdout.write(f"Stored the changes of {stored} done follow-ups.")
