"""The operator console in a real browser (Playwright driving Debian's chromium) on the whole local stack:
sign in through the page, find orders with the filters, read a compensated saga's timeline beside its
definition, watch the list change without a reload, resume a parked saga and redrive a dead letter with
their buttons; and the console refuses whoever is not an admin.

On a stack of its own (own database, topics and consumer groups): the redrive takes every dead letter of
its stack, and one test rolls out a broken revision. Every wait is bounded (Playwright's `expect`).
Screenshots: tests/e2e/screenshots.py (docs/img only with SAGA_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from functions.console.assets import digest
from localstack.databases import throwaway_database
from localstack.infra import Infra, repo_root, suite_port_shift
from localstack.invariants import unbalanced_books
from localstack.stack import Stack
from tests.e2e import browser, screenshots
from tests.e2e.client import ADMIN_PASSWORD, Api, Customer, order_body
from tests.e2e.conftest import GATEWAY
from tests.e2e.test_failure_policy import stocktake

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(GATEWAY), reason="drives the local stack's console")]

CHICKEN, CHICKEN_PRICE, APPLE, APPLE_PRICE = 1, 37, 2, 10  # the demo catalogue's
WAIT_MS = 30_000  # the longest any one thing may take to show
# A short retry budget (PARKED after 4 tries, 1, 2 and 4 s apart) as in the suite's stack, the default
# step deadline (a dead letter's saga must still be waiting when it is redriven), a 1 s live refresh,
# and a trace viewer for the trace link.
ENV = {
    "SAGA_RETRY_ATTEMPTS": "4",
    "SAGA_RETRY_FIRST_DELAY_SECONDS": "1",
    "SAGA_CONSOLE_REFRESH_SECONDS": "1",
    "SAGA_TRACE_UI_URL": "http://jaeger.example:16686",
}
# The compensated order's saga, in the order it happened: what the timeline must draw.
COMPENSATED = [("local", "create"), ("command", "reserve_goods"), ("command", "reserve_credit"),
               ("compensation", "release_goods"), ("local-compensation", "reject")]
STEP_KINDS = "g.item:is([data-kind=local],[data-kind=command],[data-kind=compensation],[data-kind=local-compensation])"


@dataclass
class Rig:
    stack: Stack
    api: Api
    db: sa.Engine
    console: str  # the page's URL
    shots: Path


@pytest.fixture(scope="module")
def rig(infra: Infra) -> Iterator[Rig]:
    repo = repo_root()
    shift = suite_port_shift()
    with throwaway_database(infra.database_url, "saga_console") as url:
        db = sa.create_engine(url)
        try:
            root = repo / ".local" / ("test" if not shift else f"test-{shift}") / "console"
            with Stack(repo, root, replace(infra, database_url=url), port_offset=22000 + shift, idle_seconds=300,
                       ping_every=1.0, env=ENV, kafka_suffix=f".{sa.make_url(url).database}") as stack:
                api = Api(stack.public_urls)
                yield Rig(stack, api, db, f"{stack.url('console')}/console/", screenshots.folder(root))
                api.close()
                books = unbalanced_books(db)
                assert not books, f"the books do not balance after the console's tests: {books}"
        finally:
            db.dispose()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(chromium: Any, rig: Rig) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) on the console's page."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(rig.console)
    yield tab
    context.close()


def sign_in(page: Any, username: str, password: str) -> None:
    form = page.locator("#login-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()


def admin(page: Any) -> Any:
    from playwright.sync_api import expect

    sign_in(page, "admin", ADMIN_PASSWORD)
    expect(page.locator("#live")).to_contain_text("live")
    return page


def shoot(page: Any, rig: Rig, name: str) -> None:
    """A screenshot of the whole page, stamped with the digest of the page's files it shows."""
    png = page.screenshot(full_page=True)
    (rig.shots / f"console-{name}.png").write_bytes(screenshots.stamped(png, digest()))


def place(rig: Rig, customer: Customer, goods: int, quantity: int, amount: Any, **headers: str) -> str:
    placed = rig.api.place_order(customer.token, order_body(customer.customer_id, goods, quantity, amount), **headers)
    assert placed.status_code == 202, placed.text
    return str(placed.json()["orderId"])


def filter_by_customer(page: Any, customer: Customer) -> None:
    box = page.locator("#filters").get_by_label("Customer")
    box.fill(customer.customer_id)
    box.press("Enter")


def row(page: Any, section: str, saga_id: str) -> Any:
    return page.locator(f"#{section} tr[data-saga-id='{saga_id}']")


def test_sign_in_find_orders_by_filters_and_read_a_compensated_saga(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    customer = rig.api.new_customer()
    approved = place(rig, customer, APPLE, 1, APPLE_PRICE)
    # 111.00: more than the credit left. Placed by a traced client: the saga is in the caller's trace.
    trace_id = uuid.uuid4().hex
    compensated = place(rig, customer, CHICKEN, 3, 3 * CHICKEN_PRICE, traceparent=f"00-{trace_id}-{'1' * 16}-01")
    assert rig.api.settled(customer.token, approved)["state"] == "APPROVED"
    assert rig.api.settled(customer.token, compensated)["rejectionReason"] == "INSUFFICIENT_CREDIT"

    admin(page)
    filter_by_customer(page, customer)
    expect(page.locator("#sagas tbody tr")).to_have_count(2)
    expect(row(page, "sagas", approved)).to_have_attribute("data-state", "COMPLETED")
    expect(row(page, "sagas", compensated)).to_have_attribute("data-state", "COMPENSATED")
    expect(page.locator("#counts [data-state=COMPENSATED] b")).to_have_text("1")
    page.locator("#filters").get_by_label("State").select_option("COMPENSATED")
    expect(page.locator("#sagas tbody tr")).to_have_count(1)
    expect(row(page, "sagas", compensated)).to_be_visible()
    assert "state=COMPENSATED" in page.url and customer.customer_id in page.url, "the filters are in the link"

    row(page, "sagas", compensated).get_by_role("link").click()
    saga = page.locator("section.saga[data-saga-type=CreateOrderSaga]")
    expect(saga).to_have_attribute("data-state", "COMPENSATED")
    steps = saga.locator(f".timeline {STEP_KINDS}")
    expect(steps).to_have_count(len(COMPENSATED))
    drawn = [(step.get_attribute("data-kind"), step.get_attribute("data-name")) for step in steps.all()]
    assert drawn == COMPENSATED
    outcomes = [(step.get_attribute("data-result"), step.get_attribute("data-outcome")) for step in steps.all()]
    assert outcomes[1:4] == [("replied", "SUCCESS"), ("replied", "FAILURE"), ("replied", "SUCCESS")]
    assert all(step.locator("rect.bar").count() == 1 for step in steps.all()[1:4]), "bars, not a list"
    current = saga.locator(".diagram [data-current=true]")
    expect(current).to_have_count(1)
    expect(current).to_have_attribute("data-node", "compensated")
    expect(saga.locator(".diagram [data-node=step-2]")).to_have_attribute("data-name", "reserve_credit")
    expect(saga.locator("a.trace")).to_have_attribute("href", f"{ENV['SAGA_TRACE_UI_URL']}/trace/{trace_id}")
    shoot(page, rig, "saga")
    page.goto(f"{rig.console}#/saga/{approved}")
    untraced = page.locator("section.saga[data-saga-type=CreateOrderSaga][data-state=COMPLETED]")
    expect(untraced.locator(".trace")).to_have_text("tracing off")


def test_the_list_follows_new_orders_without_a_reload(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    customer = rig.api.new_customer()
    admin(page)
    filter_by_customer(page, customer)
    expect(page.locator("#sagas")).to_contain_text("No saga matches.")
    page.evaluate("window.stillTheSamePage = true")
    order = place(rig, customer, APPLE, 1, APPLE_PRICE)
    expect(row(page, "sagas", order)).to_have_attribute("data-state", "COMPLETED")
    assert page.evaluate("window.stillTheSamePage") is True, "the page was not reloaded"


def test_a_parked_saga_is_resumed_with_its_button(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    customer = rig.api.new_customer()
    admin(page)
    with stocktake(rig.stack, APPLE) as end:
        order = place(rig, customer, APPLE, 11, 11 * APPLE_PRICE)  # 110.00: the goods are released, refused
        parked = row(page, "attention", order)
        expect(parked).to_have_attribute("data-state", "PARKED")
        expect(parked.locator("[data-action=resume]")).to_be_visible()
        shoot(page, rig, "sagas")
        parked.get_by_role("link").click()
        saga = page.locator("section.saga[data-saga-type=CreateOrderSaga]")
        expect(saga).to_have_attribute("data-state", "PARKED")
        expect(saga.locator(".diagram [data-current=true]")).to_have_attribute("data-name", "release_goods")
        releases = saga.locator(".timeline g.item[data-kind=compensation][data-name=release_goods]")
        expect(releases).to_have_count(4)  # every try of the budget, each answered GoodsReleaseRefused
        expect(saga.locator(".timeline g.item[data-kind=parked]")).to_have_count(1)
        shoot(page, rig, "parked")
        end()  # the cause is fixed
        saga.locator("[data-action=resume]").click()
    expect(page.locator("#message")).to_contain_text("Resumed CreateOrderSaga")
    expect(saga).to_have_attribute("data-state", "COMPENSATED")
    expect(saga.locator(".timeline .mark[data-event=RESUMED]")).to_have_count(1)
    order_now = rig.api.settled(customer.token, order)
    assert (order_now["state"], order_now["rejectionReason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")


def test_a_dead_letter_is_redriven_with_its_button(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    customer = rig.api.new_customer()
    admin(page)
    rig.stack.redeploy("goods-reserve", "tests/e2e/faults.py", "goods_reserve_rejecting_apples")
    try:
        order = place(rig, customer, APPLE, 1, APPLE_PRICE)
        page.get_by_role("link", name="Dead letters").click()
        letter = page.locator(f"#dead-letters tr[data-saga-id='{order}']")
        expect(letter).to_have_attribute("data-trigger", "goods-reserve")
        expect(letter).to_contain_text("400")
        expect(letter).to_contain_text("this revision cannot read apple orders")
        shoot(page, rig, "dead-letters")
    finally:
        rig.stack.redeploy("goods-reserve")  # the fix
    assert rig.api.call("order", "GET", f"/orders/{order}", token=customer.token).json()["state"] == "PENDING"
    page.locator("[data-action=redrive][data-trigger=all]").click()
    expect(page.locator("#message")).to_contain_text("Redriven 1: 1 delivered")
    expect(page.locator("#dead-letters")).to_contain_text("No dead letter waits for a redrive.")
    page.goto(f"{rig.console}#/saga/{order}")
    expect(page.locator("section.saga[data-saga-type=CreateOrderSaga]")).to_have_attribute("data-state", "COMPLETED")
    assert rig.api.settled(customer.token, order)["state"] == "APPROVED"


def test_only_an_admin_gets_the_console_data(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    username, password = f"console-{uuid.uuid4().hex[:12]}", f"pw-{uuid.uuid4().hex}"
    registered = rig.api.call("auth", "POST", "/auth/register", json={"username": username, "password": password})
    assert registered.status_code == 201, registered.text
    sign_in(page, username, password)
    expect(page.locator("#denied")).to_contain_text("only an admin may do this")
    expect(page.locator("#sagas")).to_have_count(0)
    page.locator("#logout").click()
    sign_in(page, "admin", "not-the-password")
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")

    customer_token = rig.api.login(username, password)["access_token"]
    base = rig.stack.url("console")
    with httpx.Client(base_url=base, timeout=30) as http:
        shell = http.get("/console/")
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in shell.headers["content-security-policy"]
        assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", shell.text), "the page carries no data"
        for path in ("/console/api/sagas", "/console/api/dead-letters"):
            anonymous = http.get(path)
            assert anonymous.status_code == 401, anonymous.text
            assert anonymous.headers["content-type"] == "application/problem+json"
            customer_only = http.get(path, headers={"Authorization": f"Bearer {customer_token}"})
            assert customer_only.status_code == 403, customer_only.text
            assert customer_only.headers["content-type"] == "application/problem+json"
        token = rig.api.login("admin", ADMIN_PASSWORD)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for bad in ({"state": "STUCK"}, {"type": "Nope"}, {"customer": "no spaces"}, {"olderThan": "-1"},
                    {"limit": "0"}):
            refused = http.get("/console/api/sagas", params=bad, headers=headers)
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
        redrive = http.post("/console/api/dead-letters/redrive", json={"trigger": "no-such-trigger"}, headers=headers)
        assert redrive.status_code == 422 and redrive.json()["field"] == "trigger", redrive.text
        assert http.post("/console/api/dead-letters/redrive", content=b"{", headers=headers).status_code == 400
        assert http.get("/console/api/sagas/not-a-uuid", headers=headers).status_code == 404
        resume = http.post(f"/console/api/sagas/{'0' * 8}-0000-0000-0000-{'0' * 12}/resume", headers=headers)
        assert resume.status_code == 404 and resume.headers["content-type"] == "application/problem+json"
        assert http.get("/console/static/nothing.js").status_code == 404
