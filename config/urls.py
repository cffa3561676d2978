from django.conf import settings
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView
from django_otp.admin import OTPAdminSite

from delivery.views import sms_status_callback
from reporting.views import calendar_feed_view, weekly_report_view

if settings.OTP_REQUIRED:
    admin.site.__class__ = OTPAdminSite  # sign-in then asks for the TOTP token too

admin.site.site_header = "COPD cell-therapy pathway"
admin.site.site_title = "Pathway tracker"
admin.site.index_title = "Treatment pathway"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/reports/weekly/", admin.site.admin_view(weekly_report_view), name="weekly-report"),
    path("admin/", admin.site.urls),
    path("sms/status/", sms_status_callback, name="sms-status"),
    # Outside /admin/: calendar applications cannot sign in; the secret link is the credential.
    path("calendar/<str:token>.ics", calendar_feed_view, name="calendar-feed"),
]
