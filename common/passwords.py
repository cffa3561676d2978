"""Password rules beyond Django's own: an estimate of how guessable a password is, and never
the demo's password."""

from django.core.exceptions import ValidationError
from zxcvbn import zxcvbn

# Every demo user's password (`manage.py seed_demo`): refused for any real account.
DEMO_PASSWORD = "pathway-demo"


class GuessabilityValidator:
    """zxcvbn's offline estimate (0 to 4) of how hard a password is to guess, with the user's
    own names and email counted as known words. 3 means about 10^8 guesses or more."""

    def __init__(self, min_score: int = 3):
        self.min_score = min_score

    def validate(self, password, user=None):
        known = [
            str(getattr(user, name, "") or "")
            for name in ("username", "first_name", "last_name", "email")
        ]
        # zxcvbn's time grows with length; the first 100 characters say enough.
        result = zxcvbn(password[:100], user_inputs=[word for word in known if word])
        if result["score"] < self.min_score:
            hint = result["feedback"].get("warning") or "It is too easy to guess."
            raise ValidationError(
                f"{hint.rstrip('.')}. Use a longer phrase of unrelated words.",
                code="password_too_guessable",
            )

    def get_help_text(self):
        return "Your password must be hard to guess: a phrase of unrelated words works well."


class NotTheDemoPasswordValidator:
    def validate(self, password, user=None):
        if password == DEMO_PASSWORD:
            raise ValidationError(
                "This is the demo's password, published in the README: choose another.",
                code="password_is_demo",
            )

    def get_help_text(self):
        return "Your password cannot be the demo's."
