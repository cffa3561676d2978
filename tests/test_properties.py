"""Random and hostile input never gives a server error, a partial save or a changed state."""

import contextlib
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pathway.models import TransitionLog, TreatmentCourse
from pathway.records import clinical_record_save
from pathway.states import CourseState
from patients.models import LungFunctionTest, SixMinuteWalkTest

pytestmark = pytest.mark.django_db
FIXTURES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

HOSTILE = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-1",
            "1e308",
            "NaN",
            "inf",
            "'; DROP TABLE patients_patient; --",
            "<script>alert(1)</script>",
            "9" * 400,
            "\x00",
            "２０",
            "1,5",
            "2026-02-30",
            "2026-W99",
            "ZZZ26-000001-*",
        ]
    ),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
NUMBERS = st.one_of(
    st.decimals(
        min_value=-(10**7), max_value=10**7, allow_nan=False, allow_infinity=False, places=3
    ),
    st.none(),
)


@FIXTURES
@given(
    fev1=NUMBERS, fev1_pct=NUMBERS, fvc=NUMBERS, dlco=NUMBERS, days_ahead=st.integers(-30000, 30000)
)
def test_lung_function_input_is_saved_whole_or_refused_with_reasons(
    eligible_patient, clinician, fev1, fev1_pct, fvc, dlco, days_ahead
):
    before = LungFunctionTest.objects.count()
    try:
        taken_on = dt.date.today() + dt.timedelta(days=days_ahead)
    except OverflowError:
        return
    test = LungFunctionTest(
        patient=eligible_patient,
        taken_on=taken_on,
        fev1_l=fev1,
        fev1_pct_predicted=fev1_pct,
        fvc_l=fvc,
        dlco_pct_predicted=dlco,
    )
    try:
        clinical_record_save(record=test, by=clinician)
    except ValidationError as error:
        assert error.message_dict  # reasons, by field
        assert LungFunctionTest.objects.count() == before
    else:
        assert LungFunctionTest.objects.count() == before + 1
        assert Decimal("0.10") <= test.fev1_l <= Decimal("8.00")


@FIXTURES
@given(value=HOSTILE)
def test_walk_distance_input_never_breaks(eligible_patient, clinician, value):
    walk = SixMinuteWalkTest(patient=eligible_patient, taken_on=dt.date.today(), distance_m=value)
    before = SixMinuteWalkTest.objects.count()
    try:
        clinical_record_save(record=walk, by=clinician)
    except ValidationError:
        assert SixMinuteWalkTest.objects.count() == before


TRANSITION_FIELDS = {
    "receive_at_lab": ("received_at_0", "received_at_1", "temperature_c", "transit_hours", "note"),
    "release": ("password", "meaning", "note"),
    "record_transplant": (
        "performed_at_0",
        "performed_at_1",
        "bedside_coi_id",
        "cells_administered",
        "weight_kg",
        "weighed_on",
        "second_person",
        "second_person_password",
        "note",
    ),
}
STATE_FOR = {
    "receive_at_lab": CourseState.HARVESTED,
    "release": CourseState.EXPANDING,
    "record_transplant": CourseState.TRANSPLANT_SCHEDULED,
}


@pytest.mark.parametrize("transition", sorted(TRANSITION_FIELDS))
def test_hostile_transition_forms_never_error_or_change_the_course(
    client, course, pathway, transition, admin_user
):
    pathway.advance(course, STATE_FOR[transition])
    client.force_login(admin_user)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, transition])
    logs = TransitionLog.objects.filter(course=course).count()

    @FIXTURES
    @given(st.fixed_dictionaries({name: HOSTILE for name in TRANSITION_FIELDS[transition]}))
    def post(data):
        response = client.post(url, data)
        assert response.status_code in (200, 302), response.status_code
        assert TreatmentCourse.objects.get(pk=course.pk).state == STATE_FOR[transition]
        assert TransitionLog.objects.filter(course=course).count() == logs

    post()


@FIXTURES
@given(week=HOSTILE, site=HOSTILE)
@example(week="", site="\x00")  # PostgreSQL refuses NUL in a string: found here once
@example(week="2026-W01\x00", site="")
def test_the_report_command_refuses_bad_arguments_cleanly(week, site):
    # Anything but a CommandError (or a clean run) fails the test.
    with contextlib.suppress(CommandError):
        call_command("weekly_report", "--week", week, "--site", site, stdout=io.StringIO())
