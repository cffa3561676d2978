"""Export one patient, or every patient of a site, as a FHIR R4 Bundle in JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from common.cli import text_argument
from patients.cli import site_from_code
from patients.models import Patient, Site
from reporting.fhir import fhir_bundle_for_patients


class Command(BaseCommand):
    help = "Export a patient (--patient MRN) or a whole site (--site CODE) as a FHIR R4 Bundle."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--patient",
            metavar="MRN",
            help="the patient's MRN; write SITE:MRN (e.g. LDN:123456) if two sites share it",
        )
        which.add_argument("--site", metavar="CODE", help="a site code, e.g. LDN")
        parser.add_argument("--output", metavar="FILE", help="write here (default: stdout)")

    def handle(self, *args, patient=None, site=None, output=None, **options):
        if patient is not None:
            bundle = fhir_bundle_for_patients(patients=self.patient(patient))
        else:
            chosen = site_from_code(site)
            bundle = fhir_bundle_for_patients(
                patients=Patient.objects.filter(site=chosen),
                sites=Site.objects.filter(pk=chosen.pk),
            )
        text = json.dumps(bundle, indent=2, ensure_ascii=False)
        if output:
            try:
                with open(text_argument(output, name="output"), "w", encoding="utf-8") as file:
                    file.write(text + "\n")
            except OSError as error:
                raise CommandError(f"Cannot write {output}: {error.strerror}.") from None
            # On stderr, so that a pipe or redirect of stdout never mixes it into the JSON.
            self.stderr.write(f"Wrote {len(bundle.get('entry', []))} resources to {output}.")
        else:
            self.stdout.write(text)

    def patient(self, mrn: str):
        mrn = text_argument(mrn, name="patient")
        matches = Patient.objects.filter(mrn=mrn)
        if not matches.exists() and ":" in mrn:
            code, _, bare_mrn = mrn.partition(":")
            matches = Patient.objects.filter(site__code=code.upper(), mrn=bare_mrn)
        sites = list(matches.values_list("site__code", flat=True))
        if not sites:
            raise CommandError(f"No patient has the MRN {mrn!r}.")
        # MRNs are unique per site only: exporting both would hand over a stranger's record.
        if len(sites) > 1:
            raise CommandError(
                f"The MRN {mrn!r} is used at {len(sites)} sites ({', '.join(sorted(sites))}); "
                f"give the site too, e.g. --patient {sorted(sites)[0]}:{mrn}."
            )
        return matches
