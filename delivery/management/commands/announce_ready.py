"""`make run`'s last word: once the admin answers, one line with where it is, who to log in
as, and where the patients' links are. It then waits, so that honcho keeps the others up."""

import time
import urllib.error
import urllib.request

from django.core.management.base import BaseCommand

from common.passwords import DEMO_PASSWORD
from pathway.management.commands.seed_demo import SITES
from patients.models import Site

DEMO_USERS = ("coordinator", "clinician", "clinician2", "lab", "lab2", "lead", "auditor", "admin")


class Command(BaseCommand):
    help = "Wait until the admin answers at --url, say so in one line, then wait."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", required=True, help="The admin to wait for, e.g. http://127.0.0.1:8000/admin/"
        )
        parser.add_argument(
            "--show", help="The admin's address to print, if not --url (SITE_URL's)."
        )
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait at most.")
        parser.add_argument("--once", action="store_true", help="Exit after the line (tests).")

    def handle(self, *args, url, show, timeout, once, **options):
        deadline = time.monotonic() + timeout
        while not self._answers(f"{url.rstrip('/')}/login/"):
            if time.monotonic() > deadline:
                self.stderr.write(f"The admin did not answer at {url} within {timeout:.0f} s.")
                raise SystemExit(1)
            time.sleep(0.5)
        self.stdout.write(self.style.SUCCESS(self._ready_line(show or url)))
        self.stdout.flush()
        while not once:
            time.sleep(3600)

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _ready_line(url: str) -> str:
        if not Site.objects.filter(code=SITES[0][1]).exists():
            return f"Ready: {url} (no demo data: log in as the superuser you made)."
        links = f"{url.rstrip('/')}/demo/patient-links/"
        return (
            f"Ready: {url} — log in as {', '.join(DEMO_USERS)}, password {DEMO_PASSWORD}. "
            f"Patients' links print in the worker's output; open one in two clicks at {links}"
        )
