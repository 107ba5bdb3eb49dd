"""The HTML report in a real browser: headless Chromium loads it offline, with no console errors
and no broken images, and takes a screenshot.

Chromium is Debian's package (`apt-get install -y chromium`, which .ci/run does); without it these
tests are skipped with a message saying so. A copy of the report gets a small checking script
(the report itself has none): it records every error event and console.error, and, once the page
has loaded, how many images there are and how many failed to decode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_report import PNGS, report_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="headless Chromium not found at /usr/bin/chromium: install Debian's package with "
           "`apt-get install -y chromium` to run the browser check of the HTML report")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]   # offline: no lookups

PROBE = """<script>
window.addEventListener("error", function (e) {
  var what = e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?"));
  console.log("PREDSIM-ERROR " + String(what).slice(0, 200));
}, true);
console.error = function () {
  console.log("PREDSIM-ERROR console.error: " + Array.prototype.join.call(arguments, " "));
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-broken", broken.length);
  console.log("PREDSIM-IMAGES " + images.length + " " + broken.length);
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    result, out = report_run(tmp_path_factory)
    assert result.returncode == 0, result.stderr
    return out / "report.html"


def test_report_loads_without_console_errors_or_broken_images(report, tmp_path):
    probe = tmp_path / "probe.html"
    page = report.read_text()
    assert "<head>" in page
    probe.write_text(page.replace("<head>", "<head>\n" + PROBE, 1))
    result = chromium("--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                      "--dump-dom", probe.as_uri(), profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body[^>]*>", result.stdout)
    assert body, "Chromium printed no DOM"
    images = re.search(r'data-images="(\d+)"', body.group(0))
    broken = re.search(r'data-broken="(\d+)"', body.group(0))
    assert images and broken, "the page's load event never ran"
    assert int(images.group(1)) == len(PNGS)
    assert int(broken.group(1)) == 0, "broken images in the report"
    console = re.findall(r"CONSOLE[^\]]*\] (.*)", result.stderr)
    problems = [line for line in console if "PREDSIM-IMAGES" not in line]
    assert not problems, f"console messages from the report: {problems}"
    assert any("PREDSIM-IMAGES" in line for line in console), \
        "no console output captured: is --enable-logging working?"


def test_report_screenshot_looks_like_a_page(report, tmp_path_factory):
    shot = tmp_path_factory.mktemp("screenshot") / "report.png"
    result = chromium("--window-size=1280,2000", f"--screenshot={shot}", report.as_uri(),
                      profile=shot.parent / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    # Not a blank page: text, the green recommendation box and the first charts are drawn.
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.01         # dark text and lines
    green = (pixels[..., 1] > pixels[..., 0] + 0.03) & (pixels[..., 1] > pixels[..., 2] + 0.03)
    assert green.mean() > 0.005                                # the recommendation box
    print(f"screenshot of the report: {shot}")
