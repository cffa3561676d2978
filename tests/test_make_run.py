"""`make run` on a fresh clone, as a newcomer types it: it says when it is ready, and the
admin and a patient's page then answer."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"Ready: (http://\S+/admin/)")
# The clone gets its packages from this checkout's virtualenv: the install is what a fresh
# machine spends its first minutes on, not what this test is about.
VENV = Path(sys.prefix)


def test_make_run_on_a_fresh_clone_says_when_it_is_ready(tmp_path):
    if not (VENV / ".installed").exists():
        pytest.fail(f"No installed virtualenv at {VENV}: run make install first.")
    clone = tmp_path / "tracker"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG")
    } | {"PORT": str(port)}
    started = time.monotonic()
    run = subprocess.Popen(
        ["make", "run", f"VENV={VENV}", f"PORT={port}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    said, url = [], None
    try:
        deadline = started + 300
        while url is None and time.monotonic() < deadline and run.poll() is None:
            line = run.stdout.readline()
            said.append(line)
            found = READY.search(line)
            url = found.group(1) if found else None
        seconds = time.monotonic() - started
        assert url, "no ready line:\n" + "".join(said[-40:])
        assert url == f"http://localhost:{port}/admin/"
        assert "coordinator" in said[-1] and "pathway-demo" in said[-1]
        with urllib.request.urlopen(f"{url}login/", timeout=10) as login:
            assert login.status == 200
        print(f"make run was ready in {seconds:.0f} s")
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # Nothing was installed by hand: the clone's own .venv was never made.
    assert not (clone / ".venv").exists()


@pytest.mark.django_db
def test_the_demo_opens_a_patients_page_in_two_clicks(client, settings):
    import io

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("seed_demo", stdout=io.StringIO())
    client.force_login(get_user_model().objects.get(username="coordinator"))
    settings.DEBUG = False
    assert client.get("/admin/demo/patient-links/").status_code == 404  # never in production
    settings.DEBUG = True
    page = client.get("/admin/demo/patient-links/").content.decode()
    assert "Open as the patient" in page
    upcoming = re.findall(r'name="visit" value="(\d+)"', page)
    opened = client.post("/admin/demo/patient-links/", {"visit": upcoming[0]})
    assert opened.status_code == 302 and opened["Location"].startswith("/v/")
    patient_page = client.get(opened["Location"])
    assert patient_page.status_code == 200
    assert client.post("/admin/demo/patient-links/", {"visit": "x"}).status_code == 404
    # The check-ins the worker's beat opens are there too, each opening its questions.
    from pathway.checkins import checkins_tick

    assert checkins_tick()["opened"]
    page = client.get("/admin/demo/patient-links/").content.decode()
    open_checkins = re.findall(r'name="invitation" value="(\d+)"', page)
    assert open_checkins, "no open check-in on the demo's page"
    opened = client.post("/admin/demo/patient-links/", {"invitation": open_checkins[0]})
    assert opened.status_code == 302 and opened["Location"].startswith("/q/")
    assert client.get(opened["Location"]).status_code == 200
    assert client.post("/admin/demo/patient-links/", {"invitation": "x"}).status_code == 404
    # The admin's index leads there in the demo, and not outside it.
    assert "/admin/demo/patient-links/" in client.get("/admin/").content.decode()
    settings.DEBUG = False
    assert "/admin/demo/patient-links/" not in client.get("/admin/").content.decode()
