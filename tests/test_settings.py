"""Settings come from the environment; a missing secret in production refuses to start."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(**env):
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_debug_a_secret_key_is_required():
    result = run_check(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_without_debug_the_message_providers_must_be_chosen():
    result = run_check(DEBUG="0", SECRET_KEY="a-real-secret", EMAIL_URL="", SMS_BACKEND="")
    assert result.returncode != 0 and "EMAIL_URL" in result.stderr
    chosen = run_check(
        DEBUG="0",
        SECRET_KEY="a-real-secret",
        EMAIL_URL="smtp://relay.example:25",
        SMS_BACKEND="twilio",
    )
    assert chosen.returncode == 0, chosen.stderr


def test_debug_runs_on_a_development_key():
    assert run_check(DEBUG="1").returncode == 0


def test_times_are_stored_in_utc():
    assert settings.USE_TZ is True


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set: embedded broker")
def test_the_broker_is_the_configured_redis_and_answers():
    from config.celery import app

    assert app.conf.broker_url == os.environ["REDIS_URL"]
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        assert connection.transport.driver_type == "redis"


@pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="REDIS_URL set: Redis broker")
def test_without_redis_the_broker_needs_no_server():
    from config.celery import app

    assert app.conf.broker_url == "filesystem://"


def test_a_first_run_writes_only_under_var_and_listens_on_this_machine(settings):
    """The embedded broker's folders are all under var/ (git-ignored): none in the working
    tree. `make run` serves on 127.0.0.1 unless BIND_ADDRESS says otherwise."""
    from pathlib import Path

    if settings.CELERY_BROKER_URL == "filesystem://":
        var = str(settings.VAR_DIR)
        folders = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            assert folders[key].startswith(var), key
    procfile = (Path(settings.BASE_DIR) / "Procfile.dev").read_text()
    assert "${BIND_ADDRESS:-127.0.0.1}:$PORT" in procfile and "0.0.0.0" not in procfile


def test_the_web_process_serves_its_own_static_files(settings, client):
    """WhiteNoise, so production needs no proxy rule for /static/: compressed, cached."""
    settings.WHITENOISE_USE_FINDERS = True
    from django.test import Client

    response = Client().get("/static/common/admin.css", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert "max-age" in response["Cache-Control"]


def test_production_runs_web_worker_and_beat_from_one_process_file_and_one_image(settings):
    from pathlib import Path

    root = Path(settings.BASE_DIR)
    roles = {
        line.split(":", 1)[0]
        for line in (root / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert roles == {"release", "web", "worker", "beat"}
    compose = (root / "compose.yaml").read_text()
    for service in ("web:", "worker:", "beat:", "db:", "redis:", "migrate:"):
        assert f"\n  {service}" in compose
    assert "collectstatic" in (root / "Containerfile").read_text()


def test_the_image_installs_a_cjk_font_for_the_chart_and_chinese_pages(settings):
    """The Containerfile's apt-get install brings Noto CJK (its comment naming it is not
    enough): without it the chart and a Chinese-speaking patient's pages draw boxes."""
    import re
    from pathlib import Path

    containerfile = (Path(settings.BASE_DIR) / "Containerfile").read_text()
    instructions = re.sub(r"\\\n", " ", containerfile).splitlines()
    installed = {
        word
        for line in instructions
        if line.startswith("RUN ")
        for command in re.split(r"&&|;", line)
        if re.search(r"\bapt-get\s+install\b", command)
        for word in command.split()
    }
    assert "fonts-noto-cjk" in installed, "the Containerfile installs no CJK font"


def _settings_with(**env) -> str:
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.CELERY_BROKER_URL, getattr(s, 'CELERY_TASK_DEFAULT_QUEUE_TYPE', ''),"
        " s.CELERY_BROKER_TRANSPORT_OPTIONS.get('confirm_publish', False) "
        "if hasattr(s, 'CELERY_BROKER_TRANSPORT_OPTIONS') else False]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "1"} | env,
        capture_output=True,
        text=True,
    )
    return done.stdout + done.stderr


def test_rabbitmq_is_a_choice_with_quorum_queues_and_publisher_confirms():
    out = _settings_with(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//")
    assert '["amqp://guest:guest@127.0.0.1:5672//", "quorum", true]' in out
    # Celery's own convention: a Redis URL there is simply the broker.
    redis = _settings_with(CELERY_BROKER_URL="redis://127.0.0.1:6379/5")
    assert '["redis://127.0.0.1:6379/5", "", false]' in redis


def _manage_with_no_environment(*args):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_fresh_checkout_checks_its_migrations_with_no_environment():
    result = _manage_with_no_environment("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


def test_a_command_without_its_settings_says_what_is_missing_not_a_traceback():
    result = _manage_with_no_environment("migrate")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr
    assert "Traceback" not in result.stderr and "Models aren't loaded" not in result.stderr
