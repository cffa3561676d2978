from django import template

from patients.access import user_sites
from scheduling.selectors import UPCOMING_DAYS, site_dashboard

register = template.Library()


@register.inclusion_tag("scheduling/dashboard.html", takes_context=True)
def pathway_dashboard(context):
    sites = user_sites(context["request"].user)
    return {"rows": site_dashboard(sites=sites), "upcoming_days": UPCOMING_DAYS}
