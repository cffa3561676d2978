from django import template

from scheduling.selectors import UPCOMING_DAYS, site_dashboard

register = template.Library()


@register.inclusion_tag("scheduling/dashboard.html")
def pathway_dashboard():
    return {"rows": site_dashboard(), "upcoming_days": UPCOMING_DAYS}
