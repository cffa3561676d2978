"""Load a questionnaire's definition (JSON) as an instrument: a licensed one (the CAT, the
SGRQ) under the site's own licence, or one of the clinic's own."""

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from patients.models import Instrument


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("definition", type=Path, help="The definition, as JSON.")
        parser.add_argument("--code", required=True, help="A short name, e.g. cat.")
        parser.add_argument("--name", required=True, help="What the care team calls it.")
        parser.add_argument(
            "--licence", default="", help="Whose licence a licensed instrument is used under."
        )

    def handle(self, *args, definition: Path, code: str, name: str, licence: str, **options):
        try:
            loaded = json.loads(definition.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"{definition} is not a JSON file: {error}") from error
        instrument = Instrument.objects.filter(code=code).first() or Instrument(code=code)
        if instrument.pk and instrument.responses.exists() and instrument.definition != loaded:
            raise CommandError(
                f"{code} has answers already, scored by its definition: load the new one under "
                "a new code."
            )
        instrument.name, instrument.definition, instrument.licence = name, loaded, licence
        try:
            instrument.full_clean()
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        instrument.save()
        self.stdout.write(f"Loaded {name} ({len(loaded['items'])} items) as {code}.")
