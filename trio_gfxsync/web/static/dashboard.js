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
  const RECONNECT_DELAY_MS = 2000;
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
  const PC_STATE_TONE = { running: "good", starting: "muted", error: "bad" };
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
    const labels = { live: "live", reconnecting: "reconnecting…", connecting: "connecting…", unauthorized: "token required" };
    const tones = { live: "good", reconnecting: "warn", connecting: "muted", unauthorized: "bad" };
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

  // One GET of /api/status: paints at once instead of waiting for the stream, and tells a 401
  // (EventSource only reports "error" and gives no status code).
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

  let source = null;
  let reconnectTimer = null;
  let lastMessageAt = 0;

  function connect() {
    if (source !== null) source.close();
    lastMessageAt = Date.now();
    const es = new EventSource(withToken("/api/events"));
    source = es;
    es.addEventListener("status", (event) => {
      if (es !== source) return;
      lastMessageAt = Date.now();
      let status;
      try {
        status = parseStatus(event.data);
      } catch (err) {
        console.error("dashboard: bad status event", err);
        return;
      }
      setConnection("live");
      accept(status);
    });
    es.addEventListener("error", () => {
      if (es !== source) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (a non-200 answer such as 401 or 503): start over ourselves.
        scheduleReconnect(RECONNECT_DELAY_MS);
      } else if ($("connection").getAttribute("data-state") !== "unauthorized") {
        setConnection("reconnecting"); // EventSource retries by itself
      }
    });
  }

  function scheduleReconnect(delay) {
    if (source !== null) {
      source.close();
      source = null;
    }
    if ($("connection").getAttribute("data-state") !== "unauthorized") setConnection("reconnecting");
    if (reconnectTimer !== null) return;
    reconnectTimer = setTimeout(async () => {
      reconnectTimer = null;
      const result = await loadOnce();
      if (result === "unauthorized") scheduleReconnect(AUTH_RETRY_MS);
      else connect();
    }, delay);
  }

  function watchdog() {
    if (source !== null && Date.now() - lastMessageAt > STALE_AFTER_MS) {
      console.warn("dashboard: no status for a while, reconnecting");
      scheduleReconnect(0);
    }
  }

  async function start() {
    setConnection("connecting");
    const result = await loadOnce();
    if (result === "unauthorized") scheduleReconnect(AUTH_RETRY_MS);
    else connect();
    setInterval(() => {
      tick();
      watchdog();
    }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
