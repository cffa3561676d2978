"""The public enquiry page in a real browser (Debian's Chromium, driven by Playwright) on a
360 px phone, in each of its languages: axe-core finds nothing serious, nothing is wider than
the screen, the policy blocks nothing, and the browser's own zone proposes the site."""

import os
import shutil

import pytest

from enquiries.models import Enquiry
from tests.factories import SiteFactory
from tests.test_browser import (
    CSP_VIOLATIONS,
    DOCS_SCREENSHOTS,
    SCREENSHOTS,
    _watch_csp,
    axe_serious,
    browser,  # noqa: F401 (the fixture)
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

# The manual's pictures of the page (docs/coordinator.md), copied with UPDATE_DOCS_SCREENSHOTS=1.
FOR_THE_DOCS = ("30-enquiry-page-es", "31-enquiry-thanks-es")


def shot(page, name):
    path = SCREENSHOTS / f"{name}.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and name in FOR_THE_DOCS:
        shutil.copy(path, DOCS_SCREENSHOTS / path.name)


PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
WORDS = {
    "en": ("Ask a question or apply", "Thank you, Wen", "Europe/London", "LDN"),
    "es": ("Haga una pregunta o solicite el tratamiento", "Gracias, Wen", "Europe/Madrid", "MAD"),
    "zh-hans": ("提问或申请", "谢谢您，Wen", "Asia/Shanghai", "LDN"),
}


@pytest.mark.parametrize("language", list(WORDS))
def test_the_enquiry_page_on_a_phone_in_each_language(
    django_db_setup,
    browser,  # noqa: F811 (the fixture, imported)
    live_server,
    settings,
    language,
):
    settings.ENQUIRY_MIN_FILL_SECONDS = 1
    SiteFactory(
        code="LDN",
        name="London Chest Clinic",
        time_zone="Europe/London",
        patient_facing_name="Harbour Clinic",
        patient_phone="+442071234567",
    )
    SiteFactory(
        code="MAD",
        name="Madrid Chest Clinic",
        time_zone="Europe/Madrid",
        patient_facing_name="Clínica del Puerto",
        patient_phone="+34911234567",
    )
    title, thanks, zone, site = WORDS[language]
    url = f"{live_server.url}/enquire/?lang={language}"

    checked = browser.new_context(**PHONE, bypass_csp=True, timezone_id=zone)
    page = checked.new_page()
    page.goto(url)
    assert axe_serious(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.click("button[type=submit]")  # nothing filled in: the errors, beside their fields
    page.wait_for_selector("#form-errors")
    assert axe_serious(page) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    checked.close()

    context = browser.new_context(**PHONE, timezone_id=zone)
    context.on("console", _watch_csp)
    CSP_VIOLATIONS.clear()
    page = context.new_page()
    page.goto(url)
    assert page.inner_text("h1") == title
    shot(page, f"30-enquiry-page-{language}")
    page.check("input[name=kind][value=application]")
    page.fill("#id_first_name", "Wen")
    page.fill("#id_last_name", "García")
    page.fill("#id_email", "wen@example.com")
    page.check("#id_consent_email")
    for name in ("copd_diagnosed", "emphysema_on_ct", "bronchoscopy_ok"):
        page.check(f"input[name={name}][value=yes]")
    for name in ("home_oxygen", "chest_infection_now"):
        page.check(f"input[name={name}][value=no]")
    page.check("input[name=smoking][value=never]")
    page.fill("#id_fev1_pct_predicted", "40")
    page.wait_for_timeout(1100)  # a person's pace: the form's minimum fill time
    page.click("button[type=submit]")
    page.wait_for_selector(".done")
    assert thanks in page.inner_text("h1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, f"31-enquiry-thanks-{language}")
    context.close()
    enquiry = Enquiry.objects.get()
    assert enquiry.language == language and enquiry.site.code == site
    assert str(enquiry.time_zone) == zone  # the browser's zone, from the page's script
    assert CSP_VIOLATIONS == []
