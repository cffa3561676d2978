"""The demo's front door: an application at each P63+ site in its patients' language, one
with a video consultation on the worklist (tomorrow's, or the last clinic day's still to mark
done or missed); `seed_demo` runs it last."""

import datetime as dt
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from enquiries.consultations import consultation_book
from enquiries.models import ConsultationMode, EnquiryKind
from enquiries.services import enquiry_submit
from patients.models import Site

# (site, language, first name, last name, the self-reported answers)
APPLICATIONS = (
    ("LDN", "en", "Joan", "Whitfield", {"smoking": "former", "fev1_pct_predicted": "42"}),
    ("SHA", "zh-hans", "秀英", "李", {"smoking": "former", "fev1_pct_predicted": "38"}),
    ("BOS", "es", "Lucía", "Herrera", {"smoking": "current", "fev1_pct_predicted": "55"}),
)


# The consultation is booked this long before it is held, the application sent just before.
BOOKED_AHEAD = dt.timedelta(days=3)


def _last_clinic_morning_by_tomorrow(site) -> dt.datetime:
    """10:00 at the site on tomorrow, or the last weekday before it: the worklist lists the
    consultation (tomorrow's or today's, or one held and still to mark done or missed)."""
    day = timezone.localdate(timezone=site.time_zone) + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(10), tzinfo=site.time_zone)


class Command(BaseCommand):
    help = "Load the demo's enquiries and a consultation (demo data only)."

    def handle(self, *args, **options):
        import time_machine  # a development tool: only the demo moves the clock

        coordinator = get_user_model().objects.get(username="coordinator")
        for code, language, first, last, answers in APPLICATIONS:
            site = Site.objects.get(code=code)
            consultation_at = _last_clinic_morning_by_tomorrow(site)
            # London's applicant wrote three days before the consultation, booked at once.
            sent_at = consultation_at - BOOKED_AHEAD if code == "LDN" else timezone.now()
            with time_machine.travel(sent_at, tick=False):
                enquiry, _ = enquiry_submit(
                    fields={
                        "kind": EnquiryKind.APPLICATION,
                        "first_name": first,
                        "last_name": last,
                        "email": f"{code.lower()}.enquirer@example.com",
                        "consent_email": True,
                        "message": "I read about the cell therapy. Could it help me?",
                        "copd_diagnosed": "yes",
                        "emphysema_on_ct": "yes",
                        "smoking": answers["smoking"],
                        "smoking_quit_on": dt.date(2019, 3, 1)
                        if answers["smoking"] == "former"
                        else None,
                        "fev1_pct_predicted": Decimal(answers["fev1_pct_predicted"]),
                        "home_oxygen": "no",
                        "bronchoscopy_ok": "yes",
                        "chest_infection_now": "no",
                    },
                    site=site,
                    language=language,
                    submission_key=f"demo-{code}",
                )
                if code == "LDN":
                    consultation_book(
                        enquiry=enquiry,
                        by=coordinator,
                        scheduled_at=consultation_at,
                        mode=ConsultationMode.VIDEO,
                        video_link="https://video.example.org/demo-consultation",
                    )
