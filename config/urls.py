from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from common.second_factor import second_factor_enrol, second_factor_verify
from delivery.demo import demo_patient_links
from delivery.views import (
    checkin_page,
    healthz,
    metrics,
    sms_inbound,
    sms_status_callback,
    visit_page,
)
from enquiries.views import enquire_page
from reporting.views import (
    calendar_feed_view,
    weekly_report_view,
    worklist_assign_view,
    worklist_done_view,
)

# A database that cannot be reached is a 503 with Retry-After, not a 500 (common/unavailable.py).
handler500 = "common.unavailable.server_error"

admin.site.site_header = "COPD cell-therapy pathway"
admin.site.site_title = "Pathway tracker"
admin.site.index_title = "Treatment pathway"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/reports/weekly/", admin.site.admin_view(weekly_report_view), name="weekly-report"),
    path(
        "admin/worklist/assign/",
        admin.site.admin_view(worklist_assign_view),
        name="worklist-assign",
    ),
    path("admin/worklist/done/", admin.site.admin_view(worklist_done_view), name="worklist-done"),
    # The second factor, asked after the password when OTP_REQUIRED is on (common/second_factor.py).
    path("admin/second-factor/", second_factor_verify, name="second-factor-verify"),
    path("admin/second-factor/enrol/", second_factor_enrol, name="second-factor-enrol"),
    path("admin/demo/patient-links/", demo_patient_links, name="demo-patient-links"),
    path("admin/", admin.site.urls),
    path("sms/status/", sms_status_callback, name="sms-status"),
    path("sms/inbound/", sms_inbound, name="sms-inbound"),
    # A reminder's link: no login; the token is the credential, for one visit, until it.
    path("v/<str:token>/", visit_page, name="visit-page"),
    path("q/<str:token>/", checkin_page, name="checkin-page"),
    # The front door: anyone may ask a question or apply; no login (enquiries/views.py).
    path("enquire/", enquire_page, name="enquire"),
    # Operations: no login; nothing about any patient.
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    # Outside /admin/: calendar applications cannot sign in; the secret link is the credential.
    path("calendar/<str:token>.ics", calendar_feed_view, name="calendar-feed"),
]
