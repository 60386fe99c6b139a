// Runs the browser tracker in Node with a minimal page (no browser): prints the events it sends.
// Used by tests/unit/test_tracker_context.py. Arguments: the page URL, then optionally "consent".
const fs = require("fs");
const vm = require("vm");
const path = require("path");

function storage() {
  const data = new Map();
  return {
    getItem: (k) => (data.has(k) ? data.get(k) : null),
    setItem: (k, v) => data.set(k, String(v)),
    removeItem: (k) => data.delete(k),
    key: (i) => Array.from(data.keys())[i] || null,
    get length() {
      return data.size;
    },
  };
}

const sent = [];
const url = new URL(process.argv[2]);
const window = {
  location: { href: url.href, search: url.search, pathname: url.pathname, origin: url.origin, protocol: url.protocol },
  localStorage: storage(),
  sessionStorage: storage(),
  crypto: require("crypto").webcrypto,
  addEventListener: () => {},
  console,
};
const document = { currentScript: null, cookie: "", referrer: "https://search.example/", title: "Shoes", addEventListener: () => {} };
const context = {
  window, document, navigator: {}, URL, URLSearchParams, TextEncoder, setTimeout, clearTimeout, setInterval: () => 0, Promise, JSON, Date, Math,
  fetch: (endpoint, init) => {
    sent.push(...JSON.parse(init.body).events);
    return Promise.resolve({ status: 202, text: () => Promise.resolve('{"accepted":1,"rejected":[]}'), headers: { get: () => null } });
  },
};
window.window = window;
vm.runInNewContext(fs.readFileSync(path.join(__dirname, "../../streaming/api/static/tracker.js"), "utf8"), context);
const pulse = window.pulse;
pulse.init({ writeKey: "w", host: "http://collector.test", flushInterval: 0 });
const mine = { category: "shoes" };
pulse.page(mine);
pulse.track("add_to_cart", { product_id: "p1", utm_source: "explicit" });
if (process.argv[3] === "consent") {
  // Second argument "consent": the visitor withdraws consent to personalization, then clicks.
  pulse.consent({ personalization: false, analytics: true });
  pulse.track("click");
  pulse.consent({ personalization: "no" }); // refused: not recorded, nothing sent
}
pulse.flush().then(() => {
  process.stdout.write(JSON.stringify({ sent, untouched: mine, consent: pulse.consent() }));
});
