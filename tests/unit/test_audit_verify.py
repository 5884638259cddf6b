"""What ``lifecycle audit verify`` prints for a partition."""

from __future__ import annotations

from agents.audit.chain import BrokenLink
from agents.audit.verify import VerifyResult


def test_an_intact_chain_with_replays_says_so() -> None:
    result = VerifyResult(0, 120, None, replayed=14, redecided=2, duplicates=1)
    assert result.summary() == (
        "partition 0: 120 event(s), chain intact; "
        "14 replayed after a restart (same input, same facts); "
        "2 re-decided after a restart (same input, other facts); "
        "1 duplicate deliveries skipped"
    )


def test_an_intact_chain_without_replays_is_one_short_line() -> None:
    assert VerifyResult(1, 8, None).summary() == "partition 1: 8 event(s), chain intact"


def test_a_broken_chain_names_the_link() -> None:
    broken = BrokenLink(41, 40, "prev_hash does not match the previous event")
    result = VerifyResult(2, 41, broken, replayed=3)
    assert result.summary() == (
        "partition 2: BROKEN at offset 41 (sequence 40): "
        "prev_hash does not match the previous event"
    )
