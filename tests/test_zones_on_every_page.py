"""Every admin page of the demo, walked as a person of each site would walk it: every time
on it names its zone, and the zone is the site's (or the patient's); every day is written
the way the admin writes days; every time field says in which zone it is read."""

import datetime as dt
import html
import re
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse

from common.admin_scoping import site_path_of
from pathway.models import TRANSITION_LABELS, TreatmentCourse
from patients.models import Site
from scheduling.models import Visit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TIME = re.compile(r"(?<![\d:.])([01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?![\d:])")
ZONE_AFTER = re.compile(r"\s?(?:\(?)([A-Z]{2,5}|[+-]\d{2}(?::?\d{2})?)\b")
ISO_DAY = re.compile(r"(?<![\d-])\d{4}-\d{2}-\d{2}(?![\d-])")
HIDDEN = re.compile(r"<(script|style|textarea)\b.*?</\1>", re.S | re.I)
TAG = re.compile(r"<[^>]+>")
# How many objects of each kind are opened per site: enough to meet each shape of page.
PER_KIND = 3
# The roles whose pages are walked: together they see every page a site's staff sees.
ROLES = ("coordinator", "clinician", "lab")


def abbreviations(zone_name: str) -> set[str]:
    """Every abbreviation a zone uses in the demo's years (winter and summer)."""
    zone = ZoneInfo(zone_name)
    year = dt.date.today().year
    return {
        dt.datetime(y, m, 15, 12, tzinfo=zone).tzname()
        for y in (year - 1, year, year + 1)
        for m in (1, 7)
    }


def visible_text(page: str) -> str:
    return html.unescape(TAG.sub(" ", HIDDEN.sub(" ", page)))


def time_problems(text: str, allowed: set[str]) -> list[str]:
    problems = []
    for found in TIME.finditer(text):
        context = text[max(found.start() - 60, 0) : found.end() + 20].replace("\n", " ")
        zone = ZONE_AFTER.match(text, found.end())
        if zone is None:
            problems.append(f"no zone: …{context}…")
        elif zone.group(1) not in allowed:
            problems.append(f"zone {zone.group(1)}, not {sorted(allowed)}: …{context}…")
    for found in ISO_DAY.finditer(text):
        context = text[max(found.start() - 60, 0) : found.end() + 20].replace("\n", " ")
        problems.append(f"a day written as {found.group()}: …{context}…")
    return problems


def time_field_problems(page: str, zone_name: str, allowed: set[str]) -> list[str]:
    """Each time input's row (its form row, or its inline's table) names the zone."""
    problems = []
    for found in re.finditer(r'<input[^>]*class="vTimeField"[^>]*>', page):
        name = re.search(r'name="([^"]+)"', found.group()).group(1)
        start = max(
            page.rfind('class="form-row', 0, found.start()),
            page.rfind("<fieldset", 0, found.start()),
            page.rfind('class="fieldWrapper', 0, found.start()),
        )
        end = page.find('class="form-row', found.end())
        row = visible_text(page[start : end if end > 0 else found.end() + 3000])
        if zone_name not in row and not any(abbr in row for abbr in allowed):
            problems.append(f"the time field {name} does not say in which zone it is read")
    return problems


def pages_of(site: Site) -> list[str]:
    """The admin pages a person of `site` opens: the worklist, every list, and a few of each
    kind of object with their step pages."""
    urls = [
        reverse("admin:index"),
        reverse("weekly-report"),
        f"{reverse('weekly-report')}?site={site.code}",
    ]
    for model in admin.site._registry:
        meta = model._meta
        try:
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        except NoReverseMatch:
            continue
        path = site_path_of(model)
        if path is None:
            continue
        objects = model._default_manager.filter(**{path: site} if path != "pk" else {"pk": site.pk})
        for obj in objects.order_by("-pk")[:PER_KIND]:
            for page in ("change", "history"):
                name = f"admin:{meta.app_label}_{meta.model_name}_{page}"
                urls.append(reverse(name, args=[obj.pk]))
    for course in TreatmentCourse.objects.filter(site=site).order_by("pk"):
        # One course per state: each state's transition forms.
        for name in TRANSITION_LABELS:
            method = getattr(course, name)
            if method._django_fsm.get_transition(course.state) is not None:
                urls.append(
                    reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, name])
                )
        urls.append(reverse("admin:pathway_treatmentcourse_follow_ups", args=[course.pk]))
        urls.append(reverse("admin:pathway_treatmentcourse_label", args=[course.pk]))
        for step in ("shipped_to_site", "received_at_site"):
            urls.append(reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, step]))
    urls.append(reverse("admin:scheduling_resource_capacity"))
    urls.append(reverse("admin:pathway_custodyevent_add"))
    for visit in Visit.objects.filter(course__site=site).order_by("-pk")[:20]:
        urls.append(reverse("admin:scheduling_visit_missed", args=[visit.pk]))
        urls.append(reverse("admin:scheduling_visit_book_again", args=[visit.pk]))
    return list(dict.fromkeys(urls))


def test_every_admin_page_of_the_demo_names_each_time_in_its_sites_zone(client, capsys):
    call_command("seed_demo")
    problems, statuses = [], Counter()
    for site in Site.objects.order_by("code"):
        zone_name = str(site.time_zone)
        allowed = abbreviations(zone_name)
        walker = UserFactory(username=f"walker-{site.code.lower()}", is_staff=True)
        walker.groups.set(Group.objects.filter(name__in=ROLES))
        site.coordinators.add(walker)
        site.members.add(walker)
        client.force_login(walker)
        for url in pages_of(site):
            response = client.get(url)
            statuses[response.status_code] += 1
            if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
                continue  # a step the course's state has no form for, a label not issued yet
            page = response.content.decode()
            found = time_problems(visible_text(page), allowed)
            found += time_field_problems(page, zone_name, allowed)
            problems += [f"{site.code} {url}: {problem}" for problem in found]
    lead = UserFactory(username="walker-lead", is_staff=True)
    lead.groups.set(Group.objects.filter(name="programme lead"))
    client.force_login(lead)
    every_zone = set().union(*(abbreviations(str(s.time_zone)) for s in Site.objects.all()))
    report = client.get(reverse("weekly-report")).content.decode()
    problems += [f"all sites' report: {p}" for p in time_problems(visible_text(report), every_zone)]
    # Most pages are read, none fails: the rest are steps the course is not at (403, 404).
    assert set(statuses) <= {200, 403, 404} and statuses[200] > 0.8 * sum(statuses.values()), (
        statuses
    )
    assert not problems, f"{len(problems)} found:\n" + "\n".join(problems[:80])
