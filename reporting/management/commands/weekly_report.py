from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common.cli import text_argument
from patients.cli import site_from_code
from reporting.weekly_render import report_csv, report_html, report_text
from reporting.weekly_report import previous_week, weekly_report


class Command(BaseCommand):
    help = "Print the weekly status report for any ISO week, one site or all."

    def add_arguments(self, parser):
        parser.add_argument("--week", help="ISO week, e.g. 2026-W48 (default: last week)")
        parser.add_argument("--site", help="site code, e.g. LDN (default: all sites)")
        parser.add_argument("--format", choices=["text", "html", "csv"], default="text")
        parser.add_argument(
            "--recompute",
            action="store_true",
            help="work a closed week's kept figures out again, taking in corrections since",
        )

    def handle(self, *args, week=None, site=None, format="text", recompute=False, **options):
        chosen = site_from_code(site) if site else None
        zone = chosen.time_zone if chosen else ZoneInfo(settings.TIME_ZONE)
        try:
            if week:
                text_argument(week, name="week")
            report = weekly_report(
                week=week or previous_week(timezone.now(), zone), site=chosen, recompute=recompute
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        render = {"text": report_text, "html": report_html, "csv": report_csv}[format]
        self.stdout.write(render(report), ending="")
