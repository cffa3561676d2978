"""The public enquiry page: no login, in English, Spanish or Simplified Chinese.

Whatever is posted, the answer is the page again with what was typed and an error beside each
field that needs one (400), the acknowledgement (200), or a refusal of too many posts from one
address (429): never a server error."""

from django.conf import settings
from django.http import HttpResponseForbidden
from django.shortcuts import render
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext, gettext_noop
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from common.middleware import accepts_nul, posted_cross_site
from common.proxies import client_address
from common.rate_limits import RateLimit
from enquiries.forms import EnquiryForm, new_key, started_stamp
from enquiries.models import Enquiry
from enquiries.selectors import enquiry_sites, site_proposed
from enquiries.services import enquiry_submit

LANGUAGE_NAMES = {"en": "English", "es": "Español", "zh-hans": "简体中文"}


def page_language(request) -> str:
    """?lang= when it names a language the page is written in, else the browser's
    (Accept-Language), else English."""
    asked = request.GET.get("lang", "")[:20].replace("_", "-").lower()
    if asked:
        try:
            return translation.get_supported_language_variant(asked)
        except LookupError:
            pass
    return translation.get_language_from_request(request)


def _posts_limit() -> RateLimit:
    return RateLimit("enquiry-post", f"{settings.ENQUIRY_POSTS_PER_HOUR}/hour")


def _without_nul(post) -> tuple[dict, list[str]]:
    """The posted values with NUL characters taken out (PostgreSQL cannot store them), and
    the fields they were taken from, to say so beside each."""
    data, touched = post.copy(), []
    for name, values in post.lists():
        if any("\x00" in value for value in values):
            data.setlist(name, [value.replace("\x00", "") for value in values])
            touched.append(name)
    return data, touched


@never_cache  # a shared device's back button must not show the last person's answers
@accepts_nul  # taken out below, and the person told, rather than a bare 400
@csrf_exempt  # no cookie asked of the public: a cross-site post is refused instead
@require_http_methods(["GET", "POST"])
def enquire_page(request):
    language = page_language(request)
    with translation.override(language):
        response = _enquire_page(request, language)
    patch_vary_headers(response, ("Accept-Language",))
    return response


NO_SITE_YET = gettext_noop(
    "The clinic is not taking enquiries on this page yet. Please try again later."
)


def _enquire_page(request, language: str):
    if posted_cross_site(request):
        return HttpResponseForbidden(gettext("This form can only be sent from its own page."))
    sites = enquiry_sites()
    if not sites:  # a clinic still being set up: nowhere to send an enquiry to, said so
        form = EnquiryForm(initial={"key": new_key(), "started": started_stamp()}, sites=sites)
        return _form_page(request, form, language, status=503, notice=gettext(NO_SITE_YET))
    if request.method != "POST":
        initial = {"key": new_key(), "started": started_stamp()}
        return _form_page(request, EnquiryForm(initial=initial, sites=sites), language)
    data, touched = _without_nul(request.POST)
    if not _posts_limit().allows(client_address(request)):
        form = _fresh_stamp(EnquiryForm(data, sites=sites))
        form.is_valid()
        form.add_error(None, gettext("Too many forms were sent from here: try again in an hour."))
        return _form_page(request, form, language, status=429)
    earlier = Enquiry.objects.filter(submission_key=data.get("key", "")[:64]).first()
    if earlier is not None:  # sent before (a retry, a double tap): the same acknowledgement
        return _acknowledged(request, earlier)
    form = EnquiryForm(data, sites=sites)
    valid = form.is_valid()
    for name in touched:
        if name in form.fields:
            form.add_error(
                name if not form.fields[name].widget.is_hidden else None,
                gettext("A character that cannot be stored was taken out: check this."),
            )
            valid = False
    if not valid:
        return _form_page(request, _fresh_stamp(form), language, status=400)
    site = form.chosen_site() or site_proposed(
        sites=sites, zone_name=form.cleaned_data.get("time_zone") or ""
    )
    enquiry, _new = enquiry_submit(
        fields=form.enquiry_fields(),
        site=site,
        language=language,
        submission_key=form.cleaned_data["key"],
    )
    return _acknowledged(request, enquiry)


def _fresh_stamp(form: EnquiryForm) -> EnquiryForm:
    """The form shown again keeps what was typed, its submission key (it is still the same
    enquiry), and starts its fill time anew; a damaged key is replaced."""
    data = form.data.copy()
    data["started"] = started_stamp()
    if not EnquiryForm.base_fields["key"].regex.match(data.get("key", "")):
        data["key"] = new_key()
    form.data = data
    return form


def _form_page(request, form: EnquiryForm, language: str, status: int = 200, notice: str = ""):
    for name, field in form.fields.items():
        if name in form.errors and not field.widget.is_hidden:  # read out with the field
            field.widget.attrs["aria-describedby"] = f"{form[name].auto_id}-errors"
    hidden_errors = [
        error for field in form.hidden_fields() for error in field.errors
    ]  # a hidden field's error is the page's, said at the top
    context = {
        "form": form,
        "language": language,
        "languages": LANGUAGE_NAMES,
        "general_errors": [*([notice] if notice else []), *form.non_field_errors(), *hidden_errors],
        "question_fields": [
            form[name]
            for name in (
                "copd_diagnosed",
                "emphysema_on_ct",
                "smoking",
                "smoking_quit_on",
                "fev1_pct_predicted",
                "home_oxygen",
                "bronchoscopy_ok",
                "chest_infection_now",
            )
        ],
        "contact_pairs": [
            (form["email"], form["consent_email"]),
            (form["phone"], form["consent_sms"]),
            (form["whatsapp"], form["consent_whatsapp"]),
        ],
    }
    return render(request, "enquiries/enquire.html", context, status=status)


def _acknowledged(request, enquiry: Enquiry):
    """What happens next, and the clinic's name and number, in the enquirer's language."""
    site = enquiry.site
    with translation.override(enquiry.language):
        context = {
            "language": enquiry.language,
            "first_name": enquiry.first_name,
            "clinic": site.patient_facing_name or site.name,
            "phone": site.patient_phone.as_international if site.patient_phone else "",
            "phone_link": site.patient_phone.as_e164 if site.patient_phone else "",
            "working_days": settings.ENQUIRY_ANSWER_WORKING_DAYS,
            "channels": [
                words
                for channel, words in (
                    ("email", gettext("email")),
                    ("sms", gettext("text message")),
                    ("whatsapp", gettext("WhatsApp")),
                )
                if enquiry.consents_to(channel)
            ],
            "is_application": enquiry.kind == "application",
        }
        return render(request, "enquiries/acknowledged.html", context)
