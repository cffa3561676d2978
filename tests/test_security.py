"""Login security, production settings, and the audit history."""

import datetime as dt
import os
import subprocess
import sys

import pytest
import time_machine
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from pathway.states import CourseState
from tests.factories import PASSWORD, PatientFactory, UserFactory
from tests.servers import ROOT

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/"


def login(client, username, password):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_repeated_failures_lock_the_account_until_the_cool_off(client, coordinator):
    for _ in range(4):
        assert login(client, "coordinator", "wrong password").status_code == 200
    assert login(client, "coordinator", "wrong password").status_code == 429  # the fifth locks
    locked = login(client, "coordinator", PASSWORD)
    assert locked.status_code in (403, 429)
    assert "_auth_user_id" not in client.session
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=31)):
        assert login(client, "coordinator", PASSWORD).status_code == 302


def test_a_successful_login_works(client, coordinator):
    assert login(client, "coordinator", PASSWORD).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_passwords_need_twelve_characters():
    with pytest.raises(ValidationError, match="at least 12 characters"):
        validate_password("Tr0ub4dor&3")
    validate_password("correct horse battery staple")


def test_a_session_ends_after_15_idle_minutes(client, coordinator):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        client.force_login(coordinator)
        assert client.get("/admin/").status_code == 200
    with time_machine.travel(start + dt.timedelta(minutes=14), tick=False):
        assert client.get("/admin/").status_code == 200  # activity renews the session
    with time_machine.travel(start + dt.timedelta(minutes=14 + 16), tick=False):
        assert client.get("/admin/").status_code == 302


def run_manage(*args, **env):
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT", "OTP_REQUIRED"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k7#Jd93!qLx0Zp2@Vw8Rt5^Yh1&Nm4*Bc6$Gf9%Ue3(Ai7)Os2_Lk",
    "ALLOWED_HOSTS": "tracker.clinic.example",
    "EMAIL_URL": "smtp+tls://relay.clinic.example:587",
    "SMS_BACKEND": "twilio",
}


def test_the_deploy_check_passes_without_warnings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_two_factor_is_on_without_debug_unless_turned_off_by_name():
    code = "from django.conf import settings; print(settings.OTP_REQUIRED)"
    assert run_manage("shell", "-c", code, **PRODUCTION).stdout.strip().endswith("True")
    off = run_manage("shell", "-c", code, **PRODUCTION, OTP_REQUIRED="0")
    assert off.stdout.strip().endswith("False")


def _totp(device):
    from django_otp.oath import totp

    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def test_staff_without_a_device_are_sent_to_set_one_up_and_then_let_in(
    client, coordinator, settings
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from common.second_factor import ENROL_KEY

    settings.OTP_REQUIRED = True
    client.force_login(coordinator)
    response = client.get("/admin/pathway/treatmentcourse/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("second-factor-enrol"))
    page = client.get(response.url)
    assert page.status_code == 200 and "<svg" in page.content.decode()
    assert not TOTPDevice.objects.filter(user=coordinator).exists()  # made only when confirmed
    device = TOTPDevice(user=coordinator, key=client.session[ENROL_KEY])
    assert client.post(reverse("second-factor-enrol"), {"token": "000000"}).status_code == 200
    done = client.post(reverse("second-factor-enrol"), {"token": _totp(device)})
    assert done.status_code == 302
    [confirmed] = TOTPDevice.objects.filter(user=coordinator)
    assert confirmed.confirmed and confirmed.key == device.key
    assert client.get("/admin/pathway/treatmentcourse/").status_code == 200


def test_someone_else_with_the_password_never_sees_the_key_the_user_enrols(
    client, coordinator, settings
):
    from django.test import Client

    from common.second_factor import ENROL_KEY

    settings.OTP_REQUIRED = True
    attacker = Client()
    attacker.force_login(coordinator)
    attacker.get(reverse("second-factor-enrol"))
    client.force_login(coordinator)
    client.get(reverse("second-factor-enrol"))
    assert client.session[ENROL_KEY] != attacker.session[ENROL_KEY]


def test_a_url_prefix_does_not_skip_the_second_factor(client, coordinator, settings):
    settings.OTP_REQUIRED = True
    client.force_login(coordinator)
    response = client.get("/admin/patients/patient/", SCRIPT_NAME="/tracker")
    assert response.status_code == 302 and "second-factor" in response.url


def test_the_code_page_sends_on_only_within_this_site(client, coordinator, settings):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.OTP_REQUIRED = True
    device = TOTPDevice.objects.create(user=coordinator, name="phone", confirmed=True)
    client.force_login(coordinator)
    url = reverse("second-factor-verify") + "?next=https://evil.example/phish"
    response = client.post(url, {"token": _totp(device)})
    assert response.status_code == 302 and response.url == reverse("admin:index")


def test_staff_with_a_device_enter_its_code_after_their_password(client, coordinator, settings):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.OTP_REQUIRED = True
    device = TOTPDevice.objects.create(user=coordinator, name="phone", confirmed=True)
    assert login(client, "coordinator", PASSWORD).status_code == 302
    sent = client.get("/admin/")
    assert sent.status_code == 302 and sent.url.startswith(reverse("second-factor-verify"))
    wrong = client.post(reverse("second-factor-verify"), {"token": "123456"})
    assert "not right" in wrong.content.decode()
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=5)):
        right = client.post(reverse("second-factor-verify"), {"token": _totp(device)})
        assert right.status_code == 302
        assert client.get("/admin/").status_code == 200


def test_every_change_to_a_patient_is_kept_with_who_and_what(client, coordinator):
    patient = PatientFactory(first_name="Ada")
    client.force_login(coordinator)
    url = reverse("admin:patients_patient_change", args=[patient.pk])
    from tests.admin_forms import change_form_data

    data = change_form_data(client.get(url)) | {"first_name": "Adele"}
    assert client.post(url, data).status_code == 302
    latest = patient.history.first()
    assert (latest.first_name, latest.history_user, latest.history_type) == (
        "Adele",
        coordinator,
        "~",
    )
    delta = latest.diff_against(latest.prev_record)
    assert [(c.field, c.old, c.new) for c in delta.changes] == [("first_name", "Ada", "Adele")]


def test_the_auditor_reads_history_and_changes_nothing(client, course, pathway):
    auditor = UserFactory(username="auditor", role="auditor")
    pathway.advance(course, "eligible")
    client.force_login(auditor)
    history = client.get(reverse("admin:pathway_treatmentcourse_history", args=[course.pk]))
    assert history.status_code == 200
    assert course.history.count() >= 3
    assert {h.history_user for h in course.history.exclude(history_type="+")} == {
        pathway.coordinator,
        pathway.clinician,
    }
    page = client.get(reverse("admin:patients_patient_change", args=[course.patient.pk]))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    assert (
        client.post(
            reverse("admin:patients_patient_change", args=[course.patient.pk]), {}
        ).status_code
        == 403
    )


@pytest.mark.parametrize("transition", ["approve", "release", "record_transplant", "withdraw"])
def test_a_user_without_the_steps_permission_cannot_even_open_its_form(client, course, transition):
    auditor = UserFactory(username="auditor2", role="auditor")
    client.force_login(auditor)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, transition])
    assert client.get(url).status_code == 403
    assert client.post(url, {}).status_code == 403


@pytest.mark.parametrize(
    "password", ["aaaaaaaaaaaa", "Coordinator1", "pathway-demo", "coordinator-2026"]
)
def test_weak_passwords_and_the_demos_are_refused(password):
    user = UserFactory.build(username="coordinator", first_name="Ann", last_name="Okafor")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_long_phrase_of_unrelated_words_is_accepted():
    validate_password("ferry lantern quietly orbit", UserFactory.build(username="ann"))


@pytest.mark.django_db
def test_the_deploy_check_names_an_account_with_the_demo_password(settings):
    from common.checks import no_demo_passwords
    from common.passwords import DEMO_PASSWORD

    settings.DEBUG = False
    user = UserFactory(username="leftover")
    assert no_demo_passwords(None) == []
    user.set_password(DEMO_PASSWORD)
    user.save()
    [error] = no_demo_passwords(None)
    assert error.id == "tracker.E001" and "leftover" in error.msg


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/login/",
        "/admin/pathway/treatmentcourse/",
        "/admin/pathway/treatmentcourse/{course}/change/",  # the timeline
        "/admin/pathway/treatmentcourse/{course}/transition/record_transplant/",
        "/admin/pathway/treatmentcourse/{course}/label/",
        "/admin/reports/weekly/",
        "/admin/second-factor/enrol/",
    ],
)
def test_every_page_type_carries_a_content_security_policy_and_a_permissions_policy(
    admin_client, course, pathway, url
):
    pathway.advance(course, CourseState.TRANSPLANT_SCHEDULED)
    response = admin_client.get(url.format(course=course.pk))
    assert response.status_code in (200, 302)  # the signed-in login page sends on
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert "camera=()" in response.headers["Permissions-Policy"]


def test_the_migration_masks_the_signature_passwords_axes_stored_before():
    """Attempts stored before signatures were checked without their form still held the
    second person's password in clear text; the data migration masks every password-like
    value, as axes masks its own."""
    import importlib

    from axes.models import AccessAttempt
    from django.apps import apps

    migration = importlib.import_module("pathway.migrations.0030_signature_passwords_out_of_axes")
    attempt = AccessAttempt.objects.create(
        username="clinician2",
        ip_address="192.0.2.44",
        user_agent="Ward tablet",
        http_accept="*/*",
        path_info="/admin/pathway/treatmentcourse/1/transition/record_transplant/",
        get_data="",
        post_data="csrfmiddlewaretoken=Tok3n\nweight_kg=70\nsecond_person_password=Hunter2-Bedside"
        "\npassword=********************",
        failures_since_start=1,
    )
    migration.mask_stored_secrets(apps, None)
    attempt.refresh_from_db()
    assert "Hunter2-Bedside" not in attempt.post_data and "Tok3n" not in attempt.post_data
    assert "second_person_password=********************" in attempt.post_data
    assert "weight_kg=70" in attempt.post_data  # what is not a secret stays as it was
