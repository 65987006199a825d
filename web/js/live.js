// Live mode: poll for items newer than the list's newest and put them on top without moving the reader.
import { ApiError, api, handleAuthError, orgPath } from './api.js';
import { $ } from './dom.js';
import { hasNewFacetValue, refreshFacets } from './facets.js';
import { filterParams } from './filters.js';
import { learnItemLabels } from './labels.js';
import { MAX_POLL_BACKOFF_MS, POLL_MS, state } from './state.js';
import { renderRow, setListState, updateCount } from './table.js';

export function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = 0;
}

export function schedulePoll(delay) {
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

export function updateLiveStatus() {
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

export function scrolledAway() {
  const list = $('list');
  const top = list.getBoundingClientRect().top + window.scrollY;
  return window.scrollY > Math.max(80, top);
}

// Newer items at the top. `items` come oldest first.
function prependItems(items) {
  const fresh = items.filter((it) => it && it.id && !state.byId.has(it.id));
  if (!fresh.length) return;
  learnItemLabels(fresh);
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

function firstVisibleRow() {
  for (const tr of $('rows').children) {
    if (tr.getBoundingClientRect().bottom > 0) return tr;
  }
  return null;
}

export function updatePill() {
  const pill = $('new-pill');
  if (state.newCount > 0) {
    pill.textContent = `↑ ${state.newCount} new item${state.newCount === 1 ? '' : 's'}`;
    pill.hidden = false;
  } else {
    pill.hidden = true;
  }
}

export function setLive(on) {
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
