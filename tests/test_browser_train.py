"""The Train tab in a real browser: choose a preset, press Play, watch the step count grow in the
status table and the attention grid appear, press Pause, and save a screenshot (as
tests/test_browser.py does for the other tabs, with the same Chromium setup)."""

from __future__ import annotations

import re
import time

import pytest

from demos.train_live import MAX_SECONDS
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, WAIT_MS, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def transformer_steps(panel) -> int:
    """The status table's "steps" row, first model's column (the transformer's); -1 before it is drawn."""
    for row in panel.locator("tr").all_inner_texts():
        if re.match(r"steps\s+\d", row.strip()):
            return int(row.split()[1])
    return -1


def test_a_preset_trains_in_front_of_you(app_server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS * 4)  # the first run imports the optimiser (~5 s on a busy machine)
            page.goto(app_server.url)
            page.get_by_role("tab", name="Train", exact=True).click()
            panel = page.get_by_role("tabpanel")
            panel.get_by_label("Preset (one lesson each)").click()
            page.get_by_role("option", name="Reverse, with positions (and a GRU beside it)").click()
            panel.get_by_text("What to look for.").wait_for()
            # the longest Play: on a busy machine the first table may be drawn late in a shorter one,
            # leaving no time to see its step count grow (a 30 s Play ended at 775 steps before it did)
            seconds = panel.get_by_label("number input for Seconds per Play")
            seconds.fill(str(MAX_SECONDS))
            seconds.press("Enter")
            panel.get_by_role("button", name="Play", exact=True).click()
            panel.locator("th", has_text="transformer").first.wait_for()
            first = transformer_steps(panel)
            assert first >= 0, "the status table should have a steps row"
            end = time.monotonic() + WAIT_MS / 1000
            while transformer_steps(panel) <= first and time.monotonic() < end:
                page.wait_for_timeout(250)
            assert transformer_steps(panel) > first, "the step count should grow while it plays"
            assert panel.locator("th", has_text="GRU + ATTENTION").count() >= 1
            panel.get_by_text("layer 2 head 4").first.wait_for()  # every layer and head of the cross-attention
            panel.get_by_role("button", name="Pause", exact=True).click()
            screenshot(page, "train")
        finally:
            browser.close()
