from django import template

from patients.access import site_coordinators, user_sites
from reporting.dashboard import site_dashboard
from reporting.worklist import worklist
from scheduling.selectors import UPCOMING_PROCEDURE_DAYS

register = template.Library()


@register.inclusion_tag("reporting/dashboard.html", takes_context=True)
def pathway_dashboard(context):
    sites = user_sites(context["request"].user)
    rows = site_dashboard(sites=sites, user=context["request"].user)
    return {"rows": rows, "upcoming_days": UPCOMING_PROCEDURE_DAYS}


@register.inclusion_tag("reporting/worklist.html", takes_context=True)
def pathway_worklist(context):
    """The user's worklist, first on the index: ?site=<id> and ?mine=1 narrow it."""
    request = context["request"]
    user = request.user
    sites = list(user_sites(user))
    chosen = request.GET.get("site", "")
    shown_sites = [site for site in sites if str(site.pk) == chosen] or sites
    items = worklist(user=user, sites=shown_sites)
    mine = request.GET.get("mine") == "1"
    if mine:
        items = [item for item in items if item.assigned_to == user]
    return {
        "items": items,
        "sites": sites,
        "chosen_site": chosen if len(shown_sites) == 1 and len(sites) > 1 else "",
        "mine": mine,
        "user": user,
        "here": request.get_full_path(),
        "coordinators": list(site_coordinators(sites=sites)) if items else [],
        "csrf_token": context.get("csrf_token"),
    }
