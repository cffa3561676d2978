"""Load, as staff use it (issue 31): bench/locustfile.py through gunicorn at 10, 25 and 50
concurrent users, on a copy of the 10k-row state and on the full-size database, one after the
other: requests per second and p50/p95/p99 per page, errors, and each page's p95 at full size
÷ its p95 at 10k rows. The worklist's query count is the changelists' business (bench/run.py).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERS = (10, 25, 50)


def _staff_sessions(per_role: int = 50) -> dict:
    """Signed-in sessions for staff of each role at every site, made as a login makes them."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore

    from patients.models import Site

    sites = list(Site.objects.all())
    sessions = {}
    for role in ("coordinator", "clinician", "lab"):
        user, _ = get_user_model().objects.get_or_create(
            username=f"bench-{role}", defaults={"is_staff": True}
        )
        user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=role))
        for site in sites:
            site.members.add(user)
        sessions[role] = []
        for _ in range(per_role):
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            sessions[role].append(store.session_key)
    return sessions


def load_plan(path: Path, *, users: int) -> None:
    """What the simulated staff use, from the database the server reads."""
    from pathway.models import TreatmentCourse
    from pathway.states import HOLDABLE_STATES

    courses = list(TreatmentCourse.objects.order_by("?").values_list("pk", flat=True)[:500])
    holdable = list(
        TreatmentCourse.objects.filter(state__in=HOLDABLE_STATES)
        .order_by("pk")
        .values_list("pk", flat=True)[: users * 2]
    )
    mrns = list(TreatmentCourse.objects.order_by("?").values_list("patient__mrn", flat=True)[:200])
    plan = {
        "sessions": _staff_sessions(),
        "courses": courses,
        "holdable_courses": holdable,
        "mrns": mrns,
    }
    path.write_text(json.dumps(plan))


def _run_locust(url: str, plan: Path, users: int, seconds: int, prefix: Path) -> dict:
    options = ["--headless", "--only-summary", "-u", str(users), "-r", str(users)]
    options += ["-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--loglevel", "WARNING"]
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), *options],
        cwd=ROOT,
        env={**os.environ, "LOCUST_PLAN": str(plan)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust: {done.stderr[-2000:]}")
    pages = {}
    with stats.open() as file:
        for row in csv.DictReader(file):
            pages[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "per_second": float(row["Requests/s"]),
                "p50": float(row["50%"]),
                "p95": float(row["95%"]),
                "p99": float(row["99%"]),
            }
    return pages


def measure_on(database_url: str, *, label: str, seconds: int, folder: Path) -> dict:
    """The scenario at each number of users against gunicorn on `database_url`."""
    from tests.clusters import DRILL_ENV, Gunicorn

    plan = folder / f"plan-{label}.json"
    load_plan(plan, users=max(USERS))
    figures = {}
    env = DRILL_ENV | {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    with Gunicorn(env | {"GUNICORN_ACCESS_LOG": "/dev/null"}, workers=2, log_dir=folder) as web:
        _run_locust(web.url, plan, 5, 5, folder / f"warm-{label}")  # pages read in
        for users in USERS:
            figures[users] = _run_locust(web.url, plan, users, seconds, folder / f"{label}-{users}")
    return figures


def compare(base: dict, full: dict) -> dict:
    """Each page's p95 at full size ÷ at 10k rows, per number of users; errors in all."""
    ratios, errors = {}, 0
    for users, pages in full.items():
        for page, figures in pages.items():
            errors += figures["failures"] + base[users].get(page, {}).get("failures", 0)
            if page == "Aggregated" or page not in base[users]:
                continue
            ratios[f"{page} @{users}"] = figures["p95"] / max(base[users][page]["p95"], 1.0)
    return {"p95_ratios": ratios, "errors": errors, "worst": max(ratios.values(), default=None)}
