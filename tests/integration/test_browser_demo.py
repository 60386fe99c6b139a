"""The browser tracker and the demo shop in real headless Chromium, against real `pulse run` processes.

Chromium is Debian's package (scripts/install-browser); without it these tests fail, never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach Google and stalls on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # For every request, beacons sent while a page unloads included (a context's user_agent misses those).
    f"--user-agent={DESKTOP_CHROME}",
]
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
READ = {"X-Pulse-Key": "test-read"}


class _SitePage(BaseHTTPRequestHandler):
    """Serves its server's ``page`` bytes as HTML."""

    def do_GET(self) -> None:  # noqa: N802 - the handler API's name
        page = self.server.page  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def shop_server() -> Iterator[ThreadingHTTPServer]:
    """The other site's server, bound from the start, so its port (its origin) stays its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SitePage)
    server.page = b""  # type: ignore[attr-defined]
    yield server
    server.server_close()


@pytest.fixture
def settings(settings: PulseSettings, shop_server: ThreadingHTTPServer) -> PulseSettings:
    """The shared test settings, with the demo shop on and the other site's origin allowed."""
    origin = f"http://127.0.0.1:{shop_server.server_port}"
    return settings.model_copy(update={"demo_shop": True, "cors_origins": [origin]})


@pytest.fixture
def api(settings: PulseSettings, pulse_apps, redis_client) -> str:
    """Base URL of a real collector/API with a real profile app behind it and the catalog published."""
    publish_reference(redis_client, CATALOG, read_catalog_csv(SAMPLE_CATALOG), "product_id")
    pulse_apps("profile-app")
    pulse_apps("api")
    return f"http://{settings.api_host}:{settings.api_port}"


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
    # A desktop Chrome's user agent: headless Chromium's own ("HeadlessChrome") is a known bot's,
    # and the collector keeps bots out of profiles (docs/events.md).
    context = browser.new_context(viewport={"width": 1200, "height": 900}, user_agent=DESKTOP_CHROME)
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda message: page.console_messages.append((message.type, message.text)))  # type: ignore[attr-defined]
    yield page
    context.close()


def tracker_messages(page: Page, kind: str) -> list[str]:
    return [text for type_, text in page.console_messages if type_ == kind and text.startswith("[pulse]")]  # type: ignore[attr-defined]


def wait_for(check: Callable[[], Any], timeout: float, what: str, page: Page | None = None) -> Any:
    """Poll ``check`` until it returns something truthy, else fail naming ``what``.

    Pass ``page`` when route handlers must run meanwhile: sync Playwright calls them only while
    the test is inside a Playwright call.
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
        doc = profile(api, profile_id)
        last["doc"] = doc
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


def open_shop(page: Page, api: str) -> str:
    """Load the demo shop; return the browser's anonymous id."""
    page.goto(f"{api}/demo")
    page.wait_for_selector("body[data-ready=true]")
    return page.evaluate("pulse.anonymousId()")


def browse_three_products(page: Page, category: str) -> list[str]:
    """From the catalogue, open three products of ``category`` (back to the catalogue in between)."""
    opened = []
    for i in range(3):
        card = page.locator(f"#cat-{category} a.product").nth(i)
        opened.append(card.get_attribute("data-product-id"))
        card.click()
        page.wait_for_selector(f".detail[data-product-id='{opened[-1]}']")
        if i < 2:
            page.click("text=back to the catalogue")
            page.wait_for_selector(f"#cat-{category}")
    return opened


def test_demo_shop_sends_views_clicks_and_cart_into_the_profile(api, page, tmp_path):
    anonymous_id = open_shop(page, api)
    assert UUID4.match(anonymous_id)
    opened = browse_three_products(page, "shoes")
    page.click("#add-to-cart")
    assert page.text_content("#cart") == "Cart: 1"

    # 1 catalogue view + 3 product views + 2 returns to the catalogue; a click per product; 1 add.
    doc = wait_for_profile(api, anonymous_id, lambda d: d["event_count"] >= 10)
    assert doc["event_count"] == 10
    assert doc["counts_by_type"] == {"page_view": 6, "click": 3, "add_to_cart": 1}
    assert doc["category_views"] == {"shoes": 3}
    assert doc["cart"] == {opened[-1]: 1}
    assert doc["user_id"] is None
    assert page.evaluate("pulse.pending()") == 0
    assert tracker_messages(page, "error") == [] and tracker_messages(page, "warning") == []
    screenshot(page, tmp_path, "demo-shop-after-three-shoes")


def test_banner_appears_after_three_views_in_one_category(api, page, tmp_path):
    open_shop(page, api)
    assert page.is_hidden("#banner")
    browse_three_products(page, "books")
    try:
        page.wait_for_selector("#banner:not([hidden])", timeout=20_000)
    finally:
        screenshot(page, tmp_path, "demo-shop-banner")
    assert page.get_attribute("#banner", "data-rule") == "category_affinity"
    assert page.get_attribute("#banner", "data-category") == "books"
    assert page.text_content("#banner-message")
    assert "books" in page.text_content("#banner-category")


def test_events_buffered_through_503s_an_outage_and_a_reload_arrive_exactly_once(api, page, tmp_path):
    """The collector answers 503, then is unreachable (even for beacons) across a reload, then recovers."""
    mode = {"now": "503"}
    failures: Counter[str] = Counter()
    acknowledged: Counter[str] = Counter()

    def collector(route: Route) -> None:
        if mode["now"] == "503":
            failures["503"] += 1
            route.fulfill(
                status=503, json={"detail": "events could not be stored, retry"}, headers={"Retry-After": "1"}
            )
        elif mode["now"] == "down":
            failures["down"] += 1
            route.abort("connectionrefused")
        else:
            response = route.fetch()
            if response.status == 202:
                acknowledged.update(e["event_id"] for e in json.loads(route.request.post_data)["events"])
            route.fulfill(response=response)

    page.route("**/v1/events*", collector)
    # page.route does not see sendBeacon requests; DevTools URL blocking does.
    devtools = page.context.new_cdp_session(page)
    devtools.send("Network.enable")

    anonymous_id = open_shop(page, api)
    card = page.locator("#cat-toys a.product").first
    product_id = card.get_attribute("data-product-id")
    card.click()
    page.click("#add-to-cart")
    wait_for(lambda: failures["503"] >= 2, 20, "two answers 503", page)
    assert page.evaluate("pulse.pending()") == 4  # catalogue view, click, product view, add_to_cart

    mode["now"] = "down"
    devtools.send("Network.setBlockedURLs", {"urls": ["*/v1/events*"]})
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    # The pagehide beacon is dispatched asynchronously; on a busy machine it can leave after the
    # new page is ready. Keep blocking a while so it cannot slip through once unblocked.
    page.wait_for_timeout(3000)
    devtools.send("Network.setBlockedURLs", {"urls": []})  # the route refuses fetches from here on
    assert page.evaluate("pulse.anonymousId()") == anonymous_id
    assert (
        page.evaluate("pulse.pending()") == 5
    )  # the buffer survived the reload, plus the reloaded product view
    wait_for(lambda: failures["down"] >= 2, 20, "two refused connections", page)
    # Only the pagehide beacon can have got through (DevTools blocking does not always catch it
    # in time on a busy machine); it carries the 4 buffered events, which stay buffered for a
    # resend because a beacon gets no answer. The collector's dedupe makes that harmless.
    early = profile(api, anonymous_id)
    assert early is None or early["event_count"] <= 4, early

    mode["now"] = "up"
    wait_for(
        lambda: page.evaluate("pulse.pending()") == 0, 60, "the tracker to drain its buffer by itself", page
    )
    doc = wait_for_profile(api, anonymous_id, lambda d: d["event_count"] >= 5)
    assert doc["event_count"] == 5
    assert doc["counts_by_type"] == {"page_view": 3, "click": 1, "add_to_cart": 1}
    assert doc["cart"] == {product_id: 1}
    assert doc["category_views"] == {"toys": 2}
    assert len(acknowledged) == 5 and set(acknowledged.values()) == {1}, (
        acknowledged
    )  # no acknowledged event resent
    screenshot(page, tmp_path, "demo-shop-after-outage")


@pytest.fixture
def other_site(api: str, shop_server: ThreadingHTTPServer) -> Iterator[str]:
    """Origin of another site (another port, so another origin) whose page embeds the tracker.

    A real local server: Chromium lets only loopback pages load from the loopback API.
    Its init options come from the URL fragment.
    """
    html = f"""<!doctype html><html><head><title>another site</title>
<script src="{api}/v1/tracker.js"></script>
<script>
  var options = JSON.parse(decodeURIComponent(location.hash.slice(1)) || "{{}}");
  options.writeKey = "test-write";
  pulse.init(options);
</script></head><body>a shop on another origin</body></html>""".encode()

    shop_server.page = html  # type: ignore[attr-defined]
    thread = threading.Thread(target=shop_server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{shop_server.server_port}"
    shop_server.shutdown()


def open_other_site(page: Page, origin: str, **options: Any) -> None:
    # Without crypto.randomUUID the tracker builds its UUIDs from crypto.getRandomValues.
    page.add_init_script("delete Crypto.prototype.randomUUID")
    page.goto(f"{origin}/#{quote(json.dumps(options))}")


def test_tracker_on_another_origin_sends_contract_events_through_cors(api, other_site, page):
    sent: list[Any] = []
    page.on("response", lambda response: sent.append(response) if "/v1/events" in response.url else None)
    open_other_site(page, other_site, flushInterval=200, batchSize=10, maxQueue=5)
    user_id = f"u-{uuid.uuid4().hex[:8]}"

    assert page.evaluate("pulse.track('Bad Type', {})") is None
    assert any("must match" in m for m in tracker_messages(page, "error"))
    anonymous_id = page.evaluate("pulse.anonymousId()")
    pending = page.evaluate(
        """async (userId) => {
            pulse.page({category: "books"});
            pulse.identify(userId, {plan: "pro"});
            pulse.track("newsletter_signup", {source: "footer"});
            pulse.track("purchase", {});  // no order_id: the collector rejects it, the tracker drops it
            await pulse.flush();
            return pulse.pending();
        }""",
        user_id,
    )
    assert pending == 0
    assert len(sent) == 1 and sent[0].status == 202
    assert sent[0].headers["access-control-allow-origin"] == other_site
    events = json.loads(sent[0].request.post_data)["events"]
    assert sent[0].request.url.endswith("/v1/events?key=test-write")
    assert [e["event_type"] for e in events] == ["page_view", "identify", "newsletter_signup", "purchase"]
    for event in events:
        assert UUID4.match(event["event_id"])
        assert (
            event["timestamp"].endswith("Z") and datetime.fromisoformat(event["timestamp"]).tzinfo is not None
        )
        assert event["anonymous_id"] == anonymous_id
    page_view, identify, signup, purchase = events
    assert "user_id" not in page_view
    assert page_view["metadata"] == {
        "url": page.url,
        "category": "books",
        "path": "/",
        "title": "another site",
    }
    assert identify["user_id"] == user_id and identify["metadata"] == {"traits": {"plan": "pro"}}
    assert signup["user_id"] == user_id  # after identify, both ids
    assert sent[0].json()["rejected"][0]["event_id"] == purchase["event_id"]
    assert any("rejected by the collector" in m for m in tracker_messages(page, "warning"))

    doc = wait_for_profile(api, user_id, lambda d: d["event_count"] >= 3)
    assert doc["counts_by_type"] == {"page_view": 1, "identify": 1, "newsletter_signup": 1}
    assert anonymous_id in doc["anonymous_ids"]

    # Offline: the bounded buffer (maxQueue 5) keeps the newest events and says it dropped some.
    page.route(f"{api}/v1/events*", lambda route: route.abort("internetdisconnected"))
    assert page.evaluate("for (let n = 0; n < 8; n++) pulse.track('tick', {n}); pulse.pending()") == 5
    assert any("dropping the 1 oldest" in m for m in tracker_messages(page, "warning"))
    page.unroute(f"{api}/v1/events*")
    wait_for(
        lambda: page.evaluate("pulse.flush().then(() => pulse.pending())") == 0, 30, "the buffer to drain"
    )
    ticks = [
        e["metadata"]["n"]
        for r in sent
        if r.status == 202
        for e in json.loads(r.request.post_data)["events"]
        if e["event_type"] == "tick"
    ]
    assert sorted(ticks) == [3, 4, 5, 6, 7]
    wait_for_profile(api, user_id, lambda d: d["counts_by_type"].get("tick") == 5)

    # A second tab keeps both ids; an event still buffered when the page goes away leaves by sendBeacon.
    other = page.context.new_page()
    open_other_site(other, other_site, flushInterval=600_000)
    assert other.evaluate("[pulse.anonymousId(), pulse.userId()]") == [anonymous_id, user_id]
    other.evaluate("pulse.track('beacon_probe', {})")
    other.goto("about:blank")
    doc = wait_for_profile(api, user_id, lambda d: "beacon_probe" in d["counts_by_type"])
    assert doc["event_count"] == 3 + 5 + 1
