// The dashboard: reads the server's Server-Sent Events (a full `state` on connect, then a `tick` every
// second) and draws both pools side by side with inline SVG. No framework, no network beyond this server.

const SVG_NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 150;
const PAD = { left: 42, right: 36, top: 12, bottom: 18 };
const PLOT_W = W - PAD.left - PAD.right;
const PLOT_H = H - PAD.top - PAD.bottom;
const MIN_SPAN_MS = 30_000;

const POOLS = [
  {
    key: 'steadfast',
    title: 'steadfast Pool',
    note: 'reads marked idempotent',
    evictionsLabel: 'evictions',
  },
  {
    key: 'pg',
    title: 'pg.Pool',
    note: "plain pg.Pool with an 'error' listener",
    evictionsLabel: 'clients removed',
  },
];

const COLORS = {
  inUse: '#3b6fd8',
  idle: '#8fb3f0',
  connecting: '#e0a526',
  waiting: '#d64545',
  ok: '#1f9d55',
  failed: '#d64545',
  p50: '#3b6fd8',
  p95: '#e0a526',
  p99: '#d64545',
};

const MARK_COLORS = {
  restart: 'rgb(214 69 69 / 14%)',
  stop: 'rgb(214 69 69 / 20%)',
  kill: 'rgb(214 69 69 / 60%)',
  freeze: 'rgb(59 111 216 / 16%)',
};

const ACTIONS = {
  restart: { url: '/chaos/restart', label: 'Restart database' },
  stop: { url: '/chaos/stop?seconds=5', label: 'Stop database 5 s' },
  kill: { url: '/chaos/kill-connections', label: 'Kill connections' },
  freeze: { url: '/chaos/freeze?seconds=5', label: 'Freeze network 5 s' },
};

/** The state as last received: { historyS, status, pools: { key: { series, totals } }, events, marks }. */
let state = null;
const views = {};

function el(tag, attributes, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function legend(container, entries) {
  container.replaceChildren();
  for (const [name, color] of entries) {
    const swatch = document.createElement('i');
    swatch.style.background = color;
    container.append(swatch, document.createTextNode(name));
  }
}

function buildPools() {
  const template = document.getElementById('pool-template');
  const main = document.getElementById('pools');
  for (const pool of POOLS) {
    const section = template.content.firstElementChild.cloneNode(true);
    section.dataset.pool = pool.key;
    section.dataset.testid = `pool-${pool.key}`;
    section.querySelector('.name').textContent = pool.title;
    section.querySelector('.note').textContent = pool.note;
    section.querySelector('.evictions-label').textContent = pool.evictionsLabel;
    const stats = {};
    for (const node of section.querySelectorAll('[data-stat]')) {
      node.dataset.testid = `${pool.key}-${node.dataset.stat}`;
      stats[node.dataset.stat] = node;
    }
    const charts = {};
    for (const node of section.querySelectorAll('[data-chart]')) {
      node.dataset.testid = `${pool.key}-chart-${node.dataset.chart}`;
      charts[node.dataset.chart] = node;
    }
    legend(section.querySelector('[data-legend="connections"]'), [
      ['in use', COLORS.inUse],
      ['idle', COLORS.idle],
      ['connecting', COLORS.connecting],
      ['waiting callers (right axis)', COLORS.waiting],
    ]);
    legend(section.querySelector('[data-legend="requests"]'), [
      ['succeeded', COLORS.ok],
      ['failed', COLORS.failed],
    ]);
    legend(section.querySelector('[data-legend="latency"]'), [
      ['p50', COLORS.p50],
      ['p95', COLORS.p95],
      ['p99', COLORS.p99],
    ]);
    main.append(section);
    views[pool.key] = { section, stats, charts };
  }
}

// ---------------------------------------------------------------------------------------------------
// Charts

function xOf(t, now, spanMs) {
  return PAD.left + ((t - (now - spanMs)) / spanMs) * PLOT_W;
}

function linearScale(max) {
  const top = niceCeiling(max);
  return {
    y: (v) => PAD.top + PLOT_H - (Math.min(v, top) / top) * PLOT_H,
    ticks: [0, top / 2, top],
  };
}

function logScale(maxMs) {
  const lo = 0.1;
  const hi = 10 ** Math.max(1, Math.ceil(Math.log10(Math.max(maxMs, 10))));
  const span = Math.log10(hi) - Math.log10(lo);
  const ticks = [];
  for (let v = lo; v <= hi * 1.001; v *= 10) ticks.push(Number(v.toPrecision(1)));
  return {
    y: (v) => PAD.top + PLOT_H - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * PLOT_H,
    ticks,
  };
}

function niceCeiling(v) {
  if (v <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= v) return step * magnitude;
  }
  return 10 * magnitude;
}

function formatTick(v) {
  if (v >= 1000) return `${v / 1000}k`;
  return String(v);
}

function frame(svg, scale, now, spanMs) {
  svg.replaceChildren();
  for (const tick of scale.ticks) {
    const y = scale.y(tick);
    svg.append(el('line', { class: 'gridline', x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    svg.append(
      el('text', { class: 'axis', x: PAD.left - 4, y: y + 3, 'text-anchor': 'end' }, formatTick(tick)),
    );
  }
  const spanS = Math.floor(spanMs / 1000);
  const step = spanS <= 60 ? 10 : 30;
  for (let secondsAgo = 0; secondsAgo <= spanS; secondsAgo += step) {
    const x = xOf(now - secondsAgo * 1000, now, spanMs);
    const label = secondsAgo === 0 ? 'now' : `-${secondsAgo}s`;
    const anchor = secondsAgo === 0 ? 'end' : x - PAD.left < 15 ? 'start' : 'middle';
    svg.append(el('text', { class: 'axis', x, y: H - 4, 'text-anchor': anchor }, label));
  }
}

/** Tick labels on the right, for a second series on its own scale. */
function rightAxis(svg, scale, color) {
  for (const tick of scale.ticks) {
    svg.append(
      el(
        'text',
        { class: 'axis', x: W - PAD.right + 4, y: scale.y(tick) + 3, 'text-anchor': 'start', fill: color },
        formatTick(tick),
      ),
    );
  }
}

function drawMarks(svg, marks, now, spanMs) {
  // Labels of actions close together would print over each other: only the first of them is labelled.
  let labelledUpTo = Number.NEGATIVE_INFINITY;
  for (const mark of marks) {
    const end = mark.end ?? now;
    if (end < now - spanMs) continue;
    const x1 = Math.max(PAD.left, xOf(mark.start, now, spanMs));
    const x2 = Math.max(x1 + 2, xOf(end, now, spanMs));
    svg.append(
      el('rect', {
        x: x1,
        y: PAD.top,
        width: x2 - x1,
        height: PLOT_H,
        fill: MARK_COLORS[mark.kind] ?? 'rgb(0 0 0 / 10%)',
        'data-mark': mark.kind,
      }),
    );
    if (x1 >= labelledUpTo) {
      svg.append(el('text', { class: 'mark-label', x: x1 + 2, y: PAD.top - 2 }, mark.label));
      labelledUpTo = x1 + 6 * mark.label.length + 8;
    }
  }
}

/** A polyline through the points, broken where a value is missing. */
function line(svg, series, value, scale, now, spanMs, color, width) {
  let points = [];
  const flush = () => {
    if (points.length > 0) {
      svg.append(
        el('polyline', { points: points.join(' '), fill: 'none', stroke: color, 'stroke-width': width }),
      );
    }
    points = [];
  };
  for (const sample of series) {
    const v = value(sample);
    if (v === null || v === undefined) {
      flush();
      continue;
    }
    points.push(`${xOf(sample.t, now, spanMs).toFixed(1)},${scale.y(v).toFixed(1)}`);
  }
  flush();
}

/** Stacked areas: layers[i] is drawn on top of layers[0..i-1]. */
function stacked(svg, series, layers, scale, now, spanMs) {
  if (series.length === 0) return;
  let below = series.map(() => 0);
  for (const [value, color] of layers) {
    const above = series.map((s, i) => below[i] + value(s));
    const top = series.map((s, i) => `${xOf(s.t, now, spanMs).toFixed(1)},${scale.y(above[i]).toFixed(1)}`);
    const bottom = series
      .map((s, i) => `${xOf(s.t, now, spanMs).toFixed(1)},${scale.y(below[i]).toFixed(1)}`)
      .reverse();
    svg.append(el('polygon', { points: top.concat(bottom).join(' '), fill: color, 'fill-opacity': 0.85 }));
    below = above;
  }
}

function render() {
  if (!state) return;
  const now = Math.max(Date.now(), ...POOLS.map((p) => lastT(state.pools[p.key].series)));
  const all = POOLS.map((p) => state.pools[p.key].series);
  // The time axis grows with the data up to the history kept, so a young demo does not draw a sliver.
  const oldest = Math.min(now, ...all.map((series) => (series.length > 0 ? series[0].t : now)));
  const spanMs = Math.min(state.historyS * 1000, Math.max(MIN_SPAN_MS, now - oldest + 1000));
  // Both columns share each chart's scale, so their heights compare directly.
  const connMax = Math.max(
    state.status.poolSize ?? 1,
    ...all.flat().map((s) => s.idle + s.inUse + s.connecting),
  );
  // Callers waiting can outnumber connections a hundredfold during an outage: they get their own scale,
  // so the connections stay readable.
  const waitMax = Math.max(state.status.poolSize ?? 1, ...all.flat().map((s) => s.waiting));
  const reqMax = Math.max(state.status.rate ?? 1, ...all.flat().map((s) => Math.max(s.ok, s.failed)));
  const latMax = Math.max(10, ...all.flat().map((s) => s.max ?? 0));

  for (const pool of POOLS) {
    const view = views[pool.key];
    const { series, totals } = state.pools[pool.key];

    const connections = view.charts.connections;
    const cScale = linearScale(connMax);
    frame(connections, cScale, now, spanMs);
    drawMarks(connections, state.marks, now, spanMs);
    stacked(
      connections,
      series,
      [
        [(s) => s.inUse, COLORS.inUse],
        [(s) => s.idle, COLORS.idle],
        [(s) => s.connecting, COLORS.connecting],
      ],
      cScale,
      now,
      spanMs,
    );
    const wScale = linearScale(waitMax);
    rightAxis(connections, wScale, COLORS.waiting);
    line(connections, series, (s) => s.waiting, wScale, now, spanMs, COLORS.waiting, 2);

    const requests = view.charts.requests;
    const rScale = linearScale(reqMax);
    frame(requests, rScale, now, spanMs);
    drawMarks(requests, state.marks, now, spanMs);
    line(requests, series, (s) => s.ok, rScale, now, spanMs, COLORS.ok, 2);
    line(requests, series, (s) => s.failed, rScale, now, spanMs, COLORS.failed, 2);

    const latency = view.charts.latency;
    const lScale = logScale(latMax);
    frame(latency, lScale, now, spanMs);
    drawMarks(latency, state.marks, now, spanMs);
    line(latency, series, (s) => s.p50, lScale, now, spanMs, COLORS.p50, 1.5);
    line(latency, series, (s) => s.p95, lScale, now, spanMs, COLORS.p95, 1.5);
    line(latency, series, (s) => s.p99, lScale, now, spanMs, COLORS.p99, 1.5);

    for (const chart of Object.values(view.charts)) chart.dataset.points = String(series.length);

    const last = series[series.length - 1];
    view.stats.okRate.textContent = last ? String(last.ok) : '–';
    view.stats.failed.textContent = String(totals.failed);
    view.stats.failed.parentElement.classList.toggle('nonzero', totals.failed > 0);
    view.stats.retries.textContent = pool.key === 'pg' ? 'none' : String(totals.retries);
    view.stats.evictions.textContent = String(totals.evictions);
    view.stats.breaker.textContent = last?.breaker ?? 'none';
    view.stats.breaker.parentElement.classList.toggle(
      'nonzero',
      Boolean(last?.breaker && last.breaker !== 'closed'),
    );
    view.stats.inFlight.textContent = last ? String(last.inFlight) : '–';
    view.stats.p99.textContent = last && last.p99 !== null ? formatMs(last.p99) : '–';
    view.stats.ok.textContent = String(totals.ok);
    view.section.classList.toggle('failing', Boolean(last && last.failed > 0));
  }
  renderStatus();
}

function lastT(series) {
  return series.length > 0 ? series[series.length - 1].t : 0;
}

function formatMs(ms) {
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 10) return `${Math.round(ms)} ms`;
  return `${ms.toFixed(1)} ms`;
}

function renderStatus() {
  const { status } = state;
  const db = document.getElementById('db-state');
  const countdown = (at) => (at ? ` (back in ${Math.max(0, Math.ceil((at - Date.now()) / 1000))} s)` : '');
  db.textContent = status.database + (status.database === 'down' ? countdown(status.databaseBackAt) : '');
  db.className = status.database === 'up' ? '' : status.database === 'down' ? 'down' : 'busy';
  const net = document.getElementById('net-state');
  net.textContent = status.network === 'frozen' ? `frozen${countdown(status.networkBackAt)}` : 'flowing';
  net.className = status.network === 'frozen' ? 'down' : '';
  document.getElementById('meta').textContent =
    `PostgreSQL ${status.version} · load ${status.rate}/s per pool · max ${status.poolSize} connections each`;
}

// ---------------------------------------------------------------------------------------------------
// Event log

const MAX_LOG = 200;

function timeOf(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function appendEvents(events) {
  const list = document.getElementById('events');
  for (const entry of events) {
    const item = document.createElement('li');
    item.dataset.source = entry.source;
    item.dataset.level = entry.level;
    const time = document.createElement('time');
    time.textContent = timeOf(entry.t);
    const source = document.createElement('span');
    source.className = 'source';
    source.textContent = entry.source === 'pg' ? 'pg.Pool' : entry.source;
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = entry.text;
    item.append(time, source, text);
    list.prepend(item);
  }
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------------------
// Feed and controls

function connect() {
  const feed = document.getElementById('feed');
  const source = new EventSource('/api/events');
  source.addEventListener('state', (event) => {
    state = JSON.parse(event.data);
    document.getElementById('events').replaceChildren();
    appendEvents(state.events);
    feed.textContent = 'live';
    feed.className = '';
    render();
  });
  source.addEventListener('tick', (event) => {
    if (!state) return;
    const tick = JSON.parse(event.data);
    for (const pool of POOLS) {
      const view = state.pools[pool.key];
      view.series.push(tick.samples[pool.key]);
      if (view.series.length > state.historyS) view.series.splice(0, view.series.length - state.historyS);
      view.totals = tick.totals[pool.key];
    }
    state.marks = tick.marks;
    state.status = tick.status;
    appendEvents(tick.events);
    render();
  });
  source.addEventListener('error', () => {
    // EventSource reconnects by itself; the server sends the whole state again then.
    feed.textContent = 'reconnecting…';
    feed.className = 'offline';
  });
}

function localLog(level, text) {
  appendEvents([{ t: Date.now(), source: 'demo', level, text }]);
}

function wireButtons() {
  for (const button of document.querySelectorAll('button[data-action]')) {
    const action = ACTIONS[button.dataset.action];
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const response = await fetch(action.url, { method: 'POST' });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          localLog('bad', `${action.label}: ${body.message ?? response.statusText}`);
        }
      } catch (error) {
        localLog('bad', `${action.label}: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    });
  }
}

buildPools();
wireButtons();
connect();
// Moves the charts along between ticks too, e.g. while the feed reconnects.
setInterval(() => {
  if (state) renderStatus();
}, 1000);
