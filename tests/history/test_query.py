"""Query strings -> HistoryFilter and cursors; bad values are 400s naming what is allowed."""
from __future__ import annotations

import pytest

from shared import history
from shared.errors import BadRequest


@pytest.mark.parametrize("value,expected", [
    ("2026-11-21", 1_795_219_200.0), ("1795219200", 1_795_219_200.0), ("2026-11-21T00:00:00Z", 1_795_219_200.0),
])
def test_parse_time(value, expected):
    assert history.parse_time(value, "since") == expected
    assert history.parse_time("2026-11-21", "until", end_of_day=True) == expected + 86400


def test_bad_query_parameters_say_what_is_allowed():
    with pytest.raises(BadRequest, match="since must be"):
        history.parse_filter({"since": "yesterday"})
    with pytest.raises(BadRequest, match="degraded must be one of true, false or any, got 'maybe'"):
        history.parse_filter({"degraded": "maybe"})
    with pytest.raises(BadRequest, match="cursor"):
        history.parse_cursor("nonsense")
