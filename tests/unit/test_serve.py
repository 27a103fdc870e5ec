"""Every path reaches the function, whatever characters it holds, so every answer is the function's
own (problem+json), never the framework's plain-text 404."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from functions.platform.serve import function_app


@pytest.mark.parametrize("path", ["/orders/%C2%A2%0A/saga", "/orders/x%0A", "/orders%0D%0A/x"])
def test_a_path_with_a_newline_gets_the_functions_answer(path: str) -> None:
    client = TestClient(function_app("functions/order/api.py", "order_api"))
    answer = client.get(path)  # no token: the function refuses it, as it does any path
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
