// The one place for what the page knows and is doing: every module reads and changes this object.

export const KEY_STORAGE = 'waltrail.apiKey';
export const PAGE_SIZE = 50;
export const POLL_MS = 1000;
export const MAX_POLL_BACKOFF_MS = 30000;

// Multi-select filters, in the order they appear; `name` is the API query parameter and URL parameter.
export const FACETS = [
  { name: 'project_id', label: 'Project' },
  { name: 'user', label: 'User' },
  { name: 'resource_type', label: 'Resource type' },
  { name: 'action', label: 'Action' },
  { name: 'source', label: 'Source' },
  { name: 'principal_type', label: 'Actor type' },
  { name: 'actor_source', label: 'How we know who' },
];
// Filters that only come from links (the URL) or from "all changes to this resource"; shown as chips.
const EXTRA = [
  { name: 'resource_id', label: 'Resource id' },
  { name: 'principal_id', label: 'Actor id' },
  { name: 'changed_field', label: 'Changed field' },
];
export const LIST_FILTERS = [...FACETS, ...EXTRA];

export function emptyFilters() {
  const f = { since: '', until: '' };
  for (const d of LIST_FILTERS) f[d.name] = [];
  return f;
}

export const state = {
  key: null,
  me: null,
  filters: emptyFilters(),
  facets: {},
  // The server's label for each filter value it has named (from the facets and from items), per filter.
  labels: new Map(),
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

// A member key sees only its projects; null for an admin (or before sign-in).
export function memberProjects() {
  const me = state.me;
  return me && me.role === 'member' && Array.isArray(me.projects) ? me.projects : null;
}
