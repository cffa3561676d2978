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


# `pathway/services.py: course_release` in docs/rules.md; `pathway/services.py`: `course_release`,
# `_authorise` in the README's tables.
CITED = re.compile(r"`([a-z_]+(?:/[a-z_]+)+\.py)(?:: |`: `)([A-Za-z_][\w.]*)`((?:, `[\w.]+`)*)")


MANUAL = [README, *sorted(DOCS.glob("*.md"))]


def cited_functions():
    for doc in MANUAL:
        for match in CITED.finditer(doc.read_text(encoding="utf-8")):
            names = [match[2], *re.findall(r"`([\w.]+)`", match[3] or "")]
            for name in names:
                yield doc.name, match[1], name


def test_every_function_the_docs_cite_exists_where_they_say():
    cited = list(cited_functions())
    assert len(cited) > 100
    missing = []
    for doc, path, name in cited:
        source = (ROOT / path).read_text(encoding="utf-8")
        last = name.split(".")[-1]
        if not re.search(rf"^\s*(?:def|class) {last}\b|^\s*{last}\b.*=", source, re.MULTILINE):
            missing.append(f"{doc}: {path}: {name}")
    assert missing == []


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """The anchors the forge makes of a Markdown file's headings."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            words = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(words.replace(" ", "-"))
    return found


def test_every_link_and_picture_in_the_manual_is_there():
    broken = []
    for doc in MANUAL:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address or mailto: not followed here
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []


ROLE_GUIDES = ("coordinator", "clinician", "lab", "lead-and-auditor", "patient")


def test_each_roles_guide_walks_its_day_with_pictures_and_the_readme_links_each():
    readme = README.read_text(encoding="utf-8")
    for role in ROLE_GUIDES:
        guide = (DOCS / f"{role}.md").read_text(encoding="utf-8")
        assert re.search(r"!\[[^\]]+\]\(screenshots/[\w-]+\.png\)", guide), role
        assert f"](docs/{role}.md)" in readme, role


def test_the_readme_is_a_front_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 160


def test_each_therapys_diagram_is_the_codes_and_shows_only_its_steps():
    from pathway.diagram import diagram_files
    from pathway.therapies import PATHWAYS

    for name, source in diagram_files().items():
        assert (DOCS / f"{name}.dot").read_text() == source, name
        assert (DOCS / f"{name}.svg").exists(), name
    for therapy, own in PATHWAYS.items():
        drawn = set(re.findall(r'\[label="?(\w+)', (DOCS / f"pathway-{therapy}.dot").read_text()))
        others = {step for p in PATHWAYS.values() if p is not own for step in p.steps}
        assert set(own.steps) <= drawn and not others & drawn, therapy
        assert f"](docs/pathway-{therapy}.svg)" in README.read_text(), therapy
