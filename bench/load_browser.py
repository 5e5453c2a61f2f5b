"""Real Chromium tabs for bench/load.py: one browser context (= one Streamlit session) per user,
all driven at once from one asyncio loop. Pages are changed the way a person does it (the
sidebar's links), and a page counts as ready when it is idle: its heading is drawn, nothing is
stale and the Running indicator is gone. The tabs run their own timers, so a job card's polling
fragment runs as it would for a person watching.

Uses Debian's /usr/bin/chromium through `executable_path` (never `playwright install`).
"""
from __future__ import annotations

import asyncio
import time

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TITLES = {"": "Compression Workbench", "model": "Model", "prune": "Prune"}
LINKS = {"": "Home", "model": "Model", "prune": "Prune"}

# ready: the page's own h1, nothing stale, no Running indicator; on Prune the preview for `amount`
IDLE_JS = """([title, amount]) => {
  const h1 = [...document.querySelectorAll('h1')].map(h => h.innerText.trim());
  if (!h1.includes(title)) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  if (amount === null) return true;
  const h3 = [...document.querySelectorAll('h3')].map(h => h.innerText);
  if (!h3.some(h => h.includes('Preview') && h.includes(amount))) return false;
  return document.querySelectorAll('.js-plotly-plot').length > 0;
}"""


async def wait_idle(page, path: str, amount: str | None = None, timeout_ms: int = 300_000) -> None:
    await asyncio.sleep(0.05)   # let the click's rerun request leave before the first check
    await page.wait_for_function(IDLE_JS, arg=[TITLES[path], amount], timeout=timeout_ms, polling=25)


class BrowserSession:
    """One tab in its own browser context; every action returns the seconds to an idle page."""

    def __init__(self, context, page, url: str):
        self.context, self.page, self.url = context, page, url

    @classmethod
    async def open(cls, browser, url: str) -> BrowserSession:
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(300_000)   # ten tabs and a job on two cores: a click can wait its turn
        return cls(ctx, await ctx.new_page(), url)

    async def load(self, query: str) -> float:
        """The first page load (Home), JavaScript bundle included."""
        t0 = time.perf_counter()
        await self.page.goto(f"{self.url}/?{query}")
        await wait_idle(self.page, "")
        return time.perf_counter() - t0

    async def open_page(self, path: str) -> float:
        link = self.page.locator('[data-testid="stSidebarNav"] a', has_text=LINKS[path]).first
        t0 = time.perf_counter()
        await link.click()
        await wait_idle(self.page, path, "50%" if path == "prune" else None)
        return time.perf_counter() - t0

    async def move_amount(self) -> float:
        """Amount 0.50 -> 0.55 with the keyboard, until the new preview is drawn."""
        thumb = self.page.get_by_test_id("stSlider").filter(has_text="Amount").first.get_by_role("slider")
        await thumb.focus()
        t0 = time.perf_counter()
        await thumb.press("ArrowRight")
        await wait_idle(self.page, "prune", "55%")
        return time.perf_counter() - t0

    async def close(self) -> None:
        await self.context.close()
