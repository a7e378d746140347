"""The leaderboard site in a real browser: Debian's headless Chromium, driven over its DevTools pipe (browser.py),
opens the site generated from a store the tests filled through the real runner on real MNIST."""
from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
from browser import Browser, find_chromium
from site_support import expected_board

from otbench.cli import main

pytestmark = pytest.mark.slow  # starts a browser


def _chromium() -> str:
    """Chromium, installed with apt-get when missing (what `make test` does too); skipped only where it can be
    neither found nor installed."""
    path = find_chromium()
    if path is None and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, capture_output=True, timeout=900)
        path = find_chromium()
    if path is None:
        pytest.skip("no chromium on PATH and `apt-get install chromium` did not provide one")
    return path


@pytest.fixture(scope="module")
def site(leaderboard_store, tmp_path_factory):
    from site_support import min_norm_attack

    out = tmp_path_factory.mktemp("site") / "site"
    with min_norm_attack():
        assert main(["report", "--html", str(out), "--results", str(leaderboard_store), "--tables",
                     "otad-table-3", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    b = Browser(_chromium())
    yield b
    b.close()


ROWS = "[...document.querySelectorAll('#{board} tbody tr')].map(r => r.dataset.defense)"


def _names(browser, board: str) -> list[str]:
    labels = browser.evaluate(ROWS.format(board=board))
    return [label.split(" (")[0] for label in labels]


def test_leaderboard_order_values_and_sorting_in_chromium(site, browser, leaderboard_store):
    browser.open((site / "index.html").as_uri())
    assert browser.problems() == []
    board = "mnist-L2-eps2"
    want = expected_board(leaderboard_store, 2.0)
    assert _names(browser, board) == [d for d, *_ in want]
    # a known cell: the best-known robust accuracy of the top row, as the store's rows give it
    shown = browser.evaluate(f"document.querySelector('#{board} tbody tr td.best').textContent")
    assert shown == f"{want[0][1]:.1f}"
    # the eps selector shows one board at a time
    assert browser.evaluate("document.getElementById('mnist-L2-eps1').hidden") is False
    browser.click("button[data-board='mnist-L2-eps2']")
    assert browser.evaluate("document.getElementById('mnist-L2-eps1').hidden") is True
    assert browser.evaluate(f"document.getElementById('{board}').hidden") is False
    # clicking the clean-accuracy header sorts by it, largest first; again, smallest first
    by_clean = sorted(want, key=lambda t: -t[2])
    browser.click(f"#{board} thead th:nth-child(3)")
    clean = browser.evaluate(f"[...document.querySelectorAll('#{board} tbody tr td:nth-child(3)')]"
                             ".map(td => parseFloat(td.dataset.value))")
    assert clean == sorted(clean, reverse=True) and clean == [round(c, 2) for _, _, c, _ in by_clean]
    browser.click(f"#{board} thead th:nth-child(3)")
    clean_up = browser.evaluate(f"[...document.querySelectorAll('#{board} tbody tr td:nth-child(3)')]"
                                ".map(td => parseFloat(td.dataset.value))")
    assert clean_up == sorted(clean) and len(set(clean)) > 1  # the two defenses differ: the order changed
    assert browser.problems() == []


def test_every_defense_page_and_curve_loads(site, browser):
    browser.open((site / "index.html").as_uri())
    links = browser.evaluate("[...new Set([...document.querySelectorAll('table.leaderboard a')].map(a => a.href))]")
    assert len(links) == 2
    for link in links:
        browser.open(link)
        assert browser.problems() == []
        images = browser.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
        assert images and all(done and width > 100 for done, width in images)
        assert browser.evaluate("document.querySelectorAll('#attacks table tbody tr').length") >= 3
    browser.open((site / "tables" / "otad-table-3.html").as_uri())
    assert browser.problems() == []


def test_screenshot_is_not_blank(site, browser):
    import matplotlib.image

    browser.open((site / "index.html").as_uri())
    png = browser.screenshot()
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    dark = (pixels.mean(axis=2) < 0.3).mean()  # text and the header bar
    assert pixels.shape[0] > 500 and len(colours) > 20 and 0.01 < dark < 0.6
