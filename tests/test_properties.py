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


# Every transition that asks for data, from the state it starts in.
STATE_FOR = {
    "approve": CourseState.EVALUATION,
    "decline": CourseState.EVALUATION,
    "schedule_harvest": CourseState.ELIGIBLE,
    "record_harvest": CourseState.HARVEST_SCHEDULED,
    "receive_at_lab": CourseState.HARVESTED,
    "reject_sample": CourseState.EXPANDING,
    "fail_qc": CourseState.EXPANDING,
    "release": CourseState.EXPANDING,
    "schedule_transplant": CourseState.RELEASED,
    "record_transplant": CourseState.TRANSPLANT_SCHEDULED,
    "hold": CourseState.ELIGIBLE,
    "withdraw": CourseState.ELIGIBLE,
}
TRANSITION_FORMS = settings(
    max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def _posted_names(form_class) -> list[str]:
    """The names a browser posts for a form: a split date and time is two fields."""
    from django import forms

    names = []
    for name, field in form_class.base_fields.items():
        if isinstance(field, forms.SplitDateTimeField):
            names += [f"{name}_0", f"{name}_1"]
        else:
            names.append(name)
    return names


@pytest.mark.parametrize("transition", sorted(STATE_FOR))
def test_hostile_transition_forms_never_error_and_a_refusal_changes_nothing(
    client, course, pathway, transition, admin_user
):
    from django.utils.module_loading import import_string

    pathway.advance(course, STATE_FOR[transition])
    client.force_login(admin_user)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, transition])
    form_class = import_string(f"pathway.forms.{transition.title().replace('_', '')}Form")

    @TRANSITION_FORMS
    @given(st.fixed_dictionaries({name: HOSTILE for name in _posted_names(form_class)}))
    def post(data):
        state = TreatmentCourse.objects.get(pk=course.pk).state
        logs = TransitionLog.objects.filter(course=course).count()
        response = client.post(url, data)
        assert response.status_code in (200, 302, 400), response.status_code
        if response.status_code != 302:  # refused: shown again, or a 400; nothing written
            assert TreatmentCourse.objects.get(pk=course.pk).state == state
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


# Every admin form, add and change, posted with hostile values field by field.


def _admin_pages(course):
    """(model, add URL or None, change URL or None) for every model in the admin."""
    from django.contrib import admin

    for model in admin.site._registry:
        opts = model._meta
        add = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
        instance = model._default_manager.order_by("-pk").first()
        change = (
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[instance.pk])
            if instance is not None
            else None
        )
        yield model, add, change


def _snapshot(model):
    return sorted(model._default_manager.values_list("pk", flat=True)), [
        tuple(row) for row in model._default_manager.order_by("pk").values_list()
    ]


ADMIN_FORMS = settings(
    max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def test_hostile_input_to_every_admin_form_gives_no_error_and_a_refusal_writes_nothing(
    client, course, pathway, admin_user
):
    from tests.admin_forms import change_form_data

    pathway.advance(course, CourseState.FOLLOW_UP)
    client.force_login(admin_user)
    covered = 0
    for model, add, change in _admin_pages(course):
        for url in (add, change):
            if url is None:
                continue
            page = client.get(url)
            if page.status_code != 200 or "adminform" not in (page.context or {}):
                continue
            base = change_form_data(page)
            fields = list(page.context["adminform"].form.fields)
            if not fields:
                continue  # nothing to type: a read-only page
            covered += 1

            _post_hostile(client, url, base, fields, model)
    print(f"\nhostile admin forms: {covered} forms x {ADMIN_FORMS.max_examples} payloads, no 500")
    assert covered >= 20


def _post_hostile(client, url, base, fields, model):
    @ADMIN_FORMS
    @given(field=st.sampled_from(fields), value=HOSTILE)
    def post(field, value):
        before = _snapshot(model)
        data = dict(base)
        for key in [k for k in data if k == field or k.startswith(f"{field}_")]:
            data.pop(key)
        data[field] = value
        response = client.post(url, data)
        assert response.status_code in (200, 302, 400, 403), (url, field, value)
        if response.status_code != 302:
            assert _snapshot(model) == before, (url, field, value)

    post()


@pytest.mark.parametrize(
    "name", ["save", "delete", "__init__", "history", "nonexistent", "state", "expansion_day"]
)
def test_a_step_that_is_not_a_transition_is_not_found(client, course, admin_user, name):
    client.force_login(admin_user)
    url = f"/admin/pathway/treatmentcourse/{course.pk}/transition/{name}/"
    assert client.get(url).status_code == 404
    assert client.post(url, {}).status_code == 404


@pytest.mark.parametrize("value", ["abc", "NaN", "1e9", "9" * 40, "-1", "\x00"])
def test_a_nonsense_coordinator_on_the_patient_form_is_refused_beside_it(
    client, admin_user, eligible_patient, value
):
    from tests.admin_forms import change_form_data

    client.force_login(admin_user)
    url = reverse("admin:patients_patient_change", args=[eligible_patient.pk])
    data = change_form_data(client.get(url)) | {"coordinator": value}
    response = client.post(url, data)
    if "\x00" in value:  # refused before any view
        assert response.status_code == 400
        return
    assert response.status_code == 200
    assert "coordinator" in response.context["adminform"].form.errors


def test_a_nul_or_a_huge_number_in_any_list_filter_is_a_400_not_a_500(client, course, admin_user):
    from django.contrib import admin

    client.force_login(admin_user)
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url, {"q": "\x00"}).status_code == 400, url
        assert client.get(url, {"state__exact": "\x00"}).status_code == 400, url
    huge = "9" * 30
    for url in (
        f"/admin/pathway/treatmentcourse/?referred_at__year={huge}",
        f"/admin/scheduling/visit/?scheduled_at__year={huge}&scheduled_at__month=1",
        f"/admin/pathway/transitionlog/?at__year={huge}",
    ):
        assert client.get(url).status_code in (200, 302, 400), url
