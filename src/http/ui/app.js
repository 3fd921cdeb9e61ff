// Operator page of the LwM2M gateway: device list, device detail with commands, live events.
// Talks only to the gateway's HTTP API (same origin). Every string from the network reaches the
// DOM through textContent / text nodes, never through innerHTML.
'use strict';

(() => {
  const API = '/api/v5/gateways/lwm2m';
  const PAGE_LIMIT = 500;     // devices per list request
  const MAX_DEVICES = 3000;   // rows kept in the list; past it the filter asks the server
  const MAX_EVENTS = 200;     // rows kept in the event panel
  const TOKEN = new URLSearchParams(location.search).get('token') || '';

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- helpers

  /** el('td', {class, testid, dataset, onclick, ...attributes}, ...children); strings become text nodes. */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'testid') e.dataset.testid = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) {
      if (kid !== null && kid !== undefined && kid !== false) e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }
  const button = (label, testid, onclick, extra = {}) =>
    el('button', { type: 'button', class: 'btn small', testid, onclick, ...extra }, label);

  const fmtValue = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const fmtTime = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '');

  /** 42 -> "42 s", 300 -> "5 min", ... (the largest unit that still reads well). */
  function fmtDuration(s) {
    if (s === undefined || s === null || s === '') return '';
    s = Number(s);
    for (const [limit, div, unit] of [[120, 1, 's'], [7200, 60, 'min'], [172800, 3600, 'h'], [Infinity, 86400, 'd']]) {
      if (Math.abs(s) < limit) return `${Math.round(s / div)} ${unit}`;
    }
    return '';
  }
  function fmtAgo(ms) {
    if (!ms) return '';
    const s = (Date.now() - Number(ms)) / 1000;
    return s < 5 ? 'just now' : `${fmtDuration(s)} ago`;
  }
  function fmtAddr(d) {
    if (!d.ip_address) return '';
    const host = d.ip_address.includes(':') ? `[${d.ip_address}]` : d.ip_address;
    return d.port ? `${host}:${d.port}` : host;
  }

  /** "/3/0/" or "3/0" or "</3/0>" -> "/3/0" */
  function normPath(p) {
    p = String(p).replace(/^<|>$/g, '').replace(/\/+$/, '');
    return p.startsWith('/') ? p : '/' + p;
  }
  const pathIds = (p) => normPath(p).split('/').slice(1).map(Number);
  const under = (p, base) => p === base || p.startsWith(base + '/');
  function cmpPath(a, b) {
    const x = pathIds(a), y = pathIds(b);
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      if ((x[i] ?? -1) !== (y[i] ?? -1)) return (x[i] ?? -1) - (y[i] ?? -1);
    }
    return 0;
  }
  /** The live element of the detail with this data-testid and data-path (quoted for CSS). */
  const findIn = (testid, path) =>
    document.querySelector(`#device-detail [data-testid="${testid}"][data-path="${CSS.escape(path)}"]`);

  const showBanner = (text) => Object.assign($('banner'), { textContent: text, hidden: !text });

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
    toString() { return `${this.status ? this.status + ' ' : ''}${this.code}: ${this.message}`; }
  }

  /** fetch + JSON + the spec's error body {code, message}; the bearer token goes on every request. */
  async function api(path, { method = 'GET', body, timeoutMs = 30000 } = {}) {
    const headers = { Accept: 'application/json' };
    if (TOKEN) headers.Authorization = 'Bearer ' + TOKEN;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    let res, text;
    try {
      res = await fetch(path, { method, headers, cache: 'no-store', signal: ctl.signal,
        body: body === undefined ? undefined : JSON.stringify(body) });
      text = await res.text();
    } catch (e) {
      throw new ApiError(0, 'NETWORK', e.name === 'AbortError' ? 'no answer from the gateway' : 'gateway unreachable');
    } finally {
      clearTimeout(timer);
    }
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: the text is the message */ }
    if (!res.ok) {
      if (res.status === 401) {
        showBanner(TOKEN ? 'Unauthorized (401): the gateway refused the token given in this page\'s URL.'
          : 'Unauthorized (401): this gateway needs an API token. Open the page as /?token=YOUR_TOKEN.');
      }
      throw new ApiError(res.status, (json && json.code) || 'HTTP', (json && json.message) || text.slice(0, 200) || res.statusText);
    }
    return json;
  }

  const clientUrl = (ep) => `${API}/clients/${enc(ep)}`;

  // Object definitions do not change while the page is open: one request per object id.
  const defCache = new Map();
  function objectDef(id) {
    if (!defCache.has(id)) {
      defCache.set(id, api(`${API}/objects/${id}`).catch((e) => {
        if (e.status !== 404) defCache.delete(id); // ask again later unless the object is unknown
        return null;
      }));
    }
    return defCache.get(id);
  }

  // ---------------------------------------------------------------- device list

  const devices = new Map();  // endpoint -> device (API shape)
  const rows = new Map();     // endpoint -> <tr>
  let sortedEps = [];         // endpoints in list (= DOM) order
  let truncated = false;      // the server has more devices than the list holds
  let loadedPrefix = '';      // endpoint_prefix of the last list request ('' = all)
  let loadLog = null;         // list events that arrive while the list loads, replayed after
  let selectedEp = null;
  const dirtyEps = new Set(); // rows to redraw on the next animation frame
  let frameQueued = false;

  function scheduleFrame() {
    if (!frameQueued) { frameQueued = true; requestAnimationFrame(flushFrame); }
  }
  const filterText = () => $('device-filter').value.trim();

  async function loadDevices() {
    // Filter on the server only once the whole list did not fit (or a filtered list is held).
    const prefix = truncated || loadedPrefix ? filterText() : '';
    const count = $('device-count');
    count.dataset.state = 'loading';
    const list = [];
    let more = false;
    loadLog = [];
    try {
      for (let page = 1; ; page++) {
        const r = await api(`${API}/clients?page=${page}&limit=${PAGE_LIMIT}` + (prefix ? `&endpoint_prefix=${enc(prefix)}` : ''));
        const data = (r && r.data) || [];
        list.push(...data);
        more = !!(r && r.meta && r.meta.hasnext);
        if (!more || !data.length || list.length >= MAX_DEVICES) break;
      }
    } catch (e) {
      loadLog = null;
      count.dataset.state = 'error';
      count.textContent = 'list failed';
      if (e.status !== 401) showBanner('Could not load the device list: ' + e);
      return;
    }
    truncated = more || list.length > MAX_DEVICES;
    loadedPrefix = prefix;
    devices.clear();
    for (const d of list.slice(0, MAX_DEVICES)) devices.set(d.endpoint_name, d);
    const log = loadLog;
    loadLog = null;
    for (const [type, ep, data] of log) listEvent(type, ep, data);
    rebuildList();
    count.dataset.state = 'loaded';
  }

  function rowCells(d) {
    return [
      el('td', { class: 'ep' }, d.endpoint_name),
      el('td', {}, d.proto_ver || ''),
      el('td', {}, d.binding || '', d.queue_mode ? el('span', { class: 'tag' }, 'queue') : null),
      el('td', {}, el('span', { class: d.online ? 'dot on' : 'dot off' }), d.online ? 'online' : 'asleep'),
      el('td', { class: 'mono' }, fmtAddr(d)),
      el('td', { class: 'num' }, fmtDuration(d.lifetime)),
      el('td', { class: 'ago', title: fmtTime(d.last_seen), dataset: { ts: d.last_seen || '' } }, fmtAgo(d.last_seen)),
    ];
  }

  function makeRow(d) {
    const ep = d.endpoint_name;
    const tr = el('tr', {
      testid: 'device-row', dataset: { endpoint: ep }, tabindex: 0, 'aria-selected': String(ep === selectedEp),
      onclick: () => selectDevice(ep),
      onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); selectDevice(ep); } },
    }, ...rowCells(d));
    tr.hidden = !ep.startsWith(filterText());
    rows.set(ep, tr);
    return tr;
  }

  function rebuildList() {
    rows.clear();
    dirtyEps.clear();
    sortedEps = [...devices.keys()].sort();
    $('device-list').replaceChildren(...sortedEps.map((ep) => makeRow(devices.get(ep))));
    updateCount();
  }

  /** Redraws the rows of changed devices, inserting or removing them in sorted position. */
  function flushDevices() {
    for (const ep of dirtyEps) {
      const d = devices.get(ep);
      const old = rows.get(ep);
      if (!d) {
        if (old) { old.remove(); rows.delete(ep); sortedEps.splice(sortedEps.indexOf(ep), 1); }
      } else if (old) { // in place: replacing the row under the pointer could swallow a click
        rowCells(d).forEach((fresh, i) => {
          old.cells[i].replaceChildren(...fresh.childNodes);
          old.cells[i].title = fresh.title;
          Object.assign(old.cells[i].dataset, fresh.dataset);
        });
      } else {
        let lo = 0, hi = sortedEps.length; // binary search; the server sorts by endpoint name too
        while (lo < hi) { const mid = (lo + hi) >> 1; if (sortedEps[mid] < ep) lo = mid + 1; else hi = mid; }
        sortedEps.splice(lo, 0, ep);
        $('device-list').insertBefore(makeRow(d), rows.get(sortedEps[lo + 1]) || null);
      }
    }
    if (dirtyEps.size) updateCount();
    dirtyEps.clear();
  }

  function updateCount() {
    const f = filterText();
    let shown = 0, online = 0;
    for (const [ep, d] of devices) if (ep.startsWith(f)) { shown++; if (d.online) online++; }
    const total = devices.size + (truncated ? '+' : '');
    $('device-count').textContent = (f ? `${shown} of ${total}` : total) +
      ` device${devices.size === 1 ? '' : 's'} · ${online} online` +
      (truncated ? ` · list capped at ${MAX_DEVICES}: filter to narrow` : '');
    $('device-empty').hidden = shown > 0;
  }

  const markDirty = (ep) => { dirtyEps.add(ep); scheduleFrame(); };

  /** register / update / deregister on the list. Register events carry the Register parameters
   *  (ep, lt, lwm2m, b, objectList), not the API's device shape: merge them, then ask for the rest. */
  function listEvent(type, ep, data) {
    if (loadLog) { loadLog.push([type, ep, data]); return; }
    if (type === 'deregister') { if (devices.delete(ep)) markDirty(ep); return; }
    const known = devices.get(ep);
    if (!known && !ep.startsWith(loadedPrefix)) return; // the list holds another prefix
    if (!known && devices.size >= MAX_DEVICES) { truncated = true; updateCount(); return; }
    const d = { endpoint_name: ep, clientid: ep, ...known, online: true, last_seen: Date.now() };
    if (data.lwm2m) d.proto_ver = String(data.lwm2m);
    if (data.lt !== undefined) d.lifetime = Number(data.lt);
    if (data.b) d.binding = String(data.b);
    d.queue_mode = /Q/.test(d.binding || '') || 'Q' in data;
    if (Array.isArray(data.objectList)) d.object_list = data.objectList;
    devices.set(ep, d);
    markDirty(ep);
    // The address and the gateway's own times are not in the event. Updates are frequent in a
    // big fleet, so only new registrations (and the selected device) are fetched again.
    if (type === 'register' || ep === selectedEp) refetch(ep);
  }

  // At most 4 single-device requests in flight and 200 waiting: a burst of registrations must
  // not turn into as many parallel requests (past that, the event data is what the list shows).
  const refetchQueue = new Set();
  let refetching = 0;
  function refetch(ep) {
    if (ep && refetchQueue.size < 200) refetchQueue.add(ep);
    while (refetching < 4 && refetchQueue.size) {
      const next = refetchQueue.values().next().value;
      refetchQueue.delete(next);
      refetching++;
      api(clientUrl(next)).then((d) => {
        if (d && devices.has(next)) { devices.set(next, d); markDirty(next); }
        if (d && detail && detail.ep === next) { detail.device = d; renderFacts(); }
      }).catch(() => { /* the event data stays */ }).finally(() => { refetching--; refetch(); });
    }
  }

  // ---------------------------------------------------------------- device detail

  // The selected device; values, results and discover answers survive a redraw of the detail.
  let detail = null; // {ep, device, defs: Map<objId, def|null>, paths, values, status, observed, discovered}
  let detailSeq = 0;

  async function selectDevice(ep, keep = false) {
    const seq = ++detailSeq;
    if (selectedEp !== ep) {
      for (const [e, tr] of rows) tr.setAttribute('aria-selected', String(e === ep));
      history.replaceState(null, '', location.pathname + location.search + '#ep=' + enc(ep));
    }
    const prev = keep && detail && detail.ep === ep ? detail : null;
    if (!prev) detail = null; // events must not land in the previous device's state
    selectedEp = ep;
    applyEventFilter();
    const box = $('device-detail');
    box.dataset.endpoint = ep;
    box.dataset.state = 'loading';
    if (!prev) box.replaceChildren(el('p', { class: 'empty' }, `Loading ${ep}…`));
    let device, defs;
    try {
      device = await api(clientUrl(ep));
      const ids = [...new Set((device.object_list || []).map((p) => pathIds(p)[0]))];
      defs = new Map(await Promise.all(ids.map(async (id) => [id, await objectDef(id)])));
    } catch (e) {
      if (seq !== detailSeq) return;
      box.dataset.state = 'error';
      box.replaceChildren(el('p', { class: 'empty err' },
        e.status === 404 ? `${ep} is not registered (any more).` : `Could not load ${ep}: ${e}`));
      return;
    }
    if (seq !== detailSeq) return;
    detail = {
      ep, device, defs,
      paths: (device.object_list || []).map(normPath).sort(cmpPath),
      values: prev ? prev.values : new Map(),         // path -> value
      status: prev ? prev.status : new Map(),         // "path|testid" -> {cls, text, title}
      discovered: prev ? prev.discovered : new Map(), // path -> links
      observed: new Set((device.observations || []).map((o) => normPath(o.path))),
    };
    renderDetail();
    box.dataset.state = 'ready';
  }

  function renderDetail() {
    const timeout = el('input', { id: 'cmd-timeout', type: 'number', min: 1, max: 300, class: 'timeout',
      value: $('cmd-timeout') ? $('cmd-timeout').value : 10, testid: 'command-timeout', 'aria-label': 'Command timeout in seconds' });
    const head = el('div', { class: 'detail-head' },
      el('h2', { class: 'ep' }, detail.ep), el('span', { id: 'detail-badges', class: 'badges' }),
      el('span', { class: 'spacer' }),
      el('label', { class: 'muted', title: 'How long the gateway waits for the device (queue mode: until it wakes)' },
        'timeout ', timeout, ' s'),
      button('Refresh', 'detail-refresh', () => selectDevice(detail.ep, true)));
    const objects = el('div', { class: 'objects' }, ...detail.paths.map(objectCard));
    if (!detail.paths.length) objects.append(el('p', { class: 'empty' }, 'The device registered no objects.'));
    $('device-detail').replaceChildren(head,
      el('div', { id: 'detail-gone', class: 'banner warn', testid: 'detail-gone', hidden: true }),
      el('dl', { id: 'detail-facts', class: 'facts' }), objects);
    renderFacts();
  }

  function renderFacts() {
    const d = detail.device;
    if (!$('detail-badges')) return;
    // replaceChildren would write a null out as the text "null": only the badges that apply.
    $('detail-badges').replaceChildren(...[
      el('span', { class: d.online ? 'badge on' : 'badge off' }, d.online ? 'online' : 'asleep'),
      d.proto_ver ? el('span', { class: 'badge' }, 'LwM2M ' + d.proto_ver) : null,
      d.binding ? el('span', { class: 'badge' }, 'binding ' + d.binding) : null,
      d.queue_mode ? el('span', { class: 'badge' }, 'queue mode') : null].filter(Boolean));
    const facts = [['Address', fmtAddr(d)], ['Lifetime', fmtDuration(d.lifetime)], ['Security', d.security],
      ['Registration', d.registration_id], ['Last seen', fmtTime(d.last_seen)], ['Expires', fmtTime(d.expires_at)],
      ['Queued commands', d.queued_commands], ['Observations', [...detail.observed].sort(cmpPath).join(', ') || 'none']];
    $('detail-facts').replaceChildren(...facts.map(([k, v]) => el('div', {},
      el('dt', {}, k), el('dd', {}, v === undefined || v === null || v === '' ? '—' : String(v)))));
  }

  // Resource table: [header, class of the header, class of the cells].
  const COLUMNS = [['Resource', 'c-name', 'name'], ['ID', 'c-id num', 'num mono'], ['Type', 'c-type', ''],
    ['Ops', 'c-ops', 'mono'], ['Units', 'c-units', ''], ['Value', 'c-value', 'value-cell'],
    ['Result', 'c-result', ''], ['Actions', 'c-actions', 'actions-cell']];

  /** One card per registered object instance ("/3/0") or object without instances ("/3"). */
  function objectCard(path) {
    const [objId, inst] = pathIds(path);
    const def = detail.defs.get(objId);
    const status = el('span', { class: 'status', testid: 'instance-status', dataset: { path } });
    const discover = el('div', { class: 'discover mono', testid: 'discover-result', dataset: { path } });
    const tbody = el('tbody', {});
    // Rows: every resource of the definition, then any read value it does not list.
    const known = new Set();
    const addRow = (rp, r) => { known.add(rp); tbody.append(resourceRow(rp, r)); };
    if (def && inst !== undefined) for (const r of def.resources || []) addRow(`${path}/${r.id}`, r);
    for (const p of [...detail.values.keys()].sort(cmpPath)) {
      const ids = pathIds(p);
      const rp = '/' + ids.slice(0, 3).join('/');
      if (p.startsWith(path + '/') && ids.length >= 3 && !known.has(rp)) {
        addRow(rp, def && (def.resources || []).find((r) => r.id === ids[2]));
      }
    }
    if (!tbody.children.length) {
      tbody.append(el('tr', {}, el('td', { colspan: COLUMNS.length, class: 'muted' },
        def ? 'Read the object to list its instances.' : 'No definition: Read shows what the device has.')));
    }
    const card = el('article', { class: 'card', testid: 'object-card', dataset: { path, object: objId } },
      el('header', { class: 'card-head' },
        el('h3', {}, def ? def.name : `Object ${objId}`, ' ', el('span', { class: 'muted mono' }, path)),
        def ? null : el('span', { class: 'tag' }, 'no definition'),
        def && def.multiple ? el('span', { class: 'tag' }, 'multiple') : null,
        el('span', { class: 'spacer' }), status,
        button('Read', 'instance-read-button', (e) => runCommand('read', path, e.currentTarget, status),
          { title: `Read the whole ${inst === undefined ? 'object' : 'instance'}` }),
        observeButton(path, 'instance-observe-button', status),
        button('Discover', 'discover-button', (e) => runCommand('discover', path, e.currentTarget, status))),
      discover,
      el('div', { class: 'table-wrap' }, el('table', { class: 'grid resources' },
        el('thead', {}, el('tr', {}, ...COLUMNS.map(([t, c]) => el('th', { class: c }, t)))), tbody)));
    restoreStatus(status, path);
    showDiscover(path, discover);
    return card;
  }

  function resourceRow(rp, r) {
    const ops = r ? r.operations || '' : 'R'; // no definition: at least try to read it
    const type = r ? r.type || '' : '';
    const value = el('span', { class: 'value', testid: 'resource-value', dataset: { path: rp } });
    const status = el('span', { class: 'status', testid: 'resource-status', dataset: { path: rp } });
    const actions = el('div', { class: 'actions' });
    if (ops.includes('R')) {
      actions.append(button('Read', 'read-button', (e) => runCommand('read', rp, e.currentTarget, status)),
        observeButton(rp, 'observe-button', status));
    }
    if (ops.includes('W')) actions.append(writeForm(rp, type, !!(r && r.multiple), status));
    if (ops.includes('E')) {
      actions.append(button('Execute', 'execute-button', (e) => runCommand('execute', rp, e.currentTarget, status, { args: '' })));
    }
    const cells = [r ? r.name : el('span', { class: 'muted' }, 'unknown resource'), pathIds(rp)[2],
      [type, r && r.multiple ? el('span', { class: 'tag' }, 'multi') : null], ops || '—', r ? r.units || '' : '',
      value, status, actions];
    // data-label names the cell where a narrow window stacks the table (style.css).
    const tr = el('tr', { testid: 'resource-row', dataset: { path: rp } }, ...cells.map((c, i) =>
      el('td', { class: COLUMNS[i][2], dataset: { label: COLUMNS[i][0] } }, ...[c].flat())));
    showValue(rp, value);
    restoreStatus(status, rp);
    return tr;
  }

  function observeButton(path, testid, status) {
    const b = button('', testid, (e) => runCommand(detail.observed.has(path) ? 'cancel-observe' : 'observe',
      path, e.currentTarget, status), { dataset: { observePath: path } });
    labelObserve(b);
    return b;
  }
  function labelObserve(b) {
    const on = detail.observed.has(b.dataset.observePath);
    b.textContent = on ? 'Cancel observe' : 'Observe';
    b.classList.toggle('active', on);
  }
  function refreshObserved() {
    document.querySelectorAll('#device-detail [data-observe-path]').forEach(labelObserve);
    renderFacts();
  }

  const PLACEHOLDERS = { integer: 'integer', 'unsigned integer': 'integer ≥ 0', float: 'number',
    time: 'unix s or ISO date', opaque: 'base64', objlnk: 'obj:inst', corelnk: '</1/0>' };

  /** Inline write input; its kind and checks follow the resource type of the definition. */
  function writeForm(rp, type, multiple, status) {
    const t = type.toLowerCase();
    const input = t === 'boolean'
      ? el('select', {}, el('option', { value: 'true' }, 'true'), el('option', { value: 'false' }, 'false'))
      : el('input', { type: 'text', spellcheck: 'false', placeholder: PLACEHOLDERS[t] || 'value' });
    input.classList.add('write-input');
    input.dataset.testid = 'write-input';
    input.setAttribute('aria-label', `New value for ${rp}`);
    // A multi-instance resource is written one instance at a time (path /o/i/r/ri).
    const ri = multiple ? el('input', { type: 'text', class: 'ri-input', value: '0', testid: 'write-instance',
      title: 'resource instance', 'aria-label': 'resource instance' }) : null;
    const submit = el('button', { type: 'submit', class: 'btn small', testid: 'write-button' }, 'Write');
    return el('form', { class: 'write', testid: 'write-form', onsubmit: (e) => {
      e.preventDefault();
      let value;
      try { value = parseInput(t, input.value); } catch (err) { setStatus(status, 'err', err.message); return; }
      runCommand('write', ri ? `${rp}/${ri.value.trim()}` : rp, submit, status, { type: type || 'String', value });
    } }, ri, input, submit);
  }

  /** The text of a write input as the MQTT API's JSON value for type `t` (lower case). */
  function parseInput(t, text) {
    const s = text.trim();
    const fail = (why) => { throw new Error(why); };
    switch (t) {
      case 'integer': case 'unsigned integer':
        if (!/^-?\d+$/.test(s)) fail('not an integer');
        if (t !== 'integer' && s.startsWith('-')) fail('must be ≥ 0');
        // Past 2^53 a numeric string, which the API accepts, keeps every digit.
        return Number.isSafeInteger(Number(s)) ? Number(s) : s;
      case 'float': return s !== '' && Number.isFinite(Number(s)) ? Number(s) : fail('not a number');
      case 'boolean': return s === 'true';
      case 'time': {
        if (/^-?\d+$/.test(s)) return Number(s);
        const ms = Date.parse(s);
        return Number.isNaN(ms) ? fail('not a time (unix seconds or ISO date)') : Math.floor(ms / 1000);
      }
      case 'opaque': return /^[A-Za-z0-9+/]*={0,2}$/.test(s) && s.length % 4 === 0 ? s : fail('not base64');
      case 'objlnk': return /^\d+:\d+$/.test(s) ? s : fail('Objlnk is obj:inst, e.g. 3:0');
      default: return text;
    }
  }

  // ---------------------------------------------------------------- commands and values

  /** Shows a result; it is kept in `detail.status` so that a redraw shows it again. */
  function setStatus(elm, cls, text, title = text) {
    const { testid, path } = elm.dataset;
    if (detail) detail.status.set(`${path}|${testid}`, { cls, text, title });
    // The detail may have been redrawn while a command ran: paint the element shown now.
    Object.assign(findIn(testid, path) || elm, { className: 'status ' + cls, textContent: text, title });
  }
  function restoreStatus(elm, path) {
    const s = detail.status.get(`${path}|${elm.dataset.testid}`);
    if (s) Object.assign(elm, { className: 'status ' + s.cls, textContent: s.text, title: s.title });
  }

  /** POSTs one MQTT command and shows its code (or the HTTP error) in `status`. */
  async function runCommand(msgType, path, btn, status, extra = {}) {
    const ep = detail.ep;
    const timeout = Math.max(1, Math.min(300, Number($('cmd-timeout').value) || 10));
    setStatus(status, 'pending', '…', `${msgType} ${path}: waiting for the device`);
    btn.disabled = true;
    try {
      const r = await api(`${clientUrl(ep)}/commands?timeout=${timeout}`, {
        method: 'POST', body: { msgType, data: { path, ...extra } }, timeoutMs: (timeout + 5) * 1000 });
      const d = (r && r.data) || {};
      // No code: an answer such as coap_timeout or coap_reset, named by its msgType.
      const code = d.code ? `${d.code}${d.codeMsg ? ' ' + d.codeMsg : ''}` : String((r && r.msgType) || 'no code');
      const ok = /^2\./.test(String(d.code || ''));
      if (!detail || detail.ep !== ep) return;
      setStatus(status, ok ? 'ok' : 'err', code, d.reason ? `${code}: ${d.reason}` : code);
      if (ok) applyAnswer(msgType, d);
    } catch (e) {
      if (!detail || detail.ep !== ep) return;
      setStatus(status, 'err', e.status ? `${e.status} ${e.code}` : e.code, String(e));
      if (e.status === 404 && e.code === 'NOT_FOUND') markGone('not registered');
    } finally {
      btn.disabled = false;
    }
  }

  /** Applies a successful answer (from our POST or from the event stream) to the detail. */
  function applyAnswer(msgType, d) {
    const reqPath = typeof d.reqPath === 'string' ? normPath(d.reqPath) : null;
    if (msgType === 'discover') {
      if (reqPath) detail.discovered.set(reqPath, (d.content || []).map(String).join(', '));
      const box = reqPath && findIn('discover-result', reqPath);
      if (box) showDiscover(reqPath, box);
      return;
    }
    if (reqPath && ['observe', 'notify', 'cancel-observe'].includes(msgType)) {
      detail.observed[msgType === 'cancel-observe' ? 'delete' : 'add'](reqPath);
      refreshObserved();
    }
    if (!Array.isArray(d.content) || msgType === 'write' || msgType === 'execute') return;
    // An answer for /3/0 replaces everything under it: resource instances may have gone.
    if (reqPath) for (const p of [...detail.values.keys()]) if (under(p, reqPath)) detail.values.delete(p);
    let redraw = false;
    for (const c of d.content) {
      if (!c || typeof c !== 'object' || c.path === undefined) continue;
      const p = normPath(c.path);
      detail.values.set(p, c.value);
      const rp = '/' + pathIds(p).slice(0, 3).join('/');
      const cell = findIn('resource-value', rp);
      if (cell) showValue(rp, cell, true);
      else if (detail.paths.some((cp) => p.startsWith(cp + '/'))) redraw = true; // needs a new row
    }
    if (reqPath) { // cells whose values vanished from the answer
      for (const cell of document.querySelectorAll('#device-detail [data-testid="resource-value"]')) {
        if (under(cell.dataset.path, reqPath)) showValue(cell.dataset.path, cell);
      }
    }
    if (redraw) renderDetail();
  }

  /** Fills a value cell: the value itself, or one "ri: value" line per resource instance. */
  function showValue(rp, cell, flash = false) {
    const v = detail.values;
    if (v.has(rp)) {
      cell.textContent = fmtValue(v.get(rp));
    } else {
      const inst = [...v.keys()].filter((p) => p.startsWith(rp + '/')).sort(cmpPath);
      cell.replaceChildren(...inst.map((p) => el('div', { class: 'ri' }, `${pathIds(p)[3]}: ${fmtValue(v.get(p))}`)));
    }
    if (flash) { // restart the highlight animation
      cell.classList.remove('flash');
      void cell.offsetWidth;
      cell.classList.add('flash');
    }
  }

  function showDiscover(path, box) {
    const links = detail.discovered.get(path);
    box.hidden = !links;
    box.textContent = links ? 'Discover: ' + links : '';
  }

  function markGone(reason) {
    const g = $('detail-gone');
    if (g) { g.textContent = `${detail.ep} is gone: ${reason}.`; g.hidden = false; }
  }

  // ---------------------------------------------------------------- live events

  let stream = null;
  let streamWasOpen = false;

  function setStreamState(state, text) {
    $('stream-status').dataset.state = state;
    $('stream-status').textContent = text;
  }

  function connectEvents() {
    if (stream) stream.close();
    setStreamState('connecting', 'connecting…');
    stream = new EventSource('/events' + (TOKEN ? '?token=' + enc(TOKEN) : ''));
    stream.onopen = () => {
      setStreamState('live', 'live');
      // After a reconnect events may have been missed: reload what they would have changed.
      if (streamWasOpen) {
        loadDevices();
        if (selectedEp) selectDevice(selectedEp, true);
      }
      streamWasOpen = true;
    };
    stream.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      if (ev && typeof ev === 'object') onEvent(ev);
    };
    stream.onerror = () => {
      if (stream.readyState === EventSource.CONNECTING) { setStreamState('retry', 'reconnecting…'); return; }
      // Closed for good, after an HTTP error such as 401: find out which, then try again later.
      setStreamState('down', 'disconnected');
      api(`${API}/clients?limit=1`).catch((e) => { if (e.status === 401) setStreamState('down', 'unauthorized'); });
      setTimeout(connectEvents, 10000);
    };
  }

  function onEvent(ev) {
    const ep = String(ev.endpoint || '');
    const msg = ev.message && typeof ev.message === 'object' ? ev.message : {};
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    const type = String(ev.msgType || msg.msgType || '');
    queueEventRow(ep, type, ev, data);
    if (['register', 'update', 'deregister'].includes(type)) {
      listEvent(type, ep, data);
    } else if (devices.has(ep) && (type === 'notify' || type === 'send')) {
      devices.get(ep).last_seen = Date.now();
      markDirty(ep);
    }
    if (ep !== selectedEp || !detail) return;
    if (type === 'register') {
      selectDevice(ep, true); // a new registration: maybe new objects, and its observations ended
    } else if (type === 'update') {
      const list = Array.isArray(data.objectList) ? data.objectList.map(normPath).sort(cmpPath) : null;
      if (list && list.join() !== detail.paths.join()) selectDevice(ep, true);
    } else if (type === 'deregister') {
      markGone(data.reason || 'deregistered');
    } else if (type === 'send' || /^2\./.test(String(data.code || ''))) {
      applyAnswer(type, data);
    } else if (type === 'notify' && typeof data.reqPath === 'string') {
      detail.observed.delete(normPath(data.reqPath)); // an error notification ends the observation
      refreshObserved();
    }
  }

  function summarize(type, d) {
    if (type === 'register' || type === 'update') {
      return [d.lwm2m && 'LwM2M ' + d.lwm2m, d.b && 'b=' + d.b, d.lt !== undefined && 'lt=' + d.lt,
        Array.isArray(d.objectList) && d.objectList.length + ' objects'].filter(Boolean).join(' ');
    }
    if (type === 'deregister') return String(d.reason || '');
    const parts = [Array.isArray(d.reqPath) ? d.reqPath.join(',') : d.reqPath || d.path];
    if (d.code) parts.push(d.code + (d.codeMsg ? ' ' + d.codeMsg : ''));
    const c = Array.isArray(d.content) ? d.content : [];
    if (c.length === 1 && c[0] && typeof c[0] === 'object') parts.push('= ' + fmtValue(c[0].value));
    else if (c.length) parts.push(`${c.length} ${typeof c[0] === 'string' ? 'links' : 'values'}`);
    if (d.reason) parts.push(d.reason);
    return parts.filter(Boolean).map(fmtValue).join(' ');
  }

  let pendingEvents = []; // drawn on the next animation frame
  const eventRows = [];   // {ep, li}, oldest first

  function queueEventRow(ep, type, ev, data) {
    pendingEvents.push({ ep, type, ev, data, at: new Date() });
    if (pendingEvents.length > 2 * MAX_EVENTS) pendingEvents = pendingEvents.slice(-MAX_EVENTS);
    scheduleFrame();
  }

  function eventRow({ ep, type, ev, data, at }) {
    const pre = el('pre', { class: 'json' });
    const det = el('details', {
      // The JSON is only formatted when someone opens the row.
      ontoggle: () => { if (det.open && !pre.textContent) pre.textContent = JSON.stringify(ev, null, 2); },
    }, el('summary', {},
      el('time', { class: 'mono muted', datetime: at.toISOString() }, at.toTimeString().slice(0, 8)),
      el('span', { class: 'ev-ep' }, ep),
      el('span', { class: 'mt mt-' + type.replace(/[^a-z-]/g, '') }, type),
      el('span', { class: 'ev-sum' }, summarize(type, data))), pre);
    return el('li', { testid: 'event-row', dataset: { endpoint: ep, msgtype: type }, class: 'event' }, det);
  }

  function flushEvents() {
    if (!pendingEvents.length) return;
    const only = $('event-filter').checked;
    for (const p of pendingEvents.splice(0)) {
      const li = eventRow(p);
      li.hidden = only && p.ep !== selectedEp;
      $('event-list').prepend(li);
      eventRows.push({ ep: p.ep, li });
    }
    for (const r of eventRows.splice(0, Math.max(0, eventRows.length - MAX_EVENTS))) r.li.remove();
    $('event-empty').hidden = eventRows.some((r) => !r.li.hidden);
  }

  function applyEventFilter() {
    const only = $('event-filter').checked;
    for (const r of eventRows) r.li.hidden = only && r.ep !== selectedEp;
    $('event-empty').hidden = eventRows.some((r) => !r.li.hidden);
    $('event-empty').textContent = only && !selectedEp ? 'Select a device.' : 'Waiting for events…';
  }

  // ---------------------------------------------------------------- start

  function flushFrame() {
    frameQueued = false;
    flushDevices();
    flushEvents();
  }

  let filterTimer = null;
  $('device-filter').addEventListener('input', () => {
    const f = filterText();
    for (const [ep, tr] of rows) tr.hidden = !ep.startsWith(f);
    updateCount();
    // The list does not hold every device (capped, or loaded for another prefix): ask the server.
    if (truncated || !f.startsWith(loadedPrefix)) {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(loadDevices, 300);
    }
  });
  $('devices-reload').addEventListener('click', loadDevices);
  $('event-filter').addEventListener('change', applyEventFilter);
  $('events-clear').addEventListener('click', () => {
    eventRows.splice(0).forEach((r) => r.li.remove());
    applyEventFilter();
  });
  setInterval(() => { // keeps the "last seen" times fresh
    for (const td of document.querySelectorAll('#device-list td.ago')) td.textContent = fmtAgo(td.dataset.ts);
  }, 10000);

  connectEvents();
  loadDevices().then(() => {
    const m = /^#ep=(.+)$/.exec(location.hash);
    if (m) selectDevice(decodeURIComponent(m[1]));
  });
})();
