"""The corpus card in a real browser: headless Chromium loads index.html, every thumbnail decodes, every chart draws.

The card's inline script records on <body> how many <img> have naturalWidth > 0
and how many SVG charts have a drawn bar; Chromium's ``--dump-dom`` prints the DOM
after the load event. A screenshot shows the bars in their colours. Chromium is
Debian's package, which `make test` installs through `make browser`; without it
(no root, no sudo, no apt) this test skips and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import run
from PIL import Image

from curator.audit.charts import COLOURS

CHROMIUM = os.environ.get("CURATOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# no network beyond the file: URL (the machine's network is closed; Chromium's background services would try)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium package (needs root or sudo)",
    ),
]


def chromium(args: list[str], profile: Path, timeout: float = 120) -> str:
    """Run headless Chromium once in its own process group; stop the group if it overruns."""
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return out


@pytest.fixture(scope="module")
def card(demo_build, tmp_path_factory) -> Path:
    out, _ = demo_build
    dest = tmp_path_factory.mktemp("card")
    assert run("report", "--out", out, "--to", dest).exit_code == 0
    return dest / "index.html"


def test_every_thumbnail_and_chart_loads_in_chromium(card, tmp_path):
    page = card.read_text(encoding="utf-8")
    n_thumbs = page.count('<img class="thumb"')
    n_charts = page.count('<svg class="chart"')
    assert n_thumbs and n_charts
    dom = chromium(["--virtual-time-budget=10000", "--dump-dom", card.as_uri()], tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("rendered") == "yes", attrs
    assert int(attrs["images"]) == n_thumbs and int(attrs["images-loaded"]) == n_thumbs
    assert int(attrs["charts"]) == n_charts and int(attrs["charts-drawn"]) == n_charts
    assert "demo_chexpert" in dom and "Source x split" in dom


def test_a_screenshot_shows_the_charts(card, tmp_path):
    png = tmp_path / "card.png"
    chromium(["--window-size=1280,2400", f"--screenshot={png}", card.as_uri()], tmp_path / "profile")
    with Image.open(png) as im:
        assert im.size == (1280, 2400)
        rgb = im.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 20)
    counts = {c: n for n, c in colours}
    first = tuple(int(COLOURS[0][i : i + 2], 16) for i in (1, 3, 5))
    assert counts.get(first, 0) > 2000  # the first series' bars, drawn in the top of the card
    assert len(colours) > 1000  # thumbnails: greyscale and colour photographs, not flat fills
