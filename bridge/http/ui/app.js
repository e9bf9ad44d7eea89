// The bridge's status page.  Plain JavaScript, no library, no build step.
//
// Data: GET /status every second (upstreams, counters, lifecycle), and
// GET /events read as a stream with fetch() (EventSource cannot send the
// Authorization header), parsed here as Server-Sent Events.  Every call sends
// the token, when the person gave one, as "Authorization: Bearer ...".  The
// token lives in sessionStorage: this tab only.  Nothing the bridge or the
// upstream says is ever put in the page as HTML: text nodes only.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TICK_MS = 200;
  const HISTORY_SECONDS = 300;     // samples kept: the chart's widest window
  const MAX_EVENTS = 200;          // events shown (and kept while paused)
  const MAX_ERRORS = 20;           // connection errors listed
  const TOKEN_KEY = "bridge-token";

  const $ = (id) => document.getElementById(id);

  // -- the token -------------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_KEY);

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  function askToken(why) {
    $("token-why").textContent = why;
    $("token-panel").hidden = false;
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("token-panel").hidden = true;
    $("forget-token").hidden = false;
    pollNow();
    events.restart();
  });

  $("forget-token").addEventListener("click", () => {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    pollNow();
    events.restart();
  });
  $("forget-token").hidden = !token;

  function unauthorized() {
    askToken(token
      ? "The bridge refused this token. Give the right one (kept for this tab only)."
      : "This bridge needs its token. It is kept for this tab only (sessionStorage) and " +
        "sent as a bearer header on every call the page makes.");
  }

  // -- small helpers ---------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
    const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }

  function bytes(count) {
    if (count < 1024) return count + " B";
    if (count < 1024 * 1024) return (count / 1024).toFixed(1) + " KiB";
    if (count < 1024 * 1024 * 1024) return (count / 1024 / 1024).toFixed(1) + " MiB";
    return (count / 1024 / 1024 / 1024).toFixed(1) + " GiB";
  }

  function rate(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value >= 100) return value.toFixed(0);
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  // -- /status -------------------------------------------------------------

  // One upstream per entry: "upstreams" when the bridge has several, else the
  // document itself is the one upstream, named "default".
  function upstreamsOf(doc) {
    if (doc.upstreams && typeof doc.upstreams === "object") {
      return Object.entries(doc.upstreams).map(([name, up]) => Object.assign({ name }, up));
    }
    return [Object.assign({ name: "default" }, doc)];
  }

  // The bridge's own counters (http_requests, work_requests, work_errors).
  function counter(doc, name) {
    return doc.counters && typeof doc.counters[name] === "number" ? doc.counters[name] : null;
  }

  // An upstream counter summed over every upstream (the top-level counters
  // hold only the upstream named default's).
  function total(doc, name) {
    if (!doc.upstreams || typeof doc.upstreams !== "object") return counter(doc, name);
    let sum = 0, seen = false;
    for (const up of Object.values(doc.upstreams)) {
      if (up.counters && typeof up.counters[name] === "number") {
        sum += up.counters[name];
        seen = true;
      }
    }
    return seen ? sum : null;
  }

  let lastDoc = null;
  let fetchedAt = 0;          // performance.now() of the last good /status
  let polling = null;
  let pollBusy = false;

  async function poll() {
    if (pollBusy) return;
    pollBusy = true;
    try {
      const response = await fetch("/status", { headers: authHeaders(), cache: "no-store" });
      if (response.status === 401) {
        setLink("down", "token needed");
        unauthorized();
        return;
      }
      if (response.status === 403) {
        // A scoped token: it may send, request or follow events, not read /status.
        setLink("down", "this token does not open /status");
        return;
      }
      if (!response.ok) {
        setLink("down", "/status answered " + response.status);
        return;
      }
      const doc = await response.json();
      fetchedAt = performance.now();
      lastDoc = doc;
      setLink("up", "live");
      $("token-panel").hidden = true;
      render(doc);
    } catch (error) {
      setLink("down", "bridge unreachable");
    } finally {
      pollBusy = false;
    }
  }

  function pollNow() {
    clearTimeout(polling);
    const loop = async () => {
      await poll();
      polling = setTimeout(loop, POLL_MS);
    };
    loop();
  }

  function setLink(state, text) {
    const link = $("link");
    link.dataset.state = state;
    link.textContent = text;
  }

  function render(doc) {
    $("version").textContent = doc.version ? "v" + doc.version : "";
    const lifecycle = $("lifecycle");
    lifecycle.textContent = doc.lifecycle || "unknown";
    lifecycle.dataset.state = doc.lifecycle || "unknown";
    $("uptime").textContent = typeof doc.uptime === "number" ? "up " + duration(doc.uptime) : "";
    const upstreams = upstreamsOf(doc);
    recordHistory(doc, upstreams);
    renderUpstreams(upstreams);
    renderTotals(doc);
    noteErrors(upstreams);
    chooser($("try-upstream"), $("try-upstream-label"), upstreams);
    chooser($("events-upstream"), $("events-upstream-label"), upstreams);
    drawChart();
  }

  // -- upstream cards ----------------------------------------------------------

  const cards = new Map();

  function renderUpstreams(upstreams) {
    const box = $("upstreams");
    $("upstreams-empty").hidden = upstreams.length > 0;
    const names = new Set(upstreams.map((up) => up.name));
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        card.remove();
        cards.delete(name);
      }
    }
    for (const up of upstreams) {
      let card = cards.get(up.name);
      if (!card) {
        card = $("upstream-card").content.firstElementChild.cloneNode(true);
        card.dataset.upstream = up.name;
        field(card, "name").textContent = up.name;
        box.appendChild(card);
        cards.set(up.name, card);
      }
      fillCard(card, up);
    }
    tick();
  }

  function addressesOf(up) {
    if (Array.isArray(up.addresses) && up.addresses.length) {
      return up.addresses.map((row) => {
        if (typeof row === "string") return row;
        let text = row.address;
        if (row.active) text += " (active)";
        if (row.healthy === false) text += " (unhealthy)";
        return text;
      }).join(", ");
    }
    return up.address || up.upstream || "–";
  }

  function stateOf(up) {
    // "waiting" is what the bridge calls a disconnected upstream between attempts.
    return up.state === "waiting" ? "disconnected" : (up.state || "unknown");
  }

  function fillCard(card, up) {
    const state = field(card, "state");
    state.textContent = stateOf(up) + (up.ready === false && up.state === "connected" ? " (not ready)" : "");
    state.dataset.state = stateOf(up);
    field(card, "address").textContent = addressesOf(up);
    const since = field(card, "since");
    if (up.connected_since) {
      since.dataset.since = up.connected_since;
    } else {
      delete since.dataset.since;
    }
    const retry = field(card, "retry");
    if (typeof up.retry_in === "number") {
      retry.dataset.retryIn = up.retry_in;
    } else {
      delete retry.dataset.retryIn;
    }
    field(card, "pending").textContent = typeof up.pending === "number" ? up.pending : "–";
    field(card, "congestion").textContent = congestion(up);
    field(card, "error").textContent = up.last_error || "–";
    field(card, "rate").textContent = rate(upstreamRate(up.name));
    fillSpool(card, up.spool);
    const body = field(card, "members");
    body.textContent = "";
    for (const member of up.members || []) {
      const row = el("tr");
      row.appendChild(el("td", "", member.name));
      const cell = el("td");
      const badge = el("span", "badge", member.state === "waiting" ? "disconnected" : member.state);
      badge.dataset.state = member.state === "waiting" ? "disconnected" : member.state;
      cell.appendChild(badge);
      row.appendChild(cell);
      row.appendChild(el("td", "", member.address || "–"));
      row.appendChild(el("td", "", member.pending));
      const retry = el("td", "countdown");
      if (typeof member.retry_in === "number") retry.dataset.retryIn = member.retry_in;
      row.appendChild(retry);
      body.appendChild(row);
    }
  }

  // What the spool's state means for POST /send (the badge, then why).
  const SPOOL_STATES = {
    accepting: ["accepting", "/send stores lines (202, spooled)"],
    full: ["full", "/send answers 429 spool_full"],
    failing: ["unavailable", "the disk refused the last write: /send answers 503 spool_unavailable"],
    opening: ["opening", "/send answers 503 until it is open"],
    closed: ["closed", "/send answers 503"],
  };

  function numberText(value) {
    return typeof value === "number" ? String(value) : "–";
  }

  // An upstream with a spool: what waits in it and what became of the rest.
  // Without one (spool null) the part stays hidden.
  function fillSpool(card, spool) {
    const box = field(card, "spool");
    box.hidden = !spool || typeof spool !== "object";
    if (box.hidden) return;
    const [word, meaning] = SPOOL_STATES[spool.state] || [spool.state || "unknown", ""];
    const state = field(card, "spool-state");
    state.textContent = word;
    state.dataset.state = "spool-" + word;
    state.title = spool.directory ? "spool_dir " + spool.directory : "";
    field(card, "spool-accepts").textContent = meaning;
    const records = spool.records;
    field(card, "spool-records").textContent = typeof records === "number"
      ? records + (records === 1 ? " record" : " records") : "–";
    const oldest = field(card, "spool-oldest");
    if (typeof spool.oldest_age === "number") {
      oldest.dataset.age = spool.oldest_age;
    } else {
      delete oldest.dataset.age;
    }
    field(card, "spool-bytes").textContent = typeof spool.bytes === "number"
      ? bytes(spool.bytes) + (typeof spool.max_bytes === "number" ? " of " + bytes(spool.max_bytes) : "")
      : "–";
    field(card, "spool-retired").textContent = numberText(spool.retired);
    field(card, "spool-redelivered").textContent = numberText(spool.redelivered);
    const setAside = field(card, "spool-set-aside");
    setAside.textContent = numberText(spool.set_aside);
    setAside.classList.toggle("bad", spool.set_aside > 0);
  }

  // Congested connections (over write_high_water: they take no work; with
  // all of them congested, /send answers 429) and the bytes not sent yet.
  function congestion(up) {
    const unsent = typeof up.unsent_bytes === "number" ? bytes(up.unsent_bytes) + " unsent" : "";
    if (typeof up.congested !== "number") return unsent || "–";
    const connections = (up.members || []).length || 1;
    if (!up.congested) return "none" + (unsent ? " (" + unsent + ")" : "");
    return up.congested + " of " + connections + " connection" + (connections > 1 ? "s" : "") +
      " congested" + (unsent ? ", " + unsent : "");
  }

  // The countdowns and "for ..." move between two polls.
  function tick() {
    const elapsed = fetchedAt ? (performance.now() - fetchedAt) / 1000 : 0;
    const countdown = (node, prefix) => {
      if (node.dataset.retryIn === undefined) {
        node.textContent = "–";
        return;
      }
      const left = Math.max(0, Number(node.dataset.retryIn) - elapsed);
      node.textContent = left >= 0.05 ? prefix + left.toFixed(1) + " s" : "now";
    };
    for (const card of cards.values()) {
      countdown(field(card, "retry"), "in ");
      for (const cell of card.querySelectorAll("td.countdown")) countdown(cell, "");
      const oldest = field(card, "spool-oldest");
      oldest.textContent = oldest.dataset.age === undefined
        ? "–" : duration(Number(oldest.dataset.age) + elapsed);
      const since = field(card, "since");
      if (since.dataset.since) {
        const start = new Date(since.dataset.since);
        since.textContent = clock(start) + " (for " + duration((Date.now() - start) / 1000) + ")";
      } else {
        since.textContent = "not connected";
      }
    }
  }
  setInterval(tick, TICK_MS);

  function renderTotals(doc) {
    const totals = $("totals");
    totals.textContent = "";
    const rows = [
      ["lines sent", total(doc, "lines_sent")],
      ["requests (/send, /request)", counter(doc, "work_requests")],
      ["of which errors", counter(doc, "work_errors")],
      ["connects", total(doc, "connects")],
      ["disconnects", total(doc, "disconnects")],
      ["desyncs", total(doc, "desyncs")],
      ["in flight", doc.inflight],
    ];
    for (const [name, value] of rows) {
      if (value === null || value === undefined) continue;
      totals.appendChild(el("dt", "", name));
      totals.appendChild(el("dd", "", value));
    }
  }

  // -- connection errors, as they change --------------------------------------

  const lastSeen = new Map();   // where -> message
  const errors = [];

  function noteErrors(upstreams) {
    const now = new Date();
    for (const up of upstreams) {
      const sources = [];
      for (const member of up.members || []) {
        sources.push(["member " + member.name, member.last_error]);
      }
      for (const row of Array.isArray(up.addresses) ? up.addresses : []) {
        if (row && typeof row === "object") sources.push([row.address, row.last_error]);
      }
      if (!sources.length) sources.push(["", up.last_error]);
      const noted = new Set();   // one line per message (an address and its member)
      for (const [where, message] of sources) {
        const key = up.name + "\u0000" + where;
        if (!message || lastSeen.get(key) === message) continue;
        lastSeen.set(key, message);
        if (noted.has(message)) continue;
        noted.add(message);
        errors.unshift({ time: now, upstream: up.name, where, message });
      }
    }
    errors.splice(MAX_ERRORS);
    const list = $("errors");
    list.textContent = "";
    for (const error of errors) {
      const item = el("li");
      item.appendChild(el("span", "time", clock(error.time)));
      item.appendChild(el("b", "", error.upstream + (error.where ? " · " + error.where : "")));
      item.appendChild(document.createTextNode(": " + error.message));
      list.appendChild(item);
    }
    $("errors-empty").hidden = errors.length > 0;
  }

  // -- rates and the chart -------------------------------------------------------

  // Samples of the counters, by the bridge's own clock (its uptime).
  const history = [];

  function recordHistory(doc, upstreams) {
    const t = typeof doc.uptime === "number" ? doc.uptime : performance.now() / 1000;
    const last = history[history.length - 1];
    if (last && t < last.t) history.length = 0;   // the bridge restarted
    if (last && t === last.t) return;
    const perUpstream = {};
    for (const up of upstreams) {
      perUpstream[up.name] = up.counters ? up.counters.lines_sent || 0 : 0;
    }
    history.push({
      t,
      lines: total(doc, "lines_sent") || 0,
      requests: counter(doc, "work_requests") || 0,
      errors: counter(doc, "work_errors") || 0,
      perUpstream,
    });
    while (history.length && history[0].t < t - HISTORY_SECONDS - 2) history.shift();
  }

  function rates() {
    const points = [];
    for (let i = 1; i < history.length; i++) {
      const a = history[i - 1], b = history[i];
      const dt = b.t - a.t;
      if (dt <= 0) continue;
      points.push({
        t: b.t,
        lines: Math.max(0, (b.lines - a.lines) / dt),
        requests: Math.max(0, (b.requests - a.requests) / dt),
        errors: Math.max(0, (b.errors - a.errors) / dt),
      });
    }
    return points;
  }

  function upstreamRate(name) {
    if (history.length < 2) return null;
    const a = history[history.length - 2], b = history[history.length - 1];
    const dt = b.t - a.t;
    if (dt <= 0 || !(name in a.perUpstream) || !(name in b.perUpstream)) return null;
    return Math.max(0, (b.perUpstream[name] - a.perUpstream[name]) / dt);
  }

  function niceMax(value) {
    if (value <= 1) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart() {
    const canvas = $("chart");
    const points = rates();
    const latest = points[points.length - 1];
    $("rate-lines").textContent = latest ? rate(latest.lines) : "–";
    $("rate-requests").textContent = latest ? rate(latest.requests) : "–";
    $("rate-errors").textContent = latest ? rate(latest.errors) : "–";

    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600, height = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim() || "#000";
    const left = 44, right = 8, top = 8, bottom = 20;
    const plotW = width - left - right, plotH = height - top - bottom;
    let max = 0;
    for (const p of points) max = Math.max(max, p.lines, p.requests, p.errors);
    max = niceMax(max);
    const now = latest ? latest.t : 0;
    // The window grows with what the page has seen: one minute at first,
    // then whole minutes up to five.
    const span = points.length ? now - points[0].t : 0;
    const windowSeconds = span <= 60 ? 60 : Math.min(HISTORY_SECONDS, Math.ceil(span / 60) * 60);
    const x = (t) => left + plotW * (1 - (now - t) / windowSeconds);
    const y = (v) => top + plotH * (1 - v / max);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");
    ctx.strokeStyle = color("--grid");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(width - right, yy);
      ctx.stroke();
      ctx.fillText(rate(v), left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = windowSeconds <= 60 ? 15 : 60;
    for (let back = 0; back <= windowSeconds; back += step) {
      const label = !back ? "now" : step < 60 ? "-" + back + "s" : "-" + back / 60 + "m";
      ctx.textAlign = !back ? "right" : back === windowSeconds ? "left" : "center";
      ctx.fillText(label, x(now - back), height - bottom + 4);
    }
    const series = [["lines", "--c-lines"], ["requests", "--c-requests"], ["errors", "--c-errors"]];
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    for (const [key, variable] of series) {
      ctx.strokeStyle = color(variable);
      ctx.beginPath();
      let started = false;
      for (const p of points) {
        if (now - p.t > windowSeconds) continue;
        if (started) ctx.lineTo(x(p.t), y(p[key]));
        else ctx.moveTo(x(p.t), y(p[key]));
        started = true;
      }
      ctx.stroke();
    }
  }
  window.addEventListener("resize", drawChart);

  // -- choosing an upstream (try it, events), when there are several ---------------

  function chooser(select, label, upstreams) {
    const names = upstreams.map((up) => up.name);
    label.hidden = names.length < 2;
    const current = Array.from(select.options).map((o) => o.value);
    if (current.join("\u0000") === names.join("\u0000")) return;
    const chosen = select.value;
    select.textContent = "";
    for (const name of names) select.appendChild(el("option", "", name)).value = name;
    if (names.includes(chosen)) select.value = chosen;
  }

  // The path of a route for an upstream: the first (or only, "default") one
  // at the bridge's own routes, the others under /u/NAME/.
  function routeFor(upstream, route) {
    if (!upstream || upstream === "default") return "/" + route;
    return "/u/" + encodeURIComponent(upstream) + "/" + route;
  }

  // -- /events, read with fetch() ------------------------------------------------

  const events = (function () {
    let controller = null;
    let lastId = null;
    let paused = false;
    let received = 0;
    let held = [];            // arrived while paused (newest MAX_EVENTS)
    let skipped = 0;          // arrived while paused, beyond what is held
    let retryMs = 1000;
    let timer = null;
    let source = "default";

    function state(text) {
      $("events-state").textContent = text;
    }

    function show(event) {
      const list = $("events");
      const item = el("li", event.kind);
      item.appendChild(el("span", "time", clock(event.time)));
      item.appendChild(el("span", "kind", event.kind));
      item.appendChild(document.createTextNode(event.data));
      item.title = event.id ? "id " + event.id : "";
      list.insertBefore(item, list.firstChild);
      while (list.childElementCount > MAX_EVENTS) list.removeChild(list.lastChild);
    }

    function deliver(event) {
      received += 1;
      if (paused) {
        held.push(event);
        if (held.length > MAX_EVENTS) {
          skipped += held.length - MAX_EVENTS;
          held.splice(0, held.length - MAX_EVENTS);
        }
      } else {
        show(event);
      }
      count();
    }

    function count() {
      let text = received + " received";
      if (paused) text += ", " + held.length + " held while paused" + (skipped ? " (" + skipped + " not kept)" : "");
      $("events-count").textContent = text;
    }

    // Server-Sent Events, as the HTML standard parses them.
    function parser() {
      let buffer = "";
      let data = [], kind = "", id = null;
      function line(text) {
        if (text === "") {
          if (data.length) {
            if (id !== null) lastId = id;
            deliver({ kind: kind || "message", id, data: data.join("\n"), time: new Date() });
          }
          data = [];
          kind = "";
          id = null;
          return;
        }
        if (text[0] === ":") return;   // a comment (": keep-alive")
        const colon = text.indexOf(":");
        const name = colon < 0 ? text : text.slice(0, colon);
        let value = colon < 0 ? "" : text.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (name === "data") data.push(value);
        else if (name === "event") kind = value;
        else if (name === "id" && !value.includes("\u0000")) id = value;
      }
      return function feed(chunk) {
        buffer += chunk;
        let start = 0;
        for (;;) {
          const match = /\r\n|\r|\n/g;
          match.lastIndex = start;
          const found = match.exec(buffer);
          if (!found) break;
          // A CR at the very end may be the first half of a CRLF still to come.
          if (found[0] === "\r" && found.index === buffer.length - 1) break;
          line(buffer.slice(start, found.index));
          start = found.index + found[0].length;
        }
        buffer = buffer.slice(start);
      };
    }

    async function run(mine) {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId) headers["Last-Event-ID"] = lastId;
      try {
        const response = await fetch(routeFor(source, "events"), {
          headers, cache: "no-store", signal: mine.signal,
        });
        if (response.status === 401) {
          state("(token needed)");
          unauthorized();
          return;   // restarted once a token is given
        }
        if (response.status === 403) {
          state("(this token does not open the events of " + source + ")");
          return;   // restarted by another token or another upstream
        }
        if (!response.ok || !response.body) {
          throw new Error("GET /events answered " + response.status);
        }
        state("(live)");
        retryMs = 1000;
        const feed = parser();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(value);
        }
        state("(stream ended; reconnecting)");
      } catch (error) {
        if (mine.signal.aborted) return;
        state("(disconnected; reconnecting)");
      }
      if (mine.signal.aborted) return;
      timer = setTimeout(() => start(), retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    }

    function start() {
      stop();
      state("(connecting)");
      controller = new AbortController();
      run(controller);
    }

    function stop() {
      clearTimeout(timer);
      if (controller) controller.abort();
      controller = null;
    }

    $("events-pause").addEventListener("click", () => {
      paused = !paused;
      $("events-pause").textContent = paused ? "resume" : "pause";
      if (!paused) {
        for (const event of held) show(event);
        if (skipped) {
          // On top, where it is seen: the oldest ones are the ones missing.
          show({ kind: "gap", id: null, data: skipped + " earlier events arrived while paused and were not kept", time: new Date() });
        }
        held = [];
        skipped = 0;
      }
      count();
    });

    $("events-clear").addEventListener("click", () => {
      $("events").textContent = "";
      held = [];
      skipped = 0;
      count();
    });

    $("events-upstream").addEventListener("change", () => {
      source = $("events-upstream").value;
      lastId = null;
      start();
    });

    return { restart: () => { start(); } };
  })();

  // -- try it ------------------------------------------------------------------

  function chosenRoute() {
    return document.querySelector('#try-form input[name="route"]:checked').value;
  }

  function syncTryForm() {
    $("try-confirm-label").hidden = chosenRoute() !== "send";
  }
  for (const radio of document.querySelectorAll('#try-form input[name="route"]')) {
    radio.addEventListener("change", syncTryForm);
  }
  syncTryForm();

  $("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const route = chosenRoute();
    const params = new URLSearchParams();
    if (route === "send" && $("try-confirm").checked) params.set("confirm", "true");
    const timeout = $("try-timeout").value.trim();
    if (timeout) params.set("timeout", timeout);
    const query = params.toString();
    const upstream = $("try-upstream-label").hidden ? "default" : $("try-upstream").value;
    const target = routeFor(upstream, route) + (query ? "?" + query : "");
    const button = $("try-submit");
    button.disabled = true;
    $("try-result").hidden = false;
    $("try-target").textContent = "POST " + target;
    $("try-status").textContent = "…";
    delete $("try-status").dataset.class;
    $("try-answer").textContent = "";
    try {
      const response = await fetch(target, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "text/plain; charset=utf-8" }),
        body: $("try-body").value,
        cache: "no-store",
      });
      const text = await response.text();
      $("try-status").textContent = response.status + (response.statusText ? " " + response.statusText : "");
      $("try-status").dataset.class = String(response.status)[0];
      $("try-answer").textContent = text;
      if (response.status === 401) unauthorized();
    } catch (error) {
      $("try-status").textContent = "no answer";
      $("try-answer").textContent = String(error);
    } finally {
      button.disabled = false;
    }
  });

  // -- start -----------------------------------------------------------------------

  pollNow();
  events.restart();
})();
