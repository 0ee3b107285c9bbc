"""Every job ends: the bound on each non-final state. Pure: no I/O.

No state is held forever. Each state a job can be in while it is not ended has a bound here: a
number of attempts counted before the work (so a crash or a kill also counts), or a deadline, after
which the job ends FAILED with a reason, and its error report is written (flows/deliver.py).
docs/reliability.md states the same table for people; tests/unit/test_bounds.py holds both to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2v.model.jobs import TERMINAL, Status

# A RECEIVED job's validation and submission: attempts begun, counted before each one.
MAX_WORK_ATTEMPTS = 5
# Poller checks of one job that raised something unexpected (not the provider being down: the
# deadlines bound that) before the job is failed instead of touched again.
MAX_CHECK_CRASHES = 5


@dataclass(frozen=True)
class Bound:
    limit: str  # what bounds the state
    code: str  # the failure code a job ends with when the bound is reached
    setting: str = ""  # the setting or constant that sets it


STATE_BOUNDS: dict[Status, Bound] = {
    Status.RECEIVED: Bound(f"{MAX_WORK_ATTEMPTS} attempts at validation and submission, each counted before it "
                           "begins (an ingest redelivery and the poller's retry of an orphan count alike)",
                           "attempts_exhausted", "MAX_WORK_ATTEMPTS"),
    Status.QUEUED: Bound("a deadline from its creation", "queued_too_long", "S2V_QUEUE_DEADLINE_SECONDS"),
    Status.SUBMITTING: Bound("the submit reconcile window, then the provider's list decides or the job fails",
                             "submit_outcome_unknown", "S2V_SUBMIT_RECONCILE_SECONDS"),
    Status.SUBMITTED: Bound("the render deadline from submission", "stuck", "S2V_JOB_DEADLINE_SECONDS"),
    Status.PROCESSING: Bound("the render deadline from submission", "stuck", "S2V_JOB_DEADLINE_SECONDS"),
    Status.COMPLETED: Bound("3 delivery attempts, a grace period apart", "delivery_incomplete",
                            "MAX_DELIVERY_ATTEMPTS"),
    Status.SPLITTING: Bound("a fixed number of split attempts", "split_failed", "STEP_ATTEMPTS"),
    Status.RENDERING: Bound("its segments, each a job with these bounds; the parent counts them as they end",
                            "segments_failed", "(its segments' bounds)"),
    Status.STITCHING: Bound("a fixed number of stitch attempts", "stitch_failed", "STEP_ATTEMPTS"),
}
# And in every non-final state: a poller check that keeps crashing ends the job after
# MAX_CHECK_CRASHES (code check_failed).


def unbounded_states() -> frozenset[Status]:
    """Non-final states without a bound: must be empty (the invariant)."""
    return frozenset(s for s in Status if s not in TERMINAL and s not in STATE_BOUNDS)
