// How the audit table looks: one row per item, and what the list says while loading, empty or failed.
import { errorText } from './api.js';
import { $, el } from './dom.js';
import { clearAll, unaccountedOnly } from './facets.js';
import { activeFilterCount } from './filters.js';
import { hooks } from './hooks.js';
import { platformBadge, unaccountedBadge } from './integrity.js';
import { actionKind, itemLabel } from './labels.js';
import { PAGE_SIZE, state } from './state.js';
import { timeEl } from './time.js';

export function setListState(s, err) {
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
    const onlyUnaccounted = filtered && unaccountedOnly() && activeFilterCount() === 1;
    const box = el('div', { className: 'empty', testid: 'status-empty' },
      el('p', { className: 'empty-title' }, onlyUnaccounted
        ? 'Every change here names who made it.'
        : filtered ? 'No audit items match these filters.' : 'No audit items yet.'),
      el('p', { className: 'muted' }, onlyUnaccounted
        ? 'None of the changes this key can see is one that nobody can account for.'
        : filtered
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
    retry.addEventListener('click', () => hooks.reload());
    st.append(el('div', { className: 'error-box', testid: 'status-error', role: 'alert' },
      el('p', null, `Couldn't load audit items. ${errorText(err)}`), retry));
  }
  updateMore();
  updateCount();
}

export function updateMore() {
  const s = $('list').dataset.state;
  const btn = $('load-more');
  btn.hidden = !(state.hasMore && (s === 'ready' || s === 'loading-more' || s === 'more-error'));
  btn.disabled = state.loadingMore;
  btn.textContent = state.loadingMore ? 'Loading…' : s === 'more-error' ? 'Retry loading more' : 'Load more';
  $('list-end').hidden = !(s === 'ready' && !state.hasMore && state.items.length > PAGE_SIZE);
}

export function updateCount() {
  const n = state.items.length;
  const c = document.querySelector('[data-testid=item-count]');
  c.textContent = n ? `${n} item${n === 1 ? '' : 's'}${state.hasMore ? ' loaded, newest first' : ', newest first'}` : '';
}

export function renderRow(it) {
  const tr = el('tr', { className: 'row', tabIndex: 0, testid: 'audit-row' });
  tr.dataset.id = it.id;
  tr.dataset.action = it.action || '';
  tr.dataset.actorSource = it.actor_source || '';
  if (it.platform_wide) tr.dataset.platformWide = 'true';
  if (state.openId === it.id) tr.classList.add('is-open');

  const tdTime = el('td', { className: 'col-time', testid: 'cell-time' }, timeEl(it.timestamp));
  tdTime.dataset.label = 'When';

  const kind = actionKind(it.action);
  const tdSummary = el('td', { className: 'col-summary', testid: 'cell-summary' },
    el('span', { className: 'sum-line' },
      el('span', { className: `dot dot-${kind}`, title: itemLabel(it, 'action'), 'aria-hidden': 'true' }),
      el('span', { className: 'summary-text', testid: 'summary' }, it.summary || '')));
  const fields = Array.isArray(it.changed_fields) ? it.changed_fields : [];
  if (fields.length && it.action !== 'AUDIT_ACTION_CREATED' && it.action !== 'AUDIT_ACTION_DELETED') {
    tdSummary.append(el('span', { className: 'fields muted' }, `changed ${fields.join(', ')}`));
  }
  const platform = platformBadge(it);
  if (platform) tdSummary.append(el('span', { className: 'flags' }, platform));
  tdSummary.dataset.label = 'What';

  const tdActor = el('td', { className: 'col-actor', testid: 'cell-actor' }, ...actorNodes(it), unaccountedBadge(it));
  tdActor.dataset.label = 'Who';

  const tdRes = el('td', { className: 'col-resource', testid: 'cell-resource' },
    el('span', { className: 'res-type' }, itemLabel(it, 'resource_type')));
  if (it.resource_id) {
    tdRes.append(el('span', { className: 'res-id muted', title: it.resource_id }, it.resource_id));
  }
  tdRes.dataset.label = 'Resource';

  // A platform-wide item is in no organization, so not "Org-wide" either: its badge says what it is.
  const noProject = it.platform_wide
    ? el('span', { className: 'muted', title: 'Not in a project: it concerns every organization' }, '—')
    : el('span', { className: 'muted' }, 'Org-wide');
  const tdProj = el('td', { className: 'col-project', testid: 'cell-project' },
    it.project_id ? el('span', { className: 'proj' }, it.project_id) : noProject);
  tdProj.dataset.label = 'Project';

  tr.append(tdTime, tdSummary, tdActor, tdRes, tdProj);
  return tr;
}

// Who did it, as the table and the detail panel show it. The server's actor label already says whom an
// agent or key acted for ("deploy-bot (for bob@example.com)"), so nothing here repeats it.
export function actorNodes(it) {
  const name = itemLabel(it, 'actor');
  const nodes = [el('span', { className: 'actor-name', testid: 'actor-name' }, name)];
  const meta = [itemLabel(it, 'principal_type')];
  if (it.actor_email && it.actor_email !== name && !name.includes(it.actor_email)) meta.push(it.actor_email);
  meta.push(`via ${itemLabel(it, 'source')}`);
  nodes.push(el('span', { className: 'actor-meta muted', testid: 'actor-meta' }, meta.join(' · ')));
  return nodes;
}
