"""Segment's browser library, the real ``@segment/analytics-next`` from npm, sending to Pulse.

A page on another origin loads the library's browser bundle (tests/node/node_modules, installed
by scripts/install-node-deps) and configures it with nothing but ``cdnURL`` pointing at Pulse;
the settings Pulse serves send every call to Pulse's compact routes. Real headless Chromium
(Debian's package), real `pulse run` processes; without Chromium or the npm package these tests
fail, never skip.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Response, sync_playwright

from core.settings import PulseSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
ANALYTICS_NEXT = ROOT / "tests" / "node" / "node_modules" / "@segment" / "analytics-next"
BUNDLE_DIR = ANALYTICS_NEXT / "dist" / "umd"  # index.js exposes window.AnalyticsNext
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CHROMIUM = Path("/usr/bin/chromium")
# As tests/integration/test_browser_demo.py: without the background-networking flags Chromium
# tries to reach Google and stalls on a closed network; the desktop user agent keeps the
# events from being tagged as a headless browser's (a bot's).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--user-agent={DESKTOP_CHROME}",
]
WRITE_KEY = "test-write"
READ = {"X-Pulse-Key": "test-read"}
COMPACT_ROUTES = {"/v1/t", "/v1/p", "/v1/i", "/v1/a", "/v1/g", "/v1/s"}


class _Site(BaseHTTPRequestHandler):
    """The other site: its page at ``/``, analytics-next's browser bundle under ``/analytics-next/``."""

    def do_GET(self) -> None:  # noqa: N802 - the handler API's name
        path = urlsplit(self.path).path
        if path == "/":
            body, kind = self.server.page, "text/html; charset=utf-8"  # type: ignore[attr-defined]
        elif path.startswith("/analytics-next/") and "/" not in path.removeprefix("/analytics-next/"):
            file = BUNDLE_DIR / path.removeprefix("/analytics-next/")
            if not file.is_file():
                self.send_error(404)
                return
            body, kind = file.read_bytes(), "text/javascript; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site_server() -> Iterator[ThreadingHTTPServer]:
    """The site's server, bound from the start so its port (its origin) is known to the settings."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.page = b""  # type: ignore[attr-defined]
    yield server
    server.server_close()


@pytest.fixture
def settings(settings: PulseSettings, site_server: ThreadingHTTPServer) -> PulseSettings:
    """The shared test settings with the site's origin allowed (CORS)."""
    return settings.model_copy(update={"cors_origins": [f"http://127.0.0.1:{site_server.server_port}"]})


@pytest.fixture
def api(settings: PulseSettings, pulse_apps) -> str:
    """Base URL of a real collector/API with a real profile app behind it."""
    pulse_apps("profile-app")
    pulse_apps("api")
    return f"http://{settings.api_host}:{settings.api_port}"


@pytest.fixture
def site(api: str, site_server: ThreadingHTTPServer) -> Iterator[str]:
    """Origin of a site that loads analytics-next with only ``cdnURL`` changed to Pulse."""
    if not (BUNDLE_DIR / "index.js").is_file():
        pytest.fail(f"{BUNDLE_DIR}/index.js is missing: run scripts/install-node-deps (npm ci in tests/node)")
    site_server.page = f"""<!doctype html><html><head><title>a site with Segment</title>
<link rel="icon" href="data:,">
<script src="/analytics-next/index.js"></script>
<script>
  window.analytics = AnalyticsNext.AnalyticsBrowser.load({{ writeKey: "{WRITE_KEY}", cdnURL: "{api}" }})
</script></head>
<body><h1>A site that sends its analytics-next calls to Pulse</h1><pre id="log"></pre></body></html>
""".encode()  # type: ignore[attr-defined]
    thread = threading.Thread(target=site_server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site_server.server_port}"
    site_server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-browser (apt-get install chromium) and rerun"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 700}, user_agent=DESKTOP_CHROME)
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda message: page.console_messages.append((message.type, message.text)))  # type: ignore[attr-defined]
    yield page
    context.close()


def wait_for(check: Callable[[], Any], timeout: float, what: str, page: Page | None = None) -> Any:
    """Poll ``check`` until it returns something truthy, else fail naming ``what``.

    Pass ``page`` when Playwright's event handlers must run meanwhile: sync Playwright calls them
    only while the test is inside a Playwright call.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        if page is not None:
            page.wait_for_timeout(250)
        else:
            time.sleep(0.25)


def profile(api: str, profile_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{api}/v1/profiles/{profile_id}", headers=READ, timeout=10)
    return response.json() if response.status_code == 200 else None


def wait_for_profile(
    api: str, profile_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        doc = last["doc"] = profile(api, profile_id)
        return doc if doc is not None and condition(doc) else None

    try:
        return wait_for(check, timeout, f"the profile of {profile_id}")
    except pytest.fail.Exception:
        pytest.fail(
            f"profile of {profile_id} never matched; last seen: {json.dumps(last.get('doc'), indent=1)}"
        )


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """Screenshot into the test's tmp dir, copied to test-artifacts/ (gitignored) for people to look at."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def test_analytics_next_with_only_cdn_url_changed_sends_exact_profiles_to_pulse(api, site, page, tmp_path):
    requests: list[Request] = []
    responses: list[Response] = []
    page.on("request", lambda request: requests.append(request))
    page.on("response", lambda response: responses.append(response))
    user_id = f"u-{uuid.uuid4().hex[:8]}"

    page.goto(f"{site}/")
    anonymous_id = page.evaluate(
        """async ({userId}) => {
            const [analytics] = await window.analytics;  // settings loaded, Segment.io plugin ready
            const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
            await analytics.page({category: "shoes"});
            await analytics.track("Product Clicked", {product_id: "p00001"});
            const anonymousId = analytics.user().anonymousId();
            await analytics.alias(userId);  // previousId: the anonymous id
            await analytics.identify(userId, {plan: "pro", name: "Ada", email: "ada@example.com"});
            await analytics.group("acme", {name: "Acme", employees: 12});
            await analytics.track("Order Completed", {order_id: "o-1", revenue: 42.5});
            await analytics.screen("Home");
            log("anonymous id " + anonymousId + ", user " + analytics.user().id());
            return anonymousId;
        }""",
        {"userId": user_id},
    )
    assert anonymous_id

    def calls() -> list[Response]:
        return [r for r in responses if urlsplit(r.url).path in COMPACT_ROUTES]

    wait_for(lambda: len(calls()) >= 7, 30, "the seven calls to reach Pulse", page)
    sent = calls()
    # Every call went to Pulse's compact route for its type, answered 200 with the event accepted.
    assert sorted(urlsplit(r.url).path for r in sent) == sorted(
        ["/v1/p", "/v1/t", "/v1/a", "/v1/i", "/v1/g", "/v1/t", "/v1/s"]
    )
    for response in sent:
        assert response.url.startswith(f"{api}/v1/"), response.url
        assert response.status == 200, (response.url, response.text())
        assert response.json()["accepted"] == 1 and response.json()["rejected"] == [], response.text()
        assert response.headers["access-control-allow-origin"] == site
        body = json.loads(response.request.post_data)
        assert body["writeKey"] == WRITE_KEY
        assert response.request.headers["content-type"].startswith("text/plain")
    alias = next(json.loads(r.request.post_data) for r in sent if urlsplit(r.url).path == "/v1/a")
    assert (alias["previousId"], alias["userId"]) == (anonymous_id, user_id)
    settings_response = next(r for r in responses if r.url == f"{api}/v1/projects/{WRITE_KEY}/settings")
    assert (
        settings_response.status == 200 and settings_response.headers["access-control-allow-origin"] == site
    )
    assert settings_response.json()["integrations"]["Segment.io"]["apiHost"] == f"{urlsplit(api).netloc}/v1"
    # Pulse is the only destination: nothing went anywhere but the site and Pulse (no Segment CDN).
    assert {f"{urlsplit(r.url).scheme}://{urlsplit(r.url).netloc}" for r in requests} == {site, api}

    doc = wait_for_profile(api, user_id, lambda d: d["event_count"] >= 7)
    assert doc["user_id"] == user_id
    assert doc["anonymous_ids"] == [anonymous_id]  # the anonymous page and click stitched in by alias
    assert doc["event_count"] == 7
    assert doc["counts_by_type"] == {"page_view": 2, "click": 1, "identify": 2, "group": 1, "purchase": 1}
    assert doc["category_views"] == {"shoes": 1}
    assert doc["traits"] == {"plan": "pro", "name": "Ada"}  # email is not kept
    assert doc["purchase_total"] == 42.5
    assert doc["last_device"]["browser"] == "Chrome"  # context.userAgent, enriched by the collector
    merged = profile(api, anonymous_id)  # the anonymous id reads the merged profile
    assert merged is not None and (merged["user_id"], merged["event_count"]) == (user_id, 7)

    errors = [text for kind, text in page.console_messages if kind == "error"]  # type: ignore[attr-defined]
    assert errors == [], [(r.url, r.status) for r in responses if r.status >= 400]
    page.evaluate(
        "doc => { document.getElementById('log').textContent += 'profile: ' + JSON.stringify(doc, null, 1) }",
        doc,
    )
    screenshot(page, tmp_path, "segment-analytics-next")


def test_browser_library_routes_check_the_write_key_in_the_body_and_answer_cors(api, site):
    # Sent as the page's browser would: with an Origin (and a browser's user agent, else the
    # collector tags the events as a bot's and keeps them out of profiles).
    origin = {"Origin": site, "User-Agent": DESKTOP_CHROME}
    anonymous_id = f"a-{uuid.uuid4().hex[:8]}"

    def track(n: int, **extra: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Signed Up",
            "messageId": f"ajs-next-{anonymous_id}-{n}",
            "anonymousId": anonymous_id,
            "timestamp": "2024-04-25T11:00:00.000Z",
            "sentAt": "2024-04-25T11:00:00.100Z",
            **extra,
        }

    text_plain = {**origin, "Content-Type": "text/plain"}
    wrong = httpx.post(f"{api}/v1/t", content=json.dumps(track(1, writeKey="wrong")), headers=text_plain)
    missing = httpx.post(f"{api}/v1/t", content=json.dumps(track(2)), headers=text_plain)
    read_key = httpx.post(
        f"{api}/v1/t", content=json.dumps(track(3, writeKey="test-read")), headers=text_plain
    )
    assert (wrong.status_code, missing.status_code, read_key.status_code) == (401, 401, 401)
    assert wrong.json()["detail"] and wrong.headers["access-control-allow-origin"] == site

    # Preflights: the text/plain POST with analytics-next's headers, and the settings GET.
    preflight = httpx.options(
        f"{api}/v1/t",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == site
    assert "x-retry-count" in preflight.headers["access-control-allow-headers"].lower()
    settings_preflight = httpx.options(
        f"{api}/v1/projects/{WRITE_KEY}/settings",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert settings_preflight.status_code == 200
    assert settings_preflight.headers["access-control-allow-origin"] == site
    stranger = httpx.options(
        f"{api}/v1/t",
        headers={**origin, "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers
    # Reads never get CORS headers.
    read = httpx.get(f"{api}/v1/profiles/{anonymous_id}", headers={**origin, **READ})
    assert "access-control-allow-origin" not in read.headers

    for key in ("wrong", "test-read"):
        unknown = httpx.get(f"{api}/v1/projects/{key}/settings", headers=origin)
        assert unknown.status_code == 404 and unknown.json()["detail"]

    # A batch (/v1/b, JSON this time): the valid message goes through, the bad one is rejected alone.
    batch = {
        "writeKey": WRITE_KEY,
        "sentAt": "2024-04-25T11:00:00.100Z",
        "batch": [track(4), {**track(5), "type": "group"}],  # a group without groupId
    }
    answer = httpx.post(f"{api}/v1/b", json=batch, headers=origin)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert [r["index"] for r in answer.json()["rejected"]] == [1]
    assert "groupId" in answer.json()["rejected"][0]["error"]

    # Same key, same partition, in order: the refused calls would have been counted before this one.
    doc = wait_for_profile(api, anonymous_id, lambda d: d["event_count"] >= 1)
    assert doc["event_count"] == 1 and doc["counts_by_type"] == {"signed_up": 1}
