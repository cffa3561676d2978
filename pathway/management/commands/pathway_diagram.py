import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pathway.diagram import pathway_dot

DOCS = Path(settings.BASE_DIR) / "docs"


class Command(BaseCommand):
    help = "Write the pathway diagram to docs/pathway.dot (Graphviz source) and docs/pathway.svg."

    def handle(self, *args, **options):
        source = DOCS / "pathway.dot"
        source.write_text(pathway_dot())
        self.stdout.write(f"Wrote {source}")
        dot = shutil.which("dot")
        if dot is None:
            raise CommandError("Graphviz's `dot` is not installed (apt-get install graphviz).")
        subprocess.run([dot, "-Tsvg", str(source), "-o", str(DOCS / "pathway.svg")], check=True)
        self.stdout.write(f"Rendered {DOCS / 'pathway.svg'}")
