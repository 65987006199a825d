// The filters live in the URL, so a view can be reloaded, shared and walked with Back and Forward.
import { $, toast } from './dom.js';
import { LIST_FILTERS, emptyFilters, memberProjects, state } from './state.js';
import { normalizeTimeParam, rfc3339ToLocalInput } from './time.js';

export function readUrl() {
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

export function writeUrl(push) {
  const url = urlFor(state.filters, state.openId);
  if (url === location.pathname + location.search + location.hash) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

export function filterParams() {
  const p = [];
  const f = state.filters;
  for (const d of LIST_FILTERS) for (const v of f[d.name]) p.push([d.name, v]);
  if (f.since) p.push(['since', f.since]);
  if (f.until) p.push(['until', f.until]);
  return p;
}

export function activeFilterCount() {
  const f = state.filters;
  let n = (f.since ? 1 : 0) + (f.until ? 1 : 0);
  for (const d of LIST_FILTERS) n += f[d.name].length;
  return n;
}

export function syncTimeInputs() {
  $('filter-since').value = rfc3339ToLocalInput(state.filters.since);
  $('filter-until').value = rfc3339ToLocalInput(state.filters.until);
}
