"""Where patients are told to go: a resource's name and address for patients, in their
language, in place of the staff's name for it, on the one-tap page and in every reminder."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db.models import prefetch_related_objects
from django.urls import reverse
from django.utils import timezone

from delivery.outbox import notifications_dispatch_batch
from pathway import services
from pathway.states import CourseState
from scheduling.models import (
    Resource,
    ResourceKind,
    ResourceSession,
    ResourceWording,
    Visit,
    VisitKind,
)
from scheduling.places import (
    PLACE_PREFETCH,
    PlaceForPatients,
    resource_place_for_patients,
    visit_resource,
)
from scheduling.visit_links import visit_link_issue
from tests.servers import SmtpSink, TwilioStub

pytestmark = pytest.mark.django_db

LONDON = ZoneInfo("Europe/London")
BOOKED_ON = dt.datetime(2026, 6, 1, 9, tzinfo=LONDON)
HARVEST_AT = dt.datetime(2026, 6, 11, 11, tzinfo=LONDON)
REMINDERS_DUE = dt.datetime(2026, 6, 4, 12, tzinfo=LONDON)  # the 7-day ones, past 11:00
SUITE = "LDN Bronchoscopy suite"
SPANISH = ("Clínica Norte, unidad de día (planta 2)", "Calle Mayor 1\n28013 Madrid")
ENGLISH = ("North Clinic, Day Unit (level 2)", "1 High Street\nLondon N1 0AA")


@pytest.fixture
def suite(course):
    """The site's suite as staff name it, open on Thursdays at 11:00, with words for patients
    in English and Spanish."""
    suite = Resource.objects.create(name=SUITE, kind=ResourceKind.BRONCHOSCOPY, site=course.site)
    ResourceSession.objects.create(
        resource=suite, weekday=3, starts_at=dt.time(11), ends_at=dt.time(11, 30)
    )
    for language, (name, address) in (("en", ENGLISH), ("es", SPANISH)):
        ResourceWording.objects.create(
            resource=suite, language=language, name=name, address=address
        )
    return suite


@pytest.fixture
def harvest(course, pathway, suite):
    """A Spanish patient's harvest, booked at the suite by its staff name (in any case)."""
    patient = course.patient
    patient.preferred_language = "es"
    patient.save(update_fields=["preferred_language"])
    patient.site.patient_facing_name = "Clínica Norte"
    patient.site.save(update_fields=["patient_facing_name"])
    with time_machine.travel(BOOKED_ON, tick=False):
        pathway.starting(timezone.now() - dt.timedelta(days=1)).advance(
            course, CourseState.ELIGIBLE
        )
        services.course_schedule_harvest(
            course=course, by=pathway.coordinator, place=SUITE.upper(), scheduled_at=HARVEST_AT
        )
    return Visit.objects.get(course=course, kind=VisitKind.HARVEST)


def _language(visit, language):
    patient = visit.course.patient
    patient.preferred_language = language
    patient.save(update_fields=["preferred_language"])


def test_the_place_is_the_resource_its_name_names_and_words_a_coordinator_wrote_are_not(
    harvest, suite
):
    assert visit_resource(harvest) == suite
    harvest.place = f"  {SUITE.lower()} "
    assert visit_resource(harvest) == suite
    for written in ("Endoscopy unit, level 2", ""):
        harvest.place = written
        assert visit_resource(harvest) is None


def test_a_language_without_a_name_has_none_and_takes_another_languages_address(suite):
    assert resource_place_for_patients(suite, "es") == PlaceForPatients(*SPANISH)
    # No Chinese words: no name (the caller names the clinic), and the English address.
    assert resource_place_for_patients(suite, "zh-hans") == PlaceForPatients("", ENGLISH[1])


def test_many_visits_places_are_named_from_two_queries(harvest, django_assert_num_queries):
    visits = list(Visit.objects.filter(pk=harvest.pk).select_related("course__site"))
    with django_assert_num_queries(2):
        prefetch_related_objects(visits, *PLACE_PREFETCH)
    with django_assert_num_queries(0):
        resource = visit_resource(visits[0])
        assert resource_place_for_patients(resource, "es").name == SPANISH[0]


def test_the_one_tap_page_names_the_place_for_patients_in_their_language(client, harvest):
    with time_machine.travel(REMINDERS_DUE, tick=False):
        page = client.get(f"/v/{visit_link_issue(visit=harvest)}/").content.decode()
    assert "Dónde" in page
    assert "Clínica Norte, unidad de día (planta 2)" in page
    assert "Calle Mayor 1<br>28013 Madrid" in page
    assert "Bronchoscopy" not in page and "bronchoscopy" not in page.lower()


def test_without_a_name_in_their_language_patients_read_the_clinics_name(client, harvest):
    _language(harvest, "zh-hans")
    with time_machine.travel(REMINDERS_DUE, tick=False):
        page = client.get(f"/v/{visit_link_issue(visit=harvest)}/").content.decode()
    assert '<html lang="zh-hans">' in page
    assert "Clínica Norte" in page and "1 High Street<br>London N1 0AA" in page
    assert "North Clinic" not in page and "bronchoscopy" not in page.lower()


@pytest.fixture
def smtp(settings):
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        yield sink


@pytest.fixture
def twilio(settings):
    with TwilioStub() as stub:
        for name, value in stub.settings().items():
            setattr(settings, name, value)
        yield stub


def test_reminders_by_sms_and_email_name_the_place_for_patients(harvest, smtp, twilio):
    with time_machine.travel(REMINDERS_DUE, tick=False):
        result = notifications_dispatch_batch(batch_size=10)
    assert result.sent == 2
    [sms] = twilio.received
    assert "Clínica Norte, unidad de día (planta 2), Calle Mayor 1, 28013 Madrid." in sms["Body"]
    [email] = smtp.messages
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert "en Clínica Norte, unidad de día (planta 2)." in text and "28013 Madrid" in text
    assert "Calle Mayor 1<br>28013 Madrid" in html
    for words in (sms["Body"], text, html):
        assert "bronchoscopy" not in words.lower() and SUITE not in words


def test_the_words_are_kept_on_the_resources_admin_page(client, coordinator, suite):
    client.force_login(coordinator)
    url = reverse("admin:scheduling_resource_change", args=[suite.pk])
    page = client.get(url).content.decode()
    assert "Names and addresses for patients" in page and SPANISH[0] in page
    wordings = list(suite.wordings.order_by("language"))
    data = {
        "name": suite.name,
        "kind": suite.kind,
        "site": suite.site_id,
        "time_zone": "Europe/London",
        "wordings-TOTAL_FORMS": "3",
        "wordings-INITIAL_FORMS": "2",
        "sessions-TOTAL_FORMS": "1",
        "sessions-INITIAL_FORMS": "1",
        "closures-TOTAL_FORMS": "0",
        "closures-INITIAL_FORMS": "0",
    }
    session = suite.sessions.get()
    data |= {
        "sessions-0-id": session.pk,
        "sessions-0-resource": suite.pk,
        "sessions-0-weekday": session.weekday,
        "sessions-0-starts_at": "11:00",
        "sessions-0-ends_at": "11:30",
        "sessions-0-capacity": "1",
    }
    for index, wording in enumerate(wordings):
        data |= {
            f"wordings-{index}-id": wording.pk,
            f"wordings-{index}-resource": suite.pk,
            f"wordings-{index}-language": wording.language,
            f"wordings-{index}-name": wording.name,
            f"wordings-{index}-address": wording.address,
        }
    data |= {
        "wordings-2-resource": suite.pk,
        "wordings-2-language": "zh-hans",
        "wordings-2-name": "北方诊所，日间诊疗部（2楼）",
        "wordings-2-address": "",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert resource_place_for_patients(suite, "zh-hans") == PlaceForPatients(
        "北方诊所，日间诊疗部（2楼）", ENGLISH[1]
    )
    # A second row in a language it has already is refused beside the rows, saving nothing.
    data["wordings-2-language"] = "es"
    data["wordings-TOTAL_FORMS"] = "4"
    data["wordings-INITIAL_FORMS"] = "3"
    data["wordings-2-id"] = suite.wordings.get(language="zh-hans").pk
    data |= {
        "wordings-3-resource": suite.pk,
        "wordings-3-language": "es",
        "wordings-3-name": "Otra",
    }
    data["wordings-2-language"] = "zh-hans"
    response = client.post(url, data)
    assert response.status_code == 200
    assert suite.wordings.filter(language="es").count() == 1
