import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pathway.diagram import diagram_files

DOCS = Path(settings.BASE_DIR) / "docs"


class Command(BaseCommand):
    help = (
        "Write the pathway diagrams to docs/ as Graphviz source and SVG: pathway.dot (every "
        "therapy) and pathway-<therapy>.dot for each therapy."
    )

    def handle(self, *args, **options):
        dot = shutil.which("dot")
        for name, text in diagram_files().items():
            source = DOCS / f"{name}.dot"
            source.write_text(text)
            self.stdout.write(f"Wrote {source}")
            if dot is None:
                raise CommandError("Graphviz's `dot` is not installed (apt-get install graphviz).")
            subprocess.run([dot, "-Tsvg", str(source), "-o", str(DOCS / f"{name}.svg")], check=True)
            self.stdout.write(f"Rendered {DOCS / f'{name}.svg'}")
