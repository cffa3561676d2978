"""From an empty database to a real site, with no demo: the first setup's commands."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from patients.access import user_sites
from patients.models import Patient, Site

pytestmark = pytest.mark.django_db


def test_a_real_site_and_its_staff_without_the_demo(capsys):
    call_command(
        "site_add",
        code="NCL",
        name="Newcastle Chest Unit",
        zone="Europe/London",
        patient_name="Newcastle Clinic",
        phone="+441912080000",
    )
    call_command("staff_add", "jdoe", email="jdoe@nhs.example", role="coordinator", site=["NCL"])
    call_command("staff_add", "lead1", email="lead@nhs.example", role="programme lead")
    coordinator = get_user_model().objects.get(username="jdoe")
    assert not coordinator.has_usable_password()  # they choose it
    assert [s.code for s in user_sites(coordinator)] == ["NCL"]
    assert coordinator.has_perm("pathway.schedule_harvest_course")
    assert Site.objects.count() == 1 and not Patient.objects.exists()
    assert "changepassword jdoe" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "args", "kwargs", "says"),
    [
        ("site_add", [], {"code": "X", "name": "X", "zone": "Mars/Olympus"}, "time zone"),
        ("staff_add", ["a"], {"email": "a@x.example", "role": "coordinator"}, "give --site"),
        (
            "staff_add",
            ["a"],
            {"email": "a@x.example", "role": "lab", "site": ["NOPE"]},
            "No site with the code NOPE",
        ),
    ],
)
def test_a_mistake_is_refused_and_writes_nothing(command, args, kwargs, says):
    with pytest.raises(CommandError, match=says):
        call_command(command, *args, **kwargs)
    assert not Site.objects.exists() and not get_user_model().objects.filter(username="a")
