// How far the trail vouches for an item: how its actor was known, whether its context was trusted, items
// that concern every organization, and audit events that were rejected. Words for the page, no rules.
import { el, section } from './dom.js';
import { itemLabel } from './labels.js';

// The actor_source of a change that nothing names anyone for (direct SQL, migrations, a forgotten path).
export const UNACCOUNTED = 'NONE';

export function isUnaccounted(it) {
  return it.actor_source === UNACCOUNTED;
}

export function isRejectedEvent(it) {
  return it.action === 'AUDIT_ACTION_REJECTED' && it.resource_type === 'RESOURCE_TYPE_AUDIT_EVENT';
}

// Why a platform-wide item is shown to this organization's admins, as specific as the item allows.
function platformWhy(it) {
  const why = it.action === 'AUDIT_ACTION_TRUNCATED'
    ? 'A whole table was emptied at once, every organization\'s rows with it'
    : it.action === 'AUDIT_ACTION_ALTERED'
      ? 'A schema change altered a whole table at once, every organization\'s rows with it'
      : isRejectedEvent(it)
        ? 'The rejected event names no organization'
        : 'This concerns every organization, not only yours (a gap in the trail, say)';
  return `${why}, so every organization's admins see it.`;
}

// "All organizations", on a platform-wide item's row and in its detail panel.
export function platformBadge(it) {
  if (!it.platform_wide) return null;
  return el('span', { className: 'badge badge-platform', title: platformWhy(it), testid: 'badge-platform' }, 'All organizations');
}

// On the row of a change nobody can account for; the server's label says why on hover.
export function unaccountedBadge(it) {
  if (!isUnaccounted(it)) return null;
  return el('span', { className: 'badge badge-warn badge-unaccounted', title: itemLabel(it, 'actor_source'), testid: 'badge-unaccounted' },
    'Unaccounted');
}

// What the context message's status means for the reader; `warn` when it was not trusted.
const CONTEXT_STATUS = {
  SIGNED: { text: 'Signed, and the signature holds' },
  UNSIGNED: { text: 'Accepted without a signature' },
  REJECTED_UNSIGNED: { text: 'Rejected: not signed, and this deployment trusts only signed context', warn: true },
  REJECTED_BAD_SIGNATURE: { text: 'Rejected: its signature does not hold', warn: true },
  UNCERTAIN: { text: 'Unknown: a context message may have gone with a rolled-back savepoint', warn: true },
};

function contextStatus(it) {
  const s = (it.context && it.context.context_status) || '';
  if (!s || s === 'NONE') return null;
  return CONTEXT_STATUS[s] || { text: s, warn: s.startsWith('REJECTED') };
}

// The "Context message" row of the Context section, or null when the change had none.
export function contextStatusRow(it) {
  const st = contextStatus(it);
  if (!st) return null;
  const node = st.warn
    ? el('span', { className: 'badge badge-warn' }, st.text)
    : el('span', null, st.text);
  return ['context_status', 'Context message', node];
}

// "How we know who": the server's label, flagged when nobody can account for the change.
export function actorSourceNode(it) {
  const label = itemLabel(it, 'actor_source');
  return el('span', { className: isUnaccounted(it) ? 'actor-source is-unaccounted' : 'actor-source' }, label);
}

function notice(kind, testid, title, ...text) {
  return el('div', { className: `notice notice-${kind}`, testid, role: kind === 'warn' ? 'note' : undefined },
    el('p', { className: 'notice-title' }, title), el('p', null, ...text));
}

// What a reader must know before reading the item, at the top of its detail panel.
export function detailNotices(it) {
  const out = [];
  if (isRejectedEvent(it)) {
    out.push(notice('warn', 'detail-rejected-note', 'Rejected audit event',
      'Someone wrote an audit event message that waltrail did not seal. It is recorded as rejected, never as what it claims; who wrote it is not known.'));
  } else if (isUnaccounted(it)) {
    out.push(notice('warn', 'detail-unaccounted', 'Nobody can account for this change',
      'No context message, session or actor column named who made it. Direct SQL, migrations and code paths that do not say who acted look like this.'));
  }
  const st = contextStatus(it);
  if (st && st.warn) {
    out.push(notice('warn', 'detail-context-warning', 'The context message was not trusted',
      `${st.text}. It was not used; who made the change was found another way: `,
      el('strong', null, itemLabel(it, 'actor_source')), '.'));
  }
  if (it.action === 'AUDIT_ACTION_MOVED') {
    out.push(notice('info', 'detail-moved', 'Moved',
      'This change moved it to another organization or project. It is recorded in both, with the same changes.'));
  }
  if (it.platform_wide) {
    out.push(notice('info', 'detail-platform', 'All organizations', platformWhy(it)));
  }
  return out;
}

// A rejected event's changes are not field changes: the reason, and what it claimed, as text.
export function renderRejectedEvent(it) {
  const d = it.changes && typeof it.changes === 'object' ? it.changes : {};
  const claimed = d.claimed === undefined ? '' : typeof d.claimed === 'string' ? d.claimed : JSON.stringify(d.claimed, null, 2);
  const size = typeof d.claimed_bytes === 'number'
    ? `${d.claimed_bytes} byte${d.claimed_bytes === 1 ? '' : 's'}${d.truncated ? ' (only the start is kept)' : ''}`
    : '';
  // The server's reason reads as the end of a sentence ("it is not sealed by waltrail").
  const reason = d.reason
    ? el('p', { className: 'rejected-reason' }, 'Rejected because ', el('span', { testid: 'detail-rejected-reason' }, d.reason), '.')
    : el('p', { className: 'rejected-reason muted', testid: 'detail-rejected-reason' }, 'No reason was recorded.');
  return section('Why it was rejected', 'detail-rejected',
    reason,
    el('h4', { className: 'sub-head' }, 'What it claimed', size ? el('span', { className: 'muted' }, ` · ${size}`) : null),
    el('pre', { className: 'claimed', testid: 'detail-rejected-claimed' }, claimed));
}
