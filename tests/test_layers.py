"""The house has floors: each app imports only the apps on floors below its own.

Admin modules may look up, as Django's admin always does (they show what every floor holds),
and migrations are Django's history, not code that runs in a request. `config/` wires the
floors together and stands above them all.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOORS = {
    "common": 0,
    "patients": 1,
    "scheduling": 2,
    "pathway": 3,
    "enquiries": 4,
    "reporting": 5,
    "delivery": 6,
}


def imported_apps(source: str) -> set[str]:
    """The project apps a module's source imports, at any depth in the module."""
    apps = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        apps.update(name.split(".")[0] for name in names if name.split(".")[0] in FLOORS)
    return apps


def may_look_up(path: Path) -> bool:
    """Admin modules and migrations are exempt from the floors."""
    return "migrations" in path.parts or path.stem == "admin" or path.stem.startswith("admin_")


def back_imports(root: Path = ROOT) -> list[str]:
    """Every import of an app on a higher floor than the importing module's own."""
    found = []
    for app, floor in FLOORS.items():
        for path in sorted((root / app).rglob("*.py")):
            if may_look_up(path.relative_to(root)):
                continue
            for imported in sorted(imported_apps(path.read_text(encoding="utf-8"))):
                if FLOORS[imported] > floor:
                    found.append(
                        f"{path.relative_to(root)} (floor {floor}) imports {imported} "
                        f"(floor {FLOORS[imported]})"
                    )
    return found


def test_every_app_imports_only_the_floors_below_it():
    assert back_imports() == []


def test_every_app_of_the_project_has_a_floor():
    apps = {p.parent.name for p in ROOT.glob("*/apps.py")}
    assert apps == set(FLOORS)


@pytest.mark.parametrize(
    "line",
    [
        "from pathway.models import TreatmentCourse",
        "import pathway.services",
        "from pathway import services",
        "def f():\n    from delivery.outbox import notifications_claim",
    ],
)
def test_a_back_import_is_found(tmp_path, line):
    """The check itself: a scheduling module that imports a higher floor fails it."""
    for app in FLOORS:
        (tmp_path / app).mkdir()
    (tmp_path / "scheduling" / "rules.py").write_text(f"import datetime\n{line}\n")
    (tmp_path / "scheduling" / "admin.py").write_text("from delivery.outbox import x\n")
    (tmp_path / "pathway" / "services.py").write_text("from scheduling import services\n")
    found = back_imports(tmp_path)
    assert len(found) == 1
    assert found[0].startswith("scheduling/rules.py (floor 2) imports")


@pytest.mark.django_db
def test_beat_runs_only_tasks_the_workers_know_by_those_names():
    """Moving a task's module must not orphan beat's rows, which name tasks by string."""
    from django_celery_beat.models import PeriodicTask

    from config.celery import app

    app.loader.import_default_modules()
    scheduled = set(PeriodicTask.objects.values_list("task", flat=True))
    assert scheduled >= {
        "scheduling.tasks.dispatch_due_notifications",
        "scheduling.tasks.scan_overdue",
        "scheduling.tasks.queue_weekly_reports",
    }
    assert scheduled <= set(app.tasks)
