"""A real browser for the page tests: Debian's headless chromium, run once per page as a user would open it.

`dom(url)` is the page as the browser built it (after redirects and cookies); `dom(url, screenshot=png)` also
keeps what a person would see. Every host but loopback resolves to nothing, so a page that fetched anything from the
internet (a CDN script, a web font) would show it broken here. A `profile` directory keeps cookies between
runs, as one browser does between visits. EDGE_SDK_SCREENSHOTS=DIR keeps a copy of every screenshot there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

TIMEOUT_S = 120  # a loaded machine starts chromium slowly; a page of ours renders in well under a second


class Browser:
    def __init__(self, binary: str, scratch: Path) -> None:
        self.binary, self.scratch = binary, scratch
        self._runs = 0

    def _run(self, url: str, *flags: str, profile: Path | None = None) -> subprocess.CompletedProcess[str]:
        self._runs += 1
        profile = profile or self.scratch / f"profile-{self._runs}"
        args = [
            self.binary,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # offline: nothing but loopback
            f"--user-data-dir={profile}",
            *flags,
            url,
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S)
        if done.returncode != 0:
            raise AssertionError(f"chromium failed ({done.returncode}) on {url}: {done.stderr[-1500:]}")
        return done

    def dom(
        self,
        url: str,
        *,
        profile: Path | None = None,
        screenshot: Path | None = None,
        size: tuple[int, int] = (1280, 1600),
    ) -> str:
        """The page's DOM; with `screenshot`, also a PNG of the window (`size`) from the same visit."""
        flags = ["--dump-dom"]
        if screenshot is not None:
            screenshot.unlink(missing_ok=True)
            flags += [f"--screenshot={screenshot}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"]
        dom = self._run(url, *flags, profile=profile).stdout
        if screenshot is not None:
            assert screenshot.is_file() and screenshot.stat().st_size > 10_000, f"no screenshot of {url}"
            keep = os.environ.get("EDGE_SDK_SCREENSHOTS")  # a directory that outlives pytest's temporary ones
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                screenshot = Path(shutil.copy(screenshot, Path(keep) / screenshot.name))
            print(f"screenshot of {url}: {screenshot}")  # shown with -s: look at it
        return dom


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def text_of(dom: str) -> str:
    """The page's visible text, whitespace folded (markup and the stylesheet dropped)."""
    import re
    from html import unescape

    body = re.sub(r"(?is)<(style|script|title)\b.*?</\1>", " ", dom)
    return " ".join(unescape(re.sub(r"(?s)<[^>]+>", " ", body)).split())


def section_rows(dom: str, section_id: str) -> list[list[str]]:
    """The text of each body row's cells in the first table of the page's <section id=...>."""
    import re

    found = re.search(rf'(?s)<section id="{re.escape(section_id)}">(.*?)</section>', dom)
    assert found, f"the page has no section {section_id!r}"
    body = re.search(r"(?s)<tbody>(.*?)</tbody>", found.group(1))
    rows = re.findall(r"(?s)<tr[^>]*>(.*?)</tr>", body.group(1) if body else "")
    return [[text_of(cell) for cell in re.findall(r"(?s)<td[^>]*>(.*?)</td>", row)] for row in rows]


def fetches_nothing(dom: str) -> bool:
    """No script, stylesheet, image, frame or font from anywhere: the page is whole as sent."""
    import re

    inline = re.sub(r'<link rel="icon" href="data:,">', "", dom)  # an empty inline icon: no favicon request
    return not re.search(r"(?i)<(script|link|img|iframe|object|embed)\b|@import|url\((?!#)|\bsrc=", inline)
