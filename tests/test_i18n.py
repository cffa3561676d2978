"""Patients read everything in their own language: English, Spanish or Simplified Chinese."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation

ROOT = Path(__file__).resolve().parent.parent
CATALOGUES = sorted(ROOT.glob("*/locale/*/LC_MESSAGES/django.po"))
SHIPPED = {"es", "zh_Hans"}


def _entries(path: Path):
    """(msgid, msgstr, fuzzy) of each entry but the header."""
    for block in path.read_text().split("\n\n"):
        if "msgid " not in block:
            continue
        msgid = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', block.split("msgstr")[0]))
        msgstr = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', block.split("msgstr")[1]))
        if msgid:
            yield msgid, msgstr, "#, fuzzy" in block


def test_every_shipped_language_has_its_catalogues():
    assert {path.parts[-3] for path in CATALOGUES} == SHIPPED
    assert {code for code, _ in settings.LANGUAGES} == {"en", "es", "zh-hans"}


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: "/".join(p.parts[-5:-2]))
def test_every_patient_facing_string_is_translated(path):
    untranslated = [msgid for msgid, msgstr, fuzzy in _entries(path) if not msgstr or fuzzy]
    assert untranslated == []
    placeholders = re.compile(r"%\(\w+\)s")
    for msgid, msgstr, _ in _entries(path):
        assert sorted(placeholders.findall(msgid)) == sorted(placeholders.findall(msgstr)), msgid
    assert path.with_suffix(".mo").stat().st_mtime >= path.stat().st_mtime - 1, "compilemessages"


def test_the_catalogues_hold_every_marked_string(tmp_path):
    """makemessages finds nothing new: a string marked but not in the catalogues fails."""
    import shutil
    import subprocess
    import sys

    for app in ("delivery", "scheduling", "enquiries"):
        copy = tmp_path / app
        shutil.copytree(ROOT / app, copy, ignore=shutil.ignore_patterns("__pycache__"))
        made = subprocess.run(
            # manage.py, not -m django: the app's own modules (selectors.py) must not shadow
            # the standard library's from the working directory.
            [sys.executable, str(ROOT / "manage.py"), "makemessages", "-l", "es", "--no-obsolete"],
            cwd=copy,
            capture_output=True,
            text=True,
            env={
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "PYTHONPATH": str(ROOT),
                "DEBUG": "1",
                "PATH": "/usr/bin:/bin",
            },
        )
        assert made.returncode == 0, made.stderr
        fresh = {m for m, _, _ in _entries(copy / "locale/es/LC_MESSAGES/django.po")}
        kept = {m for m, _, _ in _entries(ROOT / app / "locale/es/LC_MESSAGES/django.po")}
        assert fresh - kept == set(), f"{app}: run makemessages and translate"


@pytest.mark.parametrize(
    ("language", "expected"),
    [("es", "Gracias: su cita está confirmada."), ("zh-hans", "谢谢：您的预约已确认。")],
)
def test_the_catalogues_are_used(language, expected):
    with translation.override(language):
        assert translation.gettext("Thank you: your appointment is confirmed.") == expected


@pytest.fixture
def reminder(course, pathway):
    import datetime as dt

    from django.utils import timezone

    from pathway import services
    from pathway.states import CourseState
    from scheduling.models import Channel, Notification

    patient = course.patient
    patient.phone, patient.consent_sms = "+447700900123", True
    patient.save(update_fields=["phone", "consent_sms"])
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=10),
        place="Endoscopy",
    )
    return Notification.objects.filter(channel=Channel.SMS).first()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", ["reminder", "Confirm or ask for another time"]),
        ("es", ["Recordatorio", "procedimiento breve con sedación", " de "]),
        ("zh-hans", ["提醒", "镇静", "年", "月"]),
    ],
)
def test_a_reminder_is_written_in_the_patients_language(reminder, language, words):
    from delivery.messages import notification_message

    patient = reminder.patient
    patient.preferred_language = language
    patient.save(update_fields=["preferred_language"])
    text = notification_message(reminder).text
    assert all(word in text for word in words), text
    assert "GMT" in text or "BST" in text


@pytest.mark.django_db
def test_the_page_behind_the_link_is_in_the_patients_language(client, reminder):
    from scheduling.visit_links import visit_link_issue

    patient = reminder.patient
    patient.preferred_language = "zh-hans"
    patient.save(update_fields=["preferred_language"])
    page = client.get(f"/v/{visit_link_issue(visit=reminder.visit)}/").content.decode()
    assert "我会来" in page and '<html lang="zh-hans">' in page
