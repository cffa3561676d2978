"""Links that leave the server (emails, calendar feeds, FHIR ids, provider callbacks) are all
built from one configured public address, `SITE_URL`: never from the request, which behind a
proxy, or in a worker, does not know it."""

from django.conf import settings
from django.urls import reverse


def public_url(path: str) -> str:
    """`path` (e.g. "/admin/") on the public address."""
    return settings.SITE_URL.rstrip("/") + path


def public_url_for(view_name: str, *args) -> str:
    return public_url(reverse(view_name, args=args))
