// The words for actions, resource types, sources and actors come from the server's rules; this only looks them up.
import { state } from './state.js';

// Filters whose values the server names; other filters show their values as they are.
const NAMED = ['action', 'resource_type', 'source', 'principal_type', 'actor_source'];

function remember(name, value, label) {
  if (typeof label !== 'string' || value === undefined || value === null) return;
  let m = state.labels.get(name);
  if (!m) {
    m = new Map();
    state.labels.set(name, m);
  }
  m.set(String(value), label);
}

// The facets response names every value it lists.
export function learnFacetLabels(facets) {
  const labels = (facets && facets.labels) || {};
  for (const name of NAMED) {
    for (const [v, l] of Object.entries(labels[name] || {})) remember(name, v, l);
  }
}

// Items carry their own labels; values first seen in the table (live rows) are named by them.
export function learnItemLabels(items) {
  for (const it of items) {
    if (it && it.labels) for (const name of NAMED) remember(name, it[name], it.labels[name]);
  }
}

// A filter value as shown: the server's label when it named that value, otherwise the value itself
// (a value from a link that nothing on the page has named yet).
export function valueLabel(name, v) {
  if (name === 'project_id') return v || 'Org-wide';
  const m = state.labels.get(name);
  return (m && m.get(v)) ?? v;
}

// One of an item's labels (`actor`, `action`, `resource_type`, `source`, `principal_type`, `actor_source`);
// the raw value if the server sent none.
export function itemLabel(it, field) {
  const l = it.labels && it.labels[field];
  if (typeof l === 'string') return l;
  const raw = field === 'actor' ? it.principal_id : it[field];
  return raw ? String(raw) : '';
}

// "API key" stays "API key", "Gateway" becomes "gateway" (for use inside a sentence).
export function inSentence(label) {
  const first = label.split(' ')[0];
  return /^[A-Z0-9]{2,}$/.test(first) ? label : label.charAt(0).toLowerCase() + label.slice(1);
}

// Colour of an action's dot and badge (a presentation choice, not a label).
export function actionKind(a) {
  const v = (a || '').replace(/^AUDIT_ACTION_/, '');
  if (v === 'CREATED' || v === 'RESTORED' || v === 'ENABLED') return 'create';
  if (v === 'DELETED' || v === 'TRUNCATED') return 'delete';
  if (v === 'DISABLED' || v === 'ROTATED' || v === 'REVOKED' || v === 'REJECTED') return 'warn';
  // MOVED (to another organization or project) reads as the update it is.
  return 'update';
}
