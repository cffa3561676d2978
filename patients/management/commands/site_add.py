"""Add a site, or change one: how a real programme starts without the demo."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from patients.models import Site


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--code", required=True, help="Printed in chain-of-identity ids.")
        parser.add_argument("--name", required=True, help="The name staff know it by.")
        parser.add_argument("--zone", required=True, help="Its time zone, e.g. Europe/London.")
        parser.add_argument(
            "--patient-name", default="", help="The neutral name patients see in messages."
        )
        parser.add_argument("--phone", default="", help="The number patients call (E.164).")

    def handle(self, *args, code, name, zone, patient_name, phone, **options):
        site = Site.objects.filter(code=code).first() or Site(code=code)
        try:
            site.name, site.time_zone = name, zone  # the zone is checked as it is set
            site.patient_facing_name, site.patient_phone = patient_name, phone
            site.full_clean()
        except ValidationError as error:
            raise CommandError(
                "; ".join(error.messages).replace("timezone", "time zone")
            ) from error
        created = site.pk is None
        site.save()
        self.stdout.write(f"{'Added' if created else 'Changed'} {site.name} ({site.code}).")
