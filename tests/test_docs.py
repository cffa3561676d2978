from pathlib import Path

from pathway.diagram import pathway_mermaid

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_diagram_is_the_codes():
    assert pathway_mermaid() in README.read_text()


def test_the_readme_opens_with_the_two_commands():
    head = README.read_text()[:400]
    assert "make run" in head and "make test" in head
