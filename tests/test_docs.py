import re
from pathlib import Path

from pathway.diagram import pathway_dot
from pathway.models import TRANSITIONS, TreatmentCourse

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_the_committed_diagram_source_is_the_codes():
    # Regenerate with `manage.py pathway_diagram` when the transitions change.
    assert (DOCS / "pathway.dot").read_text() == pathway_dot()


def test_the_diagram_draws_every_transition_of_the_code():
    code = {
        t.name
        for t in TreatmentCourse._meta.get_field("state").get_all_transitions(TreatmentCourse)
    }
    assert code == {name for name, _ in TRANSITIONS}
    source = (DOCS / "pathway.dot").read_text()
    drawn = set(re.findall(r'\[label="?(\w+)', source))
    assert code <= drawn


def test_the_rendered_diagram_shows_every_transition_and_the_readme_shows_it():
    svg = (DOCS / "pathway.svg").read_text()
    for name, _ in TRANSITIONS:
        assert f">{name}" in svg, name
    assert "](docs/pathway.svg)" in README.read_text()


def test_the_readme_opens_with_the_two_commands():
    head = README.read_text()[:400]
    assert "make run" in head and "make test" in head
