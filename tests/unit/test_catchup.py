"""After an assignment the timer waits until the partition's inputs are decided again."""

from __future__ import annotations

import pytest

from agents.runtime.catchup import MAX_WAIT_S, CatchUp

IN = ("t.in.telephony", 2)
ACKS = ("t.acks", 2)
OTHER = ("t.in.telephony", 3)


def armed(
    committed: dict[tuple[str, int], int | None], ends: dict[tuple[str, int], int]
) -> CatchUp:
    catch_up = CatchUp()
    catch_up.sought(committed)
    catch_up.arm(2, ends, {tp: 0 for tp in ends}, now_s=0.0)
    return catch_up


def test_nothing_runs_before_the_seek_after_recovery() -> None:
    catch_up = CatchUp()
    assert catch_up.recovering
    assert not catch_up.ready(2, now_s=0.0)
    catch_up.sought({IN: 5})
    assert not catch_up.recovering
    assert not catch_up.ready(2, now_s=0.0)  # not armed yet


@pytest.mark.parametrize(
    ("committed", "ends", "decided", "ready"),
    [
        # Nothing past the committed offsets: nothing to decide again.
        ({IN: 10, ACKS: 4}, {IN: 10, ACKS: 4}, [], True),
        # Records 10..14 were there: the timer waits for all of them.
        ({IN: 10, ACKS: 4}, {IN: 15, ACKS: 4}, [], False),
        ({IN: 10, ACKS: 4}, {IN: 15, ACKS: 4}, [(*IN, 10), (*IN, 13)], False),
        ({IN: 10, ACKS: 4}, {IN: 15, ACKS: 4}, [(*IN, 14)], True),
        # Every topic of the partition counts.
        ({IN: 10, ACKS: 4}, {IN: 15, ACKS: 6}, [(*IN, 14)], False),
        ({IN: 10, ACKS: 4}, {IN: 15, ACKS: 6}, [(*IN, 14), (*ACKS, 5)], True),
        # Never committed (None): from the log start, here 0.
        ({IN: None}, {IN: 3}, [(*IN, 1)], False),
        ({IN: None}, {IN: 3}, [(*IN, 2)], True),
        # Another partition's progress does not count.
        ({IN: 10}, {IN: 15}, [(*OTHER, 20)], False),
    ],
)
def test_the_timer_runs_once_what_was_there_is_decided(
    committed: dict[tuple[str, int], int | None],
    ends: dict[tuple[str, int], int],
    decided: list[tuple[str, int, int]],
    ready: bool,
) -> None:
    catch_up = armed(committed, ends)
    catch_up.decided(decided)
    assert catch_up.ready(2, now_s=1.0) is ready


def test_records_gone_from_the_log_are_not_waited_for() -> None:
    catch_up = CatchUp()
    catch_up.sought({IN: 10})
    catch_up.arm(2, {IN: 15}, {IN: 15}, now_s=0.0)  # retention removed 10..14
    assert catch_up.ready(2, now_s=0.0)


def test_new_traffic_after_the_assignment_does_not_hold_the_timer() -> None:
    catch_up = armed({IN: 10}, {IN: 12})
    catch_up.decided([(*IN, 11)])
    assert catch_up.ready(2, now_s=1.0)
    catch_up.decided([(*IN, 12)])  # later records: still ready
    assert catch_up.ready(2, now_s=2.0)


def test_the_wait_is_bounded() -> None:
    # A commit marker at the end of a topic: no record reaches its end offset.
    catch_up = armed({IN: 10}, {IN: 12})
    catch_up.decided([(*IN, 10)])
    assert not catch_up.ready(2, now_s=MAX_WAIT_S - 1)
    assert catch_up.ready(2, now_s=MAX_WAIT_S)


def test_a_revocation_starts_over() -> None:
    catch_up = armed({IN: 10}, {IN: 10})
    assert catch_up.ready(2, now_s=0.0)
    catch_up.reset()
    assert catch_up.recovering
    assert not catch_up.armed(2)
    assert not catch_up.ready(2, now_s=0.0)
