"""What an enquirer's own answers suggest, through the same rules as the eligibility checklist
(pathway/conditions.py) against their site's default protocol: "likely fits", "check" or
"unlikely", with the rule's words. Self-reported: a pointer for the coordinator's first
call, never a decision (the checklist on the course decides, on measured records)."""

from dataclasses import dataclass

from django.utils import timezone

from enquiries.models import EnquiryKind, SmokingAnswer, YesNoUnsure
from pathway.conditions import (
    RuleResult,
    bronchoscopy_fitness_rule,
    emphysema_rule,
    fev1_range_rule,
    infection_rule,
    smoking_rule,
)
from pathway.services import site_default_protocol

LIKELY = "likely fits"
CHECK = "check"
UNLIKELY = "unlikely"


@dataclass(frozen=True)
class Suggestion:
    level: str  # LIKELY, CHECK or UNLIKELY
    reasons: tuple[str, ...] = ()

    @property
    def words(self) -> str:
        """As the worklist and the admin show it: "Self-reported: unlikely: <the rule>"."""
        said = self.level if not self.reasons else f"{self.level}: {' '.join(self.reasons)}"
        return f"Self-reported: {said}"


def _yes_no(answer: str) -> bool | None:
    return {YesNoUnsure.YES: True, YesNoUnsure.NO: False}.get(answer)


def _unknown(words: str) -> tuple[str, bool]:
    return words, True


def _answers_checked(enquiry, protocol) -> list[tuple[RuleResult | str, bool]]:
    """Each rule the protocol applies that a person can answer about themselves: its result
    (or the words of what is not known yet), and whether failing it is only a thing to check
    (for now, not for good: an infection passes, a low FEV1 may be accepted on a specialist's
    justification, a quit date missing is a question to ask)."""
    today = timezone.localdate(timezone=enquiry.site.time_zone)
    applied = set(protocol.applied_eligibility_rules)
    checked = []
    if "copd_confirmed" in applied and enquiry.copd_diagnosed != YesNoUnsure.YES:
        checked.append(_unknown("COPD not diagnosed by a doctor, or not sure."))
    if "emphysema_on_ct" in applied:
        present = _yes_no(enquiry.emphysema_on_ct)
        checked.append(
            _unknown("Not known whether a CT showed emphysema.")
            if present is None
            else (emphysema_rule(present=present, ct_on=None), False)
        )
    if "fev1_in_range" in applied:
        fev1 = enquiry.fev1_pct_predicted
        checked.append(
            _unknown("FEV1 not known.")
            if fev1 is None
            else (fev1_range_rule(fev1_pct=fev1, protocol=protocol), fev1 < protocol.fev1_pct_min)
        )
    if "not_smoking" in applied:
        smoking = enquiry.smoking
        checked.append(
            _unknown("Smoking not answered.")
            if smoking not in SmokingAnswer.values
            else (
                smoking_rule(
                    smoking_status=smoking,
                    quit_on=enquiry.smoking_quit_on,
                    today=today,
                    protocol=protocol,
                ),
                smoking == SmokingAnswer.FORMER and enquiry.smoking_quit_on is None,
            )
        )
    if "fit_for_bronchoscopy" in applied:
        fit = _yes_no(enquiry.bronchoscopy_ok)
        checked.append(
            _unknown("Not known whether a bronchoscopy is possible.")
            if fit is None
            else (bronchoscopy_fitness_rule(fit=fit, assessed_on=None), False)
        )
    if "no_infection" in applied:
        infected = _yes_no(enquiry.chest_infection_now)
        checked.append(
            _unknown("Not known whether there is a chest infection now.")
            if infected is None
            else (infection_rule(infected=infected, assessed_on=None), True)
        )
    return checked


def enquiry_suggestion(enquiry, *, protocol=None) -> Suggestion:
    """What the enquirer's answers suggest (see the module's docstring), against `protocol`:
    their site's default protocol (`site_default_protocol`), read here unless given."""
    if protocol is None:
        protocol = site_default_protocol(site=enquiry.site)
    if enquiry.kind == EnquiryKind.QUESTION and not enquiry.smoking:
        return Suggestion(CHECK, ("A question: no pre-screening answers.",))
    unlikely, to_check = [], []
    for result, only_to_check in _answers_checked(enquiry, protocol):
        if isinstance(result, str):
            to_check.append(result)
        elif result.blocks:
            (to_check if only_to_check else unlikely).append(result.reason)
    if unlikely:
        return Suggestion(UNLIKELY, tuple(unlikely))
    if to_check:
        return Suggestion(CHECK, tuple(to_check))
    return Suggestion(LIKELY)
