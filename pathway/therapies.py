"""Each therapy's pathway, as data: the states it passes through, the steps of its own, the
step each state waits for, and the eligibility rules that apply by default.

A course follows the therapy of its protocol (`Protocol.therapy`). The steps every therapy
shares (evaluation, eligibility, follow-up, completion, hold, resume, withdraw) are the same
transitions for all; a therapy's own steps carry the condition `FollowsTherapy`, so that the
state machine offers a course only its therapy's steps and says why it refuses another's.
The admin's buttons, the worklist, the timeline, the report and the diagram read what they
show from here. A third therapy is an entry here, its states in `CourseState`, its
transitions on `TreatmentCourse` (each with its `FollowsTherapy`) and their services.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from pathway.states import CourseState, Therapy

# The steps of every therapy, in pathway order.
SHARED_STEPS = ("start_evaluation", "approve", "decline", "complete", "hold", "resume", "withdraw")

# Every eligibility rule, by key, with its name as the checklist shows it.
ELIGIBILITY_RULES = {
    "copd_confirmed": "COPD confirmed",
    "emphysema_on_ct": "Emphysema on CT",
    "gold_2_4": "GOLD stage 2–4",
    "fev1_in_range": "FEV1 % predicted in range",
    "not_smoking": "Not smoking",
    "fit_for_bronchoscopy": "Fit for bronchoscopy",
    "no_infection": "No active respiratory infection",
    "a1at_recorded": "A1AT screening recorded",
    "dyspnoea": "Dyspnoea despite optimised therapy",
    "fit_for_infusion": "Fit for an intravenous infusion",
}


@dataclass(frozen=True)
class TherapyPathway:
    therapy: Therapy
    short_name: str  # "P63+", "MSC": in headings, buttons' help and the report
    # The states a course of this therapy passes through on its way, in order (the shared
    # ones included): the diagram, the report's counts and the demo walk them.
    main_path: tuple[CourseState, ...]
    # Its own steps, beyond the shared ones, in pathway order.
    steps: tuple[str, ...]
    # The step a course in each state waits for: the course page's primary button.
    next_step: dict = field(default_factory=dict)
    # The eligibility rules a protocol of this therapy applies unless it names its own.
    eligibility_rules: tuple[str, ...] = ()
    # How the step that treats the patient is named in sentences ("before the transplant").
    treatment_words: str = ""
    # A new protocol's numbers where this therapy's differ from the model's defaults.
    protocol_defaults: dict = field(default_factory=dict)
    # What its follow-ups are, in patients' words (they measure what the therapy is followed by).
    follow_up_words: str = "breathing tests"

    @property
    def all_steps(self) -> tuple[str, ...]:
        return (*SHARED_STEPS[:3], *self.steps, *SHARED_STEPS[3:])

    @property
    def states(self) -> tuple[CourseState, ...]:
        """Every state a course of this therapy can be in, in pathway order."""
        ends = (CourseState.INELIGIBLE, CourseState.ON_HOLD, CourseState.WITHDRAWN)
        return (*self.main_path, *ends)


_SHARED_NEXT = {
    CourseState.REFERRED: "start_evaluation",
    CourseState.EVALUATION: "approve",
    CourseState.FOLLOW_UP: "complete",
    CourseState.ON_HOLD: "resume",
}

PATHWAYS = {
    Therapy.P63: TherapyPathway(
        therapy=Therapy.P63,
        short_name="P63+",
        main_path=(
            CourseState.REFERRED,
            CourseState.EVALUATION,
            CourseState.ELIGIBLE,
            CourseState.HARVEST_SCHEDULED,
            CourseState.HARVESTED,
            CourseState.EXPANDING,
            CourseState.RELEASED,
            CourseState.TRANSPLANT_SCHEDULED,
            CourseState.FOLLOW_UP,
            CourseState.COMPLETED,
        ),
        steps=(
            "schedule_harvest",
            "record_harvest",
            "receive_at_lab",
            "reject_sample",
            "fail_qc",
            "release",
            "schedule_transplant",
            "record_transplant",
        ),
        next_step=_SHARED_NEXT
        | {
            CourseState.ELIGIBLE: "schedule_harvest",
            CourseState.HARVEST_SCHEDULED: "record_harvest",
            CourseState.HARVESTED: "receive_at_lab",
            CourseState.EXPANDING: "release",
            CourseState.RELEASED: "schedule_transplant",
            CourseState.TRANSPLANT_SCHEDULED: "record_transplant",
        },
        eligibility_rules=tuple(key for key in ELIGIBILITY_RULES if key != "fit_for_infusion"),
        treatment_words="the transplant",
    ),
    Therapy.MSC: TherapyPathway(
        therapy=Therapy.MSC,
        short_name="MSC",
        main_path=(
            CourseState.REFERRED,
            CourseState.EVALUATION,
            CourseState.ELIGIBLE,
            CourseState.PRODUCT_ALLOCATED,
            CourseState.INFUSION_SCHEDULED,
            CourseState.INFUSED,
            CourseState.FOLLOW_UP,
            CourseState.COMPLETED,
        ),
        steps=("allocate_product", "schedule_infusion", "record_infusion"),
        next_step=_SHARED_NEXT
        | {
            CourseState.ELIGIBLE: "allocate_product",
            CourseState.PRODUCT_ALLOCATED: "schedule_infusion",
            CourseState.INFUSION_SCHEDULED: "record_infusion",
            CourseState.INFUSED: "schedule_infusion",
        },
        # SPEC, Therapy 2: the P63+ rules that do not concern bronchoscopy, and fitness for an
        # intravenous infusion.
        eligibility_rules=(
            "copd_confirmed",
            "gold_2_4",
            "fev1_in_range",
            "not_smoking",
            "no_infection",
            "dyspnoea",
            "fit_for_infusion",
        ),
        treatment_words="the first infusion",
        # SPEC, Therapy 2: 1 × 10⁶ cells per kg, 0.5–2 × 10⁶/kg.
        protocol_defaults={
            "dose_min_million_per_kg": Decimal("0.50"),
            "dose_max_million_per_kg": Decimal("2.00"),
            "dose_target_million_per_kg": Decimal("1.00"),
        },
        follow_up_words="breathing tests and a blood test",
    ),
}


def pathway_of(therapy: str) -> TherapyPathway:
    return PATHWAYS[Therapy(therapy)]


def therapy_of_step(step: str) -> Therapy | None:
    """The therapy a step belongs to; None for a step every therapy shares."""
    return next((p.therapy for p in PATHWAYS.values() if step in p.steps), None)


class FollowsTherapy:
    """A transition's condition: the course's protocol gives `therapy`. Pure: it reads the
    course's protocol and nothing else, and says in words why a course fails it."""

    def __init__(self, therapy: Therapy):
        self.therapy = therapy
        self.__name__ = f"follows_{therapy}"  # django-fsm-2 names conditions in its messages

    def __call__(self, course) -> bool:
        return course.protocol.therapy == self.therapy

    def reason(self, course, label: str) -> str:
        own = pathway_of(course.protocol.therapy)
        other = pathway_of(self.therapy)
        return (
            f"This course follows {course.protocol} ({own.short_name}): “{label}” is a step of "
            f"the {other.short_name} pathway only."
        )
