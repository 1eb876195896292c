// relay browser client: reports what a page sees of storage and distribution nodes to a relay.
// An ES module with no dependencies and no build step, served by the relay at /v1/client.js.
// README "Browser client" is its manual; DESIGN §3.1 is the event schema it sends.
//
// Privacy: it sends the node (a distributor's URL host or a storage bucket id), the outcome,
// coarse timings and sizes, and a random per-session `client` held in memory only. No URL path,
// no user or content id, no timestamp (the relay counts an event in the window it arrives in).

export const VERSION = "1.0.0";

const OUTCOMES = ["ok", "timeout", "http_4xx", "http_5xx", "dns", "tls", "connection", "aborted",
  "other"];
const SIGNALS = ["blacklisted", "playback_slow", "playback_codec", "missing_operators",
  "upload_failed"];
const OPS = ["download", "upload", "probe"];
const ASSETS = ["video", "image", "other"];
const NODE_ID = /^[A-Za-z0-9:._-]{1,128}$/;
const DEFAULTS = { enabled_kinds: ["request", "signal"], sampling: { request: 1, signal: 1 },
  flush_interval_seconds: 30, max_batch_size: 50 };
const MAX_BACKOFF_MS = 300000;

const now = () => performance.now();
const pick = (value, allowed) => (allowed.includes(value) ? value : undefined);
// A timing in whole milliseconds within the schema's bounds, else left out.
const millis = (value, max) =>
  Number.isFinite(value) && value >= 0 && value <= max ? Math.round(value) : undefined;

/** The node id of a distributor URL: its host, lower-case, IDNA, `:port` only when not the
 * scheme's default (the rule the relay applies to Atlas's URLs), or null. */
export function distributorNode(url) {
  try {
    const u = new URL(String(url)); // absolute only: a bare host is not a URL
    // WHATWG URL has already lower-cased and IDNA-encoded the host and dropped a default port.
    const host = u.hostname.replace(/\.+$/, "");
    if ((u.protocol !== "http:" && u.protocol !== "https:") || !host || host.startsWith("[")) {
      return null; // an IPv6 literal would be ambiguous with the port
    }
    const id = u.port ? `${host}:${u.port}` : host;
    return NODE_ID.test(id) && id !== "_all" ? id : null; // _all: the network-wide cell
  } catch {
    return null;
  }
}

// `{role, id}`, or a URL (string or URL) that names a distributor by its host.
function nodeRef(node) {
  if (node && typeof node === "object" && !(node instanceof URL)) {
    const role = pick(node.role, ["distributor", "storage"]);
    const id = String(node.id ?? "");
    return role && NODE_ID.test(id) ? { role, id } : null;
  }
  const id = distributorNode(node);
  return id ? { role: "distributor", id } : null;
}

function httpOutcome(status) {
  if (status >= 500 && status < 600) return "http_5xx";
  if (status >= 400) return "http_4xx";
  return status > 0 ? "ok" : undefined;
}

// A number of seconds from a Retry-After header (an HTTP date counts too), else 0.
function retryAfterSeconds(header) {
  if (!header) return 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(header);
  return Number.isFinite(date) ? Math.max(0, (date - Date.now()) / 1000) : 0;
}

function sanitizeConfig(doc) {
  const kinds = Array.isArray(doc?.enabled_kinds) ? doc.enabled_kinds : DEFAULTS.enabled_kinds;
  const sampling = {};
  for (const kind of ["request", "signal"]) {
    const rate = Number(doc?.sampling?.[kind] ?? 1);
    sampling[kind] = Number.isFinite(rate) ? Math.min(1, Math.max(0, rate)) : 1;
  }
  const interval = Number(doc?.flush_interval_seconds);
  const size = Number(doc?.max_batch_size);
  return {
    enabled_kinds: kinds,
    sampling,
    flush_interval_seconds: interval >= 1 ? interval : DEFAULTS.flush_interval_seconds,
    max_batch_size: size >= 1 ? Math.min(1000, Math.floor(size)) : DEFAULTS.max_batch_size,
  };
}

/**
 * A reporter for the relay at `relayUrl` (e.g. "https://relay.example.org").
 * options: timeoutMs (15000: a load with no answer by then is a timeout), maxQueue (1000 events
 * held at most; the oldest go first).
 */
export function createReporter(relayUrl, options = {}) {
  const base = String(relayUrl).replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 15000;
  const maxQueue = options.maxQueue ?? 1000;
  // Random per session, in memory only: it lets the relay bound one session's contribution.
  const client = Array.from(crypto.getRandomValues(new Uint8Array(12)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const stats = { sent: 0, beaconed: 0, dropped: 0, sampled_out: 0 };
  let config = null; // null until /v1/config answered (or failed)
  let configExpires = 0;
  let configLoading = null;
  let held = []; // events recorded before the config was known: not yet sampled
  let queue = []; // sampled events waiting to be sent
  let timer = 0;
  let sending = false;
  let retryAt = 0;
  let backoffMs = 0;

  const safe = (fn) => (...args) => {
    try {
      const result = fn(...args);
      return result instanceof Promise ? result.catch(() => undefined) : result;
    } catch {
      return undefined; // a reporting bug must never break the page
    }
  };

  function bound(list) {
    const excess = list.length - maxQueue;
    if (excess > 0) {
      list.splice(0, excess);
      stats.dropped += excess;
    }
  }

  function admit(event) {
    const rate = config.sampling[event.kind];
    if (!config.enabled_kinds.includes(event.kind) || !(Math.random() < rate)) {
      stats.sampled_out += 1;
      return;
    }
    queue.push(event);
    bound(queue);
    if (queue.length >= config.max_batch_size) send();
  }

  function record(event) {
    event.client = client;
    if (config) admit(event);
    else {
      held.push(event);
      bound(held);
    }
  }

  function loadConfig() {
    configLoading ??= (async () => {
      let maxAge = 60; // seconds until the next try when the relay does not answer
      try {
        // Plain GET, no custom header: no preflight, and the browser's HTTP cache revalidates
        // with If-None-Match (the ETag) once max-age has passed.
        const response = await fetch(`${base}/v1/config`, { credentials: "omit" });
        if (!response.ok) throw new Error(String(response.status));
        config = sanitizeConfig(await response.json());
        const age = /max-age=(\d+)/.exec(response.headers.get("Cache-Control") || "");
        maxAge = age ? Number(age[1]) : 300;
      } catch {
        config ??= sanitizeConfig(DEFAULTS);
      }
      configExpires = now() + maxAge * 1000;
      const early = held;
      held = [];
      early.forEach(admit);
      schedule();
      configLoading = null;
    })();
    return configLoading;
  }

  function schedule() {
    clearTimeout(timer);
    const interval = (config ?? DEFAULTS).flush_interval_seconds * 1000;
    timer = setTimeout(tick, Math.max(interval, retryAt - now()));
  }

  function tick() {
    if (now() >= configExpires) loadConfig();
    send();
    schedule();
  }

  function retryLater(batch, response) {
    queue = batch.concat(queue);
    bound(queue);
    backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs ? backoffMs * 2 : 1000);
    const wait = backoffMs * (0.5 + Math.random() / 2); // jitter: clients do not retry in step
    const told = retryAfterSeconds(response?.headers.get("Retry-After")) * 1000;
    retryAt = now() + Math.max(wait, told);
    schedule();
  }

  async function send() {
    if (sending || !config || !queue.length || now() < retryAt) return;
    sending = true;
    const batch = queue.splice(0, config.max_batch_size);
    try {
      // text/plain is a simple request: no CORS preflight. keepalive: survives a navigation.
      const response = await fetch(`${base}/v1/events`, {
        method: "POST",
        headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({ events: batch }),
        credentials: "omit",
        keepalive: true,
      });
      if (response.status === 429 || response.status === 503) retryLater(batch, response);
      else if (response.ok) {
        backoffMs = 0;
        const answer = await response.json().catch(() => ({}));
        stats.sent += answer.accepted ?? batch.length;
      } else stats.dropped += batch.length; // refused (4xx): resending would not help
    } catch {
      retryLater(batch, null); // the relay is unreachable
    } finally {
      sending = false;
    }
    if (queue.length >= config.max_batch_size) send();
  }

  // On page hide: whatever is queued goes out by sendBeacon, unless the relay asked to wait.
  function beaconAll() {
    if (!config || now() < retryAt || !navigator.sendBeacon) return;
    while (queue.length) {
      const batch = queue.slice(0, config.max_batch_size);
      const body = new Blob([JSON.stringify({ events: batch })], { type: "text/plain" });
      if (!navigator.sendBeacon(`${base}/v1/events`, body)) return; // over the browser's quota
      queue.splice(0, batch.length);
      stats.beaconed += batch.length;
    }
  }

  // -- observing loads ------------------------------------------------------------------------

  // Resource Timing entries of the URLs being watched, as the browser records them. An
  // observer, not getEntriesByName alone: the global buffer stops at 250 entries by default.
  const waiting = new Map(); // url -> [{since, done, timer}]
  const observer = safe(() => {
    const created = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) resolveEntry(entry.name, entry);
    });
    created.observe({ type: "resource", buffered: true });
    return created;
  })();

  function forget(url, waiter) {
    const list = (waiting.get(url) || []).filter((w) => w !== waiter);
    if (list.length) waiting.set(url, list);
    else waiting.delete(url);
  }

  function resolveEntry(url, entry) {
    for (const waiter of waiting.get(url) || []) {
      if (entry.startTime >= waiter.since - 1) waiter.done(entry);
    }
  }

  // The Resource Timing entry of a load of `url` started at `since`, or null after `waitMs`.
  function timingEntry(url, since, waitMs) {
    const found = performance.getEntriesByName(url, "resource").find(
      (entry) => entry.startTime >= since - 1);
    if (found || !observer) return Promise.resolve(found ?? null);
    return new Promise((resolve) => {
      const waiter = { since };
      waiter.done = (entry) => {
        clearTimeout(waiter.timer);
        forget(url, waiter);
        resolve(entry);
      };
      waiter.timer = setTimeout(() => waiter.done(null), waitMs);
      waiting.set(url, [...(waiting.get(url) || []), waiter]);
    });
  }

  // Timings from a Resource Timing entry. Cross-origin, the browser shows responseStart and the
  // sizes only when the node sends Timing-Allow-Origin; duration is always shown.
  function fromEntry(entry) {
    if (!entry) return {};
    const visible = entry.responseStart > 0;
    return {
      cached: entry.deliveryType === "cache" || (visible && entry.transferSize === 0 &&
        entry.encodedBodySize > 0),
      status: entry.responseStatus || 0, // 0 unless the response was CORS-readable
      ttfb_ms: visible ? entry.responseStart - entry.fetchStart : undefined,
      duration_ms: entry.responseEnd - entry.fetchStart,
      bytes: visible && entry.encodedBodySize > 0 ? entry.encodedBodySize : undefined,
    };
  }

  function reportLoad(meta, node, outcome, timing) {
    // Offline, every load fails: that is the user's network, not the node.
    if (timing.cached || (outcome !== "ok" && navigator.onLine === false)) return;
    request({ ...meta, node, outcome, ttfb_ms: timing.ttfb_ms, duration_ms: timing.duration_ms,
      bytes: timing.bytes });
  }

  /** Observe an <img>, <video> or <audio> load: call before (or right after) setting its src. */
  function watch(element, meta = {}) {
    const since = now();
    const media = typeof HTMLMediaElement !== "undefined" && element instanceof HTMLMediaElement;
    const video = typeof HTMLVideoElement !== "undefined" && element instanceof HTMLVideoElement;
    const asset = meta.asset ?? (video ? "video" : media ? "other" : "image");
    const events = media ? ["loadedmetadata", "error"] : ["load", "error"];
    let finished = false;
    const finish = safe(async (event) => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      events.forEach((name) => element.removeEventListener(name, finish));
      const url = element.currentSrc || element.src;
      const node = nodeRef(meta.node ?? url);
      if (!node) return;
      const info = { ...meta, asset };
      if (!event) return reportLoad(info, node, "timeout", {});
      const entry = await timingEntry(url, since, 250);
      const timing = fromEntry(entry);
      if (event.type !== "error") {
        // An image loaded with no fetch of its own came from the memory cache: not the node.
        if (entry || media) reportLoad(info, node, "ok", timing);
        return;
      }
      const code = media ? element.error?.code : 0;
      const status = httpOutcome(timing.status);
      // Media that arrived but does not play (MEDIA_ERR_DECODE, or SRC_NOT_SUPPORTED after a
      // 2xx): a codec problem, as Atlas reports it, not a failed request.
      if (code === 3 || (code === 4 && status === "ok")) {
        return signal({ node, signal: "playback_codec" });
      }
      // An element error does not say why. The status does, which the browser shows for a CORS
      // image only (crossorigin set; media loads hide it). A CORS image that shows no answer at
      // all got none (as when the browser records no entry for a failed load); a no-cors one
      // may have had a hidden error answer.
      const answered = timing.status > 0 || timing.ttfb_ms !== undefined;
      let outcome = "other";
      if (code === 1) outcome = "aborted";
      else if (status && status !== "ok") outcome = status;
      else if (code === 2 || !entry || (!media && !answered && element.crossOrigin !== null)) {
        outcome = "connection";
      }
      reportLoad(info, node, outcome, { ttfb_ms: timing.ttfb_ms });
    });
    events.forEach((name) => element.addEventListener(name, finish));
    const deadline = setTimeout(() => finish(null), meta.timeoutMs ?? timeoutMs);
  }

  /** fetch(), observed: resolves or rejects exactly as fetch does. */
  async function observedFetch(input, init, meta = {}) {
    const since = now();
    const url = safe(() => new URL(input?.url ?? String(input), globalThis.location?.href).href)();
    const node = safe(() => nodeRef(meta.node ?? url))();
    const info = { ...meta, asset: meta.asset ?? "other" };
    let reported = !node;
    const first = () => {
      clearTimeout(deadline);
      const was = reported;
      reported = true;
      return !was;
    };
    // Not aborted at the deadline (that is the app's call): counted as a timeout, then ignored.
    const deadline = setTimeout(safe(() => first() && reportLoad(info, node, "timeout", {})),
      meta.timeoutMs ?? timeoutMs);
    let response;
    try {
      response = await fetch(input, init);
    } catch (error) {
      // fetch says only "TypeError": DNS, TLS, refused and CORS failures look the same.
      const outcome = error?.name === "AbortError" ? "aborted" : "connection";
      if (first()) safe(reportLoad)(info, node, outcome, {});
      throw error;
    }
    // An opaque (no-cors) answer hides its status: nothing to report.
    if (first() && response.type !== "opaque") {
      const ttfb = now() - since;
      const outcome = httpOutcome(response.status) ?? "other";
      if (outcome !== "ok") safe(reportLoad)(info, node, outcome, { ttfb_ms: ttfb });
      // The entry appears once the app has read the body: it brings duration and size.
      else safe(async () => {
        const timing = fromEntry(await timingEntry(response.url || url, since, timeoutMs));
        reportLoad(info, node, outcome, { ...timing, ttfb_ms: timing.ttfb_ms ?? ttfb });
      })();
    }
    return response;
  }

  function request(fields) {
    const node = nodeRef(fields.node);
    const outcome = pick(fields.outcome, OUTCOMES);
    if (!node || !outcome) return;
    const ok = Number.isSafeInteger(fields.bytes) && fields.bytes >= 0 && fields.bytes < 2 ** 40;
    record({ kind: "request", node, op: pick(fields.op, OPS) ?? "download", outcome,
      ttfb_ms: millis(fields.ttfb_ms, 600000), duration_ms: millis(fields.duration_ms, 3600000),
      bytes: ok ? fields.bytes : undefined, asset: pick(fields.asset, ASSETS) });
  }

  function signal(fields) {
    const node = nodeRef(fields.node);
    const name = pick(fields.signal, SIGNALS);
    if (node && name) record({ kind: "signal", node, signal: name });
  }

  const onHide = safe((event) => {
    if (event.type === "pagehide" || document.visibilityState === "hidden") beaconAll();
  });
  globalThis.addEventListener?.("pagehide", onHide);
  globalThis.document?.addEventListener("visibilitychange", onHide);
  safe(loadConfig)();

  return {
    /** Report one request: {node, op, outcome, ttfb_ms, duration_ms, bytes, asset}. */
    request: safe(request),
    /** Report a client-side signal: {node, signal}. */
    signal: safe(signal),
    watch: safe(watch),
    fetch: observedFetch,
    /** Send what is queued now (the timer and page hide do this on their own). */
    flush: safe(() => send()),
    stats: () => ({ ...stats, queued: held.length + queue.length }),
  };
}
