// Live dashboard of trio-gfxsync: renders /api/status, kept current by the /api/events SSE stream.
//
// Rules this file keeps:
// - Every value from the server reaches the page through textContent or setAttribute, never
//   innerHTML: file names come from table PCs and must not be able to inject markup.
// - Session ids are 18-digit integers sent as strings, beyond 2^53: they are displayed as the
//   strings they are and never pass through a JavaScript number.
// - The page must work on a venue network with no internet: no library, no CDN, no font.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  // After a failed attempt the page waits 2 s, then twice as long each time, at most 60 s; a
  // refusal's Retry-After (the agent's 429) is waited at least (up to 10 min).
  const BACKOFF_FIRST_MS = 2000;
  const BACKOFF_MAX_MS = 60000;
  const RETRY_AFTER_MAX_MS = 600000;
  // The server sends a status at least every second; silence this long means a dead connection
  // that the browser has not noticed (a half-open TCP connection through venue Wi-Fi).
  const STALE_AFTER_MS = 5000;
  const AUTH_RETRY_MS = 10000;

  const token = new URLSearchParams(window.location.search).get("token");

  function withToken(path) {
    if (token === null) return path;
    const sep = path.includes("?") ? "&" : "?";
    return `${path}${sep}token=${encodeURIComponent(token)}`;
  }

  // ---- small DOM helpers -------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.setAttribute("class", value);
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
  }

  // Writes only when the text changes, so a selection or a hovered title survives the 1 s updates.
  function setText(node, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  // A session id as the exact string the server sent. A number here would already have lost
  // digits (the parse reviver below keeps the source text if the server ever sends one).
  function sessionIdText(value) {
    if (value === null || value === undefined || value === "") return "—";
    return typeof value === "string" ? value : String(value);
  }

  // ---- formatting ----------------------------------------------------------------------------

  const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const fmtInt = (n) => (typeof n === "number" && Number.isFinite(n) ? intFormat.format(n) : "—");

  function fmtBytes(bytes) {
    if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return `${value.toFixed(digits)} ${units[unit]}`;
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${m} min`;
    if (m > 0) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  // ISO 8601 to epoch ms. Python may send microseconds or "+00:00"; keep milliseconds only, which
  // every engine parses.
  function parseIso(iso) {
    if (typeof iso !== "string" || iso === "") return null;
    const normalised = iso.replace(/(\.\d{3})\d+/, "$1").replace(/\+00:00$/, "Z");
    const ms = Date.parse(normalised);
    return Number.isNaN(ms) ? null : ms;
  }

  // Server clock minus browser clock, from the `now` of the last status: relative times are
  // measured on the server's clock, so a venue laptop with a wrong clock still reads "12 s ago".
  let clockSkewMs = 0;
  const serverNow = () => Date.now() + clockSkewMs;

  function fmtAgo(ms) {
    if (ms === null) return "never";
    const s = Math.round((serverNow() - ms) / 1000);
    if (s < 2) return "just now";
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function fmtAbsolute(ms) {
    if (ms === null) return null;
    const d = new Date(ms);
    return `${d.toLocaleString(undefined, { hour12: false })} (local) · ${d.toISOString()}`;
  }

  function fmtClock(ms) {
    if (ms === null) return "—";
    return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
  }

  // A relative-time element: its text ticks every second (see tick()), title is absolute.
  function relTime(node, iso, neverText = "never") {
    const ms = parseIso(iso);
    setAttr(node, "data-ts", iso || null);
    setAttr(node, "title", fmtAbsolute(ms));
    node.classList.add("rel-time");
    node.dataset.never = neverText;
    setText(node, ms === null ? neverText : fmtAgo(ms));
    return node;
  }

  function tick() {
    for (const node of document.querySelectorAll(".rel-time")) {
      const ms = parseIso(node.getAttribute("data-ts"));
      setText(node, ms === null ? node.dataset.never || "never" : fmtAgo(ms));
    }
  }

  // ---- labels --------------------------------------------------------------------------------

  const UPSTREAM_LABELS = {
    connected: "connected",
    offline: "offline · queueing",
    rate_limited: "rate limited",
    rejected: "key rejected",
    schema_mismatch: "schema mismatch",
    unknown: "unknown",
  };

  const UPSTREAM_TONE = {
    connected: "good",
    offline: "warn",
    rate_limited: "warn",
    rejected: "bad",
    schema_mismatch: "bad",
    unknown: "muted",
  };

  const STATUS_TONE = { healthy: "good", degraded: "warn", unhealthy: "bad" };
  // observe/pc_state.py: starting < running < stale < hung < missing < error
  const PC_STATE_TONE = {
    starting: "muted",
    running: "good",
    stale: "warn",
    hung: "warn",
    missing: "bad",
    error: "bad",
  };
  const EVENT_TONE = {
    created: "info",
    modified: "info",
    synced: "good",
    queued: "warn",
    error: "bad",
    quarantined: "bad",
    upstream: "warn",
    alert: "warn",
    registry: "muted",
  };

  // ---- rendering -----------------------------------------------------------------------------

  // Sections are rebuilt only when their data changed (compared as JSON text).
  const lastRendered = new Map();
  function changed(section, data) {
    const text = JSON.stringify(data === undefined ? null : data);
    if (lastRendered.get(section) === text) return false;
    lastRendered.set(section, text);
    return true;
  }

  function render(status) {
    const now = parseIso(status.now);
    if (now !== null) clockSkewMs = now - Date.now();
    const parts = [
      ["header", renderHeader],
      ["queue", renderQueue],
      ["alerts", renderAlerts],
      ["pcs", renderPcs],
      ["throughput", renderThroughput],
      ["events", renderEvents],
      ["quarantined", renderQuarantine],
    ];
    // One malformed section must not blank the rest of the page.
    for (const [name, fn] of parts) {
      try {
        fn(status);
      } catch (err) {
        console.error(`dashboard: cannot render ${name}`, err);
      }
    }
    tick();
  }

  function renderHeader(status) {
    const overall = typeof status.status === "string" ? status.status : "unknown";
    const badge = $("overall-status");
    setText(badge, overall);
    setAttr(badge, "data-status", overall);
    setAttr(badge, "data-tone", STATUS_TONE[overall] || "muted");
    document.title = `${overall.toUpperCase()} · gfx-sync`;

    const reasons = Array.isArray(status.reasons) ? status.reasons : [];
    if (changed("reasons", reasons)) {
      $("overall-reasons").replaceChildren(...reasons.map((r) => el("li", { text: r })));
    }

    const up = status.upstream || {};
    const state = typeof up.state === "string" ? up.state : "unknown";
    const upNode = $("upstream-state");
    setText(upNode, UPSTREAM_LABELS[state] || state);
    setAttr(upNode, "data-state", state);
    setAttr(upNode, "data-tone", UPSTREAM_TONE[state] || "muted");
    setAttr(upNode, "title", up.url || null);
    setText($("upstream-reason"), up.reason || "");

    relTime($("last-sync"), up.last_sync);
    setText($("uptime"), fmtDuration(status.uptime_seconds));
    setText($("version"), status.version || "—");
  }

  function setCount(id, value) {
    const node = $(id);
    setText(node, fmtInt(value));
    setAttr(node, "data-value", typeof value === "number" ? value : null);
    const tile = node.closest(".tile");
    if (tile) tile.classList.toggle("nonzero", typeof value === "number" && value > 0);
  }

  function renderQueue(status) {
    const q = status.queue || {};
    setCount("pending-count", q.pending);
    setText($("pending-bytes"), q.pending ? fmtBytes(q.pending_bytes) : "empty");
    setAttr($("pending-bytes"), "data-value", typeof q.pending_bytes === "number" ? q.pending_bytes : null);
    setCount("dead-letter-count", q.dead_letters);
    setCount("quarantined-count", q.quarantined);
    setCount("batch-pending-count", q.batch_pending);
    setCount("acknowledged-count", q.files_acknowledged);
    $("queue-full").hidden = !q.full;
  }

  function renderAlerts(status) {
    const alerts = Array.isArray(status.alerts) ? status.alerts : [];
    setText($("alert-count"), alerts.length ? String(alerts.length) : "");
    if (!changed("alerts", alerts)) return;
    const list = $("alerts");
    if (alerts.length === 0) {
      list.replaceChildren(el("li", { class: "empty", "data-testid": "alerts-empty", text: "no alerts" }));
      return;
    }
    list.replaceChildren(
      ...alerts.map((a) =>
        el(
          "li",
          { class: "alert", "data-testid": "alert", "data-level": a.level, "data-name": a.name },
          el("span", { class: "alert-level", text: a.level }),
          el("span", { class: "alert-name", text: a.name }),
          el("span", { class: "alert-message", text: a.message }),
          relTime(el("span", { class: "alert-since" }), a.since, ""),
        ),
      ),
    );
  }

  function pcStat(label, testid, value, extra) {
    return el(
      "div",
      { class: "pc-stat" },
      el("span", { class: "pc-stat-label", text: label }),
      el("span", { class: "pc-stat-value", "data-testid": testid, ...extra, text: value }),
    );
  }

  function buildPcCard(pc) {
    const state = typeof pc.state === "string" ? pc.state : "unknown";
    const title = el(
      "div",
      { class: "pc-title" },
      el("span", { class: "pc-id", "data-testid": "pc-id", text: pc.id }),
      pc.name ? el("span", { class: "pc-name", text: pc.name }) : null,
    );
    const head = el(
      "div",
      { class: "pc-head" },
      title,
      el("span", {
        class: "pill",
        "data-testid": "pc-state",
        "data-state": state,
        "data-tone": PC_STATE_TONE[state] || "muted",
        text: state,
      }),
    );
    const lastSync = relTime(el("span", { class: "pc-stat-value", "data-testid": "pc-last-sync" }), pc.last_sync);
    // the live session's last hand, and how long ago this agent saw it written
    const hand = pc.hand && Number.isInteger(pc.hand.hand_num) ? pc.hand : null;
    const handStat = el(
      "div",
      { class: "pc-stat" },
      el("span", { class: "pc-stat-label", text: "hand" }),
      el("span", {
        class: "pc-stat-value",
        "data-testid": "pc-hand",
        "data-value": hand ? hand.hand_num : null,
        title: hand ? `session ${hand.session_key}` : null,
        text: hand ? `#${hand.hand_num}` : "—",
      }),
      hand ? relTime(el("span", { class: "pc-hand-age", "data-testid": "pc-hand-age" }), hand.at, "before start") : null,
    );
    const stats = el(
      "div",
      { class: "pc-stats" },
      pcStat("files tracked", "pc-files", fmtInt(pc.files_tracked), { "data-value": pc.files_tracked }),
      pcStat("sessions synced", "pc-sessions", fmtInt(pc.sessions_synced), { "data-value": pc.sessions_synced }),
      el("div", { class: "pc-stat" }, el("span", { class: "pc-stat-label", text: "last sync" }), lastSync),
      pcStat("backlog", "pc-backlog", fmtInt(pc.backlog), {
        "data-value": pc.backlog,
        class: pc.backlog > 0 ? "pc-stat-value pc-warn" : "pc-stat-value",
      }),
      handStat,
    );
    const problems = [];
    if (pc.reason) problems.push(el("div", { class: "pc-error", "data-testid": "pc-reason", text: pc.reason }));
    if (pc.last_error && pc.last_error !== pc.reason) {
      problems.push(el("div", { class: "pc-error", "data-testid": "pc-last-error", text: pc.last_error }));
    }
    const foot = el(
      "div",
      { class: "pc-foot" },
      pc.description ? el("div", { class: "pc-desc", text: pc.description }) : null,
      el("div", { class: "pc-path", title: pc.watch_path, text: pc.watch_path }),
      el(
        "div",
        { class: "pc-meta" },
        `${fmtInt(pc.files_seen)} files seen · last scan ${
          typeof pc.last_scan_seconds === "number" ? pc.last_scan_seconds.toFixed(2) : "—"
        } s`,
      ),
    );
    return el(
      "article",
      { class: "pc-card", "data-testid": "pc-card", "data-pc-id": pc.id, "data-state": state },
      head,
      stats,
      ...problems,
      foot,
    );
  }

  function renderPcs(status) {
    const pcs = Array.isArray(status.pcs) ? status.pcs : [];
    setText($("pc-count"), String(pcs.length));
    // a hand's age grows every second: its `at` (ticking on screen) is what decides a redraw
    const stable = pcs.map((pc) => (pc && pc.hand ? { ...pc, hand: { ...pc.hand, age_seconds: null } } : pc));
    if (!changed("pcs", stable)) return;
    const box = $("pcs");
    if (pcs.length === 0) {
      box.replaceChildren(el("div", { class: "empty", text: "no PCs in the registry" }));
      return;
    }
    box.replaceChildren(...pcs.map(buildPcCard));
  }

  function renderThroughput(status) {
    const points = Array.isArray(status.throughput) ? status.throughput : [];
    if (!changed("throughput", points)) return;
    const counts = points.map((p) => (typeof p.sessions === "number" ? p.sessions : 0));
    const total = counts.reduce((a, b) => a + b, 0);
    const max = counts.reduce((a, b) => Math.max(a, b), 0);
    setText($("throughput-total"), fmtInt(total));
    setText($("throughput-max"), fmtInt(max));

    const W = 600;
    const H = 150;
    const top = 18; // room for the peak label
    const bottom = 18; // room for the time axis
    const plotH = H - top - bottom;
    const slots = Math.max(60, counts.length);
    const slotW = W / slots;
    const barW = Math.max(1, slotW * 0.72);

    const chart = svg("svg", {
      class: "chart",
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": `sessions synced per minute over the last hour: total ${total}, peak ${max}`,
      "data-testid": "throughput-chart",
      "data-total": total,
      "data-max": max,
    });
    chart.append(svg("line", { class: "axis", x1: 0, x2: W, y1: top + plotH + 0.5, y2: top + plotH + 0.5 }));
    if (max > 0) {
      chart.append(svg("line", { class: "peak-line", x1: 0, x2: W, y1: top, y2: top }));
      chart.append(svg("text", { class: "chart-label", x: 4, y: top - 5, text: `peak ${max}/min` }));
    }
    const offset = slots - counts.length; // fewer than 60 points: align the newest at the right
    points.forEach((p, i) => {
      const value = counts[i];
      const h = max > 0 ? (value / max) * plotH : 0;
      const x = (offset + i) * slotW + (slotW - barW) / 2;
      const bar = svg("rect", {
        class: value === max && max > 0 ? "bar bar-peak" : "bar",
        x: x.toFixed(2),
        y: (top + plotH - Math.max(h, value > 0 ? 2 : 0)).toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(h, value > 0 ? 2 : 0).toFixed(2),
        "data-sessions": value,
      });
      const ms = parseIso(p.minute);
      bar.append(svg("title", { text: `${fmtClock(ms)}: ${value} sessions` }));
      chart.append(bar);
    });
    chart.append(svg("text", { class: "chart-axis", x: 2, y: H - 3, text: "−60 min" }));
    chart.append(svg("text", { class: "chart-axis", x: W / 2, y: H - 3, "text-anchor": "middle", text: "−30 min" }));
    chart.append(svg("text", { class: "chart-axis", x: W - 2, y: H - 3, "text-anchor": "end", text: "now" }));
    $("throughput").replaceChildren(chart);
  }

  // A path whose lines may break after each "/" (a <wbr> carries no text, so textContent is
  // still exactly the path).
  function pathText(path) {
    if (typeof path !== "string" || path === "") return ["—"];
    const nodes = [];
    path.split("/").forEach((part, i, parts) => {
      nodes.push(i < parts.length - 1 ? `${part}/` : part);
      if (i < parts.length - 1) nodes.push(document.createElement("wbr"));
    });
    return nodes;
  }

  function pathCell(testid, path) {
    return el("td", { "data-testid": testid, class: "mono path", title: path }, ...pathText(path));
  }

  function cell(testid, value, cls, title) {
    return el("td", { "data-testid": testid, class: cls, title, text: value === null || value === undefined ? "—" : value });
  }

  function renderEvents(status) {
    const events = Array.isArray(status.events) ? status.events : [];
    if (!changed("events", events)) return;
    const body = $("events-body");
    if (events.length === 0) {
      body.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 6, class: "empty", text: "no events yet" })));
      return;
    }
    body.replaceChildren(
      ...events.map((ev) => {
        const ms = parseIso(ev.ts);
        return el(
          "tr",
          { "data-testid": "event-row", "data-kind": ev.kind },
          cell("event-time", fmtClock(ms), "mono nowrap", fmtAbsolute(ms)),
          el(
            "td",
            { "data-testid": "event-kind" },
            el("span", { class: "pill pill-small", "data-tone": EVENT_TONE[ev.kind] || "muted", text: ev.kind }),
          ),
          cell("event-pc", ev.pc_id, "nowrap"),
          cell("event-session-id", sessionIdText(ev.session_id), "mono nowrap"),
          pathCell("event-path", ev.path),
          cell("event-message", ev.message, "message"),
        );
      }),
    );
  }

  function renderQuarantine(status) {
    const rows = Array.isArray(status.quarantined) ? status.quarantined : [];
    setText($("quarantine-count"), rows.length ? String(rows.length) : "");
    if (!changed("quarantined", rows)) return;
    const body = $("quarantine-body");
    if (rows.length === 0) {
      body.replaceChildren(
        el(
          "tr",
          { class: "empty-row" },
          el("td", { colspan: 6, class: "empty", "data-testid": "quarantine-empty", text: "no quarantined or dead-lettered files" }),
        ),
      );
      return;
    }
    body.replaceChildren(
      ...rows.map((q) =>
        el(
          "tr",
          { "data-testid": "quarantine-row", "data-kind": q.kind, "data-id": q.id },
          cell("quarantine-pc", q.pc_id, "nowrap"),
          pathCell("quarantine-path", q.path),
          cell("quarantine-session-id", sessionIdText(q.session_id), "mono nowrap"),
          el(
            "td",
            { "data-testid": "quarantine-reason", class: "reason" },
            el("span", {
              class: "pill pill-small",
              "data-tone": q.kind === "refused" ? "bad" : "warn",
              text: q.kind === "refused" ? "dead letter" : "quarantine",
            }),
            el("span", { class: "mono", text: q.reason }),
          ),
          cell("quarantine-message", q.message, "message"),
          relTime(el("td", { "data-testid": "quarantine-last-seen", class: "nowrap" }), q.last_seen),
        ),
      ),
    );
  }

  // ---- connection --------------------------------------------------------------------------

  function setConnection(state) {
    const node = $("connection");
    const labels = {
      live: "live",
      reconnecting: "reconnecting…",
      refused: "refused",
      connecting: "connecting…",
      unauthorized: "token required",
    };
    const tones = { live: "good", reconnecting: "warn", refused: "bad", connecting: "muted", unauthorized: "bad" };
    setText(node, labels[state] || state);
    setAttr(node, "data-state", state);
    setAttr(node, "data-tone", tones[state] || "muted");
    // Figures on screen are old while the stream is down: say so by dimming them.
    $("content").classList.toggle("stale", state !== "live");
  }

  function showAuthRequired(show) {
    $("auth-required").hidden = !show;
    setText(
      $("auth-detail"),
      show && token !== null ? "the token in this address was not accepted" : show ? "this dashboard is protected by GFX_SYNC_DASHBOARD_TOKEN" : "",
    );
    if (show) {
      setConnection("unauthorized");
      const badge = $("overall-status");
      if (badge.getAttribute("data-status") === "unknown") setText(badge, "no data");
    }
  }

  // If the server ever sends a session id as a bare number, keep its digits from the source text
  // (JSON.parse source access, Chromium 114+); otherwise plain JSON.parse.
  function parseStatus(text) {
    return JSON.parse(text, function (key, value, context) {
      if (key === "session_id" && typeof value === "number" && context && typeof context.source === "string") {
        return context.source;
      }
      return value;
    });
  }

  function accept(status) {
    showAuthRequired(false);
    render(status);
  }

  // One GET of /api/status at start: paints at once instead of waiting for the stream, and
  // tells a 401 before the stream is tried.
  // Resolves to "ok", "unauthorized" or "failed".
  async function loadOnce() {
    try {
      const response = await fetch(withToken("/api/status"), { cache: "no-store", headers: { Accept: "application/json" } });
      if (response.status === 401) {
        showAuthRequired(true);
        return "unauthorized";
      }
      if (!response.ok) return "failed";
      accept(parseStatus(await response.text()));
      return "ok";
    } catch (err) {
      console.warn("dashboard: /api/status failed", err);
      return "failed";
    }
  }

  // The stream is read with fetch() rather than EventSource: an EventSource reports neither the
  // status nor the headers of a refusal, and the page must honour a 429's Retry-After and say
  // why it waits. One request does both: its answer is the refusal or the stream itself.
  let stream = null; // the AbortController of the attempt in progress, or null
  let reconnectTimer = null;
  let lastMessageAt = 0;
  let failures = 0; // attempts in a row that brought no status: the back-off grows with them
  let retryAt = null; // when the next attempt starts (epoch ms), for the countdown
  let retryReason = "";

  function backoffMs() {
    return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, failures - 1));
  }

  // Retry-After in seconds or as an HTTP date; null when absent or unreadable.
  function parseRetryAfter(value) {
    if (value === null || value === undefined) return null;
    const text = value.trim();
    if (/^\d+$/.test(text)) return Number(text) * 1000;
    const at = Date.parse(text);
    return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
  }

  async function refusalText(response) {
    let detail = "";
    try {
      const text = (await response.text()).trim();
      try {
        const body = JSON.parse(text);
        detail = body && typeof body.error === "string" ? body.error : text;
      } catch {
        detail = text;
      }
    } catch {
      detail = "";
    }
    detail = detail.slice(0, 300);
    return `refused by the agent (HTTP ${response.status})${detail ? `: ${detail}` : ""}`;
  }

  // Says on the page why the figures are not live, and when the next attempt is (ticks each second).
  function showRetry() {
    const node = $("connection-detail");
    if (retryAt === null) {
      setText(node, "");
      node.hidden = true;
      return;
    }
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    node.hidden = false;
    setText(node, `${retryReason} · next try in ${seconds} s`);
    setAttr(node, "data-retry-ms", String(Math.max(0, retryAt - Date.now())));
  }

  function goLive() {
    failures = 0;
    retryAt = null;
    retryReason = "";
    setConnection("live");
    showRetry();
  }

  // An attempt that brought no status: wait (2 s doubling to 60 s, at least the Retry-After) and
  // try again.
  function fail(reason, retryAfterMs, state) {
    if (stream !== null) {
      stream.abort();
      stream = null;
    }
    failures += 1;
    let delay = backoffMs();
    if (retryAfterMs !== null) delay = Math.max(delay, Math.min(retryAfterMs, RETRY_AFTER_MAX_MS));
    if ($("connection").getAttribute("data-state") !== "unauthorized") setConnection(state || "reconnecting");
    retryReason = reason;
    retryAt = Date.now() + delay;
    showRetry();
    scheduleReconnect(delay);
  }

  function scheduleReconnect(delay) {
    if (reconnectTimer !== null) clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  // Server-sent events from a fetch body: `event:` and `data:` lines, a blank line ends one.
  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line === "" || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") name = text;
          else if (field === "data") data.push(text);
        }
        if (data.length > 0) onEvent(name, data.join("\n"));
      }
    }
  }

  function onStatusEvent(name, data) {
    if (name !== "status") return;
    lastMessageAt = Date.now();
    let status;
    try {
      status = parseStatus(data);
    } catch (err) {
      console.error("dashboard: bad status event", err);
      return;
    }
    goLive();
    accept(status);
  }

  async function connect() {
    if (stream !== null) stream.abort();
    const controller = new AbortController();
    stream = controller;
    lastMessageAt = Date.now();
    let response;
    try {
      response = await fetch(withToken("/api/events"), {
        cache: "no-store",
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
      });
    } catch (err) {
      if (stream === controller) fail("the agent cannot be reached", null);
      return;
    }
    if (stream !== controller) return;
    if (response.status === 401) {
      stream = null;
      controller.abort();
      showAuthRequired(true);
      scheduleReconnect(AUTH_RETRY_MS);
      return;
    }
    if (!response.ok || response.body === null) {
      const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
      const reason = await refusalText(response);
      if (stream === controller) fail(reason, retryAfter, "refused");
      return;
    }
    try {
      await readEvents(response.body, (name, data) => {
        if (stream === controller) onStatusEvent(name, data);
      });
      if (stream === controller) fail("the agent ended the stream", null);
    } catch (err) {
      if (stream === controller) fail("the connection to the agent broke", null);
    }
  }

  function watchdog() {
    if (stream !== null && Date.now() - lastMessageAt > STALE_AFTER_MS) {
      console.warn("dashboard: no status for a while, reconnecting");
      fail(`no update from the agent for ${Math.round(STALE_AFTER_MS / 1000)} s`, null);
    }
  }

  async function start() {
    setConnection("connecting");
    const result = await loadOnce();
    if (result === "unauthorized") scheduleReconnect(AUTH_RETRY_MS);
    else connect();
    setInterval(() => {
      tick();
      showRetry();
      watchdog();
    }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
