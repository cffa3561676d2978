"""The one exception a rule raises when it refuses a step, on every floor."""


class Refused(Exception):
    """The rules do not allow this now; `reasons` says why, in words a user can act on."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__(" ".join(self.reasons))
