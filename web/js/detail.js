// The side panel with everything about one item: who, what changed, its context and its transaction.
import { ApiError, api, errorText, handleAuthError, orgPath } from './api.js';
import { renderChanges } from './diff.js';
import { $, el, section } from './dom.js';
import { renderFacets } from './facets.js';
import { syncTimeInputs, writeUrl } from './filters.js';
import { actionKind, inSentence, itemLabel } from './labels.js';
import { actorSourceNode, contextStatusRow, detailNotices, isRejectedEvent, platformBadge, renderRejectedEvent } from './integrity.js';
import { filtersChanged } from './list.js';
import { emptyFilters, state } from './state.js';
import { actorNodes } from './table.js';
import { exactUtc, timeEl } from './time.js';

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

export async function openDetail(id, opts = {}) {
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
  title.textContent = known ? known.summary : 'Loading…';
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

export function closeDetail(restoreFocus = true) {
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
  $('detail-title').textContent = it.summary;
  const when = el('span', null, timeEl(it.timestamp), el('span', { className: 'muted' }, ` · ${exactUtc(it.timestamp)}`));

  const actor = el('span', { className: 'd-actor' }, ...actorNodes(it));
  const noun = itemLabel(it, 'resource_type');
  // A display that only repeats the noun ("Audit event", "audit event") is said once.
  const name = it.resource_display && it.resource_display.toLowerCase() === noun.toLowerCase() ? '' : it.resource_display;
  const resource = el('span', null, `${noun} `,
    el('strong', null, name || it.resource_id || ''),
    it.resource_id && name ? el('span', { className: 'muted' }, ` (${it.resource_id})`) : null);
  const project = it.project_id || platformBadge(it) || el('span', { className: 'muted' }, 'Org-wide');
  body.append(...detailNotices(it));
  body.append(dl([
    ['when', 'When', when],
    ['action', 'Action', el('span', { className: `badge badge-${actionKind(it.action)}` }, itemLabel(it, 'action'))],
    ['actor', 'Who', actor],
    ['actor_source', 'How we know who', actorSourceNode(it)],
    ['resource', 'Resource', resource],
    ['project', 'Project', project],
  ], 'detail'));

  if (it.resource_id) {
    const b = el('button', { type: 'button', className: 'btn btn-small', testid: 'detail-resource-history' },
      `All changes to this ${inSentence(noun)}`);
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

  body.append(isRejectedEvent(it) ? renderRejectedEvent(it) : renderChanges(it));

  const ctx = it.context || {};
  const ctxRows = CONTEXT_FIELDS.map(([k, label]) => [k, label, ctx[k] || (k === 'client_ip' ? it.client_ip : '')]);
  ctxRows.splice(1, 0, ['source', 'Source', itemLabel(it, 'source')]);
  ctxRows.splice(0, 0, ['principal', 'Actor id', `${it.principal_id || '—'} (${itemLabel(it, 'principal_type')})`]);
  const trust = contextStatusRow(it);
  if (trust) ctxRows.unshift(trust);
  body.append(section('Context', 'detail-context', dl(ctxRows, 'context')));

  body.append(renderTransaction(it));

  const data = it.data || {};
  body.append(section('Record', 'detail-record', dl([
    ['id', 'Item id', it.id],
    ['event', 'Transaction (event id)', it.event_id],
    // Several Postgres databases may feed one trail: which one this change was read from.
    ['source-db', 'Source database', data.source_id || ''],
    ['table', 'Table', data.table || ''],
    ['xid', 'Postgres xid', data.xid !== undefined ? String(data.xid) : ''],
    ['lsn', 'Commit LSN', data.commit_lsn || ''],
    ['stored', 'Stored', it.created_time ? exactUtc(it.created_time) : ''],
  ], 'record')));
}

// The other items of the same Postgres transaction, each opening in this panel.
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
    const label = el('span', { className: 'tx-label' }, known ? known.summary : id);
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
        if (other && other.summary) label.textContent = other.summary;
      } catch (_) { /* keep the id */ }
    }
  })();
  return sec;
}
