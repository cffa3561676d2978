"""The pathway's state diagram, generated from the transitions in the code."""

from pathway.models import TRANSITIONS, TreatmentCourse
from pathway.states import HOLDABLE_STATES, WITHDRAWABLE_STATES, CourseState


def pathway_mermaid() -> str:
    """A Mermaid state diagram; hold and withdraw, allowed from every open state, are drawn once."""
    lines = ["stateDiagram-v2", f"    [*] --> {CourseState.REFERRED}"]
    order = [name for name, _ in TRANSITIONS]
    transitions = sorted(
        TreatmentCourse._meta.get_field("state").get_all_transitions(TreatmentCourse),
        key=lambda t: order.index(t.name),
    )
    for transition in transitions:
        if transition.name not in {"hold", "resume", "withdraw"}:
            lines.append(f"    {transition.source} --> {transition.target}: {transition.name}")
    lines += [
        f"    {CourseState.ON_HOLD} --> {CourseState.WITHDRAWN}: withdraw",
        f"    note right of {CourseState.ON_HOLD}",
        f"        hold: from any of {len(HOLDABLE_STATES)} open states",
        "        resume: back to the state it left",
        f"        withdraw: from any of {len(WITHDRAWABLE_STATES)} open states",
        "    end note",
    ]
    lines += [f"    {state} --> [*]" for state in ("ineligible", "completed", "withdrawn")]
    return "\n".join(lines)
