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
    # Worst first: d2 is down, then the degraded nodes by error rate (d1 17 %, s1 none known),
    # then the two that cannot be judged on what their clients report.
    assert await rows(view) == [
        "distributor/d2",
        "distributor/d1",
        "storage/s1",
        "distributor/mrbovo.distributor.cc",
        "storage/7",
    ]
    statuses = await view.locator("#nodes tbody .badge").all_text_contents()
    # a mark and a word, not colour alone
    assert statuses == ["✕Down", "!Degraded", "!Degraded", *["?Not enough to judge"] * 2]
    d1 = await view.locator('#nodes tr[data-node="distributor/d1"] td').all_inner_texts()
    assert d1[2:4] == ["41", "17.1 %"]
    assert (await view.locator("#overview").inner_text()).split() == [
        "1", "down", "2", "degraded", "2", "not", "enough", "to", "judge", "0", "healthy",
    ]  # fmt: skip
    operators = view.locator("#operators tbody tr")
    assert await operators.evaluate_all("rows => rows.map(r => r.dataset.origin)") == [
        ORIGIN_A,
        ORIGIN_B,
    ]
    assert await operators.first.locator("td").nth(1).inner_text() == "Verified"
    assert "Fewer than 10 requests" in await view.locator("#legend").inner_text()
    assert problems == []


async def test_one_sided_nodes_show_what_was_reported(page: tuple[Page, list[str]]) -> None:
    """Atlas's failure-only and success-only series in words, never as 0 % or 100 %."""
    view, problems = page
    uploads = await view.locator('#nodes tr[data-node="storage/7"] td').all_inner_texts()
    assert uploads[2] == "12"
    assert uploads[3] == (
        "12 failed uploads from 3+ users; successful uploads are not reported by this client"
    )
    downloads = await view.locator(
        '#nodes tr[data-node="distributor/mrbovo.distributor.cc"] td'
    ).all_inner_texts()
    assert downloads[3] == (
        "12 downloads reported OK from 3+ users; failures are not reported by this client"
    )
    # s1's clients reported only successes too: its slowness shows, no share failed does.
    s1 = await view.locator('#nodes tr[data-node="storage/s1"] td').all_inner_texts()
    assert s1[3].startswith("12 downloads reported OK")  # native events default to download
    table = await view.locator("#nodes tbody").inner_text()
    assert "%" not in table.replace("17.1 %", "").replace("75.0 %", "")  # only d1's and d2's

    # The network-wide cell is a signal about the network, not a row.
    assert await view.locator("#network").is_visible()
    assert await view.locator("#network-signals").inner_text() == (
        "3 times an upload found no storage operator for its bag (reported by 3+ users)"
    )
    assert "_all" not in table

    await view.get_by_role("button", name="7", exact=True).click()
    await view.wait_for_selector("#error-chart svg rect.bar")
    assert "7 (storage): not enough to judge" in await view.locator("#detail-heading").inner_text()
    assert (await view.locator("#detail-coverage").inner_text()).startswith(
        "Reported in this period: 12 failed uploads"
    )
    caption = await view.locator("#errors-caption").inner_text()
    assert caption == "Failed uploads reported (the other side is not reported)"
    # Two windows of 6 failed uploads: two bars of counts, no share.
    titles = await view.locator("#error-chart svg rect.bar title").all_text_contents()
    assert [t.split(": ", 1)[1] for t in titles] == ["6 failed", "6 failed"]
    numbers = await view.locator("#error-chart details table").inner_text()
    assert "%" not in numbers

    await view.get_by_role("button", name="mrbovo.distributor.cc").click()
    await view.wait_for_selector("#error-chart svg rect.bar-ok")
    caption = await view.locator("#errors-caption").inner_text()
    assert caption == "Downloads reported OK (the other side is not reported)"
    assert "%" not in await view.locator("#error-chart").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await view.screenshot(path=str(ARTIFACTS / "dashboard-one-sided.png"), full_page=True)
    assert problems == []


async def test_sorting(page: tuple[Page, list[str]]) -> None:
    view, problems = page
    await view.get_by_role("button", name="Requests").click()
    # 41, then four with 12 each, by name
    assert await rows(view) == [
        "distributor/d1",
        "distributor/d2",
        "distributor/mrbovo.distributor.cc",
        "storage/7",
        "storage/s1",
    ]
    header = view.locator("th", has=view.get_by_role("button", name="Requests"))
    assert await header.get_attribute("aria-sort") == "descending"
    await view.get_by_role("button", name="Failed").click()
    # 75 %, 17 %, then the nodes with no share failed known, by name
    one_sided = ["distributor/mrbovo.distributor.cc", "storage/7", "storage/s1"]
    assert await rows(view) == ["distributor/d2", "distributor/d1", *one_sided]
    await view.get_by_role("button", name="Failed").click()
    assert await rows(view) == [*one_sided, "distributor/d1", "distributor/d2"]
    await view.get_by_role("button", name="Node").click()
    assert await rows(view) == ["distributor/d1", "distributor/d2", *one_sided]
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
