"""Reads for the enquiry page: which sites a person may choose, and which one to propose."""

import functools
import zoneinfo
from importlib import resources

from django.db import models

from enquiries.models import OPEN_ENQUIRY_STATUSES, Enquiry
from pathway.models import Protocol
from patients.models import Site


@functools.cache
def _zone_countries() -> dict[str, str]:
    """Each time zone's country (ISO 3166 code), from the IANA table that the pinned `tzdata`
    package ships (zone.tab: one line per zone, "ES\t+4024-00341\tEurope/Madrid")."""
    table = resources.files("tzdata").joinpath("zoneinfo/zone.tab").read_text(encoding="utf-8")
    countries = {}
    for line in table.splitlines():
        if line and not line.startswith("#"):
            country, _coordinates, zone, *_ = line.split("\t")
            countries[zone] = country
    return countries


def zone_country(zone_name: str) -> str:
    """The country a time zone is in ("Europe/Madrid": "ES"), or "" for a zone of no one
    country (UTC) or one that is not a zone at all."""
    return _zone_countries().get(zone_name, "")


def known_zone(zone_name: str) -> str:
    """`zone_name` if it is a time zone this machine knows, else ""."""
    if not zone_name or len(zone_name) > 64:
        return ""
    return zone_name if zone_name in zoneinfo.available_timezones() else ""


def enquiry_sites() -> list[Site]:
    """The sites a person may choose on the enquiry page, by name."""
    return list(Site.objects.order_by("name"))


def site_proposed(*, sites: list[Site], zone_name: str) -> Site | None:
    """The site to propose to someone whose browser is in `zone_name`: the first (by name)
    whose zone is the same, else the first whose zone is in the same country, else the first
    of all. None only when there is no site."""
    if not sites:
        return None
    same_zone = [site for site in sites if str(site.time_zone) == zone_name]
    if same_zone:
        return same_zone[0]
    country = zone_country(zone_name)
    same_country = [
        site for site in sites if country and zone_country(str(site.time_zone)) == country
    ]
    return (same_country or sites)[0]


def sites_default_protocols(site_ids) -> dict:
    """Each site's default protocol (`site_default_protocol`'s rule), for many sites in two
    queries: its own first by name, else the programme's default."""
    chosen = {}
    for protocol in (
        Protocol.objects.filter(default_at__in=site_ids)
        .order_by("name")
        .annotate(for_site=models.F("default_at"))
    ):
        chosen.setdefault(protocol.for_site, protocol)
    if len(chosen) < len(set(site_ids)):
        fallback = Protocol.objects.get(is_default=True)
        chosen |= {site_id: fallback for site_id in site_ids if site_id not in chosen}
    return chosen


def enquiries_open(*, sites):
    """The enquiries at `sites` still to deal with (not converted, not closed), oldest first."""
    return (
        Enquiry.objects.filter(site__in=sites, status__in=OPEN_ENQUIRY_STATUSES)
        .select_related("site")
        .order_by("submitted_at", "id")
    )
