"""Finding people as they are typed: names in any order, MRN prefixes, course ids."""

import pytest
from django.db import connection
from django.urls import reverse

from pathway import services
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def chen(db, coordinator):
    patient = PatientFactory(first_name="William", last_name="Chen", mrn="LDN-004217")
    PatientFactory(first_name="Wei", last_name="Chenery", mrn="LDN-009999", site=patient.site)
    PatientFactory(first_name="Mary", last_name="Williams", mrn="LDN-104217", site=patient.site)
    return patient


@pytest.mark.parametrize(
    "query",
    ["William Chen", "chen william", "WILL CHEN", "LDN-0042", "ldn-004217"],
)
def test_the_patient_list_finds_by_name_in_any_order_and_mrn_prefix(
    client, coordinator, chen, query
):
    client.force_login(coordinator)
    page = client.get(reverse("admin:patients_patient_changelist"), {"q": query}).content
    page = page.decode()
    assert "LDN-004217" in page
    assert "LDN-009999" not in page and "LDN-104217" not in page


def test_a_course_id_off_a_label_finds_the_patient_and_the_course(client, coordinator, chen):
    from pathway.coi import coi_id_format

    course = services.course_create(patient=chen, by=coordinator)
    course.coi_id = coi_id_format(site_code=chen.site.code, year=2026, number=course.pk)
    course.save(update_fields=["coi_id"])
    client.force_login(coordinator)
    for typed in (course.coi_id, course.coi_id.replace("-", " ").lower()):
        patients = client.get(reverse("admin:patients_patient_changelist"), {"q": typed})
        assert "LDN-004217" in patients.content.decode()
        courses = client.get(reverse("admin:pathway_treatmentcourse_changelist"), {"q": typed})
        assert f"/{course.pk}/change/" in courses.content.decode()


def test_the_course_list_finds_by_the_patients_name(client, coordinator, chen):
    course = services.course_create(patient=chen, by=coordinator)
    client.force_login(coordinator)
    page = client.get(
        reverse("admin:pathway_treatmentcourse_changelist"), {"q": "Chen William"}
    ).content.decode()
    assert f"/{course.pk}/change/" in page


@pytest.mark.postgres
def test_name_prefixes_are_answered_from_indexes(chen):
    from patients.models import Patient
    from patients.search import patients_matching

    query = patients_matching(Patient.objects.all(), "chen will")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    for index in (
        "patient_last_name_prefix_idx",
        "patient_first_name_prefix_idx",
        "patient_mrn_prefix_idx",
    ):
        assert index in plan


def test_hostile_search_text_is_cut_not_a_500(client, coordinator, chen):
    client.force_login(coordinator)
    for query in ("x " * 5000, "%_%", "'; DROP TABLE patients_patient; --", "\u202e"):
        response = client.get(reverse("admin:patients_patient_changelist"), {"q": query})
        assert response.status_code == 200
