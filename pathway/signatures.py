"""Who may sign, and how a signature's password is checked.

Two steps need a second person: the bedside check of a transplant (a clinical user of the
course's site who holds `confirm_administration`, never the person recording it) and the
release of a batch (a lab user who holds the release permission, never the one who entered
the QC). Superusers, auditors and programme leads hold neither permission through a role and
are never offered. A signature's password is checked the way a login is, so a wrong one counts
towards the same django-axes lockout, and the answer is the same whether the password was
wrong or the account is locked.
"""

from django.contrib.auth import authenticate, get_user_model
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from common.proxies import client_address

CONFIRM_ADMINISTRATION = "pathway.confirm_administration"
SIGN_RELEASE = "pathway.release_course"
SIGN_LOT_RELEASE = "pathway.release_lot"


def _holding(permission: str) -> QuerySet:
    """Active users other than superusers who hold `permission` through a group or directly."""
    app_label, codename = permission.split(".")
    by_group = Q(
        groups__permissions__codename=codename,
        groups__permissions__content_type__app_label=app_label,
    )
    directly = Q(
        user_permissions__codename=codename,
        user_permissions__content_type__app_label=app_label,
    )
    return get_user_model().objects.filter(by_group | directly, is_active=True, is_superuser=False)


def bedside_confirmers(*, course, recorder=None) -> QuerySet:
    """Who may confirm the administration at this course's bedside."""
    people = _holding(CONFIRM_ADMINISTRATION).filter(
        Q(member_sites=course.site_id) | Q(coordinated_sites=course.site_id)
    )
    if recorder is not None:
        people = people.exclude(pk=recorder.pk)
    return people.distinct().order_by("last_name", "first_name", "username")


def may_sign_release(user) -> bool:
    return _holding(SIGN_RELEASE).filter(pk=user.pk).exists()


def may_sign_lot_release(user) -> bool:
    """A lab user who holds the lot release permission (never a superuser acting as one)."""
    return _holding(SIGN_LOT_RELEASE).filter(pk=user.pk).exists()


def password_confirms(*, user, password: str, request: HttpRequest | None = None) -> bool:
    """Whether `password` is `user`'s, checked as a login is (a failure counts towards the
    lockout, a locked-out user is refused). Outside a request, as from a command, the check
    is counted against the local machine."""
    checked = _as_a_login(request)
    confirmed = authenticate(checked, username=user.get_username(), password=password)
    return confirmed is not None and confirmed.pk == user.pk


def _as_a_login(request: HttpRequest | None) -> HttpRequest:
    """What the lockout needs of the request a signature came in (the client's address, its
    browser, the page), and not its form: django-axes stores a failed attempt's POST, masking
    only a field named `password`, and a signature's form holds the second person's password
    (`second_person_password`) beside the patient's clinical values."""
    checked = HttpRequest()
    checked.method = "POST"
    if request is None:
        checked.META = {"REMOTE_ADDR": "127.0.0.1"}
        return checked
    checked.path = checked.path_info = request.path
    checked.META = {
        "REMOTE_ADDR": client_address(request),
        "PATH_INFO": request.path,
        **{
            header: request.META[header]
            for header in ("HTTP_USER_AGENT", "HTTP_ACCEPT")
            if header in request.META
        },
    }
    return checked
