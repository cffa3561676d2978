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


# A search that finds no one: close matches, at the user's sites only.


@pytest.fixture
def elizabeth(db, coordinator):
    patient = PatientFactory(first_name="Elizabeth", last_name="Moore", mrn="LDN100021")
    PatientFactory(first_name="William", last_name="Chen", mrn="LDN100022", site=patient.site)
    return patient


@pytest.fixture
def elsewhere(db, elizabeth):
    """A site the coordinator does not work at, with a patient of nearly the same name."""
    from tests.factories import SiteFactory

    return PatientFactory(
        first_name="Elizabeth", last_name="Moor", mrn="BOS100021", site=SiteFactory(staff=[])
    )


@pytest.mark.postgres
def test_a_one_letter_typo_offers_its_patient_and_none_at_another_site(
    client, coordinator, elizabeth, elsewhere
):
    from patients.models import Patient
    from patients.search import patients_close_to

    client.force_login(coordinator)
    link = reverse("admin:patients_patient_change", args=[elizabeth.pk])
    for typed, offered in (
        ("elizbeth", "Elizabeth Moore (LDN100021)</a>?"),
        ("Elizbeth Mooore", "Elizabeth Moore (LDN100021)</a>?"),
        # An MRN a digit short is close to both of this site's.
        ("LDN10021", "Elizabeth Moore (LDN100021)</a>, <a href="),
    ):
        page = client.get(reverse("admin:patients_patient_changelist"), {"q": typed})
        page = page.content.decode()
        assert f"No patient matches “{typed}”. Did you mean:" in page
        assert f'<a href="{link}">{offered}' in page
        assert "BOS100021" not in page
    # The service offers the other site's patient only to someone who sees it.
    assert set(patients_close_to(Patient.objects.all(), "elizbeth")) == {elizabeth, elsewhere}


@pytest.mark.postgres
def test_the_course_list_offers_the_patients_with_courses_there(
    client, coordinator, elizabeth, elsewhere
):
    course = services.course_create(patient=elizabeth, by=coordinator)
    PatientFactory(first_name="Elisabeth", last_name="Mohr", site=elizabeth.site)  # no course
    client.force_login(coordinator)
    url = reverse("admin:pathway_treatmentcourse_changelist")
    page = client.get(url, {"q": "elizbeth"}).content.decode()
    assert "Did you mean:" in page and f'<a href="{url}?q=LDN100021">' in page
    assert "Mohr" not in page and "BOS100021" not in page
    assert f"/{course.pk}/change/" in client.get(url, {"q": "LDN100021"}).content.decode()


@pytest.mark.postgres
def test_the_worklists_find_box_offers_close_matches_too(client, coordinator, elizabeth):
    client.force_login(coordinator)
    home = client.get(reverse("admin:index")).content.decode()
    action = reverse("admin:patients_patient_changelist")
    assert f'action="{action}"' in home and 'name="q"' in home
    page = client.get(action, {"q": "elizbeth"}).content.decode()
    assert "Elizabeth Moore (LDN100021)" in page


def test_nothing_close_says_no_one_matches_and_offers_no_one(client, coordinator, elizabeth):
    client.force_login(coordinator)
    page = client.get(reverse("admin:patients_patient_changelist"), {"q": "zzqx"}).content
    assert "No patient matches “zzqx”." in page.decode() and "Did you mean" not in page.decode()
    found = client.get(reverse("admin:patients_patient_changelist"), {"q": "Elizabeth"}).content
    assert "No patient matches" not in found.decode()


def test_without_pg_trgm_a_typo_finds_no_one_and_says_so(
    client, coordinator, elizabeth, monkeypatch
):
    from django.db import connections

    monkeypatch.setattr(connections["default"], "vendor", "sqlite")  # as on SQLite: no pg_trgm
    from patients.models import Patient
    from patients.search import patients_close_to

    assert patients_close_to(Patient.objects.all(), "elizbeth") == []
    monkeypatch.undo()
    if connection.vendor == "sqlite":
        client.force_login(coordinator)
        page = client.get(reverse("admin:patients_patient_changelist"), {"q": "elizbeth"})
        assert "No patient matches “elizbeth”." in page.content.decode()
        assert "Did you mean" not in page.content.decode()


@pytest.mark.postgres
def test_close_matches_cost_the_same_queries_however_many_are_offered(
    client, coordinator, elizabeth
):
    from django.test.utils import CaptureQueriesContext

    client.force_login(coordinator)
    url = reverse("admin:patients_patient_changelist")
    queries, offered = [], []
    for more in (0, 6):
        for n in range(more):
            PatientFactory(first_name="Elizabeth", last_name=f"Moore{n}", site=elizabeth.site)
        with CaptureQueriesContext(connection) as captured:
            page = client.get(url, {"q": "elizbeth"}).content.decode()
        queries.append(len(captured))
        offered.append(page.split("Did you mean:")[1].split("</p>")[0].count("<a href="))
    assert offered == [1, 5]  # at most five, the closest
    assert queries[0] == queries[1]


@pytest.mark.postgres
def test_close_matches_are_answered_from_trigram_indexes(elizabeth):
    from django.test.utils import CaptureQueriesContext

    from patients.models import Patient
    from patients.search import patients_close_to

    Patient.objects.bulk_create(
        Patient(
            site=elizabeth.site,
            mrn=f"LDN{n:06d}",
            first_name=f"Given{n}",
            last_name=f"Family{n}",
            date_of_birth=elizabeth.date_of_birth,
        )
        for n in range(3000)
    )
    for typed, indexes in (
        ("elizbeth mooer", ("patient_first_name_trgm_idx", "patient_last_name_trgm_idx")),
        ("LDN10021", ("patient_mrn_trgm_idx",)),
    ):
        with CaptureQueriesContext(connection) as captured:
            assert elizabeth in patients_close_to(Patient.objects.all(), typed)
        [sql] = [query["sql"] for query in captured]
        with connection.cursor() as cursor:
            # A table this small may be read whole when that is cheaper: what matters is
            # that the indexes can answer it (the README's Performance notes the plan on
            # 100,000 patients).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert all(index in plan for index in indexes), plan
