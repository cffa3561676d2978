"""The one exception a rule raises when it refuses a step, on every floor."""


class Refused(Exception):
    """The rules do not allow this now; `reasons` says why, in words a user can act on.

    Reasons that belong to one field of what was entered are given `by_field` (field name:
    reasons), so that a form shows each beside its field, all at once; `reasons` holds every
    reason, the general ones first, for whoever shows them in a list.
    """

    def __init__(self, reasons: list[str] = (), *, by_field: dict[str, list[str]] | None = None):
        self.general = list(reasons)
        self.by_field = {field: list(found) for field, found in (by_field or {}).items() if found}
        self.reasons = self.general + [r for found in self.by_field.values() for r in found]
        super().__init__(" ".join(self.reasons))
