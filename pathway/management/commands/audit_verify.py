from django.core.management.base import BaseCommand, CommandError

from pathway.audit import audit_verify


class Command(BaseCommand):
    help = "Walk the audit trail's hash chains and name the first broken link."

    def handle(self, *args, **options):
        reports = audit_verify()
        for report in reports:
            verdict = (
                f"intact, head {report.head}"
                if report.intact
                else (f"BROKEN: {report.first_break}")
            )
            self.stdout.write(
                f"{report.table}: {report.rows} rows checked in {report.seconds:.2f} s, {verdict}"
            )
        broken = [r for r in reports if not r.intact]
        if broken:
            raise CommandError("The audit trail has been altered: " + broken[0].first_break)
