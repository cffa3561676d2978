"""The SMS provider's callbacks."""

from django.conf import settings
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from common.urls import public_url
from delivery.outbox import notification_record_provider_status
from scheduling.replies import sms_reply_handle


def _signed_by_twilio(request) -> bool:
    """Twilio signs the public URL it called (behind a proxy, SITE_URL's, not ours) and the
    form it posted, with our auth token."""
    url = public_url(request.get_full_path())
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    return bool(settings.TWILIO_AUTH_TOKEN) and validator.validate(
        url, request.POST.dict(), signature
    )


@csrf_exempt  # Twilio cannot send a CSRF token; its signature authenticates the request instead
@require_POST
def sms_status_callback(request):
    """Twilio's delivery report for a message we sent."""
    if not _signed_by_twilio(request):
        return HttpResponseForbidden("Bad signature.")
    notification_record_provider_status(
        provider_message_id=request.POST.get("MessageSid", ""),
        status=request.POST.get("MessageStatus", ""),
        error=request.POST.get("ErrorCode", ""),
    )
    return HttpResponse(status=204)


@csrf_exempt  # as above: the signature is the authentication
@require_POST
def sms_inbound(request):
    """A patient's text, from Twilio's incoming-message webhook; the answer goes back as
    TwiML, which Twilio sends. A message delivered twice is answered once."""
    if not _signed_by_twilio(request):
        return HttpResponseForbidden("Bad signature.")
    sid = request.POST.get("MessageSid", "")
    if not sid or len(sid) > 64:
        return HttpResponseBadRequest("No message id.")
    handled = sms_reply_handle(
        provider_message_id=sid,
        from_number=request.POST.get("From", ""),
        body=request.POST.get("Body", ""),
    )
    twiml = MessagingResponse()
    if handled.answer:
        twiml.message(handled.answer)
    return HttpResponse(str(twiml), content_type="text/xml; charset=utf-8")
