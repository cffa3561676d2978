"""Check-ins between visits: instruments as data, invitations opened, reminded, closed, and
answered once; an exacerbation reaches a clinician as one alert."""

import datetime as dt

import pytest
import time_machine

from delivery.messages import notification_message
from pathway.checkins import checkins_tick, invitation_link_issue
from pathway.states import CourseState
from patients.models import Instrument, QuestionnaireResponse
from patients.questionnaires import (
    EXACERBATION_DIARY,
    answers_errors,
    change_is_important,
    definition_errors,
    questionnaire_score,
)
from scheduling.models import (
    Alert,
    AlertKind,
    Channel,
    InvitationStatus,
    Notification,
    NotificationStatus,
    QuestionnaireInvitation,
)

# A made-up instrument of the CAT's shape: eight items scored 0-5, summed; 10 needs a
# clinician; a change of 2 matters. No licensed wording.
MADE_UP = {
    "items": [
        {
            "code": f"i{n}",
            "text": {"en": f"Made-up item {n}"},
            "options": [{"value": v, "text": {"en": str(v)}} for v in range(6)],
        }
        for n in range(1, 9)
    ],
    "scoring": "sum",
    "threshold": 10,
    "mcid": 2,
    "higher_is_worse": True,
}


def test_a_made_up_instrument_of_the_cats_shape_is_scored():
    assert definition_errors(MADE_UP) == []
    answers = {f"i{n}": 1 for n in range(1, 9)}
    assert questionnaire_score(MADE_UP, answers).value == 8
    assert not questionnaire_score(MADE_UP, answers).needs_clinician
    answers["i1"] = 3
    assert questionnaire_score(MADE_UP, answers).needs_clinician
    assert change_is_important(MADE_UP, baseline=8, latest=10) is True
    assert change_is_important(MADE_UP, baseline=8, latest=9) is False


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"items": []},
        {"items": [{"code": "a", "text": {}, "options": []}], "scoring": "sum"},
        MADE_UP | {"scoring": "median"},
        MADE_UP | {"scoring": "single"},
        MADE_UP | {"threshold": "ten"},
    ],
)
def test_a_broken_definition_says_what_is_wrong(broken):
    assert definition_errors(broken)


def test_answers_must_be_complete_and_allowed():
    assert answers_errors(MADE_UP, {"i1": 9})
    assert answers_errors(MADE_UP, "not answers")
    assert answers_errors(MADE_UP, {f"i{n}": 0 for n in range(1, 9)}) == []


def test_the_diary_counts_signs_and_alerts_on_care_needed():
    none = {item["code"]: 0 for item in EXACERBATION_DIARY["items"]}
    assert not questionnaire_score(EXACERBATION_DIARY, none).needs_clinician
    two_signs = none | {"breathless": 1, "colour": 1}
    assert questionnaire_score(EXACERBATION_DIARY, two_signs).needs_clinician
    assert questionnaire_score(EXACERBATION_DIARY, none | {"visit": 1}).needs_clinician


@pytest.fixture
def transplanted(course, pathway):
    patient = course.patient
    patient.phone, patient.consent_sms = "+447700900123", True
    patient.email, patient.consent_email = "patient@example.org", True
    patient.save()
    return pathway.advance(course, CourseState.FOLLOW_UP)


def _week_one(course):
    day = course.transplanted_on + dt.timedelta(days=7)
    return dt.datetime.combine(day, dt.time(11), tzinfo=course.site.time_zone)


@pytest.mark.django_db
def test_the_diary_opens_weekly_once_reminds_once_and_closes_as_missed(transplanted):
    with time_machine.travel(_week_one(transplanted), tick=False):
        assert checkins_tick()["opened"] >= 1
        assert checkins_tick()["opened"] == 0  # once
    diary = QuestionnaireInvitation.objects.get(instrument__code="exacerbation-diary")
    first = Notification.objects.filter(invitation=diary)
    assert {n.channel for n in first} == {Channel.SMS, Channel.EMAIL}
    with time_machine.travel(_week_one(transplanted) + dt.timedelta(days=2), tick=False):
        assert checkins_tick()["reminded"] >= 1
        checkins_tick()
    assert Notification.objects.filter(invitation=diary).count() == 4  # two, then one reminder each
    with time_machine.travel(_week_one(transplanted) + dt.timedelta(days=3), tick=False):
        checkins_tick()
    diary.refresh_from_db()
    assert diary.status == InvitationStatus.MISSED
    assert not Notification.objects.filter(
        invitation=diary, status=NotificationStatus.PENDING
    ).exists()


@pytest.mark.django_db
def test_the_message_carries_a_link_and_no_diagnosis(transplanted):
    with time_machine.travel(_week_one(transplanted), tick=False):
        checkins_tick()
        sms = Notification.objects.filter(channel=Channel.SMS).first()
        text = notification_message(sms).text
    assert "/q/" in text and "COPD" not in text and "cell" not in text.lower()


@pytest.fixture
def diary_link(transplanted):
    with time_machine.travel(_week_one(transplanted), tick=False):
        checkins_tick()
    invitation = QuestionnaireInvitation.objects.get(instrument__code="exacerbation-diary")
    return invitation, invitation_link_issue(invitation=invitation)


NO_SIGNS = {"breathless": "0", "sputum": "0", "colour": "0", "medicine": "0", "visit": "0"}


@pytest.mark.django_db
def test_answered_once_and_kept_as_a_clinical_record(client, diary_link):
    invitation, token = diary_link
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        page = client.get(f"/q/{token}/").content.decode()
        assert "worse than usual" in page
        assert "Thank you" in client.post(f"/q/{token}/", NO_SIGNS).content.decode()
        assert client.post(f"/q/{token}/", NO_SIGNS).status_code == 404  # closed to answers
    response = QuestionnaireResponse.objects.get()
    assert response.score == 0 and not response.needs_clinician
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.ANSWERED and invitation.response == response


@pytest.mark.django_db
def test_an_exacerbation_reaches_a_clinician_as_one_urgent_alert(client, diary_link):
    invitation, token = diary_link
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        client.post(f"/q/{token}/", NO_SIGNS | {"visit": "1"})
    [alert] = Alert.objects.filter(kind=AlertKind.SYMPTOMS)
    assert alert.severity == "urgent"


@pytest.mark.django_db
def test_an_incomplete_or_hostile_answer_stores_nothing(client, diary_link):
    invitation, token = diary_link
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        page = client.post(f"/q/{token}/", {"breathless": "1"}).content.decode()
        assert "Please answer every question" in page
        client.post(f"/q/{token}/", NO_SIGNS | {"visit": "7"})
        client.post(f"/q/{token}/", NO_SIGNS | {"visit": "1" * 5000})
    assert not QuestionnaireResponse.objects.exists()


@pytest.mark.django_db
def test_the_questions_are_in_the_patients_language(client, diary_link):
    invitation, token = diary_link
    patient = invitation.course.patient
    patient.preferred_language = "es"
    patient.save(update_fields=["preferred_language"])
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        page = client.get(f"/q/{token}/").content.decode()
    assert "¿ha respirado peor que de costumbre?" in page and "Sí" in page
    assert '<html lang="es">' in page


@pytest.mark.django_db
def test_the_shipped_instruments_are_installed():
    assert set(Instrument.objects.values_list("code", flat=True)) >= {"mmrc", "exacerbation-diary"}


@pytest.mark.django_db
def test_a_site_loads_a_licensed_instrument_and_a_broken_one_is_refused(tmp_path):
    import json

    from django.core.management import CommandError, call_command

    good = tmp_path / "made-up.json"
    good.write_text(json.dumps(MADE_UP))
    call_command("instrument_load", str(good), code="made-up", name="Made-up", licence="Ours")
    assert Instrument.objects.get(code="made-up").licence == "Ours"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(MADE_UP | {"scoring": "median"}))
    with pytest.raises(CommandError, match="Scoring is one of"):
        call_command("instrument_load", str(broken), code="broken", name="Broken")
    (tmp_path / "not.json").write_text("{")
    with pytest.raises(CommandError, match="not a JSON file"):
        call_command("instrument_load", str(tmp_path / "not.json"), code="x", name="X")
    assert not Instrument.objects.filter(code__in=["broken", "x"]).exists()


@pytest.mark.django_db
def test_the_course_shows_mmrc_against_its_baseline(client, transplanted, pathway):
    from django.urls import reverse

    from patients.models import SymptomScore

    SymptomScore.objects.create(
        patient=transplanted.patient,
        taken_on=transplanted.transplanted_on - dt.timedelta(days=30),
        mmrc=3,
        cat=20,
    )
    four_weeks = transplanted.visits.filter(kind="follow_up").order_by("scheduled_at").first()
    opens = dt.datetime.combine(
        four_weeks.window_opens_on, dt.time(11), tzinfo=transplanted.site.time_zone
    )
    with time_machine.travel(opens, tick=False):
        checkins_tick()
        mmrc = QuestionnaireInvitation.objects.get(instrument__code="mmrc")
        client.post(f"/q/{invitation_link_issue(invitation=mmrc)}/", {"grade": "1"})
    client.force_login(pathway.coordinator)
    page = client.get(
        reverse("admin:pathway_treatmentcourse_change", args=[transplanted.pk])
    ).content.decode()
    assert "mMRC breathlessness" in page and "-2 from baseline (reaches the MCID)" in page
    assert "mMRC as the patient reported it" in page  # in the course's outcomes too


@pytest.mark.django_db
def test_a_hostile_value_is_not_a_500(client, diary_link):
    invitation, token = diary_link
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        for value in ("--1", "1e3", "٣", "", "0x1"):
            assert client.post(f"/q/{token}/", NO_SIGNS | {"visit": value}).status_code == 200
    assert not QuestionnaireResponse.objects.exists()


@pytest.mark.django_db
def test_a_held_course_is_asked_nothing_more(client, diary_link, pathway):
    from pathway import services

    invitation, token = diary_link
    course = invitation.course
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        services.course_hold(course=course, by=pathway.coordinator, reason="Admitted")
        assert client.get(f"/q/{token}/").status_code == 404
        checkins_tick()
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.MISSED
    assert not Notification.objects.filter(
        invitation=invitation, status=NotificationStatus.PENDING
    ).exists()


@pytest.mark.django_db
def test_a_check_in_text_that_fails_is_retried_after_quiet_hours(diary_link):
    from delivery.channels import DeliveryError
    from delivery.outbox import notification_send_claimed

    invitation, _ = diary_link

    class Failing:
        def send(self, message):
            raise DeliveryError("try again later")

    sms = Notification.objects.filter(invitation=invitation, channel=Channel.SMS).first()
    Notification.objects.filter(pk=sms.pk).update(status="sending", claim_token="b" * 32)
    claimed = Notification.objects.select_related("patient", "invitation__course").get(pk=sms.pk)
    with time_machine.travel(invitation.opens_at + dt.timedelta(hours=1), tick=False):
        status = notification_send_claimed(claimed, channels={Channel.SMS: Failing()})
    assert status == NotificationStatus.PENDING
