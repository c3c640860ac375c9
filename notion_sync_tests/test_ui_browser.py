"""The Dagster UI in a real browser: asset graph, a partitioned asset's page, the launchpad's partition
selection, a run that succeeds. Screenshots land in test-artifacts/ui/.

Chromium is Debian's (/usr/bin/chromium, installed by `make browser`), driven by Playwright; the
selectors follow the Dagster 1.13 UI (roles and visible texts, no generated class names).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notion_sync_tests.e2e_helpers import REPO_ROOT, Stack, running_stack

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: run `make browser` (as root, with apt-get)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is a test dependency: pip install -e .[test]"
)

# Headless in a container: no sandbox or GPU, and no background calls to Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
PARTITION = "2026-11-20"
UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def page(tmp_path: Path) -> Iterator[sync_api.Page]:
    """A fresh headless Chromium profile."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def screenshot(page: sync_api.Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")


@pytest.mark.timeout(300)
def test_materialize_one_partition_from_the_ui(stack: Stack, page: sync_api.Page) -> None:
    started = time.monotonic()
    expect = sync_api.expect

    # A partitioned asset's page, then the launchpad's partition selection for one partition. A new
    # instance greets its first visitor with a "Join the Dagster community" modal: skip it.
    page.goto(f"{stack.ui.url}/assets/salesforce/Account")
    page.get_by_role("button", name="Skip").click()
    expect(page.get_by_text("Partitions", exact=True).first).to_be_visible()
    screenshot(page, "01-asset-page")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(PARTITION)
    partitions.press("Enter")
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    screenshot(page, "02-partition-selection")
    dialog.get_by_role("button", name="Launch 1 run").click()

    # The toast links to the run; its page shows it succeed.
    view = page.get_by_role("link", name="View", exact=True)
    run_id = view.get_attribute("href").rsplit("/", 1)[-1]
    view.click()
    expect(page.get_by_text(f"partition: {PARTITION}")).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    screenshot(page, "03-run-succeeded")

    assert stack.ui.wait_for_run(run_id, timeout_s=10) == "SUCCESS"
    assert stack.staged_records("Account", [PARTITION]) > 0
    page.goto(f"{stack.ui.url}/assets/salesforce/Account?view=partitions")
    expect(page.get_by_text("Materialized (1)")).to_be_visible()
    page.get_by_text(PARTITION, exact=True).first.click()
    expect(page.get_by_text("records_per_s")).to_be_visible()  # the materialization's metadata
    screenshot(page, "04-partition-materialized")

    # The global asset graph with both groups expanded (graph settings menu, bottom right; the graph
    # keeps animating, so its controls are clicked without waiting for them to stand still).
    page.goto(f"{stack.ui.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_role("img", name="unfold_more")).to_have_count(2)  # two collapsed groups
    page.get_by_role("img", name="settings").last.click(force=True)
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menuitem")).to_have_count(0)
    for name in ("Account", "Contact", "Opportunity"):
        expect(page.get_by_text(name, exact=True)).to_have_count(2)  # salesforce/<name>, notion/<name>
    expect(page.get_by_text("Loading")).to_have_count(0)  # the nodes' partition and check statuses
    screenshot(page, "05-asset-graph")
    print(f"browser test: {time.monotonic() - started:.0f} s after the UI was up")
