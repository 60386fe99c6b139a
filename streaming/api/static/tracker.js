/*! Pulse browser tracker. No dependencies, no build step. Docs: docs/tracker.md */
(function (window, document) {
  "use strict";
  if (window.pulse && window.pulse.version) return; // loaded twice: keep the first

  var VERSION = "1";
  var EVENT_TYPE = /^[a-z][a-z0-9_]{0,63}$/;
  var MAX_BATCH_EVENTS = 500; // collector limit per request
  var MAX_REQUEST_BYTES = 60000; // under the 64 KB that sendBeacon/keepalive may have in flight
  var MAX_EVENT_BYTES = 32000; // contract: 32 KB per event; a margin, as JSON encoders differ slightly
  var MAX_ID_LENGTH = 256;
  var PREFIX = "pulse:";
  var QUEUE_PREFIX = PREFIX + "q:";
  var TOUCH_MS = 15000; // a live tab re-saves its queue this often...
  var ORPHAN_MS = 120000; // ...so a queue untouched this long belongs to a closed tab: adopt it
  var BEACON_RETRY_MS = 5000; // a beaconed event is resent (unacknowledged) after this long

  var config = {
    host: "",
    writeKey: "",
    flushInterval: 1000,
    batchSize: 20,
    maxQueue: 1000,
    maxBackoff: 60000,
    debug: false,
  };
  var state = {
    ready: false,
    inFlight: {}, // event_id -> true while a fetch carries it
    sending: false,
    attempt: 0, // consecutive failed requests; 0 = healthy
    retryAt: 0,
    batchCap: MAX_BATCH_EVENTS,
    timer: null,
    timerAt: 0,
    keyWarned: false,
    released: false, // after pagehide: this page no longer holds its queue (a reload takes it over)
    memory: {}, // storage when localStorage is unusable (private mode, quota)
    waiters: [],
  };

  var scriptOrigin = (function () {
    try {
      return new URL(document.currentScript.src).origin;
    } catch (e) {
      return window.location.origin;
    }
  })();

  // ---- storage: localStorage, else memory (cookies only for the anonymous id) ----

  var local = probe("localStorage");
  var session = probe("sessionStorage");

  function probe(name) {
    try {
      var s = window[name];
      s.setItem(PREFIX + "probe", "1");
      s.removeItem(PREFIX + "probe");
      return s;
    } catch (e) {
      return null;
    }
  }

  function getItem(key) {
    if (local) {
      try {
        return local.getItem(key);
      } catch (e) {}
    }
    return Object.prototype.hasOwnProperty.call(state.memory, key) ? state.memory[key] : null;
  }

  function setItem(key, value) {
    if (local) {
      try {
        local.setItem(key, value);
        return;
      } catch (e) {
        warn("localStorage is full or blocked: buffering events in memory only (a reload loses them)");
        local = null;
      }
    }
    state.memory[key] = value;
  }

  function removeItem(key) {
    if (local) {
      try {
        local.removeItem(key);
      } catch (e) {}
    }
    delete state.memory[key];
  }

  function getCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function setCookie(name, value) {
    var secure = window.location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=31536000; Path=/; SameSite=Lax" + secure;
  }

  // ---- ids ----

  function uuid() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      try {
        return c.randomUUID(); // only in secure contexts
      } catch (e) {}
    }
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    var h = "";
    for (var j = 0; j < 16; j++) h += (b[j] + 0x100).toString(16).slice(1);
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function anonymousId() {
    var id = getItem(PREFIX + "anonymous_id") || getCookie("pulse_aid");
    if (!id) id = uuid();
    if (local) setItem(PREFIX + "anonymous_id", id);
    else setCookie("pulse_aid", id);
    return id;
  }

  function userId() {
    return getItem(PREFIX + "user_id");
  }

  // One queue per tab, so two tabs never overwrite each other's buffer. sessionStorage keeps
  // the tab id across reloads; a duplicated tab (same sessionStorage) notices the queue is held.
  var instance = uuid();
  var tabId = (function () {
    var id = session && session.getItem(PREFIX + "tab");
    var held = id && readQueue(QUEUE_PREFIX + id);
    if (!id || (held && held.o && held.o !== instance && Date.now() - held.t < ORPHAN_MS)) {
      id = uuid();
      if (session) session.setItem(PREFIX + "tab", id);
    }
    return id;
  })();
  var queueKey = QUEUE_PREFIX + tabId;

  // ---- the buffer: [{e: event, b: time it was beaconed or 0}], oldest first ----

  function readQueue(key) {
    try {
      var doc = JSON.parse(getItem(key) || "null");
      if (doc && Array.isArray(doc.items)) return doc;
    } catch (e) {}
    return null;
  }

  function load() {
    var doc = readQueue(queueKey);
    return doc ? doc.items : [];
  }

  function save(items) {
    if (!items.length && state.released) {
      removeItem(queueKey);
      return;
    }
    setItem(queueKey, JSON.stringify({ t: Date.now(), o: state.released ? "" : instance, items: items }));
  }

  function bound(items) {
    var extra = items.length - config.maxQueue;
    if (extra > 0) {
      warn("buffer full (" + config.maxQueue + " events): dropping the " + extra + " oldest");
      items.splice(0, extra);
    }
    return items;
  }

  function adoptOrphans() {
    if (!local) return;
    var now = Date.now();
    var keys = [];
    for (var i = 0; i < local.length; i++) {
      var key = local.key(i);
      if (key && key.indexOf(QUEUE_PREFIX) === 0 && key !== queueKey) keys.push(key);
    }
    var items = null;
    keys.forEach(function (key) {
      var doc = readQueue(key);
      if (doc && now - doc.t < ORPHAN_MS) return; // its tab is alive (or reloading)
      removeItem(key);
      if (!doc || !doc.items.length) return;
      items = items || load();
      var known = {};
      items.forEach(function (it) {
        known[it.e.event_id] = true;
      });
      doc.items.forEach(function (it) {
        if (!known[it.e.event_id]) items.push(it);
      });
      log("adopted " + doc.items.length + " events of a closed tab");
    });
    if (items) {
      items.sort(function (a, b) {
        return a.e.timestamp < b.e.timestamp ? -1 : a.e.timestamp > b.e.timestamp ? 1 : 0;
      });
      save(bound(items));
      schedule(0);
    }
  }

  // ---- building events ----

  function byteLength(text) {
    if (window.TextEncoder) return new TextEncoder().encode(text).length;
    return unescape(encodeURIComponent(text)).length;
  }

  // ---- campaign: the UTM parameters of the URL, kept for the rest of the tab's visit ----

  var UTM_FIELDS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];

  function campaign() {
    var found = {};
    var any = false;
    try {
      var params = new URLSearchParams(window.location.search);
      UTM_FIELDS.forEach(function (name) {
        var value = params.get(name);
        if (value) {
          found[name] = value.slice(0, MAX_ID_LENGTH);
          any = true;
        }
      });
    } catch (e) {}
    var key = PREFIX + "utm";
    if (any) {
      if (session) session.setItem(key, JSON.stringify(found));
      return found;
    }
    try {
      return (session && JSON.parse(session.getItem(key) || "null")) || {};
    } catch (e) {
      return {};
    }
  }

  function enqueue(type, metadata, extra) {
    if (!state.ready) {
      error("call pulse.init({writeKey: ...}) before sending events");
      return null;
    }

    var event = {
      event_id: uuid(),
      event_type: type,
      anonymous_id: anonymousId(),
      timestamp: new Date().toISOString(),
    };
    var user = (extra && extra.user_id) || userId();
    if (user) event.user_id = user;
    var granted = consent();
    if (granted) event.consent = granted;
    var clean = {};
    if (metadata && typeof metadata === "object") {
      for (var k in metadata) {
        if (Object.prototype.hasOwnProperty.call(metadata, k) && metadata[k] !== undefined) clean[k] = metadata[k];
      }
    }
    var utm = campaign(); // what the caller passed wins
    for (var u in utm) if (clean[u] === undefined) clean[u] = utm[u];
    if (Object.keys(clean).length) event.metadata = clean;
    var size = byteLength(JSON.stringify(event));
    if (size > MAX_EVENT_BYTES) {
      error("event " + type + " is " + size + " bytes; the limit is " + MAX_EVENT_BYTES + ": not sent");
      return null;
    }
    var items = load();
    items.push({ e: event, b: 0 });
    save(bound(items));
    log("queued " + type, event);
    schedule(items.length >= config.batchSize ? 0 : config.flushInterval);
    return event.event_id;
  }

  // ---- sending ----

  function endpoint() {
    // The key rides in the URL because sendBeacon cannot set headers; with a text/plain body
    // the request is also CORS-"simple", so cross-origin sends need no preflight.
    return config.host.replace(/\/+$/, "") + "/v1/events?key=" + encodeURIComponent(config.writeKey);
  }

  function takeBatch(items, now, includeInFlight) {
    var events = [];
    var bytes = 12; // {"events":[]}
    var cap = Math.min(state.batchCap, config.batchSize);
    for (var i = 0; i < items.length && events.length < cap; i++) {
      var it = items[i];
      if (!includeInFlight && state.inFlight[it.e.event_id]) continue;
      if (it.b && now - it.b < BEACON_RETRY_MS) continue;
      var size = byteLength(JSON.stringify(it.e)) + 1;
      if (bytes + size > MAX_REQUEST_BYTES && events.length) break;
      events.push(it.e);
      bytes += size;
    }
    return events;
  }

  function schedule(delay) {
    if (!state.ready) return;
    var at = Math.max(Date.now() + delay, state.retryAt);
    if (state.timer && state.timerAt <= at) return;
    clearTimeout(state.timer);
    state.timerAt = at;
    state.timer = setTimeout(function () {
      state.timer = null;
      flush();
    }, at - Date.now());
  }

  function flush() {
    if (!state.ready || state.sending) return;
    var now = Date.now();
    if (now < state.retryAt) return schedule(0);
    var items = load();
    var events = takeBatch(items, now, false);
    if (!events.length) {
      if (items.length) schedule(BEACON_RETRY_MS); // only beaconed events, not yet due for a resend
      return settle();
    }
    state.sending = true;
    events.forEach(function (e) {
      state.inFlight[e.event_id] = true;
    });
    fetch(endpoint(), {
      method: "POST",
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body: JSON.stringify({ events: events }),
      credentials: "omit",
    })
      .then(
        function (response) {
          return response.text().then(function (text) {
            return [response.status, text, response.headers.get("Retry-After")];
          });
        },
        function (err) {
          return [0, String(err), null];
        }
      )
      .then(
        function (outcome) {
          handle(events, outcome[0], outcome[1], outcome[2]);
        },
        function (err) {
          handle(events, 0, String(err), null);
        }
      );
  }

  function handle(events, status, text, retryAfter) {
    state.sending = false;
    events.forEach(function (e) {
      delete state.inFlight[e.event_id];
    });
    if (status >= 200 && status < 300) {
      var body = {};
      try {
        body = JSON.parse(text) || {};
      } catch (e) {}
      (body.rejected || []).forEach(function (r) {
        warn("event " + r.event_id + " rejected by the collector (not retried): " + r.error);
      });
      acknowledge(events);
      state.attempt = 0;
      state.retryAt = 0;
      log("sent " + events.length + " events");
      return schedule(0);
    }
    if (status === 413 && events.length > 1) {
      state.batchCap = Math.max(1, Math.floor(events.length / 2));
      return schedule(0);
    }
    if (status === 400 || status === 413) {
      error("collector refused a batch (" + status + "), dropping " + events.length + " events: " + text);
      acknowledge(events);
      return schedule(0);
    }
    // Network error, 5xx, 429, 408, or a key problem the site owner may fix: keep and retry.
    if ((status === 401 || status === 403) && !state.keyWarned) {
      state.keyWarned = true;
      error("collector refused the write key (" + status + "); events are kept and retried: " + text);
    }
    state.attempt += 1;
    var delay = Math.min(config.maxBackoff, 1000 * Math.pow(2, state.attempt - 1));
    delay = delay / 2 + (Math.random() * delay) / 2;
    var hinted = parseFloat(retryAfter);
    if (hinted > 0) delay = Math.max(delay, Math.min(hinted * 1000, config.maxBackoff));
    state.retryAt = Date.now() + delay;
    log("send failed (" + (status || text) + "); retry " + state.attempt + " in " + Math.round(delay) + " ms");
    schedule(0);
    settle();
  }

  function acknowledge(events) {
    var done = {};
    events.forEach(function (e) {
      done[e.event_id] = true;
    });
    save(
      load().filter(function (it) {
        return !done[it.e.event_id];
      })
    );
  }

  function settle() {
    var waiters = state.waiters;
    state.waiters = [];
    waiters.forEach(function (resolve) {
      resolve();
    });
  }

  // The page may be going away: hand what is buffered to sendBeacon. The events stay in the
  // buffer, marked, and are resent later unless acknowledged: a beacon is never answered.
  function beacon() {
    if (!state.ready) return;
    var items = load();
    var now = Date.now();
    var pending = items.filter(function (it) {
      return !it.b;
    });
    while (pending.length && navigator.sendBeacon) {
      var events = takeBatch(pending, now, true);
      if (!events.length) break;
      var ok = false;
      try {
        ok = navigator.sendBeacon(endpoint(), JSON.stringify({ events: events }));
      } catch (e) {}
      if (!ok) break; // over the browser's in-flight budget: the rest waits for the next page
      var sent = {};
      events.forEach(function (e) {
        sent[e.event_id] = true;
      });
      items.forEach(function (it) {
        if (sent[it.e.event_id]) it.b = now;
      });
      pending = pending.filter(function (it) {
        return !sent[it.e.event_id];
      });
      log("beaconed " + events.length + " events");
    }
    save(items);
  }

  // ---- public API ----

  function init(options) {
    options = options || {};
    for (var k in config) if (options[k] !== undefined) config[k] = options[k];
    if (!config.host) config.host = scriptOrigin;
    config.batchSize = Math.max(1, Math.min(MAX_BATCH_EVENTS, Number(config.batchSize) || 20));
    config.flushInterval = Math.max(0, Number(config.flushInterval) || 0);
    config.maxQueue = Math.max(1, Number(config.maxQueue) || 1000);
    if (!config.writeKey) {
      error("pulse.init needs a writeKey");
      return;
    }
    if (state.ready) return;
    state.ready = true;
    window.addEventListener("pagehide", function () {
      state.released = true; // before visibilitychange, which follows pagehide on unload
      beacon();
    });
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      state.released = false; // back from the bfcache: hold the queue again
      save(load());
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") beacon();
    });
    window.addEventListener("online", function () {
      state.retryAt = 0;
      schedule(0);
    });
    setInterval(function () {
      save(load()); // touch: tells other tabs this queue is alive
      adoptOrphans();
    }, TOUCH_MS);
    save(load());
    adoptOrphans();
    schedule(0); // events left by an earlier page
  }

  function page(metadata) {
    var meta = { url: window.location.href, path: window.location.pathname };
    if (document.referrer) meta.referrer = document.referrer;
    if (document.title) meta.title = document.title.slice(0, MAX_ID_LENGTH);
    for (var k in metadata || {}) meta[k] = metadata[k];
    return enqueue("page_view", meta);
  }

  function track(type, metadata) {
    if (typeof type !== "string" || !EVENT_TYPE.test(type)) {
      error("event type " + JSON.stringify(type) + " must match " + EVENT_TYPE + ": not sent");
      return null;
    }
    if (type === "identify") {
      error("use pulse.identify(userId, traits) for identify events");
      return null;
    }
    return enqueue(type, metadata);
  }

  function identify(id, traits) {
    if (typeof id !== "string" || !id || id.length > MAX_ID_LENGTH) {
      error("pulse.identify needs a user id (a string of 1 to " + MAX_ID_LENGTH + " characters)");
      return null;
    }
    if (state.ready) setItem(PREFIX + "user_id", id);
    return enqueue("identify", traits && typeof traits === "object" ? { traits: traits } : null, { user_id: id });
  }

  /**
   * The visitor's consent per purpose, sent with every event from now on (docs/tracker.md):
   * pulse.consent({personalization: false}) records it on this device and sends a consent_updated
   * event at once, so a withdrawal takes effect without waiting for the next event.
   * pulse.consent() returns what is recorded (null when nothing is).
   */
  function consent(purposes) {
    if (purposes === undefined) {
      try {
        return JSON.parse(getItem(PREFIX + "consent") || "null");
      } catch (e) {
        return null;
      }
    }
    var clean = {};
    for (var k in purposes || {}) {
      if (!Object.prototype.hasOwnProperty.call(purposes, k)) continue;
      if (!EVENT_TYPE.test(k) || typeof purposes[k] !== "boolean") {
        error("pulse.consent takes purpose names (e.g. personalization) mapped to true or false: not recorded");
        return null;
      }
      clean[k] = purposes[k];
    }
    setItem(PREFIX + "consent", JSON.stringify(clean));
    return enqueue("consent_updated", null);
  }

  /** Forget the user on this device (e.g. at logout): new anonymous id, no user id. */
  function reset() {
    removeItem(PREFIX + "user_id");
    removeItem(PREFIX + "anonymous_id");
    setCookie("pulse_aid", "");
  }

  /** Send now; resolves when the buffer is empty or a send failed (a retry is then scheduled). */
  function flushNow() {
    return new Promise(function (resolve) {
      state.waiters.push(resolve);
      state.retryAt = 0;
      flush();
      if (!state.sending) settle();
    });
  }

  function log(message, detail) {
    if (config.debug && window.console) console.log("[pulse] " + message, detail === undefined ? "" : detail);
  }

  function warn(message) {
    if (window.console) console.warn("[pulse] " + message);
  }

  function error(message) {
    if (window.console) console.error("[pulse] " + message);
  }

  var api = {
    version: VERSION,
    init: init,
    page: page,
    track: track,
    identify: identify,
    consent: consent,
    reset: reset,
    flush: flushNow,
    anonymousId: anonymousId,
    userId: userId,
    pending: function () {
      return load().length;
    },
  };

  // Calls queued by a loader snippet before this script arrived: window.pulse = [["init", {...}], ...]
  var early = Array.isArray(window.pulse) ? window.pulse : [];
  window.pulse = api;
  early.forEach(function (call) {
    if (call && typeof api[call[0]] === "function") api[call[0]].apply(null, call.slice(1));
  });
})(window, document);
