"""Demo data: three sites giving P63+ cells, a fourth giving MSC infusions from its cell-bank
stock, one user per role and 40 patients in every state of both pathways.

Each course's history is replayed through the same services a coordinator uses, with the
clock moved (time-machine) to when each step would have happened, so logs, dates, visits
and windows are all consistent. Demo only: the passwords are published in the README.
"""

import datetime as dt
import random
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from common.passwords import DEMO_PASSWORD
from pathway import services
from pathway.custody import (
    batch_record_cell_count,
    batch_record_qc,
    custody_event_record,
    units_custody_record,
    units_on_their_way,
)
from pathway.lots import lot_receive, lot_record_qc, lot_release
from pathway.models import Batch, BatchStatus, CustodyKind, TreatmentCourse, UnitStatus
from pathway.records import adverse_event_record, clinical_record_save
from pathway.scans import alerts_scan_overdue
from pathway.states import CourseState, Therapy
from patients.access import AUDITOR_GROUP, PROGRAMME_LEAD_GROUP
from patients.models import (
    A1ATScreening,
    AdverseEvent,
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    ClinicHours,
    CReactiveProtein,
    LungFunctionTest,
    Medication,
    Patient,
    Site,
    SixMinuteWalkTest,
    SmokingStatus,
    SymptomScore,
)
from patients.selectors import baseline_records
from scheduling.chains import (
    course_resource,
    follow_ups_proposal,
    free_slots,
    infusion_chains_earliest,
)
from scheduling.models import (
    ReservationPurpose,
    Resource,
    ResourceClosure,
    ResourceKind,
    ResourceSession,
    ResourceWording,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.selectors import course_completion_visit_done
from scheduling.services import follow_ups_book, visit_move_refusals, visit_reschedule
from scheduling.visit_links import visit_link_answer, visit_link_issue, visit_link_open

# Name, code, zone, the neutral name patients see in messages, and the number they call.
SITES = [
    ("North London Chest Clinic", "LDN", "Europe/London", "North London Clinic", "+442079460000"),
    ("Pudong Respiratory Centre", "SHA", "Asia/Shanghai", "Pudong Clinic", "+862155550100"),
    ("Harbour Lung Institute", "BOS", "America/New_York", "Harbour Clinic", "+16175550100"),
]
# Where patients are told to go, in each of their languages: the clinic's neutral name, the
# unit (never what is done there) and the address (made up). The resources' own names
# ("LDN Bronchoscopy suite") are for staff.
CLINIC_NAMES = {
    "LDN": {"en": "North London Clinic", "es": "North London Clinic", "zh-hans": "北伦敦诊所"},
    "SHA": {"en": "Pudong Clinic", "es": "Clínica Pudong", "zh-hans": "浦东诊所"},
    "BOS": {"en": "Harbour Clinic", "es": "Harbour Clinic", "zh-hans": "海港诊所"},
}
UNITS = {
    ResourceKind.BRONCHOSCOPY: {
        "en": "Day Unit, level 2",
        "es": "Unidad de día, planta 2",
        "zh-hans": "日间诊疗部，2楼",
    },
    ResourceKind.LUNG_FUNCTION: {
        "en": "Outpatients, level 1",
        "es": "Consultas externas, planta 1",
        "zh-hans": "门诊部，1楼",
    },
}
ADDRESSES = {
    "LDN": {"en": "12 Example Road\nLondon N1 0AA", "es": "12 Example Road\nLondres N1 0AA"},
    "SHA": {
        "en": "100 Example Road, Pudong\nShanghai 200120",
        "es": "100 Example Road, Pudong\nShanghái 200120",
        "zh-hans": "上海市浦东新区示例路100号\n邮编 200120",
    },
    "BOS": {"en": "1 Example Wharf\nBoston, MA 02110"},
}
# The patients' languages, so that each of the three can be tried: Pudong's in Chinese,
# Harbour's every other one in Spanish, Madrid's in Spanish.
LANGUAGE_BY_SITE = {
    "LDN": ("en", "en"),
    "SHA": ("zh-hans", "zh-hans"),
    "BOS": ("en", "es"),
    "MAD": ("es", "es"),
}
# Every site sees patients Monday to Friday, 08:00 to 17:00 in its own zone.
CLINIC_DAYS, CLINIC_OPENS, CLINIC_CLOSES = range(5), dt.time(8), dt.time(17)
FIRST_NAMES = [
    "Margaret",
    "David",
    "Susan",
    "Wei",
    "Li",
    "Robert",
    "Patricia",
    "James",
    "Mei",
    "John",
    "Linda",
    "Jun",
    "Barbara",
    "Michael",
    "Elizabeth",
    "Hui",
    "William",
    "Mary",
]
LAST_NAMES = [
    "Thompson",
    "Chen",
    "Okafor",
    "Walsh",
    "Zhang",
    "Murphy",
    "Patel",
    "Kowalski",
    "Wang",
    "O'Brien",
    "Nguyen",
    "Fischer",
    "Liu",
    "Hughes",
    "Santos",
    "Novak",
]

MEDICATIONS = [
    ("Tiotropium / olodaterol", "2.5/2.5 µg, 2 puffs daily"),
    ("Budesonide / formoterol", "160/4.5 µg, 2 puffs twice daily"),
    ("Salbutamol", "100 µg as needed"),
    ("Roflumilast", "500 µg daily"),
    ("Umeclidinium / vilanterol", "55/22 µg daily"),
]

# How many demo P63+ courses end in each state.
STATE_COUNTS = {
    CourseState.REFERRED: 2,
    CourseState.EVALUATION: 3,
    CourseState.ELIGIBLE: 2,
    CourseState.INELIGIBLE: 2,
    CourseState.HARVEST_SCHEDULED: 2,
    CourseState.HARVESTED: 2,
    CourseState.EXPANDING: 4,
    CourseState.RELEASED: 2,
    CourseState.TRANSPLANT_SCHEDULED: 2,
    CourseState.FOLLOW_UP: 4,
    CourseState.COMPLETED: 2,
    CourseState.ON_HOLD: 2,
    CourseState.WITHDRAWN: 2,
}
# The site that gives MSC infusions, and its words for patients.
MSC_SITE = (
    "Madrid Norte Day Hospital",
    "MAD",
    "Europe/Madrid",
    "Clínica Madrid Norte",
    "+34915550100",
)
MSC_NAMES = {"en": "Madrid Norte Clinic", "es": "Clínica Madrid Norte", "zh-hans": "马德里北诊所"}
MSC_UNITS = {
    ResourceKind.INFUSION_CHAIR: {
        "en": "Day Hospital, level 3",
        "es": "Hospital de día, planta 3",
        "zh-hans": "日间医院，3楼",
    },
    ResourceKind.LUNG_FUNCTION: {
        "en": "Outpatients, level 1",
        "es": "Consultas externas, planta 1",
        "zh-hans": "门诊部，1楼",
    },
}
MSC_ADDRESS = {
    "en": "20 Calle de Ejemplo\n28029 Madrid",
    "es": "Calle de Ejemplo 20\n28029 Madrid",
}
# Each MSC course: the protocol it follows ("single" or "four" doses), and how many days ago
# it was referred, chosen so that it sits in the state named.
MSC_COURSES = [
    ("single", 5),  # in evaluation
    ("single", 9.5),  # eligible: to allocate
    ("single", 10.5),  # product allocated, from a lot that expires soon: an alert
    ("single", 12),  # infusion booked
    ("four", 24),  # first dose given, the next held in the chairs
    ("four", 62),  # two doses given, the third booked
    ("single", 45),  # follow-up
    ("single", 110),  # follow-up, the 12-week visit measured
    ("single", 230),  # completed
]
HAPPY_PATH = [
    CourseState.REFERRED,
    CourseState.EVALUATION,
    CourseState.ELIGIBLE,
    CourseState.HARVEST_SCHEDULED,
    CourseState.HARVESTED,
    CourseState.EXPANDING,
    CourseState.RELEASED,
    CourseState.TRANSPLANT_SCHEDULED,
    CourseState.FOLLOW_UP,
    CourseState.COMPLETED,
]


class Command(BaseCommand):
    help = "Load demo sites, users and patients (skipped if they are already there)."

    def handle(self, *args, **options):
        import time_machine  # a development tool: only the demo moves the clock

        self.time_machine = time_machine
        if Site.objects.filter(code=SITES[0][1]).exists():
            self.stdout.write("Demo data already loaded.")
            return
        self.random = random.Random(2026)
        self.follow_up_left_to_book = False
        with transaction.atomic():
            self.users = self.create_users()
            sites = [
                Site.objects.create(
                    name=name,
                    code=code,
                    time_zone=zone,
                    patient_facing_name=patient_name,
                    patient_phone=phone,
                )
                for name, code, zone, patient_name, phone in SITES
            ]
            for site in sites:
                site.coordinators.add(self.users["coordinator"])
                site.members.add(
                    self.users["clinician"],
                    self.users["clinician2"],
                    self.users["lab"],
                    self.users["lab2"],
                )
                ClinicHours.objects.bulk_create(
                    ClinicHours(
                        site=site, weekday=day, opens_at=CLINIC_OPENS, closes_at=CLINIC_CLOSES
                    )
                    for day in CLINIC_DAYS
                )
                self.create_calendars(site)
            self.create_lab_calendar()
            number = 0
            for state, count in STATE_COUNTS.items():
                for _ in range(count):
                    number += 1
                    self.create_course(sites[number % len(sites)], number, state)
            msc_site = self.create_msc_site()
            sites.append(msc_site)
            for kind, age in MSC_COURSES:
                number += 1
                self.create_msc_course(msc_site, number, self.msc_protocols[kind], age)
            self.showcase_reminders_and_alerts()
            # The front door is a floor above: its command, not an import.
            call_command("seed_demo_enquiries")
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {number} demo patients at {len(sites)} sites. Log in as "
                f"{', '.join(self.users)} with password '{DEMO_PASSWORD}'."
            )
        )

    @staticmethod
    def create_calendars(site):
        """The site's bronchoscopy suite and lung-function clinic: half-hour slots on clinic
        mornings, one patient each; the suite closed for a week over the new year."""
        for name, kind in (
            ("Bronchoscopy suite", ResourceKind.BRONCHOSCOPY),
            ("Lung-function clinic", ResourceKind.LUNG_FUNCTION),
        ):
            resource = Resource.objects.create(
                name=f"{site.code} {name}", kind=kind, site=site, time_zone=site.time_zone
            )
            ResourceWording.objects.bulk_create(
                ResourceWording(
                    resource=resource,
                    language=language,
                    name=f"{CLINIC_NAMES[site.code][language]}, {unit}",
                    # An address not written in a language is read in the English one.
                    address=ADDRESSES[site.code].get(language, ""),
                )
                for language, unit in UNITS[kind].items()
            )
            ResourceSession.objects.bulk_create(
                ResourceSession(
                    resource=resource,
                    weekday=day,
                    starts_at=dt.time(9 + half // 2, 30 * (half % 2)),
                    ends_at=dt.time(9 + (half + 1) // 2, 30 * ((half + 1) % 2)),
                    capacity=1,
                )
                for day in CLINIC_DAYS
                for half in range(6)
            )
            if kind == ResourceKind.BRONCHOSCOPY:
                year = timezone.localdate().year
                ResourceClosure.objects.create(
                    resource=resource,
                    first_day=dt.date(year, 12, 27),
                    last_day=dt.date(year + 1, 1, 2),
                    reason="Suite maintenance over the new year",
                )

    @staticmethod
    def create_lab_calendar():
        """The lab's expansion capacity, serving every site: 20 batches in culture a day."""
        lab = Resource.objects.create(
            name="Cell lab expansion capacity", kind=ResourceKind.EXPANSION, time_zone="UTC"
        )
        ResourceSession.objects.bulk_create(
            ResourceSession(
                resource=lab,
                weekday=day,
                starts_at=dt.time(0),
                ends_at=dt.time(23, 59),
                capacity=20,
            )
            for day in range(7)
        )

    @staticmethod
    def free_slot(course, kind, wanted: dt.datetime) -> dt.datetime:
        """The first free slot of the site's resource of `kind` on `wanted`'s day or after."""
        resource = course_resource(site=course.site, kind=kind)
        day = timezone.localdate(wanted, resource.time_zone)
        slots = free_slots(
            resource=resource,
            first_day=day,
            last_day=day + dt.timedelta(days=21),
            after=timezone.now(),
        )
        return slots[0].starts_at

    def showcase_reminders_and_alerts(self):
        """If tomorrow at this time the clinic is open, move one booked harvest there, so its
        1-day reminders fall due two minutes from now and `make run` shows reminders flowing
        at once; and run the overdue scan, which raises the demo's alerts."""
        harvest = (
            Visit.objects.filter(kind=VisitKind.HARVEST, status=VisitStatus.BOOKED)
            .select_related("course__site")
            .order_by("scheduled_at")
            .first()
        )
        soon = (timezone.now() + dt.timedelta(days=1, minutes=2)).replace(second=0, microsecond=0)
        if harvest and not visit_move_refusals(visit=harvest, scheduled_at=soon):
            # An extra list in the suite at that time, so the harvest's chain moves with it.
            suite = course_resource(site=harvest.course.site, kind=ResourceKind.BRONCHOSCOPY)
            local = timezone.localtime(soon, suite.time_zone)
            ResourceSession.objects.create(
                resource=suite,
                weekday=local.weekday(),
                starts_at=local.time(),
                ends_at=(local + dt.timedelta(minutes=30)).time(),
                capacity=1,
            )
            visit_reschedule(visit=harvest, scheduled_at=soon, by=self.users["coordinator"])
        self.showcase_a_product_in_transit()
        self.showcase_a_transplant_to_record()
        self.showcase_a_visit_to_mark_missed()
        self.showcase_a_release_to_sign()
        self.showcase_units_on_their_way()
        self.showcase_a_patient_asking_for_another_time()
        alerts_scan_overdue()

    def showcase_a_product_in_transit(self):
        """One released product on its way: it has left the lab and not yet reached the site,
        so the worklist shows its receipt to record."""
        course = (
            TreatmentCourse.objects.filter(state=CourseState.TRANSPLANT_SCHEDULED)
            .exclude(custody_events__kind=CustodyKind.SHIPPED_TO_SITE)
            .order_by("pk")
            .first()
        )
        if course is not None:
            custody_event_record(
                course=course,
                kind=CustodyKind.SHIPPED_TO_SITE,
                by=self.users["lab"],
                scanned_coi_id=course.coi_id,
                at=timezone.now() - dt.timedelta(hours=2),
                location="Cell manufacturing facility",
                temperature_c=Decimal("4.5"),
            )

    def showcase_a_transplant_to_record(self):
        """One transplant booked for the last clinic morning before this time tomorrow, its
        product sent and received: the worklist shows it to record at the bedside (today's
        or tomorrow's list, or one of the last clinic day's not recorded yet)."""
        now = timezone.now()
        course = (
            TreatmentCourse.objects.filter(state=CourseState.TRANSPLANT_SCHEDULED)
            .exclude(custody_events__kind=CustodyKind.SHIPPED_TO_SITE)
            .select_related("site")
            .order_by("pk")
            .first()
        )
        if course is None:
            return
        visit = course.visits.get(kind=VisitKind.TRANSPLANT, status=VisitStatus.BOOKED)
        # Booked the day after its release, as the other courses' transplants were.
        with self.at(course.released_at + dt.timedelta(days=1)):
            suite = course_resource(site=course.site, kind=ResourceKind.BRONCHOSCOPY)
            slots = free_slots(
                resource=suite,
                first_day=timezone.localdate(course.released_at, suite.time_zone),
                last_day=timezone.localdate(now, suite.time_zone) + dt.timedelta(days=1),
                after=timezone.now(),
            )
            when = next(
                (
                    slot.starts_at
                    for slot in reversed(slots)
                    if slot.starts_at < now + dt.timedelta(days=1)
                    and not visit_move_refusals(visit=visit, scheduled_at=slot.starts_at)
                ),
                None,
            )
            if when is None:
                return
            visit_reschedule(visit=visit, scheduled_at=when, by=self.users["coordinator"])
        received = min(when - dt.timedelta(hours=3), now - dt.timedelta(hours=1))
        for kind, at in (
            (CustodyKind.SHIPPED_TO_SITE, received - dt.timedelta(hours=17)),
            (CustodyKind.RECEIVED_AT_SITE, received),
        ):
            custody_event_record(
                course=course,
                kind=kind,
                by=self.users["coordinator"],
                scanned_coi_id=course.coi_id,
                at=max(at, course.released_at + dt.timedelta(minutes=30)),
                location=course.site.name,
            )

    def showcase_a_release_to_sign(self):
        """The batch longest in culture has its QC entered by one lab user: the release is
        for the other to sign, once its window opens."""
        batch = (
            Batch.objects.filter(status=BatchStatus.EXPANDING, course__state=CourseState.EXPANDING)
            .order_by("received_at")
            .first()
        )
        if batch is not None:
            with self.at(timezone.now() - dt.timedelta(hours=3)):
                self.qc(batch)

    def showcase_units_on_their_way(self):
        """The units of the next infusion booked have left the stock and not yet reached the
        site: the worklist shows their receipt to record."""
        visit = (
            Visit.objects.filter(
                kind=VisitKind.INFUSION,
                status=VisitStatus.BOOKED,
                course__units__status=UnitStatus.ALLOCATED,
            )
            .select_related("course__site")
            .order_by("scheduled_at")
            .first()
        )
        if visit is None:
            return
        course = visit.course
        units_custody_record(
            course=course,
            kind=CustodyKind.SHIPPED_TO_SITE,
            by=self.users["lab"],
            scanned_unit_ids=[
                unit.unit_id
                for unit in units_on_their_way(course=course, kind=CustodyKind.SHIPPED_TO_SITE)
            ],
            at=timezone.now() - dt.timedelta(hours=2),
            location=course.site.name,
            temperature_c=Decimal("-160"),
        )

    def showcase_a_patient_asking_for_another_time(self):
        """A patient who answered the link in a reminder with "another time": their request
        waits on the worklist for a coordinator to move the visit."""
        visit = (
            Visit.objects.filter(
                kind=VisitKind.FOLLOW_UP,
                status=VisitStatus.BOOKED,
                scheduled_at__gt=timezone.now() + dt.timedelta(days=3),
            )
            .exclude(course__state=CourseState.ON_HOLD)
            .order_by("-scheduled_at")
            .first()
        )
        if visit is not None:
            link = visit_link_open(token=visit_link_issue(visit=visit))
            visit_link_answer(link=link, confirm=False)

    def showcase_a_visit_to_mark_missed(self):
        """One harvest booked last week for two days ago, and the patient did not come: it can
        be marked missed and booked again."""
        now = timezone.now()
        for visit in Visit.objects.filter(
            kind=VisitKind.HARVEST, status=VisitStatus.BOOKED
        ).select_related("course__site"):
            with self.at(now - dt.timedelta(days=6)):
                try:
                    when = self.free_slot(
                        visit.course, ResourceKind.BRONCHOSCOPY, now - dt.timedelta(days=3)
                    )
                except IndexError:
                    continue
                if when > now - dt.timedelta(hours=12) or visit_move_refusals(
                    visit=visit, scheduled_at=when
                ):
                    continue
                visit_reschedule(visit=visit, scheduled_at=when, by=self.users["coordinator"])
            return

    def create_users(self):
        User = get_user_model()
        users = {}
        for username, role in [
            ("admin", None),
            ("coordinator", "coordinator"),
            ("clinician", "clinician"),
            ("clinician2", "clinician"),
            ("lab", "lab"),
            ("lab2", "lab"),
            ("lead", PROGRAMME_LEAD_GROUP),
            ("auditor", AUDITOR_GROUP),
        ]:
            user = User(
                username=username,
                email=f"{username}@clinic.example",
                is_staff=True,
                is_superuser=role is None,
                first_name=username.title(),
            )
            user.set_password(DEMO_PASSWORD)
            user.save()
            if role:
                user.groups.add(Group.objects.get(name=role))
            users[username] = user
        return users

    def at(self, when):
        return self.time_machine.travel(when, tick=False)

    def create_patient(self, site, number, *, eligible):
        rng = self.random
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        smoking = rng.choice([SmokingStatus.FORMER, SmokingStatus.FORMER, SmokingStatus.NEVER])
        return Patient.objects.create(
            site=site,
            mrn=f"{site.code}{100000 + number}",
            first_name=first,
            last_name=last,
            date_of_birth=dt.date(rng.randint(1946, 1972), rng.randint(1, 12), rng.randint(1, 28)),
            sex=rng.choice(["female", "male"]),
            email=f"{first}.{last}{number}@example.com".lower().replace("'", ""),
            phone=f"+4479111{number:05d}",
            consent_email=True,
            consent_sms=rng.random() < 0.8,
            smoking_status=smoking if eligible else SmokingStatus.CURRENT,
            smoking_quit_date=(
                dt.date(rng.randint(2012, 2023), rng.randint(1, 12), 1)
                if smoking == SmokingStatus.FORMER and eligible
                else None
            ),
            coordinator=self.users["coordinator"],
            preferred_language=LANGUAGE_BY_SITE[site.code][number % 2],
        )

    def record_evaluation(self, patient, on, *, eligible, infusion=False):
        rng, by = self.random, self.users["clinician"]
        fvc = Decimal(rng.uniform(2.2, 3.8)).quantize(Decimal("0.01"))
        ratio = Decimal(rng.uniform(0.38, 0.64))
        fev1_pct = Decimal(rng.uniform(32, 68) if eligible else rng.uniform(72, 78))
        LungFunctionTest.objects.create(
            patient=patient,
            taken_on=on,
            entered_by=by,
            fev1_l=(fvc * ratio).quantize(Decimal("0.01")),
            fev1_pct_predicted=fev1_pct.quantize(Decimal("0.1")),
            fvc_l=fvc,
            dlco_pct_predicted=Decimal(rng.uniform(30, 60)).quantize(Decimal("0.1")),
            tlc_pct_predicted=Decimal(rng.uniform(105, 135)).quantize(Decimal("0.1")),
        )
        ChestCT.objects.create(
            patient=patient,
            taken_on=on,
            entered_by=by,
            emphysema_present=True,
            findings="Centrilobular emphysema, upper-lobe predominant.",
        )
        ClinicalAssessment.objects.create(
            patient=patient,
            taken_on=on,
            entered_by=by,
            fit_for_bronchoscopy=True,
            active_respiratory_infection=False,
            a1at_screening=rng.choice([A1ATScreening.NOT_INDICATED, A1ATScreening.NORMAL]),
            dyspnoea_despite_optimised_therapy=True,
            fit_for_infusion=True if infusion else None,
        )
        if infusion:  # an anti-inflammatory therapy is followed by its CRP
            CReactiveProtein.objects.create(
                patient=patient,
                taken_on=on,
                entered_by=by,
                crp_mg_l=Decimal(rng.uniform(4, 18)).quantize(Decimal("0.1")),
            )
        BodyMeasurement.objects.create(
            patient=patient,
            taken_on=on,
            entered_by=by,
            weight_kg=Decimal(rng.uniform(52, 95)).quantize(Decimal("0.1")),
            height_cm=Decimal(rng.uniform(155, 188)).quantize(Decimal("0.1")),
        )
        SixMinuteWalkTest.objects.create(
            patient=patient, taken_on=on, entered_by=by, distance_m=rng.randint(220, 420)
        )
        SymptomScore.objects.create(
            patient=patient,
            taken_on=on,
            entered_by=by,
            mmrc=rng.randint(2, 4),
            cat=rng.randint(16, 30),
        )
        for name, dose in rng.sample(MEDICATIONS, 2):
            Medication.objects.create(
                patient=patient,
                name=name,
                dose=dose,
                entered_by=by,
                started_on=on - dt.timedelta(days=rng.randint(200, 2000)),
            )

    def create_course(self, site, number, final_state):
        rng, u = self.random, self.users
        eligible = final_state != CourseState.INELIGIBLE
        patient = self.create_patient(site, number, eligible=eligible)
        expansion_days = rng.randint(23, 32)
        # Day offsets of each step from referral; `target` is where this course stops.
        target = {
            CourseState.ON_HOLD: rng.choice([CourseState.ELIGIBLE, CourseState.RELEASED]),
            CourseState.WITHDRAWN: rng.choice([CourseState.EVALUATION, CourseState.EXPANDING]),
            CourseState.INELIGIBLE: CourseState.EVALUATION,
        }.get(final_state, final_state)
        day = {
            "evaluation": 2,
            "approve": 9,
            "schedule_harvest": 10,
            "harvest": 16,
            "receipt": 17,
            "release": 17 + expansion_days,
        }
        day |= {"schedule_transplant": day["release"] + 1, "transplant": day["release"] + 6}
        age = self.age_in_days(target, day, rng)
        start = timezone.now().replace(microsecond=0) - dt.timedelta(days=age)
        # Procedures fall on clinic days: an earlier start moves a weekend harvest to Friday,
        # and the transplant comes a day or two sooner if its day is a weekend.
        start -= dt.timedelta(
            days=self.days_past_friday(site, start + dt.timedelta(day["harvest"]))
        )
        day["transplant"] -= self.days_past_friday(site, start + dt.timedelta(day["transplant"]))
        # The harvest and transplant take the first free slot of the suite at or after the
        # planned time, when they are booked.
        harvest_wanted = self.clinic_time(site, start + dt.timedelta(day["harvest"]))
        transplant_wanted = self.clinic_time(site, start + dt.timedelta(day["transplant"]))
        booked = {}

        def schedule_harvest():
            booked["harvest"] = self.free_slot(course, ResourceKind.BRONCHOSCOPY, harvest_wanted)
            services.course_schedule_harvest(
                course=course,
                by=u["coordinator"],
                scheduled_at=booked["harvest"],
                place=f"{site.code} Bronchoscopy suite",
            )

        def schedule_transplant():
            booked["transplant"] = self.free_slot(
                course, ResourceKind.BRONCHOSCOPY, transplant_wanted
            )
            services.course_schedule_transplant(
                course=course,
                by=u["coordinator"],
                scheduled_at=booked["transplant"],
                place=f"{site.code} Bronchoscopy suite",
            )

        with self.at(start):
            course = services.course_create(patient=patient, by=u["coordinator"])

        def evaluate():
            services.course_start_evaluation(course=course, by=u["coordinator"])
            today = timezone.localdate(timezone=site.time_zone)
            self.record_evaluation(patient, today, eligible=eligible)

        reached = HAPPY_PATH[: HAPPY_PATH.index(target) + 1]
        steps = {
            CourseState.EVALUATION: (day["evaluation"], evaluate),
            CourseState.ELIGIBLE: (
                day["approve"],
                lambda: services.course_approve(course=course, by=u["clinician"]),
            ),
            CourseState.HARVEST_SCHEDULED: (day["schedule_harvest"], schedule_harvest),
            CourseState.HARVESTED: (
                lambda: booked["harvest"] + dt.timedelta(hours=2),
                lambda: services.course_record_harvest(
                    course=course,
                    by=u["clinician"],
                    performed_at=booked["harvest"],
                    operator=u["clinician"],
                ),
            ),
            CourseState.EXPANDING: (
                day["receipt"],
                lambda: services.course_receive_at_lab(
                    course=course,
                    scanned_coi_id=course.coi_id,
                    by=u["lab"],
                    received_at=timezone.now(),
                    temperature_c=Decimal(rng.uniform(3, 7)).quantize(Decimal("0.1")),
                    transit_hours=Decimal(rng.uniform(6, 30)).quantize(Decimal("0.1")),
                ),
            ),
            CourseState.RELEASED: (
                day["release"],
                lambda: self.release(course),
            ),
            CourseState.TRANSPLANT_SCHEDULED: (day["schedule_transplant"], schedule_transplant),
            CourseState.FOLLOW_UP: (
                lambda: booked["transplant"] + dt.timedelta(hours=2),
                lambda: self.transplant(course, performed_at=booked["transplant"]),
            ),
        }
        for state in reached[1:]:
            if state == CourseState.COMPLETED:
                break
            when, step = steps[state]
            when = when() if callable(when) else start + dt.timedelta(when)
            with self.at(when):
                step()
        self.book_follow_ups(course)
        self.count_growth(course)
        self.mark_past_follow_ups_done(course)
        with self.at(timezone.now() - dt.timedelta(hours=1)):
            self.finish(course, final_state)

    @staticmethod
    def days_past_friday(site, moment) -> int:
        """How many days `moment` falls after Friday in the site's calendar (0 on weekdays)."""
        return max(timezone.localdate(moment, site.time_zone).weekday() - 4, 0)

    def clinic_time(self, site, moment) -> dt.datetime:
        """A time in the clinic's morning (09:00–12:00) on `moment`'s day, in the site's zone."""
        day = timezone.localdate(moment, site.time_zone)
        minutes = 9 * 60 + 15 * self.random.randint(0, 12)
        return dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60), tzinfo=site.time_zone)

    def count_growth(self, course):
        """The lab counts each batch in culture every third day: growth doubling every 2.5
        to 4 days from about 2 × 10⁶ cells, so the forecast has counts to fit."""
        batch = course.batches.filter(status="expanding").first()
        if batch is None:
            return
        rng = self.random
        doubling, cells = rng.uniform(2.5, 4.0), rng.uniform(1.5e6, 2.5e6)
        day = 3
        while batch.received_at + dt.timedelta(days=day) < timezone.now():
            counted_at = batch.received_at + dt.timedelta(days=day)
            with self.at(counted_at + dt.timedelta(minutes=5)):
                batch_record_cell_count(
                    batch=batch,
                    by=self.users["lab"],
                    counted_at=counted_at,
                    total_cells=int(cells * 2 ** (day / doubling) * rng.uniform(0.9, 1.1)),
                    viability_pct=Decimal(rng.randint(85, 96)),
                )
            day += 3

    def book_follow_ups(self, course):
        """Ten days before each follow-up's window opens (if that is within two weeks from
        now), the coordinator books it in the proposed clinic slot; the rest stay due. The
        first whose window is still to close, of a course in follow-up, is left for the
        coordinator to book (the worklist's "Book the follow-up")."""
        site = course.site
        today = timezone.localdate(timezone=site.time_zone)
        horizon = today + dt.timedelta(days=14)
        due = Visit.objects.filter(
            course=course,
            kind=VisitKind.FOLLOW_UP,
            status=VisitStatus.PLANNED,
            window_opens_on__lte=horizon,
        )
        for visit in due:
            if (
                not self.follow_up_left_to_book
                and course.state == CourseState.FOLLOW_UP
                and visit.window_closes_on >= today
                and visit.scheduled_at > timezone.now()  # not one measured as its day passed
            ):
                self.follow_up_left_to_book = True
                continue
            ten_days_before = dt.datetime.combine(
                visit.window_opens_on, dt.time(8), tzinfo=site.time_zone
            ) - dt.timedelta(days=10)
            with self.at(min(ten_days_before, timezone.now() - dt.timedelta(hours=1))):
                slots = dict(follow_ups_proposal(course=course))
                if slots.get(visit):
                    follow_ups_book(
                        course=course,
                        by=self.users["coordinator"],
                        picks={visit.pk: slots[visit].starts_at},
                    )

    @staticmethod
    def age_in_days(target, day, rng):
        """How long ago the course was referred, so that it sits believably in `target`."""
        if target == CourseState.REFERRED:
            return rng.uniform(0.5, 1.5)
        if target == CourseState.EVALUATION:
            return day["evaluation"] + rng.uniform(1, 6)
        if target == CourseState.ELIGIBLE:
            return day["approve"] + rng.uniform(0.2, 0.8)
        if target == CourseState.HARVEST_SCHEDULED:
            return day["schedule_harvest"] + rng.uniform(1, 5)
        if target == CourseState.HARVESTED:
            return day["harvest"] + 0.5
        if target == CourseState.EXPANDING:
            return day["receipt"] + rng.choice([4, 12, 19, 27, 37])  # one overdue past day 35
        if target == CourseState.RELEASED:
            return day["release"] + rng.uniform(0.3, 0.9)
        if target == CourseState.TRANSPLANT_SCHEDULED:
            return day["schedule_transplant"] + rng.uniform(1, 4)
        if target == CourseState.FOLLOW_UP:
            return day["transplant"] + rng.choice([10, 40, 95, 130, 175])
        return day["transplant"] + 7 * 24 + rng.uniform(20, 60)  # completed

    def qc(self, batch):
        """The batch's QC, entered by the first lab user: results that meet the protocol."""
        rng = self.random
        batch_record_qc(
            batch=batch,
            by=self.users["lab"],
            identity_p63_pct=Decimal(rng.randint(85, 97)),
            purity_pct=Decimal(rng.randint(90, 99)),
            sterility_negative=True,
            viability_pct=Decimal(rng.randint(78, 95)),
            viable_cells=rng.randint(180, 320) * 1_000_000,
        )

    def release(self, course):
        """QC entered by one lab user, the release signed by the other."""
        self.qc(course.batches.get(status="expanding"))
        services.course_release(course=course, by=self.users["lab2"], password=DEMO_PASSWORD)

    def transplant(self, course, *, performed_at):
        """The product shipped to the site and received there, each with its label scanned;
        at the bedside, weighed that day, the label read, a second clinician confirming."""
        for kind, hours_before in (
            (CustodyKind.SHIPPED_TO_SITE, 20),
            (CustodyKind.RECEIVED_AT_SITE, 3),
        ):
            custody_event_record(
                course=course,
                kind=kind,
                by=self.users["coordinator"],
                scanned_coi_id=course.coi_id,
                at=performed_at - dt.timedelta(hours=hours_before),
                location=course.site.name,
            )
        weight = course.patient.bodymeasurements.first().weight_kg
        services.course_record_transplant(
            course=course,
            by=self.users["clinician"],
            performed_at=performed_at,
            bedside_coi_id=course.coi_id,
            # 2.4 × 10⁶/kg, or what was released if that is less.
            cells_administered=min(
                int(Decimal("2.4") * weight * 1_000_000), course.viable_cells_released
            ),
            weight_kg=weight,
            weighed_on=timezone.localdate(performed_at, course.site.time_zone),
            second_person=self.users["clinician2"],
            second_person_password=DEMO_PASSWORD,
            discharged_at=performed_at + dt.timedelta(hours=5),
        )

    def mark_past_follow_ups_done(self, course):
        """Follow-ups due more than 3 days ago were attended and measured, mostly better than
        at baseline; entering the measurements marks each visit done."""
        rng, by = self.random, self.users["clinician"]
        attended_before = timezone.now() - dt.timedelta(days=3)
        patient = course.patient
        baseline, walk, symptoms, crp = (
            baseline_records(
                model, patient_id=patient.pk, transplanted_on=course.treated_on
            ).first()
            for model in (LungFunctionTest, SixMinuteWalkTest, SymptomScore, CReactiveProtein)
        )
        visits = Visit.objects.filter(course=course, kind=VisitKind.FOLLOW_UP).select_related(
            "protocol_visit", "course__site"
        )
        for visit in visits:
            if visit.scheduled_at >= attended_before:
                continue
            on = timezone.localdate(visit.scheduled_at, course.site.time_zone)
            progress = min(visit.protocol_visit.weeks_after_transplant / 24, 1)
            dlco_gain = Decimal(1 + rng.uniform(-0.05, 0.30) * progress)
            records = [
                LungFunctionTest(
                    visit=visit,
                    taken_on=on,
                    fev1_l=baseline.fev1_l
                    + Decimal(rng.randint(-40, 150) * progress / 1000).quantize(Decimal("0.01")),
                    fev1_pct_predicted=baseline.fev1_pct_predicted,
                    fvc_l=baseline.fvc_l,
                    dlco_pct_predicted=(baseline.dlco_pct_predicted * dlco_gain).quantize(
                        Decimal("0.1")
                    ),
                    tlc_pct_predicted=baseline.tlc_pct_predicted,
                ),
                SixMinuteWalkTest(
                    visit=visit,
                    taken_on=on,
                    distance_m=walk.distance_m + int(rng.randint(-10, 80) * progress),
                ),
                SymptomScore(
                    visit=visit,
                    taken_on=on,
                    mmrc=max(symptoms.mmrc - rng.randint(0, 1), 0),
                    cat=max(symptoms.cat - int(rng.randint(0, 7) * progress), 0),
                ),
            ]
            if crp is not None and course.protocol.therapy == Therapy.MSC:
                # Inflammation settles after the cells: CRP mostly falls from baseline.
                fall = Decimal(rng.uniform(0.2, 0.6) * progress + 0.05)
                records.append(
                    CReactiveProtein(
                        visit=visit,
                        taken_on=on,
                        crp_mg_l=(crp.crp_mg_l * (1 - fall)).quantize(Decimal("0.1")),
                    )
                )
            if visit.protocol_visit.includes_ct:
                records = [
                    ChestCT(
                        visit=visit,
                        taken_on=on,
                        emphysema_present=True,
                        findings="Stable emphysema; no new findings.",
                    )
                ]
            for record in records:
                clinical_record_save(record=record, by=by)
            if visit.protocol_visit.weeks_after_transplant == 4 and rng.random() < 0.3:
                adverse_event_record(
                    event=AdverseEvent(
                        course=course,
                        visit=visit,
                        onset_on=on - dt.timedelta(days=20),
                        grade=rng.choice([1, 1, 2, 3]),
                        serious=False,
                        related_to_procedure="yes",
                        related_to_product="no",
                        outcome="recovered",
                        description=(
                            "Transient bronchospasm and cough after the bronchoscopy."
                            if course.protocol.therapy == Therapy.P63
                            else "Headache and low-grade fever the evening after the infusion."
                        ),
                    ),
                    by=by,
                )

    # The site that gives MSC infusions.

    def create_msc_site(self) -> Site:
        """The day hospital: its infusion chairs (weekday slots of two hours, two chairs) and
        lung-function clinic, each named for patients in three languages; its protocols (one
        dose, and four doses four weeks apart); and its cell-bank stock: lots released, one
        expiring soon, one awaiting its release signature, one its QC."""
        name, code, zone, patient_name, phone = MSC_SITE
        site = Site.objects.create(
            name=name,
            code=code,
            time_zone=zone,
            patient_facing_name=patient_name,
            patient_phone=phone,
        )
        site.coordinators.add(self.users["coordinator"])
        site.members.add(
            self.users["clinician"], self.users["clinician2"], self.users["lab"], self.users["lab2"]
        )
        ClinicHours.objects.bulk_create(
            ClinicHours(site=site, weekday=day, opens_at=CLINIC_OPENS, closes_at=CLINIC_CLOSES)
            for day in CLINIC_DAYS
        )
        for resource_name, kind, starts, hours, capacity in (
            ("Infusion chairs", ResourceKind.INFUSION_CHAIR, (9, 11, 13), 2, 2),
            ("Lung-function clinic", ResourceKind.LUNG_FUNCTION, (9, 10, 11, 12), 1, 1),
        ):
            resource = Resource.objects.create(
                name=f"{code} {resource_name}", kind=kind, site=site, time_zone=zone
            )
            ResourceWording.objects.bulk_create(
                ResourceWording(
                    resource=resource,
                    language=language,
                    name=f"{MSC_NAMES[language]}, {unit}",
                    address=MSC_ADDRESS.get(language, ""),
                )
                for language, unit in MSC_UNITS[kind].items()
            )
            ResourceSession.objects.bulk_create(
                ResourceSession(
                    resource=resource,
                    weekday=day,
                    starts_at=dt.time(hour),
                    ends_at=dt.time(hour + hours),
                    capacity=capacity,
                )
                for day in CLINIC_DAYS
                for hour in starts
            )
        single = services.protocol_create(name="MSC infusion, one dose", therapy=Therapy.MSC)
        single.default_at.add(site)
        four = services.protocol_create(
            name="MSC infusion, four doses",
            therapy=Therapy.MSC,
            dose_count=4,
            dose_interval_days=28,
            follow_up_anchor="last",
        )
        self.msc_protocols = {"single": single, "four": four}
        now = timezone.now()
        for number, protocol, units, received_days_ago, expires_in, stage in (
            ("UC-2025-31", single, 20, 260, 330, "released"),
            ("UC-2025-44", four, 16, 120, 300, "released"),
            ("UC-2026-02", single, 3, 12, 20, "released"),  # expiring soon
            ("UC-2026-05", single, 24, 3, 400, "qc"),  # QC entered: the release to sign
            ("BM-2026-07", four, 12, 1, 380, "received"),  # just arrived: QC to enter
        ):
            received = now - dt.timedelta(days=received_days_ago)
            with self.at(received + dt.timedelta(minutes=5)):
                lot = lot_receive(
                    by=self.users["lab"],
                    lot_number=number,
                    protocol=protocol,
                    site=site,
                    bank="Iberian Cord Blood Bank" if number.startswith("UC") else "Marrow Bank",
                    tissue_source="umbilical_cord" if number.startswith("UC") else "bone_marrow",
                    donor_code=f"D-{number[-2:]}{units}",
                    donor_eligibility_accepted_by="Dr Elena Ruiz, the bank's medical director",
                    donor_eligibility_accepted_on=timezone.localdate(
                        received - dt.timedelta(days=40), site.time_zone
                    ),
                    passage=self.random.randint(3, 5),
                    units_received=units,
                    cells_per_unit=100_000_000,
                    expires_on=timezone.localdate(now, site.time_zone)
                    + dt.timedelta(days=expires_in),
                    storage_temperature_c=Decimal("-185"),
                    received_at=received,
                )
            if stage == "received":
                continue
            with self.at(received + dt.timedelta(days=1)):
                lot_record_qc(lot=lot, by=self.users["lab"], **self.lot_qc())
            if stage == "released":
                with self.at(received + dt.timedelta(days=1, hours=2)):
                    lot_release(lot=lot, by=self.users["lab2"], password=DEMO_PASSWORD)
        return site

    def lot_qc(self) -> dict:
        rng = self.random
        return {
            "viability_pct": Decimal(rng.randint(85, 95)),
            "sterility_negative": True,
            "mycoplasma_negative": True,
            "endotoxin_eu_ml": Decimal("0.05"),
            **{name: Decimal(rng.randint(970, 999)) / 10 for name in ("cd73_pct", "cd90_pct")},
            "cd105_pct": Decimal(rng.randint(960, 995)) / 10,
            **{
                name: Decimal(rng.randint(1, 9)) / 10
                for name in (
                    "cd45_pct",
                    "cd34_pct",
                    "cd14_cd11b_pct",
                    "cd79a_cd19_pct",
                    "hla_dr_pct",
                )
            },
        }

    def create_msc_course(self, site, number, protocol, age: float):
        """An MSC course replayed through the services: evaluation, allocation, each dose
        booked in the chairs (the first as the earliest free chain, the next in the slot held
        for it), its units shipped and received, given; every step taken only if its time has
        come, so that the course sits where its age puts it."""
        u, now = self.users, timezone.now()
        start = now.replace(microsecond=0) - dt.timedelta(days=age)
        patient = self.create_patient(site, number, eligible=True)
        with self.at(start):
            course = services.course_create(patient=patient, by=u["coordinator"], protocol=protocol)

        def evaluate():
            services.course_start_evaluation(course=course, by=u["coordinator"])
            self.record_evaluation(
                patient, timezone.localdate(timezone=site.time_zone), eligible=True, infusion=True
            )

        steps = [
            (start + dt.timedelta(days=2), evaluate),
            (
                start + dt.timedelta(days=9),
                lambda: services.course_approve(course=course, by=u["clinician"]),
            ),
            (
                start + dt.timedelta(days=10),
                lambda: services.course_allocate_product(course=course, by=u["coordinator"]),
            ),
        ]
        for when, step in steps:
            if when > now - dt.timedelta(hours=1):
                return self.finish_msc(course)
            with self.at(when):
                step()
        booking_at = start + dt.timedelta(days=11)
        while course.doses_given < protocol.dose_count:
            if booking_at > now - dt.timedelta(hours=1):
                break
            with self.at(booking_at):
                slot = self.next_chair_slot(course)
                services.course_schedule_infusion(
                    course=course,
                    by=u["coordinator"],
                    scheduled_at=slot,
                    place=f"{site.code} Infusion chairs",
                )
            if slot + dt.timedelta(hours=2) > now - dt.timedelta(hours=1):
                break
            self.infuse(course, slot)
            booking_at = slot + dt.timedelta(days=protocol.dose_interval_days // 2)
        return self.finish_msc(course)

    @staticmethod
    def next_chair_slot(course) -> dt.datetime:
        """The slot held for the course's next dose, else the first of the earliest chain."""
        held = (
            course.reservations.filter(
                purpose=ReservationPurpose.INFUSION,
                visit__isnull=True,
                released_at__isnull=True,
                starts_at__gt=timezone.now() + dt.timedelta(days=1),
            )
            .order_by("starts_at")
            .first()
        )
        if held is not None:
            return held.starts_at
        [chain] = infusion_chains_earliest(
            course=course, after=timezone.now() + dt.timedelta(days=1), count=1
        )
        return chain.slots[0].starts_at

    def infuse(self, course, slot: dt.datetime):
        """The dose's units to the site and the bedside: thawed a quarter of an hour before,
        vital signs before, during and an hour after, a second clinician confirming."""
        u, rng = self.users, self.random
        for kind, hours_before in (
            (CustodyKind.SHIPPED_TO_SITE, 20),
            (CustodyKind.RECEIVED_AT_SITE, 3),
        ):
            with self.at(slot - dt.timedelta(hours=hours_before)):
                units_custody_record(
                    course=course,
                    kind=kind,
                    by=u["lab"] if kind == CustodyKind.SHIPPED_TO_SITE else u["coordinator"],
                    scanned_unit_ids=[
                        unit.unit_id for unit in units_on_their_way(course=course, kind=kind)
                    ],
                    at=timezone.now(),
                    location=course.site.name,
                    temperature_c=Decimal("-160") if kind == CustodyKind.SHIPPED_TO_SITE else None,
                )
        weight = course.patient.bodymeasurements.first().weight_kg
        infusion = services.course_next_infusion(course)
        started = slot + dt.timedelta(minutes=15)

        def signs(heart: int) -> dict:
            return {
                "heart_rate_bpm": heart,
                "systolic_mmhg": rng.randint(118, 142),
                "diastolic_mmhg": rng.randint(70, 86),
                "spo2_pct": rng.randint(91, 96),
                "temperature_c": Decimal(rng.randint(364, 373)) / 10,
                "respiratory_rate": rng.randint(14, 20),
            }

        with self.at(slot + dt.timedelta(hours=2)):
            services.course_record_infusion(
                course=course,
                by=u["clinician"],
                thawed_at=slot,
                started_at=started,
                scanned_unit_ids=[unit.unit_id for unit in infusion.units.all()],
                scanned_coi_id=course.coi_id,
                cells_given=int(course.protocol.dose_target_million_per_kg * weight * 1_000_000),
                weight_kg=weight,
                weighed_on=timezone.localdate(started, course.site.time_zone),
                second_person=u["clinician2"],
                second_person_password=DEMO_PASSWORD,
                vital_signs={
                    "before": signs(rng.randint(68, 84)),
                    "during": signs(rng.randint(70, 90)),
                    "after": signs(rng.randint(66, 82)),
                },
            )

    def finish_msc(self, course):
        """After the last dose: the follow-ups booked and measured as their time came; a
        course whose 24-week visit is done is completed."""
        if course.state != CourseState.FOLLOW_UP:
            return course
        self.book_follow_ups(course)
        self.mark_past_follow_ups_done(course)
        with self.at(timezone.now() - dt.timedelta(hours=1)):
            if course_completion_visit_done(course=course):
                services.course_complete(course=course, by=self.users["coordinator"])
        return course

    def finish(self, course, final_state):
        u = self.users
        if final_state == CourseState.COMPLETED:
            services.course_complete(course=course, by=u["coordinator"])
        elif final_state == CourseState.INELIGIBLE:
            services.course_decline(
                course=course,
                by=u["clinician"],
                reason="Current smoker; FEV1 above the protocol's range.",
            )
        elif final_state == CourseState.ON_HOLD:
            services.course_hold(
                course=course,
                by=u["coordinator"],
                reason="Admitted with an exacerbation; reassess in 4 weeks.",
            )
        elif final_state == CourseState.WITHDRAWN:
            services.course_withdraw(
                course=course, by=u["coordinator"], reason="Patient chose to withdraw."
            )
