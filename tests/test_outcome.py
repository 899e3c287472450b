"""Statuses spelled once, and a painting's quality numbers summarised once."""

from __future__ import annotations

import json

import pytest

from covergen.outcome import HAS_RESULT, RECORDED, Metrics, PairStatus


@pytest.mark.parametrize(
    ("recorded", "summary"),
    [
        ({"content_kept": 0.618, "style_taken": 0.7}, "content 0.62 · style 0.70"),
        ({"content_kept": 1, "style_taken": 0}, "content 1.00 · style 0.00"),
        ({"content_kept": True, "style_taken": 0.5}, ""),  # a bool is never a score
        ({"content_kept": "0.5", "style_taken": 0.5}, ""),  # nor a text
        ({"content_kept": 0.5}, ""),
        ([0.5, 0.5], ""),
        (None, ""),
    ],
)
def test_the_summary_shows_both_scores_or_nothing(recorded, summary):
    assert Metrics.of(recorded).summary() == summary


def test_the_summary_takes_the_separator_of_its_place():
    assert Metrics.of({"content_kept": 0.5, "style_taken": 0.25}).summary(", ") == (
        "content 0.50, style 0.25"
    )


def test_statuses_are_their_own_json_text():
    assert json.dumps([PairStatus.BUILT]) == '["built"]'
    assert "built" in HAS_RESULT and "planned" not in RECORDED
    assert PairStatus("cancelled") is PairStatus.CANCELLED


def test_a_builds_counts_come_in_one_order_in_every_process():
    # The summary line ("done: 0 built, 9 reused, …") and the run log's counts follow
    # RECORDED: a set there gave each process its own order.
    from covergen.build import BuildSummary

    assert list(BuildSummary().counts()) == ["built", "reused", "failed", "cancelled"]
