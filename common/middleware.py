"""Response headers every page carries, and requests refused before any view."""

from django.http import HttpResponseBadRequest

from common.unavailable import database_unavailable, database_unavailable_response

# The browser features no page here uses, switched off for every page and anything it embeds.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "camera",
        "microphone",
        "geolocation",
        "payment",
        "usb",
        "serial",
        "bluetooth",
        "display-capture",
        "browsing-topics",
    )
)


class PermissionsPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response


def posted_cross_site(request) -> bool:
    """A form posted from another site, as the browser tells (Sec-Fetch-Site): the public
    pages take no CSRF cookie (a phone may refuse cookies), and refuse such posts instead."""
    return request.method == "POST" and request.headers.get("Sec-Fetch-Site") == "cross-site"


def accepts_nul(view):
    """Mark a view that takes NUL characters itself, rather than have them refused: a webhook
    whose sender does not retry a refusal (a patient's text would be lost)."""
    view.accepts_nul = True
    return view


class RefuseNulMiddleware:
    """A NUL character in a query string or a form is never meaningful here, and PostgreSQL
    refuses it in any string (a 500 from whatever query it reached): answer 400 before the
    view, unless the view says it `accepts_nul` and deals with them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if getattr(view_func, "accepts_nul", False):
            return None
        for values in (request.GET, request.POST if request.method == "POST" else {}):
            for key, value in values.lists() if values else ():
                if "\x00" in key or any("\x00" in v for v in value):
                    return HttpResponseBadRequest("A NUL character is not accepted.")
        return None

    def process_exception(self, request, exception):
        # A list filter given a number too large for its lookup (a 30-digit year, say).
        if isinstance(exception, OverflowError):
            return HttpResponseBadRequest("A number in the request is too large.")
        return None


class DatabaseUnavailableMiddleware:
    """A view that meets an unreachable database answers 503 with Retry-After
    (common/unavailable.py); `config.urls.handler500` does the same for middleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if database_unavailable(exception):
            return database_unavailable_response(request, exception)
        return None
