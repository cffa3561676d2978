import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from patients.models import (
    A1ATScreening,
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    LungFunctionTest,
    Patient,
    Site,
    SmokingStatus,
)

PASSWORD = "correct horse battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@clinic.test")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(user, create, role_name, **kwargs):
        if role_name:
            user.groups.add(Group.objects.get(name=role_name))
        user.save()

    @factory.post_generation
    def sites(user, create, sites, **kwargs):
        """Staff work at every site the test has made, unless given their `sites`."""
        if sites is None and user.groups.exists():
            sites = Site.objects.all()
        for site in sites or ():
            site.members.add(user)


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("code",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Chest Clinic {n}")
    code = factory.Sequence(lambda n: "S" + "".join(chr(65 + int(d)) for d in f"{n:03d}"))
    time_zone = "Europe/London"

    @factory.post_generation
    def staff(site, create, staff, **kwargs):
        """Everyone with a role works here too, unless given the site's `staff`."""
        if staff is None:
            staff = get_user_model().objects.filter(groups__isnull=False).distinct()
        site.members.add(*staff)


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    site = factory.SubFactory(SiteFactory)
    mrn = factory.Sequence(lambda n: f"MRN{n:06d}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    date_of_birth = dt.date(1958, 4, 12)
    email = factory.LazyAttribute(lambda p: f"{p.mrn.lower()}@example.com")
    phone = "+447911123456"
    consent_email = True
    consent_sms = True
    smoking_status = SmokingStatus.FORMER
    smoking_quit_date = dt.date(2019, 5, 1)


class ClinicalRecordFactory(factory.django.DjangoModelFactory):
    patient = factory.SubFactory(PatientFactory)
    taken_on = factory.LazyFunction(timezone.localdate)


class LungFunctionTestFactory(ClinicalRecordFactory):
    class Meta:
        model = LungFunctionTest

    fev1_l = Decimal("1.20")
    fev1_pct_predicted = Decimal("45.0")
    fvc_l = Decimal("2.40")
    dlco_pct_predicted = Decimal("42.0")
    tlc_pct_predicted = Decimal("118.0")


class ChestCTFactory(ClinicalRecordFactory):
    class Meta:
        model = ChestCT

    emphysema_present = True


class ClinicalAssessmentFactory(ClinicalRecordFactory):
    class Meta:
        model = ClinicalAssessment

    fit_for_bronchoscopy = True
    active_respiratory_infection = False
    a1at_screening = A1ATScreening.NORMAL
    dyspnoea_despite_optimised_therapy = True


class BodyMeasurementFactory(ClinicalRecordFactory):
    class Meta:
        model = BodyMeasurement

    weight_kg = Decimal("70.0")
    height_cm = Decimal("172.0")
