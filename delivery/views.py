"""The SMS provider's callbacks."""

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from common.urls import public_url
from delivery.outbox import notification_record_provider_status


@csrf_exempt  # Twilio cannot send a CSRF token; its signature authenticates the request instead
@require_POST
def sms_status_callback(request):
    """Twilio's delivery report for a message we sent, signed with our auth token."""
    # Twilio signs the public URL it called, which behind a proxy is SITE_URL's, not ours.
    url = public_url(request.get_full_path())
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    if not settings.TWILIO_AUTH_TOKEN or not validator.validate(
        url, request.POST.dict(), signature
    ):
        return HttpResponseForbidden("Bad signature.")
    notification_record_provider_status(
        provider_message_id=request.POST.get("MessageSid", ""),
        status=request.POST.get("MessageStatus", ""),
        error=request.POST.get("ErrorCode", ""),
    )
    return HttpResponse(status=204)
