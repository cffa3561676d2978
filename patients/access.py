"""Who may see which site's data. Programme leads, auditors and superusers see every site;
everyone else sees the sites they coordinate or are a member of."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet

from patients.models import Site

PROGRAMME_LEAD_GROUP = "programme lead"
AUDITOR_GROUP = "auditor"
ALL_SITES_GROUPS = (PROGRAMME_LEAD_GROUP, AUDITOR_GROUP)


def user_sees_all_sites(user) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name__in=ALL_SITES_GROUPS).exists()


def user_sites(user) -> QuerySet[Site]:
    if user_sees_all_sites(user):
        return Site.objects.all()
    if not user.is_authenticated:
        return Site.objects.none()
    return Site.objects.filter(Q(coordinators=user) | Q(members=user)).distinct()


def scope_to_user_sites(queryset: QuerySet, user, site_path: str) -> QuerySet:
    """`queryset` narrowed to the user's sites, through `site_path` (e.g. "course__site")."""
    if user_sees_all_sites(user):
        return queryset
    return queryset.filter(**{f"{site_path}__in": user_sites(user).values("pk")})


def roles_allowed(codename: str) -> str:
    """Who may do what a permission allows, for a refusal to name: "that is for the
    clinician role"."""
    names = sorted(
        Group.objects.filter(permissions__codename=codename).values_list("name", flat=True)
    )
    if not names:
        return "no role has that permission"
    return f"that is for the {' or '.join(names)} role" + ("s" if len(names) > 1 else "")


def site_coordinators(*, sites):
    """The active coordinators who work at any of these sites."""
    return (
        get_user_model()
        .objects.filter(groups__name="coordinator", is_active=True)
        .filter(Q(coordinated_sites__in=sites) | Q(member_sites__in=sites))
        .distinct()
        .order_by("username")
    )
