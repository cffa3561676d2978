"""The SMS provider's callbacks, and the one-tap page patients reach from a reminder."""

import hmac
import re

from django.conf import settings
from django.http import (
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    JsonResponse,
)
from django.shortcuts import render
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from common.errors import Refused
from common.middleware import accepts_nul, posted_cross_site
from common.proxies import client_address, client_is_this_machine
from common.rate_limits import RateLimit
from common.urls import public_url
from delivery.health import TrackerCollector, health_checks
from delivery.messages import patient_moment, visit_other_times, visit_page_context
from delivery.outbox import notification_record_provider_status
from enquiries.services import enquirer_message_received
from pathway.checkins import invitation_answer, invitation_link_language, invitation_open
from patients.questionnaires import text_in
from scheduling.replies import sms_reply_handle
from scheduling.visit_links import (
    visit_change_asked,
    visit_link_answer,
    visit_link_language,
    visit_link_open,
)


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


@accepts_nul  # stored without them (see below): a refusal is not retried, and the text is lost
@csrf_exempt  # as above: the signature is the authentication
@require_POST
def sms_inbound(request):
    """A patient's text, from Twilio's incoming-message webhook; the answer goes back as
    TwiML, which Twilio sends. A message delivered twice is answered once.

    Whatever arrives is kept, whole: a NUL character (which PostgreSQL cannot store) is removed
    and the message says how many were, for the coordinator who reads it."""
    if not _signed_by_twilio(request):
        return HttpResponseForbidden("Bad signature.")
    fields = {name: request.POST.get(name, "") for name in ("MessageSid", "From", "Body")}
    removed = sum(value.count("\x00") for value in fields.values())
    sid, from_number, body = (value.replace("\x00", "") for value in fields.values())
    if not sid or len(sid) > 64:
        return HttpResponseBadRequest("No message id.")
    handled = sms_reply_handle(
        provider_message_id=sid,
        from_number=from_number,
        body=body,
        characters_removed=removed,
    )
    if not handled.repeat:  # from someone who enquired, too: their STOP, their words
        enquirer_message_received(inbound=handled.inbound)
    twiml = MessagingResponse()
    if handled.answer:
        twiml.message(handled.answer)
    return HttpResponse(str(twiml), content_type="text/xml; charset=utf-8")


# The one-tap page: a link in a reminder, no login. It shows one visit and nothing else.
# A guard against guessing tokens: so many requests a minute from one address, in a moving
# window counted across every web process (common/rate_limits.py).
PATIENT_PAGES_LIMIT = RateLimit("patient-page", "30/minute")
ANSWER_VALUE = re.compile(r"-?[0-9]{1,3}")


def _too_many(request) -> bool:
    return not PATIENT_PAGES_LIMIT.allows(client_address(request))


def _cross_site(request) -> bool:
    """A form posted from another site: refused. (The pages take no CSRF cookie: the token in
    the link is the credential, and a patient's phone may refuse cookies.)"""
    return posted_cross_site(request)


def _gone(request, language: str | None):
    """A link that no longer works (or never did), in the language of the patient it was
    sent to where the token is known, else in the browser's (Accept-Language)."""
    language = language or translation.get_language_from_request(request)
    with translation.override(language):
        context = {"language": translation.get_language()}
        response = render(request, "delivery/visit_page_gone.html", context, status=404)
    patch_vary_headers(response, ("Accept-Language",))
    return response


# Never kept by a browser or a proxy: a shared device's back button or a proxy's cache must not
# show one patient's page to the next person (never_cache: Cache-Control: no-store, private).
@never_cache
@csrf_exempt
@require_http_methods(["GET", "POST"])
def visit_page(request, token):
    """The visit (what, when in the patient's zone, where, how to prepare), with Confirm and
    Ask for another time (a free slot of the clinic, where it keeps a calendar)."""
    if _too_many(request):
        return HttpResponse("Too many requests: try again in a minute.", status=429)
    if _cross_site(request):
        return HttpResponseForbidden("Not from this site.")
    link = visit_link_open(token=token)
    if link is None:
        return _gone(request, visit_link_language(token=token))
    visit = link.visit
    with translation.override(visit.course.patient.preferred_language):
        return _visit_page(request, link, visit)


def _visit_page(request, link, visit):
    choices = visit_other_times(visit=visit)
    answered, asked = "", None
    if request.method == "POST":
        wanted = request.POST.get("answer", "")
        # Only a slot the page offers now: anything else posted is no slot at all.
        picked = next((c.starts_at for c in choices if c.value == request.POST.get("slot")), None)
        try:
            if wanted == "confirm":
                visit_link_answer(link=link, confirm=True)
                answered = "confirmed"
            elif wanted == "change":
                asked = visit_link_answer(link=link, confirm=False, wanted_at=picked)
                answered = "change"
        except Refused:
            answered = "used"
    if answered == "used" or (not answered and link.used_at):
        # Answered before: a request for another time still open is what they are told of.
        asked = visit_change_asked(visit=visit)
        answered = "change" if asked else "used"
    context = visit_page_context(visit) | {"answered": answered, "choices": choices}
    if asked and asked.wanted_at:
        context["asked_for"] = " ".join(patient_moment(asked.wanted_at, visit.course.patient))
    return render(request, "delivery/visit_page.html", context)


@never_cache  # as the visit page
@csrf_exempt  # as the visit page: the link's token is the credential
@require_http_methods(["GET", "POST"])
def checkin_page(request, token):
    """A questionnaire from a message's link, in the patient's language; answered once."""
    if _too_many(request):
        return HttpResponse("Too many requests: try again in a minute.", status=429)
    if _cross_site(request):
        return HttpResponseForbidden("Not from this site.")
    invitation = invitation_open(token=token)
    if invitation is None:
        return _gone(request, invitation_link_language(token=token))
    patient = invitation.course.patient
    language = patient.preferred_language
    definition = invitation.instrument.definition
    errors, done, chosen = [], False, {}
    if request.method == "POST":
        for item in definition["items"]:
            value = request.POST.get(item["code"], "")
            if ANSWER_VALUE.fullmatch(value):
                chosen[item["code"]] = int(value)
        try:
            invitation_answer(invitation=invitation, answers=chosen)
            done = True
        except Refused:  # the questions still to answer, in the patient's words
            errors = [
                text_in(item["text"], language)
                for item in definition["items"]
                if chosen.get(item["code"]) not in {o["value"] for o in item["options"]}
            ]
            if not errors:
                with translation.override(language):
                    errors = [gettext("These questions have been answered already.")]
    items = [
        {
            "code": item["code"],
            "text": text_in(item["text"], language),
            "options": [
                (option["value"], text_in(option["text"], language)) for option in item["options"]
            ],
            "chosen": chosen.get(item["code"]),
        }
        for item in definition["items"]
    ]
    context = {
        "language": language,
        "first_name": patient.first_name,
        "clinic": patient.site.patient_facing_name,
        "items": items,
        "errors": errors,
        "done": done,
    }
    with translation.override(language):
        context["clinic"] = context["clinic"] or gettext("your clinic")
        return render(request, "delivery/checkin_page.html", context)


@require_safe
def healthz(request):
    """200 when the database, the broker and the shared cache answer, beat's dispatcher ran
    in the last 5 minutes and no reminder is more than 5 minutes late; 503 saying which is
    not."""
    checks = health_checks()
    healthy = all(check.ok for check in checks)
    body = {
        "status": "ok" if healthy else "failing",
        "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks},
    }
    return JsonResponse(body, status=200 if healthy else 503)


_REGISTRY = CollectorRegistry()
_REGISTRY.register(TrackerCollector())


@require_safe
def metrics(request):
    """Prometheus's text format. With METRICS_TOKEN set, only for `Authorization: Bearer
    <token>`; without it, only for this machine (the proxy does not forward it)."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponseForbidden("A token is needed.")
    elif not client_is_this_machine(request):
        return HttpResponseForbidden("Only from this machine: set METRICS_TOKEN to scrape.")
    return HttpResponse(generate_latest(_REGISTRY), content_type=CONTENT_TYPE_LATEST)
