"""Look at ``tdxcheck report`` in a real browser: screenshots of the first screen, and of each
section, with Graphviz and without it (``PATH`` without ``dot``: the networkx drawings).

    python benchmarks/report_screenshots.py [--config tiny] [-o DIR] [--sections] [--html FILE]

Writes ``DIR/first-screen-dot.png`` and ``DIR/first-screen-networkx.png`` (1280x900, what a
reader sees on opening the page), and with ``--sections`` one tall PNG per section
(``DIR/section-ID-MODE.png``: a copy of the page that shows only that section).  With
``--html FILE`` it photographs that page instead of making one (one mode, ``page``).

Needs headless Chromium from Debian's packages (``apt-get install -y chromium``); the
report itself is made with ``python -m tdxcheck.checker report`` (``--config tiny``: about
a minute, most of it the ablation).  ``tests/test_html_report.py`` has the slow test that
measures the page in the same browser (no sideways scrolling, the verdicts on the first
screen).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH, HEIGHT = 1280, 900
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def chromium_args(exe: str, profile: str, *extra: str) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *extra]


def screenshot(html: Path, png: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
    """One screenshot of ``html`` at ``width`` x ``height`` (a fresh profile each time)."""
    exe = browser()
    if exe is None:
        raise SystemExit("no chromium on the PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run(chromium_args(exe, prof, f"--screenshot={png}",
                                     f"--window-size={width},{height}", html.as_uri()),
                       capture_output=True, timeout=120, check=True)
    if not png.exists():
        raise SystemExit(f"chromium wrote no {png}")


def only_section(text: str, sid: str) -> str:
    """The page with every other section (and the header) hidden."""
    hide = (f"section:not(#{sid}), body > h1, body > p, body > nav "
            "{ display: none !important; }")
    return text.replace("</style>", hide + "</style>", 1)


def make_report(config: str, out: Path, dot: bool) -> Path:
    """``tdxcheck report --config CONFIG`` into ``out``; without ``dot`` on the PATH when
    ``dot`` is False (the report then draws with networkx)."""
    env = dict(os.environ)
    if not dot:
        env["PATH"] = tempfile.mkdtemp(prefix="no-dot-")  # nothing on it, dot included
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "tdxcheck.checker", "report", "--config", config,
                    "-o", str(out), "-q"], env=env, check=True)
    print(f"report ({'dot' if dot else 'networkx'}): {time.monotonic() - t0:.0f}s")
    return out / f"{config}.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("-o", "--output", default="screenshots", metavar="DIR")
    p.add_argument("--sections", action="store_true", help="one PNG per section too")
    p.add_argument("--html", metavar="FILE", help="photograph this page instead")
    a = p.parse_args(argv)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if a.html:
        pages = {"page": Path(a.html).resolve()}
    else:
        pages = {mode: make_report(a.config, out / mode, dot=mode == "dot").resolve()
                 for mode in ("dot", "networkx")}
        if shutil.which("dot") is None:
            print("note: Graphviz's dot is not installed: both pages are drawn by networkx")
    for mode, html in pages.items():
        png = out / f"first-screen-{mode}.png"
        screenshot(html, png)
        print(png)
        if not a.sections:
            continue
        text = html.read_text(encoding="utf-8")
        for sid in re.findall(r'<section id="([^"]+)"', text):
            tmp = out / f".section-{sid}-{mode}.html"
            tmp.write_text(only_section(text, sid), encoding="utf-8")
            png = out / f"section-{sid}-{mode}.png"
            screenshot(tmp, png, WIDTH, 2400)
            tmp.unlink()
            print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
