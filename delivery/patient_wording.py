"""The default protocol's words for patients, marked so that they are translated: a patient
reads them in their own language. Words a site writes for its own protocol are shown as
written (translate them in the protocol, or keep them plain)."""

from django.utils.translation import gettext, gettext_noop

DEFAULT_WORDING = (
    gettext_noop("a short procedure under sedation to take a sample"),
    gettext_noop("your second short procedure under sedation"),
    gettext_noop(
        "Do not eat or drink for 6 hours before. You will be sedated: bring someone to take "
        "you home, and do not drive for 24 hours."
    ),
    gettext_noop("breathing tests"),
    gettext_noop("breathing tests and a blood test"),
    gettext_noop("a visit of about three hours at the day unit"),
    gettext_noop(
        "Eat and drink as usual and take your usual medicines. Allow about three hours; you "
        "can go home afterwards."
    ),
    gettext_noop("a CT scan of your chest"),
    gettext_noop("your clinic"),
)


def in_patients_language(words: str) -> str:
    """`words` in the active language where they are the default protocol's; else as they
    are."""
    return gettext(words) if words else words
