from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from pathway import services
from pathway.coi import coi_id_format
from pathway.models import Protocol
from tests.factories import (
    BodyMeasurementFactory,
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    UserFactory,
)
from tests.support import Pathway


@pytest.fixture(scope="session")
def django_db_createdb(request, django_db_blocker) -> bool:
    """Build the test database anew with --create-db, and also when a kept one (`make test`
    reuses it) was emptied by the last run's transactional tests: the rows the data
    migrations made (roles, the default protocol, beat's schedule) would be missing."""
    if request.config.getvalue("create_db"):
        return True
    with django_db_blocker.unblock():
        return not _kept_database_is_whole()


def _kept_database_is_whole() -> bool:
    """Whether the kept PostgreSQL test database has the default protocol (SQLite's test
    database lives in memory and is always new)."""
    if connection.vendor != "postgresql":
        return False
    params = connection.get_connection_params() | {
        "dbname": connection.creation._get_test_db_name()
    }
    driver_error = connection.Database.Error
    try:
        raw = connection.get_new_connection(params)
    except driver_error:
        return False  # not made yet
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM pathway_protocol)")
            return bool(cursor.fetchone()[0])
    except driver_error:
        return False
    finally:
        raw.close()


# On PostgreSQL the tests run as the application does in production: as a role that owns
# nothing (common/db_roles.py). The test database is made and migrated by the role in
# DATABASE_URL (the owner); then every connection, the live server's and the workers' too,
# uses this one.
APP_ROLE = "tracker_test_app"
OWNER = {}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    if connection.vendor != "postgresql":
        yield
        return
    with django_db_blocker.unblock():
        from common.db_roles import app_role_grant, role_exists

        verb = "ALTER" if role_exists(connection, APP_ROLE) else "CREATE"
        with connection.cursor() as cursor:
            cursor.execute(f"{verb} ROLE {APP_ROLE} WITH LOGIN NOSUPERUSER PASSWORD 'test-app'")
            name = connection.ops.quote_name(connection.settings_dict["NAME"])
            cursor.execute(f"GRANT CONNECT ON DATABASE {name} TO {APP_ROLE}")
        app_role_grant(connection, APP_ROLE)
        OWNER.update(
            USER=connection.settings_dict["USER"], PASSWORD=connection.settings_dict["PASSWORD"]
        )
        connection.close()
        connection.settings_dict.update(USER=APP_ROLE, PASSWORD="test-app")
    yield
    connection.close()
    connection.settings_dict.update(OWNER)  # the owner drops the test database
    OWNER.clear()


@pytest.fixture(scope="session")
def drill_template(django_db_setup):
    """A database on the machine's PostgreSQL, migrated once per run, for the drills that run
    servers of their own (tests/clusters.py): copying it takes seconds, migrating 20."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (CI does)")
    from tests.clusters import manage, psql

    user = OWNER.get("USER") or connection.settings_dict["USER"]
    port = int(connection.settings_dict["PORT"] or 5432)
    name = f"{connection.settings_dict['NAME']}_drill_template"
    psql(port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', user=user)
    psql(port, f'CREATE DATABASE "{name}"', user=user)
    url = f"postgres://{user}@127.0.0.1:{port}/{name}"
    migrated = manage("migrate", "--noinput", env={"DATABASE_URL": url})
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield {"port": port, "name": name, "user": user}
    psql(port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', user=user)


def owner_connection():
    """A raw connection to the test database as its owner, for what the app role may not do
    (flush it between tests, lift a trigger in a test of the hash chain)."""
    params = connection.get_connection_params() | {
        "user": OWNER.get("USER") or connection.settings_dict["USER"],
        "password": OWNER.get("PASSWORD") or connection.settings_dict["PASSWORD"],
    }
    return connection.get_new_connection(params)


@pytest.fixture(autouse=True, scope="session")
def _flush_as_the_owner():
    """Between transactional tests Django empties every table with TRUNCATE, which the app
    role may not do and the audit tables' triggers refuse. The owner does it, as a replica
    would, with the triggers asleep, for that one transaction only."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    def execute_sql_flush(self, sql_list):
        raw = owner_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
                for sql in sql_list:
                    cursor.execute(sql)
            raw.commit()
        finally:
            raw.close()

    with mock.patch.object(DatabaseOperations, "execute_sql_flush", execute_sql_flush):
        yield


@pytest.fixture
def coordinator(db):
    return UserFactory(username="coordinator", role="coordinator")


@pytest.fixture
def clinician(db):
    return UserFactory(username="clinician", role="clinician")


@pytest.fixture
def clinician2(db):
    """A second clinician: the one who confirms the bedside check."""
    return UserFactory(username="clinician2", role="clinician")


@pytest.fixture
def lab(db):
    return UserFactory(username="lab", role="lab")


@pytest.fixture
def lab2(db):
    """A second lab user: the one who signs releases of QC the first entered."""
    return UserFactory(username="lab2", role="lab")


@pytest.fixture
def protocol(db):
    return Protocol.objects.get(is_default=True)


@pytest.fixture
def eligible_patient(db):
    """A patient whose latest records pass every eligibility rule."""
    patient = PatientFactory()
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    return patient


@pytest.fixture
def course(eligible_patient, coordinator):
    return services.course_create(patient=eligible_patient, by=coordinator)


@pytest.fixture
def pathway(coordinator, clinician, lab, lab2, clinician2):
    return Pathway(coordinator, clinician, lab, lab2, clinician2)


@pytest.fixture
def expected_coi(course):
    def expected(year=None):
        year = year or timezone.localdate().year
        return coi_id_format(site_code=course.site.code, year=year, number=course.pk)

    return expected


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """Tests of row locks and concurrent connections mean nothing on SQLite."""
    if request.node.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("needs PostgreSQL: set DATABASE_URL (CI does)")


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Every test counts rate limits of its own, in this process from zero: the shared Redis
    holds Celery's queues and would carry one test's requests into the next's limit. A test of
    the shared count sets RATE_LIMIT_STORAGE_URL itself."""
    from common.rate_limits import rate_limits_reset

    settings.RATE_LIMIT_STORAGE_URL = ""
    rate_limits_reset()
    yield
    rate_limits_reset()
