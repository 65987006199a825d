// How values are named on the page: actions, resource types, sources, actors and the summary line.
// These copy the server's rules in src/audit/summary.rs.

const ACRONYMS = new Set(['API', 'SSO', 'IP', 'URL', 'MCP', 'LLM', 'OAUTH', 'ID', 'CLI', 'SDK']);

// RESOURCE_TYPE_API_KEY -> "API key", RESOURCE_TYPE_GATEWAY -> "Gateway" (same rule as the server's summary).
export function resourceNoun(t) {
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
export function nounInSentence(t) {
  const n = resourceNoun(t);
  const first = n.split(' ')[0];
  return ACRONYMS.has(first) ? n : n.charAt(0).toLowerCase() + n.slice(1);
}

function titleWord(s) {
  const lower = s.toLowerCase().replace(/_/g, ' ');
  return lower.charAt(0).toUpperCase() + lower.slice(1);
}

export function actionLabel(a) {
  return a ? titleWord(a.replace(/^AUDIT_ACTION_/, '')) : 'Unknown';
}

function actionVerb(a) {
  return (a || '').replace(/^AUDIT_ACTION_/, '').toLowerCase().replace(/_/g, ' ') || 'changed';
}

// Colour of an action's dot and badge (a presentation choice, not a label).
export function actionKind(a) {
  const v = (a || '').replace(/^AUDIT_ACTION_/, '');
  if (v === 'CREATED' || v === 'RESTORED' || v === 'ENABLED') return 'create';
  if (v === 'DELETED' || v === 'TRUNCATED') return 'delete';
  if (v === 'DISABLED' || v === 'ROTATED' || v === 'REVOKED') return 'warn';
  return 'update';
}

export function sourceLabel(s) {
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

export function principalLabel(p) {
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

export function actorName(it) {
  if (it.principal_type === 'ACCOUNT') {
    return it.actor_email || it.display_name || it.principal_id || 'Someone';
  }
  return it.display_name || it.actor_email || it.principal_id || (it.principal_type === 'SYSTEM' ? 'The system' : 'Someone');
}

export function summaryOf(it) {
  if (it.summary) return it.summary;
  const name = it.resource_display || it.resource_id;
  const who = actorName(it);
  return name
    ? `${who} ${actionVerb(it.action)} ${resourceNoun(it.resource_type)} "${name}"`
    : `${who} ${actionVerb(it.action)} a ${resourceNoun(it.resource_type)}`;
}

// A filter value as the dropdowns and chips show it.
export function valueLabel(name, v) {
  switch (name) {
    case 'project_id': return v || 'Org-wide';
    case 'resource_type': return resourceNoun(v);
    case 'action': return actionLabel(v);
    case 'source': return sourceLabel(v);
    case 'principal_type': return principalLabel(v);
    default: return v;
  }
}
