// The filter dropdowns and the chips of active filters; picking a value asks the list to follow.
import { api, handleAuthError, orgPath } from './api.js';
import { $, el } from './dom.js';
import { activeFilterCount, syncTimeInputs } from './filters.js';
import { hooks } from './hooks.js';
import { UNACCOUNTED } from './integrity.js';
import { learnFacetLabels, valueLabel } from './labels.js';
import { FACETS, LIST_FILTERS, emptyFilters, memberProjects, state } from './state.js';
import { exactUtc, localInputToRfc3339 } from './time.js';

export async function loadFacets() {
  const me = state.me;
  try {
    const data = await api(orgPath('/facets'));
    if (state.me !== me) return; // signed out meanwhile
    state.facets = data || {};
    learnFacetLabels(state.facets);
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
  list.sort((a, b) => valueLabel(name, a).localeCompare(valueLabel(name, b)));
  // Selected values stay visible (so they can be unticked) even when nothing has them any more.
  for (const v of state.filters[name]) if (!list.includes(v)) list.push(v);
  return list;
}

// Re-render the dropdowns with new values, unless one is open (that would move what the user is
// pointing at); then it happens when it closes.
let facetsDirty = false;
export function refreshFacets() {
  if ($('facets').querySelector('details[open]')) facetsDirty = true;
  else renderFacets();
}

export function renderFacets() {
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
        hooks.filtersChanged();
      });
      const text = valueLabel(d.name, v);
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
        hooks.filtersChanged();
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

export function updateFacetSummaries() {
  for (const d of FACETS) {
    const details = document.querySelector(`[data-testid="filter-${d.name}"]`);
    if (!details) continue;
    const sel = state.filters[d.name];
    const valueEl = details.querySelector('.facet-value');
    valueEl.textContent = sel.length === 0 ? 'Any' : sel.length === 1 ? valueLabel(d.name, sel[0]) : `${sel.length} selected`;
    details.classList.toggle('is-active', sel.length > 0);
    for (const cb of details.querySelectorAll('input[type=checkbox]')) cb.checked = sel.includes(cb.value);
  }
  const n = activeFilterCount();
  $('filters-toggle').textContent = n ? `Filters (${n})` : 'Filters';
  $('clear-all').hidden = n === 0;
  $('quick-unaccounted').setAttribute('aria-pressed', String(unaccountedOnly()));
}

// The quick filter asks the first question of a security review: which changes can nobody account for?
// It is the actor_source filter set to NONE alone, so the URL, the chip and the dropdown all show it.
export function unaccountedOnly() {
  const v = state.filters.actor_source;
  return v.length === 1 && v[0] === UNACCOUNTED;
}

export function toggleUnaccounted() {
  state.filters.actor_source = unaccountedOnly() ? [] : [UNACCOUNTED];
  hooks.filtersChanged();
}

export function renderChips() {
  const box = $('chips');
  box.textContent = '';
  const f = state.filters;
  const add = (label, value, remove) => {
    const b = el('button', { type: 'button', className: 'chip', testid: 'chip', 'aria-label': `Remove filter ${label}: ${value}` },
      el('span', { className: 'chip-label' }, label + ': '), el('span', null, value), el('span', { className: 'chip-x', 'aria-hidden': 'true' }, '✕'));
    b.addEventListener('click', () => { remove(); syncTimeInputs(); hooks.filtersChanged(); });
    box.append(b);
  };
  for (const d of LIST_FILTERS) {
    for (const v of f[d.name]) add(d.label, valueLabel(d.name, v), () => { f[d.name] = f[d.name].filter((x) => x !== v); });
  }
  if (f.since) add('Since', exactUtc(f.since), () => { f.since = ''; });
  if (f.until) add('Until', exactUtc(f.until), () => { f.until = ''; });
  box.hidden = !box.childElementCount;
}

export function clearAll() {
  state.filters = emptyFilters();
  syncTimeInputs();
  hooks.filtersChanged();
}

export function onTimeInput(which) {
  const input = $(`filter-${which}`);
  const v = localInputToRfc3339(input.value);
  if (v === state.filters[which]) return;
  // A half-typed date leaves the input's value empty; only react to complete values or a real clear.
  if (!v && input.validity && input.validity.badInput) return;
  state.filters[which] = v;
  hooks.filtersChanged();
}

// Does this item bring a value that no dropdown offers yet?
export function hasNewFacetValue(it) {
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
