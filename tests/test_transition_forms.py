"""Transition forms show who and what is being decided, and every time names its zone."""

import datetime as dt

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from pathway.states import CourseState

pytestmark = pytest.mark.django_db


def _form(client, course, name):
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, name])
    return url, client.get(url).content.decode()


def test_every_form_names_the_patient_to_match_and_no_stray_none(client, course, pathway):
    pathway.advance(course, CourseState.ELIGIBLE)
    client.force_login(pathway.coordinator)
    _, page = _form(client, course, "schedule_harvest")
    patient = course.patient
    assert patient.last_name.upper() in page and patient.mrn in page
    assert f"{patient.date_of_birth:%-d %b %Y}" in page
    assert "<p>None</p>" not in page
    assert "Europe/London, GMT now" in page or "Europe/London, BST now" in page


def test_approve_shows_the_eligibility_checklist(client, course, pathway):
    pathway.advance(course, CourseState.EVALUATION)
    client.force_login(pathway.clinician)
    _, page = _form(client, course, "approve")
    assert "eligibility-checklist" in page and "FEV1" in page


def test_release_shows_the_results_being_signed(client, course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    with time_machine.travel(pathway.at(31), tick=False):
        pathway.record_qc(course, viable_cells=303_000_000)
        client.force_login(pathway.lab2)
        _, page = _form(client, course, "release")
    assert "QC results being signed" in page
    assert "303 × 10⁶" in page and "303000000" not in page
    assert "Every result meets the specification." in page
    assert "QC entered by lab" in page


def test_release_shows_what_will_be_refused_before_anyone_signs(client, course, pathway):
    pathway.advance(course, CourseState.EXPANDING)
    with time_machine.travel(pathway.at(31), tick=False):
        pathway.record_qc(course, sterility_negative=False)
        client.force_login(pathway.lab2)
        _, page = _form(client, course, "release")
    assert "The release will be refused:" in page and "sterility" in page.lower()


def test_the_transplant_form_shows_the_product_and_the_dose_range(client, course, pathway):
    pathway.advance(course, CourseState.TRANSPLANT_SCHEDULED)
    client.force_login(pathway.clinician)
    _, page = _form(client, course, "record_transplant")
    assert "The product to give" in page and "400 × 10⁶" in page
    assert 'id="dose-per-kg"' in page and "pathway/transition.js" in page


def test_a_refused_form_opens_on_the_first_field_to_correct(client, course, pathway):
    pathway.advance(course, CourseState.EVALUATION)
    client.force_login(pathway.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "decline"])
    page = client.post(url, {"reason": ""}).content.decode()
    assert "autofocus" in page and 'name="reason"' in page
    course.refresh_from_db()
    assert course.state == CourseState.EVALUATION


def test_a_step_outside_ones_role_says_which_role_it_needs(client, course, pathway):
    pathway.advance(course, CourseState.EVALUATION)
    client.force_login(pathway.coordinator)
    response = client.get(
        reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "decline"])
    )
    assert response.status_code == 403
    page = response.content.decode()
    assert "You may not decline a course: that is for the clinician role." in page
    assert "Back to your worklist" in page


def test_the_transplant_form_shows_every_error_at_once_beside_its_field(client, course, pathway):
    pathway.advance(course, CourseState.TRANSPLANT_SCHEDULED)
    pathway.deliver_to_site(course)
    course.site.members.add(pathway.clinician2)
    client.force_login(pathway.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_transplant"])
    with time_machine.travel(pathway.at(33.1), tick=False):
        tomorrow = timezone.localtime(timezone.now(), course.site.time_zone) + dt.timedelta(days=1)
        response = client.post(
            url,
            {
                "performed_at_0": tomorrow.date().isoformat(),  # in the future
                "performed_at_1": "10:00",
                "bedside_coi_id": course.coi_id,
                "cells_administered": str(course.viable_cells_released + 1),  # too many
                "weight_kg": "70",
                "weighed_on": (tomorrow.date() - dt.timedelta(days=90)).isoformat(),  # too old
                "second_person": pathway.clinician2.pk,
                "second_person_password": "wrong",  # not their password
            },
        )
    assert response.status_code == 200
    errors = response.context["transition_form"].errors
    assert "The transplant time cannot be in the future." in errors["performed_at"]
    assert any("more than the batch released" in e for e in errors["cells_administered"])
    assert any("days before the transplant" in e for e in errors["weighed_on"])
    assert "second_person_password" in errors
    page = response.content.decode()
    assert page.count('class="errorlist"') >= 4  # each shown in its field's row, at once
    course.refresh_from_db()
    assert course.state == CourseState.TRANSPLANT_SCHEDULED


def test_receipt_at_the_lab_refuses_an_impossible_temperature_and_asks_again_for_an_unusual_one(
    client, course, pathway
):
    from pathway.models import Batch

    pathway.advance(course, CourseState.HARVESTED)
    client.force_login(pathway.lab)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "receive_at_lab"])
    now = timezone.localtime(timezone.now(), course.site.time_zone)
    typed = {
        "received_at_0": (now - dt.timedelta(minutes=5)).date().isoformat(),
        "received_at_1": (now - dt.timedelta(minutes=5)).strftime("%H:%M"),
        "scanned_coi_id": course.coi_id,
        "temperature_c": "450",
        "transit_hours": "6",
    }
    impossible = client.post(url, typed)
    assert impossible.context["transition_form"].errors["temperature_c"] == [
        "Temperature must be between -200 °C and 60 °C; 450 °C was entered."
    ]
    asked = client.post(url, typed | {"temperature_c": "45"})
    form = asked.context["transition_form"]
    assert "is unusual" in form.errors["temperature_c"][0]
    assert not Batch.objects.filter(course=course).exists()
    confirmed = client.post(
        url, typed | {"temperature_c": "45", "second_look": form["second_look"].value()}
    )
    assert confirmed.status_code == 302
    course.refresh_from_db()
    # 45 °C is possible and was checked: it breaks the cold chain, and says so.
    assert course.state == CourseState.ELIGIBLE
    assert Batch.objects.get(course=course).temperature_c == 45
