"""bench.analyst's bound: the fewest groups a perfect ranking needs after a given first page."""

from __future__ import annotations

from bench.analyst import _steps_seen, fewest_after


def test_a_perfect_second_page_covers_the_unseen_steps_with_the_fewest_groups() -> None:
    steps = [set(), {"scan"}, set(), {"scan", "shell"}, {"sudo"}, {"exfil"}, {"shell", "sudo"}]
    # the first page found only the scan: shell and sudo fit in one group (6), exfil is alone
    assert fewest_after([0, 1, 2], steps) == 3 + 2
    assert fewest_after([0, 1, 2], steps, missing=1) == 3 + 1
    # a first page that saw everything needs nothing more; one that saw nothing needs a cover
    assert fewest_after([3, 4, 5], steps) == 3
    assert fewest_after([0, 2], steps) == 2 + 3  # e.g. 3 (scan, shell), 4 or 6, 5


def test_the_bound_is_never_above_what_a_reading_order_achieved() -> None:
    steps = [set(), {"a"}, {"b"}, set(), {"c"}, {"a", "b", "c"}]
    read = [0, 3, 1, 2, 4]  # a poor order, first page [0, 3]
    achieved_all, achieved_all_1 = _steps_seen(read, steps)
    assert fewest_after(read[:2], steps) <= achieved_all
    assert fewest_after(read[:2], steps, missing=1) <= achieved_all_1
    assert fewest_after(read[:2], steps) == 3  # group 5 alone shows every step
