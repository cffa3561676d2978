"""Site arguments of management commands."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from common.cli import text_argument
from patients.models import Site


def site_from_code(code: str) -> Site:
    """The site a --site argument names, or an error that lists the codes there are."""
    code = text_argument(code, name="site").strip().upper()
    try:
        Site._meta.get_field("code").run_validators(code)
        return Site.objects.get(code=code)
    except (ValidationError, Site.DoesNotExist):
        codes = ", ".join(Site.objects.values_list("code", flat=True)) or "none yet"
        raise CommandError(f"No site has the code {code!r}; the codes are: {codes}.") from None
