"""Where a patient is told to go. A visit's place is a free text, which the booking forms
fill in with the name of the resource booked ("BOS Bronchoscopy suite"): a name for staff,
which says what is done there. Where the place is one of its site's resources, patients read
the resource's own name and address for patients in their language (`ResourceWording`)
instead; a place a coordinator wrote is shown as written.
"""

from dataclasses import dataclass

from django.conf import settings

from scheduling.models import Resource, Visit

# Read with the visits, to name many visits' places in two queries, not two per visit
# (`prefetch_related(*PLACE_PREFETCH)` on visits, or with "visit__" before it on their
# notifications).
PLACE_PREFETCH = ("course__site__resources__wordings",)


@dataclass(frozen=True)
class PlaceForPatients:
    name: str  # empty: the resource has no name in the patient's language
    address: str  # lines, as the patient reads them; may be empty


def visit_resource(visit: Visit) -> Resource | None:
    """The resource of its site whose name the visit's place is, if any (case and spaces
    aside). Reads the site's resources prefetched with `PLACE_PREFETCH`, else queries."""
    place = visit.place.strip().casefold()
    if not place:
        return None
    return next(
        (r for r in visit.course.site.resources.all() if r.name.strip().casefold() == place),
        None,
    )


def resource_place_for_patients(resource: Resource, language: str) -> PlaceForPatients:
    """The resource's name and address for patients in `language`. No name in it: empty
    (the caller names the clinic instead: never the staff's name, nor another language's).
    No address in it: the first there is in another language (in `LANGUAGES`' order), as an
    address is read the same in any language more often than not."""
    words = {wording.language: wording for wording in resource.wordings.all()}
    own = words.get(language)
    order = [language, *(code for code, _ in settings.LANGUAGES if code != language)]
    addresses = [words[code].address.strip() for code in order if code in words]
    address = next((lines for lines in addresses if lines), "")
    return PlaceForPatients(name=own.name.strip() if own else "", address=address)
