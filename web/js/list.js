// Loading the list: the first page for the current filters, older pages on demand, and starting over.
import { api, errorText, handleAuthError, orgPath } from './api.js';
import { $, toast } from './dom.js';
import { hasNewFacetValue, refreshFacets, renderChips, updateFacetSummaries } from './facets.js';
import { filterParams, writeUrl } from './filters.js';
import { learnItemLabels } from './labels.js';
import { schedulePoll, stopPolling, updateLiveStatus, updatePill } from './live.js';
import { PAGE_SIZE, POLL_MS, state } from './state.js';
import { renderRow, setListState, updateMore } from './table.js';
import { loadVerification } from './verify.js';

export function clearList() {
  state.items = [];
  state.byId.clear();
  state.nextCursor = '';
  state.hasMore = false;
  state.pollCursor = '';
  state.newCount = 0;
  $('rows').textContent = '';
  updatePill();
}

export async function reload() {
  clearTimeout(state.reloadTimer);
  if (!state.me) return;
  const gen = ++state.gen;
  // Whether the range loaded verifies: with the list's own (debounced) loads, never with live polls.
  loadVerification();
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

export async function loadMore() {
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
  learnItemLabels(items);
  const frag = document.createDocumentFragment();
  for (const it of items) {
    if (!it || !it.id || state.byId.has(it.id)) continue;
    state.byId.set(it.id, it);
    state.items.push(it);
    frag.append(renderRow(it));
  }
  $('rows').append(frag);
}

// A filter changed: new URL, new chips, and (shortly, so several clicks make one request) a new list.
export function filtersChanged() {
  writeUrl(true);
  renderChips();
  updateFacetSummaries();
  setListState('loading');
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(reload, 150);
}

// Infinite scroll: the "Load more" area coming near the viewport loads the next page.
let observer = null;
export function setupInfiniteScroll() {
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
