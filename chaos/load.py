"""Orders at a steady rate, as careful clients send them: each with an Idempotency-Key, retried with
the same key while the stack is failing, so an order is accepted once or not at all. Logins run beside
them, so auth is in the path of the faults too."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import tenacity

log = logging.getLogger("chaos")

RETRY_SECONDS = 90.0  # a client gives an order this long to be accepted (a Kafka restart takes ~15 s)
TOKEN_SECONDS = 300.0  # logins again well before the 900 s access token expires


class Refused(Exception):
    """An answer that is worth retrying (5xx, 429) or a connection failure."""


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    goods_id: int
    quantity: int
    total: Decimal


@dataclass
class Outcome:
    accepted: list[Order] = field(default_factory=list)
    given_up: int = 0  # orders never accepted within RETRY_SECONDS (not an error in itself: reported)
    retried: int = 0  # answers that were retried (5xx, 429, connection failures)
    statuses: dict[str, int] = field(default_factory=dict)
    logins: int = 0
    logins_failed: int = 0
    # Cancels placed right after their order (racing its approval): accepted, or refused for good with
    # the order's state (REJECTED: nothing to cancel), or given up.
    cancels: dict[str, int] = field(default_factory=dict)


class Load:
    def __init__(self, order_url: str, auth_url: str, admin: tuple[str, str], user: tuple[str, str],
                 customers: list[str], prices: dict[int, Decimal], *, rate: float, seed: int,
                 cancel_share: float = 0.0) -> None:
        self.order_url = order_url
        self.auth_url = auth_url
        self.admin = admin
        self.user = user
        self.customers = customers
        self.prices = prices
        self.rate = rate
        self.cancel_share = cancel_share
        self.random = random.Random(seed)
        self.outcome = Outcome()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0),
                                    limits=httpx.Limits(max_connections=64))
        self._token = ""
        self._token_at = 0.0

    def run(self, stop: threading.Event, limit: int) -> None:
        """Place orders at `rate` per second until `stop` is set or `limit` were placed."""
        with ThreadPoolExecutor(max_workers=48, thread_name_prefix="order") as pool:
            started = time.monotonic()
            for n in range(limit):
                if stop.is_set():
                    break
                due = started + n / self.rate
                stop.wait(max(0.0, due - time.monotonic()))
                pool.submit(self._place, self._next_order())
                if n % max(1, int(self.rate * 2)) == 0:
                    pool.submit(self._login)  # one login every ~2 s

    def place_correct(self, customer_id: str, goods_id: int, count: int) -> list[Order]:
        """`count` orders of one unit at the right price, placed one after another (after the faults:
        each should be approved). Accepted ones are added to `outcome.accepted` too."""
        before = len(self.outcome.accepted)
        for _ in range(count):
            self._place((str(uuid.uuid4()), {"customerId": customer_id, "goodsId": goods_id, "goodsTotal": 1,
                                             "orderTotal": {"amount": str(self.prices[goods_id])}}, False))
        with self._lock:
            return self.outcome.accepted[before:]

    def resume(self, saga_type: str, saga_id: str) -> int:
        """POST /admin/sagas/{id}/resume?type= as the admin, retried like an order; the final status (409
        when a retry finds it resumed already)."""
        url = f"{self.order_url}/admin/sagas/{saga_id}/resume?type={saga_type}"
        answer = self._retrying(lambda: self._request("POST", url, headers={"Authorization": f"Bearer {self.token()}"}))
        return int(answer.status_code)

    def _next_order(self) -> tuple[str, dict[str, object], bool]:
        goods_id = self.random.choice(list(self.prices))
        quantity = self.random.randint(1, 3)
        total = self.prices[goods_id] * quantity
        if self.random.random() < 0.05:  # a client with a stale price list: PRICE_MISMATCH
            total += Decimal("1.00")
        body = {"customerId": self.random.choice(self.customers), "goodsId": goods_id, "goodsTotal": quantity,
                "orderTotal": {"amount": str(total)}}
        return str(uuid.uuid4()), body, self.random.random() < self.cancel_share

    def _place(self, order: tuple[str, dict[str, object], bool]) -> None:
        key, body, then_cancel = order
        try:
            answer = self._retrying(lambda: self._post(key, body))
        except tenacity.RetryError:
            with self._lock:
                self.outcome.given_up += 1
            return
        except Exception:
            log.exception("order %s failed for good", key)
            with self._lock:
                self.outcome.given_up += 1
            return
        amount = Decimal(str(body["orderTotal"]["amount"]))  # type: ignore[index]
        placed = Order(answer["orderId"], str(body["customerId"]), int(body["goodsId"]),  # type: ignore[call-overload]
                       int(body["goodsTotal"]), amount)  # type: ignore[call-overload]
        with self._lock:
            self.outcome.accepted.append(placed)
        if then_cancel:
            self._cancel(placed.order_id)

    def _cancel(self, order_id: str) -> None:
        """Cancel at once, racing the order's approval: while it is PENDING the answer is 409 with
        Retry-After, which a careful client honours (bounded by RETRY_SECONDS)."""
        deadline, outcome = time.monotonic() + RETRY_SECONDS, "gave up"
        while time.monotonic() < deadline:
            try:
                answer = self._retrying(lambda: self._request(
                    "POST", f"{self.order_url}/orders/{order_id}/cancel",
                    headers={"Authorization": f"Bearer {self.token()}"}))
            except Exception:
                break
            if answer.status_code == 202:
                outcome = "accepted"
                break
            if answer.status_code == 409 and "Retry-After" in answer.headers:
                time.sleep(min(float(answer.headers["Retry-After"]), 5.0))
                continue
            detail = answer.json().get("detail", "") if answer.status_code == 409 else ""
            state = detail.split(" is ", 1)[-1].split(":")[0] if " is " in detail else ""
            # CANCEL_PENDING or CANCELLED: an earlier try was taken, its answer lost (a retried 5xx).
            outcome = ("accepted" if state in ("CANCEL_PENDING", "CANCELLED")
                       else f"refused: {state or answer.status_code}")
            break
        with self._lock:
            self.outcome.cancels[outcome] = self.outcome.cancels.get(outcome, 0) + 1

    def _post(self, key: str, body: dict[str, object]) -> dict[str, str]:
        answer = self._request("POST", f"{self.order_url}/orders", json=body,
                               headers={"Idempotency-Key": key, "Authorization": f"Bearer {self.token()}"})
        if answer.status_code != 202:
            raise RuntimeError(f"order refused for good: {answer.status_code} {answer.text[:200]}")
        return dict(answer.json())

    def _login(self) -> None:
        try:
            self._retrying(lambda: self._request("POST", f"{self.auth_url}/auth/login",
                                                 json={"username": self.user[0], "password": self.user[1]}))
            with self._lock:
                self.outcome.logins += 1
        except Exception:
            with self._lock:
                self.outcome.logins_failed += 1

    def token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() - self._token_at < TOKEN_SECONDS:
                return self._token
        answer = self._retrying(lambda: self._request(
            "POST", f"{self.auth_url}/auth/login", json={"username": self.admin[0], "password": self.admin[1]}))
        with self._lock:
            self._token, self._token_at = str(answer.json()["access_token"]), time.monotonic()
            return self._token

    def _request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        try:
            answer = self._client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            self._count("connection failure")
            raise Refused(str(exc)) from exc
        self._count(str(answer.status_code))
        if answer.status_code >= 500 or answer.status_code == 429:
            raise Refused(f"{answer.status_code} {answer.text[:200]}")
        return answer

    def _count(self, status: str) -> None:
        with self._lock:
            self.outcome.statuses[status] = self.outcome.statuses.get(status, 0) + 1

    def _retrying(self, attempt):  # type: ignore[no-untyped-def]
        def note(_: tenacity.RetryCallState) -> None:
            with self._lock:
                self.outcome.retried += 1

        retry = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Refused),
            wait=tenacity.wait_exponential_jitter(initial=0.2, max=5.0),
            stop=tenacity.stop_after_delay(RETRY_SECONDS),
            before_sleep=note,
        )
        return retry(attempt)

    def close(self) -> None:
        self._client.close()
