"""The dashboard in headless Chromium (Debian's, driven by Playwright), over the fixture's lead.

The page must load without a console error or a failed request, show every node, sort, draw the
selected node's charts, and list the operators with their verification state; a screenshot goes
to test-artifacts/dashboard.png. The page's clock is set to just after the fixture's windows, so
its default range ("last hour") holds them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright

from tests.test_lead_data import NOW_MS, ORIGIN_A, ORIGIN_B, ThreadedLead

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)


@pytest.fixture(scope="module")
def lead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedLead]:
    with ThreadedLead(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture
async def page(lead: ThreadedLead) -> AsyncIterator[tuple[Page, list[str]]]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        view = await context.new_page()
        problems = watch(view)
        await view.clock.set_fixed_time(NOW_MS / 1000)
        await view.goto(lead.base_url + "/dashboard")
        await view.wait_for_selector("#nodes tbody tr")
        yield view, problems
        await browser.close()


def watch(page: Page) -> list[str]:
    """Console errors and warnings, uncaught exceptions and failed requests of the page."""
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    return problems


async def rows(page: Page) -> list[str]:
    found: list[str] = await page.locator("#nodes tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.node)"
    )
    return found


async def test_page_shows_every_node_and_operator(page: tuple[Page, list[str]]) -> None:
    view, problems = page
    # Worst first: d2 is down, then the two degraded nodes by error rate (d1 17 %, s1 0 %).
    assert await rows(view) == ["distributor/d2", "distributor/d1", "storage/s1"]
    statuses = await view.locator("#nodes tbody .badge").all_text_contents()
    assert statuses == ["✕Down", "!Degraded", "!Degraded"]  # a mark and a word, not colour alone
    d1 = await view.locator('#nodes tr[data-node="distributor/d1"] td').all_inner_texts()
    assert d1[2:4] == ["41", "17.1 %"]
    assert (await view.locator("#overview").inner_text()).split() == [
        "1", "down", "2", "degraded", "0", "not", "enough", "data", "0", "healthy",
    ]  # fmt: skip
    operators = view.locator("#operators tbody tr")
    assert await operators.evaluate_all("rows => rows.map(r => r.dataset.origin)") == [
        ORIGIN_A,
        ORIGIN_B,
    ]
    assert await operators.first.locator("td").nth(1).inner_text() == "Verified"
    assert "Fewer than 10 requests" in await view.locator("#legend").inner_text()
    assert problems == []


async def test_sorting(page: tuple[Page, list[str]]) -> None:
    view, problems = page
    await view.get_by_role("button", name="Requests").click()
    assert await rows(view) == ["distributor/d1", "distributor/d2", "storage/s1"]  # 41, 12, 12
    header = view.locator("th", has=view.get_by_role("button", name="Requests"))
    assert await header.get_attribute("aria-sort") == "descending"
    await view.get_by_role("button", name="Failed").click()
    assert await rows(view) == ["distributor/d2", "distributor/d1", "storage/s1"]  # 75 %, 17 %, 0 %
    await view.get_by_role("button", name="Failed").click()
    assert await rows(view) == ["storage/s1", "distributor/d1", "distributor/d2"]
    await view.get_by_role("button", name="Node").click()
    assert await rows(view) == ["distributor/d1", "distributor/d2", "storage/s1"]
    assert problems == []


async def test_selecting_a_node_draws_its_charts(page: tuple[Page, list[str]]) -> None:
    view, problems = page
    await view.get_by_role("button", name="d1", exact=True).click()
    await view.wait_for_selector("#latency-chart svg circle.dot.line-p50")
    assert "d1 (distributor): degraded" in await view.locator("#detail-heading").inner_text()
    assert "17.1 % of requests failed" in await view.locator("#detail-reasons").inner_text()
    assert await view.locator("#latency-chart svg path.line").count() == 3
    assert await view.locator("#latency-chart svg circle.dot").count() == 2 * 3
    # The last hour in one-minute steps: the fixture's two windows are two points, two bars.
    assert await view.locator("#error-chart svg rect.bar").count() == 2
    assert await view.locator('#nodes tr[aria-current="true"]').get_attribute("data-node") == (
        "distributor/d1"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await view.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert problems == []
