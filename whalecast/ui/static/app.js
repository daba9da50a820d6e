// whalecast ui: the page. Live from /events (server-sent events); no framework, no build.
// Every string that came from Redis reaches the DOM through textContent, never as HTML.
"use strict";

(function () {
  const ROW_PX = 28;
  const OVERSCAN = 8;
  const rows = new Map(); // tag -> row (as the server sends it)
  const stats = { latencies: [], received: [], events: 0, rowsApplied: 0, chartBars: 0, chartDraws: 0, connected: false };
  window.whalecastStats = stats; // read by the browser test (publish -> shown latency)
  let order = [];
  let orderDirty = true;
  let paintQueued = false;
  let sortKey = "name";
  let sortDir = 1;
  let filterText = "";
  let selected = null;
  let status = { replicas: [] };
  let pendingLatency = [];
  const flashTags = new Set();

  const $ = (id) => document.getElementById(id);
  const grid = $("grid");
  const spacer = $("grid-spacer");
  const rowsBox = $("grid-rows");

  // --- formatting ---------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  function utc(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  }
  function ago(ms) {
    if (!ms) return "–";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }
  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: Math.min(digits, 2) });
  }
  function price(v) {
    if (v === null || v === undefined) return "–";
    const digits = v >= 1000 ? 2 : v >= 1 ? 4 : 6;
    return num(v, digits);
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- the series grid (virtual: only the rows in view exist in the DOM) ---------------------
  const SORTS = {
    name: (r) => `${r.exchange}:${r.symbol}`.toLowerCase(),
    timeframe: (r) => r.timeframe,
    bar: (r) => r.bar_open_ms,
    close: (r) => (r.close === null ? -Infinity : r.close),
    p_up: (r) => (r.p_up === null ? -Infinity : r.p_up),
    volume: (r) => (r.volume === null ? -Infinity : r.volume),
    published: (r) => r.published_ms,
  };
  function computeOrder() {
    const key = SORTS[sortKey];
    const needle = filterText;
    const list = [];
    for (const r of rows.values()) {
      if (!needle || r.tag.toLowerCase().includes(needle)) list.push(r);
    }
    list.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x < y) return -sortDir;
      if (x > y) return sortDir;
      return a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0;
    });
    order = list;
    orderDirty = false;
    $("series-count").textContent = needle ? `${list.length} of ${rows.size}` : `${rows.size}`;
  }
  function makeRowNode() {
    const node = el("div", "row");
    node.setAttribute("role", "row");
    const cells = {
      name: el("span", "name"), tf: el("span", "tf"), bar: el("span", "bar"), close: el("span", "num"),
      pup: el("span", "pup"), volume: el("span", "num"), age: el("span", "age"),
    };
    const gauge = el("span", "gauge");
    const fill = el("i");
    gauge.appendChild(fill);
    const pupText = el("b");
    cells.pup.append(pupText, gauge);
    for (const c of Object.values(cells)) node.appendChild(c);
    node._cells = cells;
    node._fill = fill;
    node._pupText = pupText;
    node.addEventListener("click", () => select(node._tag));
    return node;
  }
  const pool = [];
  function paintGrid() {
    if (orderDirty) computeOrder();
    spacer.style.height = `${order.length * ROW_PX}px`;
    const first = Math.max(0, Math.floor(grid.scrollTop / ROW_PX) - OVERSCAN);
    const count = Math.ceil(grid.clientHeight / ROW_PX) + 2 * OVERSCAN;
    const last = Math.min(order.length, first + count);
    rowsBox.style.transform = `translateY(${first * ROW_PX}px)`;
    while (pool.length < last - first) { const n = makeRowNode(); pool.push(n); rowsBox.appendChild(n); }
    for (let i = 0; i < pool.length; i++) {
      const node = pool[i];
      const r = order[first + i];
      if (!r) { node.style.display = "none"; node._tag = null; continue; }
      node.style.display = "";
      fillRow(node, r);
    }
  }
  function fillRow(node, r) {
    const c = node._cells;
    const changedRow = node._tag !== r.tag;
    node._tag = r.tag;
    node.classList.toggle("sel", r.tag === selected);
    const name = `${r.exchange}:${r.symbol}`;
    if (c.name.textContent !== name) { c.name.textContent = name; c.name.title = r.tag; }
    c.tf.textContent = r.timeframe;
    c.bar.textContent = utc(r.bar_open_ms);
    c.close.textContent = price(r.close);
    const p = r.p_up;
    node._pupText.textContent = p === null ? "–" : p.toFixed(3);
    node._pupText.className = p === null ? "" : p >= 0.5 ? "up" : "down";
    const f = node._fill;
    if (p === null) { f.style.width = "0"; } else {
      const w = Math.min(50, Math.abs(p - 0.5) * 100);
      f.style.left = p >= 0.5 ? "50%" : `${50 - w}%`;
      f.style.width = `${w}%`;
      f.style.background = p >= 0.5 ? "var(--up)" : "var(--down)";
    }
    c.volume.textContent = num(r.volume, 1);
    c.age.textContent = ago(r.published_ms);
    if (flashTags.has(r.tag) && !changedRow) {
      c.pup.classList.remove("flash"); void c.pup.offsetWidth; c.pup.classList.add("flash");
    }
  }
  function schedulePaint() {
    if (paintQueued) return;
    paintQueued = true;
    requestAnimationFrame(() => {
      paintQueued = false;
      paintGrid();
      flashTags.clear();
      const batch = pendingLatency;
      pendingLatency = [];
      if (batch.length) setTimeout(() => recordShown(batch), 0); // after this frame's paint
    });
  }
  function recordShown(batch) {
    const now = Date.now();
    for (const published of batch) stats.latencies.push(now - published);
    if (stats.latencies.length > 50000) stats.latencies.splice(0, stats.latencies.length - 50000);
  }

  // --- data in ---------------------------------------------------------------------------------
  function applyRows(list, live) {
    for (const r of list) {
      const old = rows.get(r.tag);
      if (live && (!old || r.published_ms > old.published_ms)) {
        pendingLatency.push(r.published_ms);
        flashTags.add(r.tag);
      }
      rows.set(r.tag, r);
    }
    stats.rowsApplied += list.length;
    orderDirty = true;
    schedulePaint();
    updateSummary();
    if (selected && list.some((r) => r.tag === selected)) loadDetailSoon();
    if (!selected && rows.size) select(firstTag());
  }
  function firstTag() {
    if (orderDirty) computeOrder();
    return order.length ? order[0].tag : rows.keys().next().value;
  }
  function updateSummary() {
    let newest = 0;
    for (const r of rows.values()) if (r.bar_open_ms > newest) newest = r.bar_open_ms;
    const reps = status.replicas.length;
    $("summary").textContent = `${rows.size} series · newest bar ${utc(newest)} · ${reps} daemon replica${reps === 1 ? "" : "s"}`;
  }
  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("open", () => setConn(true));
    source.addEventListener("error", () => setConn(false));
    source.addEventListener("snapshot", (e) => {
      const data = JSON.parse(e.data);
      stats.events++;
      rows.clear();
      applyRows(data.rows, false);
      setStatus(data.status);
    });
    source.addEventListener("rows", (e) => {
      const now = Date.now();
      const list = JSON.parse(e.data);
      stats.events++;
      for (const r of list) stats.received.push(now - r.published_ms);
      if (stats.received.length > 50000) stats.received.splice(0, stats.received.length - 50000);
      applyRows(list, true);
    });
    source.addEventListener("status", (e) => { stats.events++; setStatus(JSON.parse(e.data)); });
  }
  function setConn(on) {
    stats.connected = on;
    const pill = $("conn");
    pill.textContent = on ? "live" : "reconnecting";
    pill.className = `pill ${on ? "on" : "off"}`;
  }

  // --- models and feeds ------------------------------------------------------------------------
  function cellRow(values) {
    const tr = el("tr");
    for (const v of values) {
      if (v instanceof Node) { const td = el("td"); td.appendChild(v); tr.appendChild(td); }
      else tr.appendChild(el("td", "", v === null || v === undefined ? "–" : String(v)));
    }
    return tr;
  }
  function replicaLabel(rep) {
    const span = el("span", "", `${rep.replica} (shard ${rep.shard[0]}/${rep.shard[1]})`);
    if (Date.now() - rep.updated_ms > 15000) { span.className = "stale"; span.textContent += " · stale"; }
    return span;
  }
  function heldout(h) {
    if (!h || h.value === null || h.value === undefined) return "no report";
    return `${h.metric} ${num(h.value, 4)} vs ${h.baseline} ${num(h.baseline_value, 4)}`;
  }
  function live(m) {
    if (m.target === "p_up_next_bar") return m.live_scored ? `accuracy ${num(m.live_accuracy, 3)} (n=${m.live_scored})` : "not scored yet";
    return m.live_scored ? `log-volume MAE ${num(m.live_mae, 3)} (n=${m.live_scored})` : "not scored yet";
  }
  function reloads(m) {
    const span = el("span", m.reload_failing ? "stale" : "", `${m.reloads_refused}${m.reload_failing ? " · failing" : ""}`);
    if (m.last_refusal) span.title = `${m.last_refusal.version}: ${m.last_refusal.reason}`;
    return span;
  }
  function setStatus(s) {
    status = s || { replicas: [] };
    const models = $("models").tBodies[0];
    const feeds = $("feeds").tBodies[0];
    const modelRows = [], feedRows = [];
    for (const rep of status.replicas) {
      for (const m of rep.models || []) {
        modelRows.push(cellRow([m.model, m.version, m.backend, utc(Date.parse(m.trained_at)), heldout(m.heldout), live(m), reloads(m), replicaLabel(rep)]));
      }
      for (const f of rep.feeds || []) {
        const dot = el("span");
        dot.append(el("i", `dot ${f.connected ? "on" : "off"}`), document.createTextNode(f.connected ? "yes" : "no"));
        feedRows.push(cellRow([f.exchange, f.feed, dot, ago(f.last_message_ms), num(f.messages, 0), f.reconnects, f.bars_missing, replicaLabel(rep)]));
      }
    }
    if (!modelRows.length) modelRows.push(cellRow(["no daemon has reported yet", "", "", "", "", "", "", ""]));
    if (!feedRows.length) feedRows.push(cellRow(["no daemon has reported yet", "", "", "", "", "", "", ""]));
    models.replaceChildren(...modelRows);
    feeds.replaceChildren(...feedRows);
    updateSummary();
  }

  // --- one series: the chart ---------------------------------------------------------------------
  let chart = null, candleSeries, pupSeries, volSeries, predSeries;
  function makeChart() {
    const LC = window.LightweightCharts;
    chart = LC.createChart($("chart"), {
      autoSize: true,
      layout: { background: { color: "#161b22" }, textColor: "#c9d1d9", fontSize: 11, attributionLogo: false,
        panes: { separatorColor: "#30363d", enableResize: false } },
      grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#30363d", rightOffset: 2 },
      rightPriceScale: { borderColor: "#30363d" },
      crosshair: { mode: LC.CrosshairMode.Normal },
    });
    candleSeries = chart.addSeries(LC.CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    pupSeries = chart.addSeries(LC.BaselineSeries, {
      baseValue: { type: "price", price: 0.5 }, lineWidth: 2,
      topLineColor: "#26a69a", topFillColor1: "rgba(38,166,154,0.35)", topFillColor2: "rgba(38,166,154,0.05)",
      bottomLineColor: "#ef5350", bottomFillColor1: "rgba(239,83,80,0.05)", bottomFillColor2: "rgba(239,83,80,0.35)",
      priceFormat: { type: "price", precision: 3, minMove: 0.001 }, title: "p_up",
    }, 1);
    volSeries = chart.addSeries(LC.HistogramSeries, { color: "#6e7681", priceFormat: { type: "volume" }, title: "volume" }, 2);
    predSeries = chart.addSeries(LC.LineSeries, { color: "#f0883e", lineWidth: 2, priceFormat: { type: "volume" }, title: "predicted" }, 2);
    const panes = chart.panes();
    if (panes.length === 3) { panes[0].setStretchFactor(2.2); panes[1].setStretchFactor(1); panes[2].setStretchFactor(1); }
  }
  const TF_MS = { m: 60000, h: 3600000, d: 86400000, w: 604800000 };
  function barMs(tf) { const n = parseInt(tf, 10); return n * (TF_MS[tf.slice(-1)] || 3600000); }
  function points(list, step) {
    return list.filter((p) => isFinite(p.value)).map((p) => ({ time: (p.bar_open_ms + step) / 1000, value: p.value }));
  }
  function drawDetail(d) {
    if (!window.LightweightCharts) return;
    if (!chart) makeChart();
    const r = d.row;
    const step = barMs(r.timeframe);
    const bars = d.bars.filter((b) => isFinite(b.close));
    candleSeries.setData(bars.map((b) => ({ time: b.open_ms / 1000, open: b.open, high: b.high, low: b.low, close: b.close })));
    volSeries.setData(bars.map((b) => ({ time: b.open_ms / 1000, value: b.volume, color: b.close >= b.open ? "rgba(38,166,154,0.45)" : "rgba(239,83,80,0.45)" })));
    const pup = points(d.predictions.p_up_next_bar || [], step);
    const vol = points(d.predictions.next_bar_volume || [], step);
    pupSeries.setData(pup);
    predSeries.setData(vol);
    chart.timeScale().fitContent();
    stats.chartBars = bars.length;
    stats.chartDraws++;
    $("detail-title").textContent = `${r.exchange}:${r.symbol} · ${r.timeframe}`;
    $("detail-meta").textContent = `${bars.length} bars stored · newest ${utc(r.bar_open_ms)} · p_up next ${r.p_up === null ? "–" : r.p_up.toFixed(3)}`;
    $("detail-score").textContent = scoreText(bars, pup, vol);
    $("detail-horizons").textContent = horizonText(d.predictions);
  }
  // the newest forecast of each horizon output ("volume_next_bars|6|0.9", "p_up_in_bars|6")
  function horizonText(predictions) {
    const parts = [];
    for (const [key, list] of Object.entries(predictions).sort()) {
      const newest = list[list.length - 1];
      if (!key.includes("|") || !newest) continue;
      const [target, h, q] = key.split("|");
      if (target === "p_up_in_bars") parts.push(`p_up in ${h} bars ${num(newest.value, 3)}`);
      else parts.push(`volume next ${h} bars${q ? ` p${Math.round(100 * Number(q))}` : ""} ${num(newest.value, 2)}`);
    }
    return parts.length ? `horizon forecasts: ${parts.join(" · ")}` : "";
  }
  function scoreText(bars, pup, vol) {
    const byTime = new Map(bars.map((b, i) => [b.open_ms / 1000, i]));
    let hits = 0, n = 0, err = 0, m = 0;
    for (const p of pup) {
      const i = byTime.get(p.time);
      if (i === undefined || i === 0) continue;
      n++; if ((p.value >= 0.5) === (bars[i].close > bars[i - 1].close)) hits++;
    }
    for (const p of vol) {
      const i = byTime.get(p.time);
      if (i === undefined) continue;
      m++; err += Math.abs(Math.log1p(Math.max(p.value, 0)) - Math.log1p(Math.max(bars[i].volume, 0)));
    }
    const a = n ? `direction right on ${hits} of ${n} bars shown (${(100 * hits / n).toFixed(0)}%)` : "no scored direction on the bars shown yet";
    const b = m ? ` · volume log-MAE ${(err / m).toFixed(3)} over ${m} bars` : "";
    return a + b;
  }
  let detailTimer = null, detailBusy = false;
  function loadDetailSoon() {
    if (detailTimer) return;
    detailTimer = setTimeout(() => { detailTimer = null; loadDetail(); }, 250);
  }
  async function loadDetail() {
    if (!selected || detailBusy) return;
    detailBusy = true;
    try {
      const res = await fetch(`/api/series?tag=${encodeURIComponent(selected)}`);
      if (res.ok) drawDetail(await res.json());
    } finally { detailBusy = false; }
  }
  function select(tag) {
    if (!tag) return;
    selected = tag;
    schedulePaint();
    loadDetail();
  }

  // --- controls -------------------------------------------------------------------------------
  $("filter").addEventListener("input", (e) => {
    filterText = e.target.value.trim().toLowerCase();
    orderDirty = true;
    grid.scrollTop = 0;
    schedulePaint();
  });
  for (const b of document.querySelectorAll("#grid-head button")) {
    b.addEventListener("click", () => {
      const key = b.dataset.key;
      sortDir = key === sortKey ? -sortDir : (key === "name" || key === "timeframe" ? 1 : -1);
      sortKey = key;
      for (const o of document.querySelectorAll("#grid-head button")) o.removeAttribute("aria-sort");
      b.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      orderDirty = true;
      schedulePaint();
    });
  }
  document.querySelector('#grid-head button[data-key="name"]').setAttribute("aria-sort", "ascending");
  grid.addEventListener("scroll", schedulePaint, { passive: true });
  setInterval(() => { schedulePaint(); if (status.replicas.length) setStatus(status); }, 1000); // the "ago" columns
  connect();
})();
