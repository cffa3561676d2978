from django import template

from patients.access import user_sites
from reporting.dashboard import site_dashboard
from scheduling.selectors import UPCOMING_PROCEDURE_DAYS

register = template.Library()


@register.inclusion_tag("reporting/dashboard.html", takes_context=True)
def pathway_dashboard(context):
    sites = user_sites(context["request"].user)
    return {"rows": site_dashboard(sites=sites), "upcoming_days": UPCOMING_PROCEDURE_DAYS}
