"""The pathway's state diagrams, generated from the transitions in the code: one of the whole
state machine (every therapy), and one per therapy (its own steps and the shared ones)."""

import graphviz
from django_fsm.management.commands.graph_transitions import generate_dot, node_name

from pathway.models import TreatmentCourse
from pathway.states import HOLDABLE_STATES, CourseState
from pathway.therapies import PATHWAYS, SHARED_STEPS, pathway_of

# Hold and withdraw leave any open state, resume goes back to one: each is drawn once, to or
# from one box, instead of a dozen arrows.
DRAWN_ONCE = ("hold", "resume", "withdraw")


def pathway_dot(therapy: str | None = None) -> str:
    """The Graphviz source of the diagram: django-fsm-2's `graph_transitions` for the main path
    (its node and edge lines sorted, as it emits them in set order), plus hold, resume and
    withdraw drawn once. With `therapy`, only that therapy's steps and the shared ones."""
    field = TreatmentCourse._meta.get_field("state")
    ignored = list(DRAWN_ONCE)
    open_states = len(HOLDABLE_STATES)
    if therapy is not None:
        own = pathway_of(therapy)
        ignored += [
            step
            for other in PATHWAYS.values()
            if other.therapy != own.therapy
            for step in other.steps
            if step not in own.steps and step not in SHARED_STEPS
        ]
        open_states = len([s for s in own.states if s in HOLDABLE_STATES])
    generated = generate_dot([(field, TreatmentCourse)], ignore_transitions=ignored)
    lines = generated.source.splitlines()
    opening, statements, closing = lines[:3], sorted(lines[3:-2]), lines[-2:]

    def node(state: CourseState) -> str:
        return node_name(field, state)

    extra = graphviz.Digraph()
    extra.node("start", label="", shape="point")
    extra.edge("start", node(CourseState.REFERRED))
    extra.node(node(CourseState.ON_HOLD), label=CourseState.ON_HOLD.label, shape="circle")
    extra.node(node(CourseState.WITHDRAWN), label=CourseState.WITHDRAWN.label, shape="doublecircle")
    extra.node(
        "open",
        label=f"any of the {open_states} open states",
        shape="box",
        style="dashed",
    )
    extra.edge("open", node(CourseState.ON_HOLD), label="hold")
    extra.edge(
        node(CourseState.ON_HOLD), "open", label="resume (to the state it left)", style="dashed"
    )
    extra.edge("open", node(CourseState.WITHDRAWN), label="withdraw")
    extra.edge(node(CourseState.ON_HOLD), node(CourseState.WITHDRAWN), label="withdraw")
    added = ["\t" + line for line in extra.source.splitlines()[1:-1]]
    return "\n".join([*opening, *statements, *added, *closing]) + "\n"


def diagram_files() -> dict[str, str]:
    """Each diagram's file name in docs/ (without its extension) and its source."""
    return {
        "pathway": pathway_dot(),
        **{f"pathway-{therapy}": pathway_dot(therapy) for therapy in PATHWAYS},
    }
