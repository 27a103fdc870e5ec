"""Whole-number query parameters: in range or a 422 naming the field, never a 500."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from functions.platform.params import int_param
from functions.platform.problems import Unprocessable


def request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/orders", "query_string": query.encode(), "headers": []})


def limit(query: str) -> int:
    return int_param(request(query), "limit", default=100, low=1, high=1000)


@pytest.mark.parametrize(("query", "found"), [("", 100), ("limit=1", 1), ("limit=1000", 1000), ("limit=007", 7),
                                              ("limit=" + "0" * 5000 + "5", 5)])
def test_a_number_in_range(query: str, found: int) -> None:
    assert limit(query) == found


@pytest.mark.parametrize("value", ["0", "1001", "-1", "1.5", "ten", "²", "", " 5", "9" * 5000, "1" + "0" * 4400])
def test_anything_else_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        limit(f"limit={value}")
    assert "limit must be a whole number from 1 to 1000" in str(refused.value)
