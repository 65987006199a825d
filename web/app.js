// waltrail audit log dashboard. Plain DOM, no framework, no build step.
// Every value that comes from the API is put on the page with textContent / DOM APIs, never as HTML.
(() => {
  'use strict';

  const KEY_STORAGE = 'waltrail.apiKey';
  const PAGE_SIZE = 50;
  const POLL_MS = 1000;
  const MAX_POLL_BACKOFF_MS = 30000;

  // Multi-select filters, in the order they appear; `name` is the API query parameter and URL parameter.
  const FACETS = [
    { name: 'project_id', label: 'Project', fmt: (v) => v || 'Org-wide' },
    { name: 'user', label: 'User', fmt: (v) => v },
    { name: 'resource_type', label: 'Resource type', fmt: resourceNoun },
    { name: 'action', label: 'Action', fmt: actionLabel },
    { name: 'source', label: 'Source', fmt: sourceLabel },
    { name: 'principal_type', label: 'Actor type', fmt: principalLabel },
  ];
  // Filters that only come from links (the URL) or from "all changes to this resource"; shown as chips.
  const EXTRA = [
    { name: 'resource_id', label: 'Resource id', fmt: (v) => v },
    { name: 'principal_id', label: 'Actor id', fmt: (v) => v },
    { name: 'changed_field', label: 'Changed field', fmt: (v) => v },
  ];
  const LIST_FILTERS = [...FACETS, ...EXTRA];

  const CONTEXT_FIELDS = [
    ['auth_method', 'Auth method'],
    ['key_id', 'API key'],
    ['session_id', 'Session'],
    ['request_id', 'Request'],
    ['run_id', 'Run'],
    ['client_ip', 'IP address'],
    ['user_agent', 'User agent'],
    ['on_behalf_of_display', 'On behalf of'],
    ['on_behalf_of_id', 'On behalf of (id)'],
  ];

  // ---------------------------------------------------------------------------------------------
  // Labels

  const ACRONYMS = new Set(['API', 'SSO', 'IP', 'URL', 'MCP', 'LLM', 'OAUTH', 'ID', 'CLI', 'SDK']);

  // RESOURCE_TYPE_API_KEY -> "API key", RESOURCE_TYPE_GATEWAY -> "Gateway" (same rule as the server's summary).
  function resourceNoun(t) {
    if (!t) return 'Resource';
    const words = t.replace(/^RESOURCE_TYPE_/, '').split('_').filter(Boolean);
    return words
      .map((w, i) => {
        if (ACRONYMS.has(w)) return w;
        const lower = w.toLowerCase();
        return i === 0 ? lower.charAt(0).toUpperCase() + lower.slice(1) : lower;
      })
      .join(' ');
  }

  // "API key" stays "API key", "Gateway" becomes "gateway" (for use inside a sentence).
  function nounInSentence(t) {
    const n = resourceNoun(t);
    const first = n.split(' ')[0];
    return ACRONYMS.has(first) ? n : n.charAt(0).toLowerCase() + n.slice(1);
  }

  function titleWord(s) {
    const lower = s.toLowerCase().replace(/_/g, ' ');
    return lower.charAt(0).toUpperCase() + lower.slice(1);
  }

  function actionLabel(a) {
    return a ? titleWord(a.replace(/^AUDIT_ACTION_/, '')) : 'Unknown';
  }

  function actionVerb(a) {
    return (a || '').replace(/^AUDIT_ACTION_/, '').toLowerCase().replace(/_/g, ' ') || 'changed';
  }

  function actionKind(a) {
    const v = (a || '').replace(/^AUDIT_ACTION_/, '');
    if (v === 'CREATED' || v === 'RESTORED' || v === 'ENABLED') return 'create';
    if (v === 'DELETED' || v === 'TRUNCATED') return 'delete';
    if (v === 'DISABLED' || v === 'ROTATED' || v === 'REVOKED') return 'warn';
    return 'update';
  }

  function sourceLabel(s) {
    const v = (s || '').replace(/^AUDIT_SOURCE_/, '');
    switch (v) {
      case 'API': return 'API';
      case 'CLI': return 'CLI';
      case 'SDK': return 'SDK';
      case 'DASHBOARD': return 'Dashboard';
      case 'SYSTEM': return 'System';
      case '':
      case 'UNSPECIFIED': return 'Unknown source';
      default: return titleWord(v);
    }
  }

  function principalLabel(p) {
    switch (p) {
      case 'ACCOUNT': return 'User';
      case 'SERVICE_KEY': return 'API key';
      case 'AGENT': return 'Agent';
      case 'SYSTEM': return 'System';
      case '':
      case 'UNKNOWN': return 'Unknown';
      default: return titleWord(p);
    }
  }

  function actorName(it) {
    if (it.principal_type === 'ACCOUNT') {
      return it.actor_email || it.display_name || it.principal_id || 'Someone';
    }
    return it.display_name || it.actor_email || it.principal_id || (it.principal_type === 'SYSTEM' ? 'The system' : 'Someone');
  }

  function onBehalfOf(it) {
    return it.on_behalf_of_display || it.on_behalf_of_id || '';
  }

  function summaryOf(it) {
    if (it.summary) return it.summary;
    const name = it.resource_display || it.resource_id;
    const who = actorName(it);
    return name
      ? `${who} ${actionVerb(it.action)} ${resourceNoun(it.resource_type)} "${name}"`
      : `${who} ${actionVerb(it.action)} a ${resourceNoun(it.resource_type)}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Time

  function parseTs(ts) {
    if (!ts) return NaN;
    // Keep milliseconds: some engines reject more than 3 fractional digits.
    return Date.parse(String(ts).replace(/(\.\d{3})\d+/, '$1'));
  }

  function exactUtc(ts) {
    const ms = parseTs(ts);
    if (Number.isNaN(ms)) return String(ts || '');
    return new Date(ms).toISOString().replace('T', ' ').replace(/\.000Z$|Z$/, '') + ' UTC';
  }

  const rtf = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat('en', { numeric: 'always' })
    : null;

  function relTime(ts, now = Date.now()) {
    const ms = parseTs(ts);
    if (Number.isNaN(ms)) return '';
    const s = Math.max(0, Math.round((now - ms) / 1000));
    const f = (n, unit) => (rtf ? rtf.format(-n, unit) : `${n} ${unit}${n === 1 ? '' : 's'} ago`);
    if (s < 10) return 'just now';
    if (s < 45) return f(s, 'second');
    const m = Math.round(s / 60);
    if (m < 45) return f(Math.max(1, m), 'minute');
    const h = Math.round(s / 3600);
    if (h < 22) return f(Math.max(1, h), 'hour');
    const d = Math.round(s / 86400);
    if (d < 7) return f(Math.max(1, d), 'day');
    if (d < 30) return f(Math.max(1, Math.round(d / 7)), 'week');
    if (d < 365) return f(Math.max(1, Math.round(d / 30)), 'month');
    return f(Math.max(1, Math.round(d / 365)), 'year');
  }

  function timeEl(ts) {
    const t = el('time', { className: 'reltime', dateTime: ts || '', title: exactUtc(ts) }, relTime(ts));
    t.dataset.ts = ts || '';
    return t;
  }

  function refreshTimes() {
    const now = Date.now();
    for (const t of document.querySelectorAll('time[data-ts]')) {
      const txt = relTime(t.dataset.ts, now);
      if (t.textContent !== txt) t.textContent = txt;
    }
  }

  // "2026-11-27T10:00" (datetime-local, read as UTC) <-> "2026-11-27T10:00:00Z" (RFC 3339).
  function localInputToRfc3339(v) {
    if (!v) return '';
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::(\d{2}))?/.exec(v);
    if (!m) return '';
    return `${m[1]}T${m[2]}:${m[3] || '00'}Z`;
  }

  function rfc3339ToLocalInput(v) {
    const ms = parseTs(v);
    if (Number.isNaN(ms)) return '';
    return new Date(ms).toISOString().slice(0, 16);
  }

  function normalizeTimeParam(v) {
    if (!v) return '';
    // Accept what a person may type into a URL: "2026-11-27", "2026-11-27T10:00", full RFC 3339.
    let s = v.trim();
    if (/^\d{4}-\d{2}-\d{2}$/.test(s)) s += 'T00:00:00Z';
    else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s += 'Z';
    const ms = parseTs(s);
    if (Number.isNaN(ms)) return '';
    return new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
  }

  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  function el(tag, props, ...children) {
    const n = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'dataset') Object.assign(n.dataset, v);
        else if (k === 'testid') n.dataset.testid = v;
        else if (k === 'className') n.className = v;
        else if (k in n && !k.includes('-')) n[k] = v;
        else n.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  const $ = (id) => document.getElementById(id);

  let toastTimer = 0;
  function toast(msg, kind = 'info') {
    const t = $('toast');
    t.textContent = msg;
    t.dataset.kind = kind;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 8000 : 4000);
  }

  // ---------------------------------------------------------------------------------------------
  // State

  function emptyFilters() {
    const f = { since: '', until: '' };
    for (const d of LIST_FILTERS) f[d.name] = [];
    return f;
  }

  const state = {
    key: null,
    me: null,
    filters: emptyFilters(),
    facets: {},
    items: [],
    byId: new Map(),
    nextCursor: '',
    hasMore: false,
    pollCursor: '',
    gen: 0,
    listAbort: null,
    loadingMore: false,
    live: true,
    pollTimer: 0,
    polling: false,
    pollBackoff: POLL_MS,
    pollError: null,
    lastPollOk: 0,
    newCount: 0,
    openId: null,
    detailReturnFocus: null,
    detailAbort: null,
    reloadTimer: 0,
  };

  // ---------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, msg, retryAfter) {
      super(msg);
      this.status = status;
      this.retryAfter = retryAfter || 0;
    }
  }

  function apiUrl(path, params) {
    const url = new URL('api/v1/' + path, document.baseURI);
    for (const [k, v] of params || []) url.searchParams.append(k, v);
    return url;
  }

  async function apiFetch(path, params, opts = {}) {
    let res;
    try {
      res = await fetch(apiUrl(path, params), {
        // X-Waltrail-Client lets the server record exports made from here with source DASHBOARD.
        headers: { Authorization: 'Bearer ' + state.key, Accept: opts.accept || 'application/json', 'X-Waltrail-Client': 'dashboard' },
        cache: 'no-store',
        credentials: 'omit',
        signal: opts.signal,
      });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Cannot reach the waltrail server. Check your connection.');
    }
    if (!res.ok) {
      let msg = '';
      try {
        const body = await res.json();
        msg = body && body.msg;
      } catch (_) { /* not JSON */ }
      const retry = parseInt(res.headers.get('Retry-After') || '', 10);
      throw new ApiError(res.status, msg || `${res.status} ${res.statusText || 'error'}`, Number.isFinite(retry) ? retry : 0);
    }
    return res;
  }

  async function api(path, params, opts) {
    const res = await apiFetch(path, params, opts);
    let body;
    try {
      body = await res.json();
    } catch (_) {
      throw new ApiError(res.status, 'The server sent a response that is not JSON.');
    }
    if (body && typeof body.code === 'number' && body.code !== 200) {
      throw new ApiError(body.code, body.msg || 'Request failed');
    }
    return body ? body.data : null;
  }

  function orgPath(suffix = '') {
    return `orgs/${encodeURIComponent(state.me.org_id)}/audit_logs${suffix}`;
  }

  function errorText(e) {
    if (!(e instanceof ApiError)) return String(e && e.message || e);
    switch (e.status) {
      case 0: return e.message;
      case 403: return `Not allowed: ${e.message}`;
      case 429: return `Too many requests; try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' shortly'}.`;
      case 500: case 502: case 503: case 504: return `The server had trouble (${e.status}): ${e.message}`;
      default: return e.message;
    }
  }

  // A rejected key while signed in (revoked, or the server was reconfigured): back to the sign-in form.
  function handleAuthError(e) {
    if (e instanceof ApiError && e.status === 401 && state.key) {
      signOut('Your API key is no longer accepted. Sign in again.');
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // Sign-in

  function showSignIn(message) {
    $('app').hidden = true;
    $('detail').hidden = true;
    document.querySelector('[data-testid=session]').hidden = true;
    $('signin').hidden = false;
    const err = $('signin-error');
    err.textContent = message || '';
    err.hidden = !message;
    const input = $('signin-key');
    input.setAttribute('aria-invalid', message ? 'true' : 'false');
    input.focus();
  }

  async function signIn(key, fromStorage) {
    const submit = document.querySelector('[data-testid=signin-submit]');
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    state.key = key;
    try {
      const me = await api('me');
      if (!me || !me.org_id) throw new ApiError(500, 'The server did not say which organization this key belongs to.');
      state.me = me;
      sessionStorage.setItem(KEY_STORAGE, key);
      $('signin-key').value = '';
      startApp();
    } catch (e) {
      state.key = null;
      state.me = null;
      let msg;
      if (e instanceof ApiError && e.status === 401) {
        sessionStorage.removeItem(KEY_STORAGE);
        msg = fromStorage
          ? 'Your saved API key is no longer accepted. Sign in again.'
          : 'That API key was not accepted (401). Check that you copied the whole key.';
      } else if (e instanceof ApiError && e.status === 0) {
        msg = 'Cannot reach the waltrail server. Check your connection and try again.';
      } else {
        msg = `Sign-in failed: ${errorText(e)}`;
      }
      showSignIn(msg);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    state.me = null;
    state.gen++;
    stopPolling();
    if (state.listAbort) state.listAbort.abort();
    closeDetail(false);
    clearList();
    state.facets = {};
    showSignIn(message || '');
  }

  function startApp() {
    const me = state.me;
    $('signin').hidden = true;
    $('app').hidden = false;
    const session = document.querySelector('[data-testid=session]');
    session.hidden = false;
    const who = me.key_name || me.principal_id || 'API key';
    const scope = me.role === 'member'
      ? `member · ${(me.projects || []).join(', ') || 'no projects'}`
      : `${me.role || 'admin'} · all projects`;
    $('signin-error').hidden = true;
    const w = document.querySelector('[data-testid=whoami]');
    w.textContent = '';
    w.append(el('span', { className: 'who' }, who), el('span', { className: 'muted' }, ` ${me.org_id} · ${scope}`));
    w.title = `Signed in with key "${who}" for organization ${me.org_id} (${me.role})`;
    readUrl();
    writeUrl(false);
    renderFacets();
    loadFacets();
    reload();
    if (state.openId) openDetail(state.openId, { focus: false });
  }

  // ---------------------------------------------------------------------------------------------
  // Filters <-> URL

  function memberProjects() {
    const me = state.me;
    return me && me.role === 'member' && Array.isArray(me.projects) ? me.projects : null;
  }

  function readUrl() {
    const sp = new URLSearchParams(location.search);
    const f = emptyFilters();
    for (const d of LIST_FILTERS) {
      const seen = new Set();
      for (const v of sp.getAll(d.name)) {
        if (!seen.has(v)) { seen.add(v); f[d.name].push(v); }
      }
    }
    f.since = normalizeTimeParam(sp.get('since') || '');
    f.until = normalizeTimeParam(sp.get('until') || '');
    const allowed = memberProjects();
    if (allowed) {
      const dropped = f.project_id.filter((p) => !allowed.includes(p));
      if (dropped.length) {
        f.project_id = f.project_id.filter((p) => allowed.includes(p));
        toast(`Not showing project ${dropped.join(', ')}: this key cannot see it.`, 'error');
      }
    }
    state.filters = f;
    state.openId = sp.get('item') || null;
    syncTimeInputs();
  }

  function urlFor(filters, openId) {
    const sp = new URLSearchParams();
    for (const d of LIST_FILTERS) for (const v of filters[d.name]) sp.append(d.name, v);
    if (filters.since) sp.set('since', filters.since);
    if (filters.until) sp.set('until', filters.until);
    if (openId) sp.set('item', openId);
    const qs = sp.toString();
    return location.pathname + (qs ? '?' + qs : '') + location.hash;
  }

  function writeUrl(push) {
    const url = urlFor(state.filters, state.openId);
    if (url === location.pathname + location.search + location.hash) return;
    if (push) history.pushState(null, '', url);
    else history.replaceState(null, '', url);
  }

  function filterParams() {
    const p = [];
    const f = state.filters;
    for (const d of LIST_FILTERS) for (const v of f[d.name]) p.push([d.name, v]);
    if (f.since) p.push(['since', f.since]);
    if (f.until) p.push(['until', f.until]);
    return p;
  }

  function activeFilterCount() {
    const f = state.filters;
    let n = (f.since ? 1 : 0) + (f.until ? 1 : 0);
    for (const d of LIST_FILTERS) n += f[d.name].length;
    return n;
  }

  function syncTimeInputs() {
    $('filter-since').value = rfc3339ToLocalInput(state.filters.since);
    $('filter-until').value = rfc3339ToLocalInput(state.filters.until);
  }

  // A filter changed: new URL, new chips, and (shortly, so several clicks make one request) a new list.
  function filtersChanged() {
    writeUrl(true);
    renderChips();
    updateFacetSummaries();
    setListState('loading');
    clearTimeout(state.reloadTimer);
    state.reloadTimer = setTimeout(reload, 150);
  }

  // ---------------------------------------------------------------------------------------------
  // Facet dropdowns

  async function loadFacets() {
    const me = state.me;
    try {
      const data = await api(orgPath('/facets'));
      if (state.me !== me) return; // signed out meanwhile
      state.facets = data || {};
    } catch (e) {
      if (handleAuthError(e)) return;
      if (state.me !== me) return;
      // The filters still work with the values seen in the table; no need to shout.
      state.facets = state.facets || {};
    }
    refreshFacets();
  }

  function facetValues(name) {
    const vals = new Set();
    for (const v of state.facets[name] || []) if (v !== null && v !== undefined) vals.add(String(v));
    if (name === 'project_id') {
      const allowed = memberProjects();
      if (allowed) for (const p of allowed) vals.add(p);
      vals.delete('');
    }
    for (const it of state.items) {
      const v = name === 'user' ? it.actor_email : it[name];
      if (v) vals.add(v);
    }
    const allowed = name === 'project_id' ? memberProjects() : null;
    let list = [...vals].filter((v) => v !== '' && (!allowed || allowed.includes(v)));
    const d = FACETS.find((x) => x.name === name);
    list.sort((a, b) => d.fmt(a).localeCompare(d.fmt(b)));
    // Selected values stay visible (so they can be unticked) even when nothing has them any more.
    for (const v of state.filters[name]) if (!list.includes(v)) list.push(v);
    return list;
  }

  // Re-render the dropdowns with new values, unless one is open (that would move what the user is
  // pointing at); then it happens when it closes.
  let facetsDirty = false;
  function refreshFacets() {
    if ($('facets').querySelector('details[open]')) facetsDirty = true;
    else renderFacets();
  }

  function renderFacets() {
    facetsDirty = false;
    const box = $('facets');
    const openName = box.querySelector('details[open]')?.dataset.filter;
    box.textContent = '';
    for (const d of FACETS) {
      const values = facetValues(d.name);
      const details = el('details', { className: 'facet', testid: `filter-${d.name}` });
      details.dataset.filter = d.name;
      const summary = el('summary', { className: 'facet-summary', testid: `filter-${d.name}-toggle` },
        el('span', { className: 'facet-label' }, d.label),
        el('span', { className: 'facet-value' }));
      details.append(summary);
      const menuId = `facet-menu-${d.name}`;
      const menu = el('div', { className: 'facet-menu', id: menuId, role: 'group', 'aria-label': `${d.label} filter` });
      if (values.length > 8) {
        const search = el('input', {
          type: 'search', className: 'facet-search', placeholder: `Find ${d.label.toLowerCase()}…`,
          'aria-label': `Find a ${d.label.toLowerCase()}`, testid: `filter-${d.name}-search`,
        });
        search.addEventListener('input', () => {
          const q = search.value.trim().toLowerCase();
          for (const opt of menu.querySelectorAll('label.opt')) {
            opt.hidden = q !== '' && !opt.textContent.toLowerCase().includes(q) && !opt.dataset.value.toLowerCase().includes(q);
          }
        });
        menu.append(search);
      }
      const list = el('div', { className: 'facet-options' });
      if (!values.length) list.append(el('p', { className: 'facet-empty muted' }, 'No values yet'));
      for (const v of values) {
        const cb = el('input', { type: 'checkbox', value: v, checked: state.filters[d.name].includes(v) });
        cb.dataset.testid = 'filter-option';
        cb.addEventListener('change', () => {
          const cur = state.filters[d.name];
          if (cb.checked && !cur.includes(v)) cur.push(v);
          if (!cb.checked) state.filters[d.name] = cur.filter((x) => x !== v);
          filtersChanged();
        });
        const text = d.fmt(v);
        const opt = el('label', { className: 'opt', title: text !== v ? v : undefined }, cb, el('span', null, text));
        opt.dataset.value = v;
        list.append(opt);
      }
      menu.append(list);
      if (state.filters[d.name].length) {
        const clear = el('button', { type: 'button', className: 'facet-clear', testid: `filter-${d.name}-clear` }, `Clear ${d.label.toLowerCase()}`);
        clear.addEventListener('click', () => {
          state.filters[d.name] = [];
          for (const c of menu.querySelectorAll('input[type=checkbox]')) c.checked = false;
          filtersChanged();
          clear.remove();
          summary.focus();
        });
        menu.append(clear);
      }
      details.append(menu);
      details.addEventListener('toggle', () => {
        if (details.open) {
          for (const o of box.querySelectorAll('details[open]')) if (o !== details) o.open = false;
          $('export-menu').open = false;
        } else if (facetsDirty && !box.querySelector('details[open]')) {
          const hadFocus = details.contains(document.activeElement);
          renderFacets();
          if (hadFocus) document.querySelector(`[data-testid="filter-${d.name}-toggle"]`)?.focus();
        }
      });
      if (openName === d.name) details.open = true;
      box.append(details);
    }
    updateFacetSummaries();
    renderChips();
  }

  function updateFacetSummaries() {
    for (const d of FACETS) {
      const details = document.querySelector(`[data-testid="filter-${d.name}"]`);
      if (!details) continue;
      const sel = state.filters[d.name];
      const valueEl = details.querySelector('.facet-value');
      valueEl.textContent = sel.length === 0 ? 'Any' : sel.length === 1 ? d.fmt(sel[0]) : `${sel.length} selected`;
      details.classList.toggle('is-active', sel.length > 0);
      for (const cb of details.querySelectorAll('input[type=checkbox]')) cb.checked = sel.includes(cb.value);
    }
    const n = activeFilterCount();
    $('filters-toggle').textContent = n ? `Filters (${n})` : 'Filters';
    $('clear-all').hidden = n === 0;
  }

  function renderChips() {
    const box = $('chips');
    box.textContent = '';
    const f = state.filters;
    const add = (label, value, remove) => {
      const b = el('button', { type: 'button', className: 'chip', testid: 'chip', 'aria-label': `Remove filter ${label}: ${value}` },
        el('span', { className: 'chip-label' }, label + ': '), el('span', null, value), el('span', { className: 'chip-x', 'aria-hidden': 'true' }, '✕'));
      b.addEventListener('click', () => { remove(); syncTimeInputs(); filtersChanged(); });
      box.append(b);
    };
    for (const d of LIST_FILTERS) {
      for (const v of f[d.name]) add(d.label, d.fmt(v), () => { f[d.name] = f[d.name].filter((x) => x !== v); });
    }
    if (f.since) add('Since', exactUtc(f.since), () => { f.since = ''; });
    if (f.until) add('Until', exactUtc(f.until), () => { f.until = ''; });
    box.hidden = !box.childElementCount;
  }

  function clearAll() {
    state.filters = emptyFilters();
    syncTimeInputs();
    filtersChanged();
  }

  function onTimeInput(which) {
    const input = $(`filter-${which}`);
    const v = localInputToRfc3339(input.value);
    if (v === state.filters[which]) return;
    // A half-typed date leaves the input's value empty; only react to complete values or a real clear.
    if (!v && input.validity && input.validity.badInput) return;
    state.filters[which] = v;
    filtersChanged();
  }

  // ---------------------------------------------------------------------------------------------
  // The list

  function setListState(s, err) {
    const list = $('list');
    list.dataset.state = s;
    list.setAttribute('aria-busy', s === 'loading' ? 'true' : 'false');
    const st = $('status');
    st.textContent = '';
    st.className = 'status status-' + s;
    if (s === 'loading' && !state.items.length) {
      st.append(el('span', { className: 'spinner', 'aria-hidden': 'true' }), el('span', { testid: 'status-loading' }, 'Loading audit items…'));
    } else if (s === 'empty') {
      const filtered = activeFilterCount() > 0;
      const box = el('div', { className: 'empty', testid: 'status-empty' },
        el('p', { className: 'empty-title' }, filtered ? 'No audit items match these filters.' : 'No audit items yet.'),
        el('p', { className: 'muted' }, filtered
          ? 'Try a wider time range or fewer filters.'
          : 'Changes to the tables waltrail captures show up here within seconds.'));
      if (filtered) {
        const b = el('button', { type: 'button', className: 'btn', testid: 'empty-clear' }, 'Clear all filters');
        b.addEventListener('click', clearAll);
        box.append(b);
      }
      st.append(box);
    } else if (s === 'error') {
      const retry = el('button', { type: 'button', className: 'btn', testid: 'retry' }, 'Retry');
      retry.addEventListener('click', reload);
      st.append(el('div', { className: 'error-box', testid: 'status-error', role: 'alert' },
        el('p', null, `Couldn't load audit items. ${errorText(err)}`), retry));
    }
    updateMore();
    updateCount();
  }

  function updateMore() {
    const s = $('list').dataset.state;
    const btn = $('load-more');
    btn.hidden = !(state.hasMore && (s === 'ready' || s === 'loading-more' || s === 'more-error'));
    btn.disabled = state.loadingMore;
    btn.textContent = state.loadingMore ? 'Loading…' : s === 'more-error' ? 'Retry loading more' : 'Load more';
    $('list-end').hidden = !(s === 'ready' && !state.hasMore && state.items.length > PAGE_SIZE);
  }

  function updateCount() {
    const n = state.items.length;
    const c = document.querySelector('[data-testid=item-count]');
    c.textContent = n ? `${n} item${n === 1 ? '' : 's'}${state.hasMore ? ' loaded, newest first' : ', newest first'}` : '';
  }

  function clearList() {
    state.items = [];
    state.byId.clear();
    state.nextCursor = '';
    state.hasMore = false;
    state.pollCursor = '';
    state.newCount = 0;
    $('rows').textContent = '';
    updatePill();
  }

  async function reload() {
    clearTimeout(state.reloadTimer);
    if (!state.me) return;
    const gen = ++state.gen;
    if (state.listAbort) state.listAbort.abort();
    const ac = new AbortController();
    state.listAbort = ac;
    stopPolling();
    clearList();
    setListState('loading');
    try {
      const data = await api(orgPath(), [...filterParams(), ['limit', String(PAGE_SIZE)]], { signal: ac.signal });
      if (gen !== state.gen) return;
      appendItems(data.items || []);
      state.nextCursor = data.next_cursor || '';
      state.hasMore = !!data.has_more && !!state.nextCursor;
      state.pollCursor = data.poll_cursor || '';
      setListState(state.items.length ? 'ready' : 'empty');
      if (state.items.some(hasNewFacetValue)) refreshFacets();
      state.pollBackoff = POLL_MS;
      updateLiveStatus();
      schedulePoll(POLL_MS);
      rearmSentinel();
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      if (gen !== state.gen) return;
      if (handleAuthError(e)) return;
      setListState('error', e);
    }
  }

  async function loadMore() {
    if (state.loadingMore || !state.hasMore || !state.me) return;
    const s = $('list').dataset.state;
    if (s !== 'ready' && s !== 'more-error') return;
    const gen = state.gen;
    state.loadingMore = true;
    setListState('loading-more');
    try {
      const data = await api(orgPath(), [...filterParams(), ['limit', String(PAGE_SIZE)], ['cursor', state.nextCursor]]);
      if (gen !== state.gen) return;
      appendItems(data.items || []);
      state.nextCursor = data.next_cursor || '';
      state.hasMore = !!data.has_more && !!state.nextCursor;
      state.loadingMore = false;
      setListState(state.items.length ? 'ready' : 'empty');
      rearmSentinel();
    } catch (e) {
      if (gen !== state.gen) return;
      state.loadingMore = false;
      if (handleAuthError(e)) return;
      setListState('more-error');
      toast(`Couldn't load more items. ${errorText(e)}`, 'error');
    } finally {
      if (gen === state.gen) state.loadingMore = false;
      updateMore();
    }
  }

  // Older items at the bottom.
  function appendItems(items) {
    const frag = document.createDocumentFragment();
    for (const it of items) {
      if (!it || !it.id || state.byId.has(it.id)) continue;
      state.byId.set(it.id, it);
      state.items.push(it);
      frag.append(renderRow(it));
    }
    $('rows').append(frag);
  }

  function renderRow(it) {
    const tr = el('tr', { className: 'row', tabIndex: 0, testid: 'audit-row' });
    tr.dataset.id = it.id;
    tr.dataset.action = it.action || '';
    if (state.openId === it.id) tr.classList.add('is-open');

    const tdTime = el('td', { className: 'col-time', testid: 'cell-time' }, timeEl(it.timestamp));
    tdTime.dataset.label = 'When';

    const kind = actionKind(it.action);
    const tdSummary = el('td', { className: 'col-summary', testid: 'cell-summary' },
      el('span', { className: 'sum-line' },
        el('span', { className: `dot dot-${kind}`, title: actionLabel(it.action), 'aria-hidden': 'true' }),
        el('span', { className: 'summary-text', testid: 'summary' }, summaryOf(it))));
    const fields = Array.isArray(it.changed_fields) ? it.changed_fields : [];
    if (fields.length && it.action !== 'AUDIT_ACTION_CREATED' && it.action !== 'AUDIT_ACTION_DELETED') {
      tdSummary.append(el('span', { className: 'fields muted' }, `changed ${fields.join(', ')}`));
    }
    tdSummary.dataset.label = 'What';

    const tdActor = el('td', { className: 'col-actor', testid: 'cell-actor' }, ...actorNodes(it));
    tdActor.dataset.label = 'Who';

    const tdRes = el('td', { className: 'col-resource', testid: 'cell-resource' },
      el('span', { className: 'res-type' }, resourceNoun(it.resource_type)));
    if (it.resource_display && it.resource_id && it.resource_display !== it.resource_id) {
      tdRes.append(el('span', { className: 'res-id muted', title: it.resource_id }, it.resource_id));
    } else if (it.resource_id) {
      tdRes.append(el('span', { className: 'res-id muted', title: it.resource_id }, it.resource_id));
    }
    tdRes.dataset.label = 'Resource';

    const tdProj = el('td', { className: 'col-project', testid: 'cell-project' },
      it.project_id ? el('span', { className: 'proj' }, it.project_id) : el('span', { className: 'muted' }, 'Org-wide'));
    tdProj.dataset.label = 'Project';

    tr.append(tdTime, tdSummary, tdActor, tdRes, tdProj);
    return tr;
  }

  function actorNodes(it) {
    const name = actorName(it);
    const nodes = [el('span', { className: 'actor-name', testid: 'actor-name' }, name)];
    const meta = [principalLabel(it.principal_type)];
    if (it.actor_email && it.actor_email !== name) meta.push(it.actor_email);
    meta.push(`via ${sourceLabel(it.source)}`);
    nodes.push(el('span', { className: 'actor-meta muted', testid: 'actor-meta' }, meta.join(' · ')));
    const obo = onBehalfOf(it);
    if (obo) {
      nodes.push(el('span', { className: 'actor-obo', testid: 'actor-obo' },
        `${principalLabel(it.principal_type).toLowerCase()} for ${obo}`));
    }
    return nodes;
  }

  // Infinite scroll: the "Load more" area coming near the viewport loads the next page.
  let observer = null;
  function setupInfiniteScroll() {
    if (!('IntersectionObserver' in window)) return;
    observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore();
    }, { rootMargin: '0px 0px 300px 0px' });
    observer.observe($('more'));
  }

  // Re-observing makes the observer report the current state again: if the end of the list is still in
  // view after a page (a tall screen), the next page loads too.
  function rearmSentinel() {
    if (!observer) return;
    observer.unobserve($('more'));
    requestAnimationFrame(() => observer && observer.observe($('more')));
  }

  // ---------------------------------------------------------------------------------------------
  // Live mode

  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = 0;
  }

  function schedulePoll(delay) {
    stopPolling();
    if (!state.live || !state.me || !state.pollCursor || document.hidden) return;
    state.pollTimer = setTimeout(poll, delay);
  }

  async function poll() {
    if (state.polling || !state.live || !state.me || !state.pollCursor) return;
    const gen = state.gen;
    state.polling = true;
    let delay = POLL_MS;
    try {
      for (let round = 0; round < 20; round++) {
        const data = await api(orgPath(), [...filterParams(), ['order', 'asc'], ['cursor', state.pollCursor], ['limit', '100']]);
        if (gen !== state.gen || !state.live) return;
        if (data.next_cursor) state.pollCursor = data.next_cursor;
        prependItems(data.items || []);
        if (!data.has_more) break;
      }
      state.pollBackoff = POLL_MS;
      state.lastPollOk = Date.now();
      state.pollError = null;
    } catch (e) {
      if (gen !== state.gen) return;
      if (handleAuthError(e)) return;
      if (e instanceof ApiError && e.status === 429) {
        delay = Math.max(POLL_MS, (e.retryAfter || 5) * 1000);
      } else {
        state.pollBackoff = Math.min(MAX_POLL_BACKOFF_MS, state.pollBackoff * 2);
        delay = state.pollBackoff;
      }
      state.pollError = e;
    } finally {
      state.polling = false;
      if (gen === state.gen) {
        updateLiveStatus();
        schedulePoll(delay);
      }
    }
  }

  function updateLiveStatus() {
    const s = document.querySelector('[data-testid=live-status]');
    const live = $('live');
    if (!state.live) { s.textContent = 'Paused'; live.dataset.state = 'off'; return; }
    if (state.me && $('list').dataset.state !== 'loading' && !state.pollCursor && $('list').dataset.state !== 'error') {
      s.textContent = 'Not available';
      live.dataset.state = 'error';
      return;
    }
    if (state.pollError) {
      const e = state.pollError;
      s.textContent = e instanceof ApiError && e.status === 429 ? 'Slowed down (rate limit)' : 'Reconnecting…';
      live.dataset.state = 'error';
      return;
    }
    s.textContent = 'Watching for changes';
    live.dataset.state = 'on';
  }

  function scrolledAway() {
    const list = $('list');
    const top = list.getBoundingClientRect().top + window.scrollY;
    return window.scrollY > Math.max(80, top);
  }

  // Newer items at the top. `items` come oldest first.
  function prependItems(items) {
    const fresh = items.filter((it) => it && it.id && !state.byId.has(it.id));
    if (!fresh.length) return;
    const tbody = $('rows');
    const away = scrolledAway();
    // Keep what the reader is looking at in place while rows are added above it.
    const anchor = away ? firstVisibleRow() : null;
    const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;
    for (const it of fresh) {
      state.byId.set(it.id, it);
      state.items.unshift(it);
      const tr = renderRow(it);
      tr.classList.add('is-new');
      setTimeout(() => tr.classList.remove('is-new'), 4000);
      tbody.insertBefore(tr, tbody.firstChild);
    }
    if (anchor) window.scrollBy(0, anchor.getBoundingClientRect().top - anchorTop);
    if (away) state.newCount += fresh.length;
    updatePill();
    const s = $('list').dataset.state;
    if (s === 'empty') setListState('ready');
    else updateCount();
    // New values (a new user, say) become filter options.
    if (fresh.some(hasNewFacetValue)) refreshFacets();
  }

  function hasNewFacetValue(it) {
    for (const d of FACETS) {
      const v = d.name === 'user' ? it.actor_email : it[d.name];
      if (!v) continue;
      const details = document.querySelector(`[data-testid="filter-${d.name}"]`);
      if (details && !details.querySelector(`input[value="${CSS.escape(v)}"]`)) {
        if (d.name === 'project_id' && memberProjects() && !memberProjects().includes(v)) continue;
        return true;
      }
    }
    return false;
  }

  function firstVisibleRow() {
    for (const tr of $('rows').children) {
      if (tr.getBoundingClientRect().bottom > 0) return tr;
    }
    return null;
  }

  function updatePill() {
    const pill = $('new-pill');
    if (state.newCount > 0) {
      pill.textContent = `↑ ${state.newCount} new item${state.newCount === 1 ? '' : 's'}`;
      pill.hidden = false;
    } else {
      pill.hidden = true;
    }
  }

  function setLive(on) {
    state.live = on;
    $('live-toggle').checked = on;
    if (on) {
      state.pollBackoff = POLL_MS;
      if (state.pollCursor) schedulePoll(0);
    } else {
      stopPolling();
    }
    updateLiveStatus();
  }

  // ---------------------------------------------------------------------------------------------
  // Export

  async function doExport(format) {
    $('export-menu').open = false;
    const buttons = document.querySelectorAll('#export-menu .menu-item, #export-menu summary');
    buttons.forEach((b) => b.setAttribute('aria-disabled', 'true'));
    const ext = format === 'csv' ? 'csv' : 'ndjson';
    toast(`Preparing ${ext.toUpperCase()} export…`);
    try {
      const res = await apiFetch(orgPath('/export'), [['format', format], ...filterParams()], {
        accept: format === 'csv' ? 'text/csv' : 'application/x-ndjson',
      });
      const blob = await res.blob();
      let name = `audit_logs-${state.me.org_id}.${ext}`;
      const cd = res.headers.get('Content-Disposition') || '';
      const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
      if (m) name = decodeURIComponent(m[1]).replace(/[/\\]/g, '_');
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      toast(`Exported ${name}`);
    } catch (e) {
      if (handleAuthError(e)) return;
      toast(`Export failed. ${errorText(e)}`, 'error');
    } finally {
      buttons.forEach((b) => b.removeAttribute('aria-disabled'));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Detail panel

  function markOpenRow() {
    for (const tr of document.querySelectorAll('#rows tr.is-open')) {
      tr.classList.remove('is-open');
      tr.removeAttribute('aria-current');
    }
    if (!state.openId) return;
    const tr = rowFor(state.openId);
    if (tr) {
      tr.classList.add('is-open');
      tr.setAttribute('aria-current', 'true');
    }
  }

  function rowFor(id) {
    return document.querySelector(`#rows tr[data-id="${CSS.escape(id)}"]`);
  }

  async function openDetail(id, opts = {}) {
    const panel = $('detail');
    if (!panel.hidden && state.openId === id && panel.dataset.state === 'ready') return;
    if (!state.detailReturnFocus || panel.hidden) {
      state.detailReturnFocus = opts.returnFocus || document.activeElement;
    }
    state.openId = id;
    writeUrl(false);
    markOpenRow();
    if (state.detailAbort) state.detailAbort.abort();
    const ac = new AbortController();
    state.detailAbort = ac;
    panel.hidden = false;
    document.body.classList.add('has-detail');
    panel.dataset.state = 'loading';
    panel.dataset.id = id;
    const title = $('detail-title');
    const known = state.byId.get(id);
    title.textContent = known ? summaryOf(known) : 'Loading…';
    const body = $('detail-body');
    body.textContent = '';
    body.append(el('p', { className: 'muted', testid: 'detail-loading' }, 'Loading details…'));
    if (opts.focus !== false) title.focus();
    try {
      const item = await api(orgPath('/' + encodeURIComponent(id)), null, { signal: ac.signal });
      if (state.openId !== id) return;
      renderDetail(item);
      panel.dataset.state = 'ready';
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      if (handleAuthError(e)) return;
      if (state.openId !== id) return;
      panel.dataset.state = 'error';
      body.textContent = '';
      const msg = e instanceof ApiError && e.status === 404
        ? 'This audit item was not found. It may be outside the retention window or not visible to this key.'
        : `Couldn't load this item. ${errorText(e)}`;
      const retry = el('button', { type: 'button', className: 'btn', testid: 'detail-retry' }, 'Retry');
      retry.addEventListener('click', () => { panel.dataset.state = ''; openDetail(id, { focus: false }); });
      body.append(el('div', { className: 'error-box', role: 'alert', testid: 'detail-error' }, el('p', null, msg), retry));
    }
  }

  function closeDetail(restoreFocus = true) {
    const panel = $('detail');
    if (state.detailAbort) state.detailAbort.abort();
    const wasOpen = !panel.hidden;
    panel.hidden = true;
    panel.dataset.state = '';
    document.body.classList.remove('has-detail');
    const id = state.openId;
    state.openId = null;
    if (state.me) writeUrl(false);
    markOpenRow();
    if (wasOpen && restoreFocus) {
      const target = (id && rowFor(id)) || (state.detailReturnFocus && document.contains(state.detailReturnFocus) ? state.detailReturnFocus : null);
      if (target) target.focus();
    }
    state.detailReturnFocus = null;
  }

  function section(title, testid, ...children) {
    return el('section', { className: 'd-section', testid }, el('h3', null, title), ...children);
  }

  function dl(rows, testidPrefix) {
    const d = el('dl', { className: 'kv' });
    for (const [k, label, value, extra] of rows) {
      const dd = el('dd', { testid: testidPrefix ? `${testidPrefix}-${k}` : undefined });
      if (value instanceof Node) dd.append(value);
      else if (value === '' || value === null || value === undefined) {
        dd.append(el('span', { className: 'muted none' }, '—'));
      } else dd.append(String(value));
      if (extra) dd.append(extra);
      d.append(el('dt', null, label), dd);
    }
    return d;
  }

  function renderDetail(it) {
    const body = $('detail-body');
    body.textContent = '';
    $('detail-title').textContent = summaryOf(it);
    const when = el('span', null, timeEl(it.timestamp), el('span', { className: 'muted' }, ` · ${exactUtc(it.timestamp)}`));

    const actor = el('span', { className: 'd-actor' }, ...actorNodes(it));
    const resource = el('span', null, `${resourceNoun(it.resource_type)} `,
      el('strong', null, it.resource_display || it.resource_id || ''),
      it.resource_id && it.resource_display ? el('span', { className: 'muted' }, ` (${it.resource_id})`) : null);
    body.append(dl([
      ['when', 'When', when],
      ['action', 'Action', el('span', { className: `badge badge-${actionKind(it.action)}` }, actionLabel(it.action))],
      ['actor', 'Who', actor],
      ['resource', 'Resource', resource],
      ['project', 'Project', it.project_id || el('span', { className: 'muted' }, 'Org-wide')],
    ], 'detail'));

    if (it.resource_id) {
      const b = el('button', { type: 'button', className: 'btn btn-small', testid: 'detail-resource-history' },
        `All changes to this ${nounInSentence(it.resource_type)}`);
      b.addEventListener('click', () => {
        state.filters = emptyFilters();
        state.filters.resource_type = it.resource_type ? [it.resource_type] : [];
        state.filters.resource_id = [it.resource_id];
        syncTimeInputs();
        closeDetail(false);
        filtersChanged();
        renderFacets();
        $('list').focus();
      });
      body.append(el('div', { className: 'd-actions' }, b));
    }

    body.append(renderChanges(it));

    const ctx = it.context || {};
    const ctxRows = CONTEXT_FIELDS.map(([k, label]) => [k, label, ctx[k] || (k === 'client_ip' ? it.client_ip : '')]);
    ctxRows.splice(1, 0, ['source', 'Source', sourceLabel(it.source)]);
    ctxRows.splice(0, 0, ['principal', 'Actor id', `${it.principal_id || '—'} (${principalLabel(it.principal_type)})`]);
    body.append(section('Context', 'detail-context', dl(ctxRows, 'context')));

    body.append(renderTransaction(it));

    const data = it.data || {};
    body.append(section('Record', 'detail-record', dl([
      ['id', 'Item id', it.id],
      ['event', 'Transaction (event id)', it.event_id],
      ['table', 'Table', data.table || ''],
      ['xid', 'Postgres xid', data.xid !== undefined ? String(data.xid) : ''],
      ['lsn', 'Commit LSN', data.commit_lsn || ''],
      ['stored', 'Stored', it.created_time ? exactUtc(it.created_time) : ''],
    ], 'record')));
  }

  // ---- before/after

  function fieldOrder(it, changes) {
    const out = [];
    for (const f of it.changed_fields || []) if (f in changes && !out.includes(f)) out.push(f);
    for (const f of Object.keys(changes)) if (!out.includes(f)) out.push(f);
    return out;
  }

  function renderChanges(it) {
    const changes = it.changes && typeof it.changes === 'object' ? it.changes : {};
    const fields = fieldOrder(it, changes);
    const sec = section(fields.length ? `Changes (${fields.length} field${fields.length === 1 ? '' : 's'})` : 'Changes', 'detail-changes');
    if (!fields.length) {
      sec.append(el('p', { className: 'muted' }, it.action === 'AUDIT_ACTION_TRUNCATED'
        ? 'The table was emptied; no per-row values are recorded.'
        : 'No field values were recorded for this item.'));
      return sec;
    }
    for (const f of fields) sec.append(renderChange(f, changes[f] || {}));
    return sec;
  }

  function isComplex(v) {
    if (v !== null && typeof v === 'object') return true;
    return typeof v === 'string' && (v.length > 80 || v.includes('\n') || looksLikeJson(v) !== undefined);
  }

  function looksLikeJson(s) {
    if (typeof s !== 'string') return undefined;
    const t = s.trim();
    if (!(t.startsWith('{') && t.endsWith('}')) && !(t.startsWith('[') && t.endsWith(']'))) return undefined;
    try { return JSON.parse(t); } catch (_) { return undefined; }
  }

  function pretty(v) {
    if (v === undefined) return '';
    if (typeof v === 'string') {
      const parsed = looksLikeJson(v);
      return parsed !== undefined ? JSON.stringify(parsed, null, 2) : v;
    }
    return JSON.stringify(v, null, 2);
  }

  function scalarNode(v, present) {
    if (!present) return el('span', { className: 'muted none' }, '—');
    if (v === null) return el('span', { className: 'muted lit' }, 'null');
    if (v === '') return el('span', { className: 'muted lit' }, '(empty)');
    if (typeof v === 'string') return el('span', { className: 'val' }, v);
    return el('span', { className: 'val lit' }, JSON.stringify(v));
  }

  function renderChange(field, ch) {
    const hasB = Object.prototype.hasOwnProperty.call(ch, 'before');
    const hasA = Object.prototype.hasOwnProperty.call(ch, 'after');
    let tag;
    if (ch.redacted) tag = 'hidden';
    else if (hasA && !hasB) tag = 'set';
    else if (hasB && !hasA) tag = 'removed';
    else tag = 'changed';
    const box = el('div', { className: `change change-${tag}`, testid: 'change' });
    box.dataset.field = field;
    const head = el('div', { className: 'change-head' }, el('code', { className: 'field' }, field));
    box.append(head);
    if (ch.redacted) {
      head.append(el('span', { className: 'badge badge-warn', testid: 'change-redacted' }, 'changed (value hidden)'));
      box.append(el('p', { className: 'muted small' }, 'This field is secret: waltrail records that it changed, never its value.'));
      return box;
    }
    const b = ch.before;
    const a = ch.after;
    if (isComplex(b) || isComplex(a)) {
      const bo = hasB ? (typeof b === 'string' ? looksLikeJson(b) : b) : undefined;
      const ao = hasA ? (typeof a === 'string' ? looksLikeJson(a) : a) : undefined;
      if (hasB && hasA && bo && ao && typeof bo === 'object' && typeof ao === 'object') {
        const paths = changedPaths(bo, ao, '', 0);
        if (paths.length) {
          head.append(el('span', { className: 'changed-keys muted', testid: 'changed-keys' },
            `changed: ${paths.slice(0, 12).join(', ')}${paths.length > 12 ? `, and ${paths.length - 12} more` : ''}`));
        }
      }
      box.append(renderDiff(hasB ? pretty(b) : null, hasA ? pretty(a) : null));
      return box;
    }
    const grid = el('div', { className: 'ba' },
      el('div', { className: 'ba-side ba-before', testid: 'change-before' },
        el('span', { className: 'ba-label' }, 'Before'), scalarNode(b, hasB)),
      el('div', { className: 'ba-arrow', 'aria-hidden': 'true' }, '→'),
      el('div', { className: 'ba-side ba-after', testid: 'change-after' },
        el('span', { className: 'ba-label' }, 'After'), scalarNode(a, hasA)));
    box.append(grid);
    return box;
  }

  // Dotted paths of keys whose values differ (objects compared key by key, a few levels deep).
  function changedPaths(b, a, prefix, depth) {
    const out = [];
    const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
    if (!isObj(b) || !isObj(a) || depth > 3) {
      if (JSON.stringify(b) !== JSON.stringify(a)) out.push(prefix || '(value)');
      return out;
    }
    const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])];
    for (const k of keys) {
      const p = prefix ? `${prefix}.${k}` : k;
      if (!(k in b)) out.push(`+${p}`);
      else if (!(k in a)) out.push(`-${p}`);
      else if (JSON.stringify(b[k]) !== JSON.stringify(a[k])) {
        if (isObj(b[k]) && isObj(a[k])) out.push(...changedPaths(b[k], a[k], p, depth + 1));
        else out.push(p);
      }
    }
    return out;
  }

  // Line diff (longest common subsequence) of two texts; null = that side does not exist.
  function diffLines(before, after) {
    const x = before === null ? [] : before.split('\n');
    const y = after === null ? [] : after.split('\n');
    const n = x.length;
    const m = y.length;
    if (n * m > 4_000_000) {
      return [...x.map((l) => ({ op: 'del', l })), ...y.map((r) => ({ op: 'ins', r }))];
    }
    const w = m + 1;
    const lcs = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * w + j] = x[i] === y[j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
      }
    }
    const ops = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { ops.push({ op: 'eq', l: x[i], r: y[j] }); i++; j++; }
      else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) { ops.push({ op: 'del', l: x[i] }); i++; }
      else { ops.push({ op: 'ins', r: y[j] }); j++; }
    }
    while (i < n) ops.push({ op: 'del', l: x[i++] });
    while (j < m) ops.push({ op: 'ins', r: y[j++] });
    return ops;
  }

  // Side-by-side rows: runs of deleted and inserted lines are paired up.
  function pairRows(ops) {
    const rows = [];
    let k = 0;
    while (k < ops.length) {
      if (ops[k].op === 'eq') { rows.push({ kind: 'eq', l: ops[k].l, r: ops[k].r }); k++; continue; }
      const dels = [];
      const ins = [];
      while (k < ops.length && ops[k].op !== 'eq') {
        if (ops[k].op === 'del') dels.push(ops[k].l); else ins.push(ops[k].r);
        k++;
      }
      for (let t = 0; t < Math.max(dels.length, ins.length); t++) {
        rows.push({ kind: 'chg', l: t < dels.length ? dels[t] : null, r: t < ins.length ? ins[t] : null });
      }
    }
    return rows;
  }

  function renderDiff(before, after) {
    const ops = diffLines(before, after);
    const wrap = el('div', { className: 'diff', testid: 'diff' });
    const onlyOne = before === null || after === null;

    // Split view (wide screens).
    const split = el('table', { className: 'diff-split' + (onlyOne ? ' diff-one' : '') });
    const head = el('tr', null);
    if (before !== null) head.append(el('th', { scope: 'col' }, 'Before'));
    if (after !== null) head.append(el('th', { scope: 'col' }, 'After'));
    split.append(el('thead', null, head));
    const tb = el('tbody', null);
    const rows = pairRows(ops);
    appendCollapsible(tb, rows, (r) => {
      const tr = el('tr', { className: `dl-${r.kind}` });
      if (before !== null) {
        tr.append(el('td', { className: r.kind === 'chg' && r.l !== null ? 'del' : r.l === null ? 'gap' : '', testid: 'diff-before' }, r.l === null ? '' : r.l));
      }
      if (after !== null) {
        tr.append(el('td', { className: r.kind === 'chg' && r.r !== null ? 'ins' : r.r === null ? 'gap' : '', testid: 'diff-after' }, r.r === null ? '' : r.r));
      }
      return tr;
    }, onlyOne ? 1 : 2, () => el('tr', { className: 'dl-skip' }));
    split.append(tb);
    wrap.append(split);

    // Unified view (narrow screens).
    const uni = el('div', { className: 'diff-unified', 'aria-hidden': 'true' });
    appendCollapsible(uni, ops.map((o) => ({ kind: o.op === 'eq' ? 'eq' : 'chg', op: o.op, t: o.op === 'ins' ? o.r : o.l })), (o) => {
      const sign = o.op === 'del' ? '−' : o.op === 'ins' ? '+' : ' ';
      return el('div', { className: `ul ul-${o.op}` }, el('span', { className: 'ul-sign' }, sign), o.t);
    }, 0, () => el('div', { className: 'ul ul-skip' }));
    wrap.append(uni);
    return wrap;
  }

  // Long runs of unchanged lines fold into a "show N unchanged lines" row.
  function appendCollapsible(parent, rows, render, colspan, makeSkip) {
    const CONTEXT = 3;
    const hasChange = rows.some((r) => r.kind !== 'eq');
    let k = 0;
    while (k < rows.length) {
      if (rows[k].kind !== 'eq' || !hasChange) { parent.append(render(rows[k])); k++; continue; }
      let end = k;
      while (end < rows.length && rows[end].kind === 'eq') end++;
      const run = rows.slice(k, end);
      const keepHead = k === 0 ? 0 : CONTEXT;
      const keepTail = end === rows.length ? 0 : CONTEXT;
      if (run.length > keepHead + keepTail + 2) {
        for (const r of run.slice(0, keepHead)) parent.append(render(r));
        const hidden = run.slice(keepHead, run.length - keepTail);
        const skip = makeSkip();
        const btn = el('button', { type: 'button', className: 'diff-expand' }, `⋯ show ${hidden.length} unchanged lines`);
        btn.addEventListener('click', () => {
          const frag = document.createDocumentFragment();
          for (const r of hidden) frag.append(render(r));
          skip.replaceWith(frag);
        });
        if (colspan) skip.append(el('td', { colSpan: colspan }, btn));
        else skip.append(btn);
        parent.append(skip);
        for (const r of run.slice(run.length - keepTail)) parent.append(render(r));
      } else {
        for (const r of run) parent.append(render(r));
      }
      k = end;
    }
  }

  // ---- same transaction

  function renderTransaction(it) {
    const ids = (Array.isArray(it.transaction_item_ids) ? it.transaction_item_ids : []).filter((x) => x && x !== it.id);
    const sec = section(ids.length ? `Same transaction (${ids.length} other item${ids.length === 1 ? '' : 's'})` : 'Same transaction', 'detail-transaction');
    if (!ids.length) {
      sec.append(el('p', { className: 'muted', testid: 'tx-none' }, 'No other items were changed in this transaction.'));
      return sec;
    }
    const SHOW = 50;
    const ul = el('ul', { className: 'tx-list', testid: 'tx-items' });
    const toFetch = [];
    for (const id of ids.slice(0, SHOW)) {
      const known = state.byId.get(id);
      const label = el('span', { className: 'tx-label' }, known ? summaryOf(known) : id);
      const b = el('button', { type: 'button', className: 'tx-item', testid: 'tx-item' }, label);
      b.dataset.id = id;
      b.addEventListener('click', () => openDetail(id));
      ul.append(el('li', null, b));
      if (!known) toFetch.push([id, label]);
    }
    sec.append(ul);
    if (ids.length > SHOW) {
      sec.append(el('p', { className: 'muted small' }, `…and ${ids.length - SHOW} more. Filter the list by this transaction's table and time to see them all.`));
    }
    // Name the items we have not loaded (a few at most, to stay inside the rate limit).
    const openId = it.id;
    (async () => {
      for (const [id, label] of toFetch.slice(0, 10)) {
        if (state.openId !== openId) return;
        try {
          const other = await api(orgPath('/' + encodeURIComponent(id)));
          if (other) label.textContent = summaryOf(other);
        } catch (_) { /* keep the id */ }
      }
    })();
    return sec;
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  function onRowActivate(ev) {
    const tr = ev.target.closest('tr.row');
    if (!tr) return;
    if (ev.type === 'click') {
      // Let people select text in a row without opening it.
      const sel = window.getSelection && window.getSelection();
      if (sel && sel.type === 'Range' && tr.contains(sel.anchorNode)) return;
    }
    openDetail(tr.dataset.id, { returnFocus: tr });
  }

  function onRowKey(ev) {
    const tr = ev.target.closest && ev.target.closest('tr.row');
    if (!tr || ev.target !== tr) return;
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      openDetail(tr.dataset.id, { returnFocus: tr });
    } else if (ev.key === 'ArrowDown' || ev.key === 'j') {
      ev.preventDefault();
      const next = tr.nextElementSibling;
      if (next) next.focus();
      else if (state.hasMore) loadMore();
    } else if (ev.key === 'ArrowUp' || ev.key === 'k') {
      ev.preventDefault();
      const prev = tr.previousElementSibling;
      if (prev) prev.focus();
    } else if (ev.key === 'Home') {
      ev.preventDefault();
      $('rows').firstElementChild?.focus();
    } else if (ev.key === 'End') {
      ev.preventDefault();
      $('rows').lastElementChild?.focus();
    }
  }

  function onGlobalKey(ev) {
    if (ev.key !== 'Escape') return;
    const openMenu = document.querySelector('details.facet[open], details.menu[open]');
    if (openMenu) {
      openMenu.open = false;
      openMenu.querySelector('summary').focus();
      ev.preventDefault();
      return;
    }
    if (!$('detail').hidden) {
      ev.preventDefault();
      closeDetail(true);
    }
  }

  function onDocClick(ev) {
    for (const d of document.querySelectorAll('details.facet[open], details.menu[open]')) {
      if (!d.contains(ev.target)) d.open = false;
    }
  }

  function onScroll() {
    if (state.newCount && !scrolledAway()) {
      state.newCount = 0;
      updatePill();
    }
  }

  function init() {
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('signin-key').value.trim();
      if (!key) {
        showSignIn('Enter an API key.');
        return;
      }
      signIn(key, false);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('rows').addEventListener('click', onRowActivate);
    $('rows').addEventListener('keydown', onRowKey);
    $('load-more').addEventListener('click', loadMore);
    $('clear-all').addEventListener('click', clearAll);
    for (const which of ['since', 'until']) {
      $(`filter-${which}`).addEventListener('change', () => onTimeInput(which));
    }
    $('live-toggle').addEventListener('change', (ev) => setLive(ev.target.checked));
    $('new-pill').addEventListener('click', () => {
      state.newCount = 0;
      updatePill();
      window.scrollTo({ top: 0, behavior: 'smooth' });
      const first = $('rows').firstElementChild;
      if (first) first.focus({ preventScroll: true });
    });
    for (const b of document.querySelectorAll('#export-menu .menu-item')) {
      b.addEventListener('click', () => { if (!b.getAttribute('aria-disabled')) doExport(b.dataset.format); });
    }
    $('export-menu').addEventListener('toggle', () => {
      if ($('export-menu').open) for (const o of document.querySelectorAll('details.facet[open]')) o.open = false;
    });
    $('filters-toggle').addEventListener('click', () => {
      const f = $('filters');
      const open = !f.classList.contains('open');
      f.classList.toggle('open', open);
      $('filters-toggle').setAttribute('aria-expanded', String(open));
    });
    $('detail-close').addEventListener('click', () => closeDetail(true));
    document.addEventListener('keydown', onGlobalKey);
    document.addEventListener('click', onDocClick);
    window.addEventListener('scroll', onScroll, { passive: true });
    window.addEventListener('popstate', () => {
      if (!state.me) return;
      const prevOpen = state.openId;
      readUrl();
      renderFacets();
      reload();
      if (state.openId && state.openId !== prevOpen) openDetail(state.openId, { focus: false });
      else if (!state.openId && prevOpen) { state.openId = prevOpen; closeDetail(false); }
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) stopPolling();
      else if (state.live) schedulePoll(0);
    });
    setInterval(refreshTimes, 15000);
    setupInfiniteScroll();

    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) signIn(saved, true);
    else showSignIn('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
