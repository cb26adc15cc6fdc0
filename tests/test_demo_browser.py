"""The demo page as a browser lays it out: Debian's chromium, headless, 1280 px wide, reading
the page from ``stogie`` (``scripts/test`` installs chromium)."""

import html
import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from test_cli import stogie_process

from conftest import connect_tcp, free_port, wait_until_serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Debian's chromium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# The demo with a script at the end of its page, which writes into the page what the browser
# measured: the page's own width and the cells whose content runs past them.
MEASURED_DEMO = '''
from stogie import demo

PROBE = b"""<script>
const root = document.documentElement;
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({
  scrollWidth: root.scrollWidth,
  clientWidth: root.clientWidth,
  overflowing: [...document.querySelectorAll("th, td")]
    .filter((cell) => cell.scrollWidth > cell.clientWidth)
    .map((cell) => cell.textContent.slice(0, 60)),
});
document.body.append(out);
</script>"""


def app(environ, start_response):
    def start(status, headers, exc_info=None):
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return start_response(status, headers, exc_info)

    page = b"".join(demo.app(environ, start))
    return [page.replace(b"</body>", PROBE + b"</body>")]
'''


def chromium_dom(url, tmp_path):
    """The page's DOM once chromium (1280 px wide) ran its scripts."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,900",
        "--dump-dom",
        url,
    ]
    dom = ""
    for _ in range(2):  # a first start in a fresh profile can fail on a loaded machine
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        dom = result.stdout
        if 'id="measured"' in dom:
            break
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian package chromium)")
def test_demo_page_fits_a_1280_pixel_browser_window(tmp_path):
    # Chrome's own Accept header (over 130 characters, no spaces) ran off the page, and
    # the table scrolled sideways.
    (tmp_path / "measured_demo.py").write_text(textwrap.dedent(MEASURED_DEMO))
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "measured_demo:app"]
    with stogie_process(args, tmp_path, cwd=tmp_path) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        dom = chromium_dom(f"http://127.0.0.1:{port}/a/path?q=question", tmp_path)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:] or "chromium printed nothing"
    measured = json.loads(html.unescape(found.group(1)))
    accept = re.search(r"<th>Accept</th><td>(.*?)</td>", dom).group(1)
    assert len(accept) > 100 and " " not in accept, accept  # the long value is there
    assert measured["overflowing"] == [], measured
    assert measured["scrollWidth"] <= measured["clientWidth"], measured
