// Whether the stored trail of the range loaded still holds: its hash chains checked against the signed
// checkpoints (admins only: the chain covers every project), and the public keys those verify with.
import { ApiError, api, errorText, orgPath } from './api.js';
import { $, el } from './dom.js';
import { state } from './state.js';
import { exactUtc, timeEl } from './time.js';

// Verifying reads the whole range from the store: a list reload within this long, for the same time range
// (another facet, say), keeps the answer it has. Live polls never verify.
const FRESH_MS = 60000;

const v = {
  range: null,
  at: 0,
  gen: 0,
  abort: null,
  // The public keys checkpoints verify with: null until known, [] when there are none.
  keys: null,
  keysLoading: false,
  keysGen: 0,
  // What the block shows, to draw it again once the keys are known.
  last: null,
};

function canVerify() {
  return !!(state.me && state.me.role === 'admin');
}

function rangeKey() {
  return `${state.filters.since}|${state.filters.until}`;
}

function rangeText() {
  const { since, until } = state.filters;
  if (since && until) return `items from ${exactUtc(since)} to ${exactUtc(until)}`;
  if (since) return `items since ${exactUtc(since)}`;
  if (until) return `items before ${exactUtc(until)}, within the retention window`;
  return 'every item in the retention window';
}

// Forget everything (sign-out, or a key that may not verify): the block is hidden.
export function resetVerification() {
  v.gen++;
  if (v.abort) v.abort.abort();
  v.abort = null;
  v.range = null;
  v.at = 0;
  v.keys = null;
  v.keysLoading = false;
  v.keysGen++;
  v.last = null;
  const box = $('verify');
  box.hidden = true;
  box.dataset.state = '';
  box.textContent = '';
}

// Called with each list (re)load: verifies the range loaded when it changed, or when the last answer is old.
export function loadVerification() {
  if (!canVerify()) {
    resetVerification();
    return;
  }
  loadKeys();
  const range = rangeKey();
  if (range === v.range && Date.now() - v.at < FRESH_MS) return;
  if (v.abort) v.abort.abort();
  const ac = new AbortController();
  v.abort = ac;
  const gen = ++v.gen;
  // The same range checked again keeps its answer in view until the new one comes.
  if (range !== v.range || !v.last || v.last.state !== 'answer') render({ state: 'loading' });
  v.range = range;
  v.at = Date.now();
  const params = [];
  if (state.filters.since) params.push(['since', state.filters.since]);
  if (state.filters.until) params.push(['until', state.filters.until]);
  api(orgPath('/integrity'), params, { signal: ac.signal }).then((data) => {
    if (gen !== v.gen) return;
    v.abort = null;
    const answer = { state: 'answer', data: data || {} };
    // The same answer again leaves the block as it is (an open list of keys stays open).
    if (v.last && v.last.state === 'answer' && JSON.stringify(v.last.data) === JSON.stringify(answer.data)) return;
    render(answer);
  }, (e) => {
    if (gen !== v.gen || (e && e.name === 'AbortError')) return;
    v.abort = null;
    v.at = 0; // try again with the next load
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      // Not this key's to see (or the key stopped working, which the list reports): nothing to show.
      resetVerification();
      return;
    }
    render({ state: 'unavailable', error: e });
  });
}

// The keys are public and change only with the server's configuration: once per sign-in.
function loadKeys() {
  if (v.keys || v.keysLoading) return;
  v.keysLoading = true;
  const gen = v.keysGen;
  api('integrity/keys').then((data) => {
    if (gen !== v.keysGen) return;
    v.keysLoading = false;
    v.keys = Array.isArray(data && data.keys) ? data.keys.filter((k) => k && k.key_id) : [];
    if (v.last) render(v.last);
  }, () => {
    // Without the list of keys the status still reads; the keys link is left out (and asked for again
    // with the next load).
    if (gen === v.keysGen) v.keysLoading = false;
  });
}

function render(what) {
  v.last = what;
  const box = $('verify');
  box.hidden = false;
  box.textContent = '';
  box.title = '';
  if (what.state === 'loading') {
    box.dataset.state = 'loading';
    box.append(el('span', { className: 'verify-mark', 'aria-hidden': 'true' }), el('span', { className: 'muted' }, 'Verifying the trail…'));
    return;
  }
  if (what.state === 'unavailable') {
    box.dataset.state = 'unavailable';
    box.title = `Could not verify the trail: ${errorText(what.error)}`;
    box.append(el('span', { className: 'verify-mark', 'aria-hidden': 'true' }),
      el('span', { className: 'muted', testid: 'verify-text' }, 'Verification unavailable'));
    return;
  }
  const d = what.data;
  const chains = Array.isArray(d.chains) ? d.chains : [];
  const items = chains.reduce((n, c) => n + (Number(c && c.items) || 0), 0);
  if (d.status === 'failed') {
    box.dataset.state = 'failed';
    box.append(el('div', { className: 'verify-alert', role: 'alert' },
      el('p', { className: 'verify-title' },
        el('span', { className: 'verify-mark', 'aria-hidden': 'true' }, '!'),
        'The trail does not verify'),
      el('p', { className: 'verify-failure', testid: 'verify-failure' }, String(d.failure || 'A check failed, and the server did not say which.')),
      el('p', { className: 'verify-note' },
        `Something changed the stored trail after it was recorded. Checked: ${rangeText()}.`),
      keysNode()));
    return;
  }
  if (d.status === 'verified' && d.verified_until) {
    box.dataset.state = 'verified';
    box.title = `Every item here is linked into its organization's hash chain, and the chain up to this time matches a checkpoint signed with a trusted key. Later items are chained, and the next checkpoint covers them. Checked: ${rangeText()}.`;
    box.append(el('span', { className: 'verify-mark', 'aria-hidden': 'true' }, '✓'),
      el('span', { testid: 'verify-text' }, 'Verified up to ', timeEl(d.verified_until)), keysNode());
    box.querySelector('time').dataset.testid = 'verify-until';
    return;
  }
  box.dataset.state = items ? 'unsigned' : 'empty';
  let text;
  if (!items) text = 'Nothing to verify in this time range';
  else if (v.keys && v.keys.length) text = 'Chain intact, not yet covered by a signed checkpoint';
  else text = 'Chain intact, not signed (no checkpoints: configure a signing key)';
  box.title = items
    ? `Every item is linked to the one before it, and the links hold; without a signed checkpoint, a rewrite of the whole chain would not show. Checked: ${rangeText()}.`
    : `No item in this range. Checked: ${rangeText()}.`;
  box.append(el('span', { className: 'verify-mark', 'aria-hidden': 'true' }, items ? '○' : ''),
    el('span', { className: 'muted', testid: 'verify-text' }, text), keysNode());
}

// "signing key 1a2b…": the ids (and public keys) an auditor keeps to check exports offline.
function keysNode() {
  const keys = v.keys || [];
  if (!keys.length) return null;
  const label = keys.length === 1 ? `signing key ${keys[0].key_id}` : `${keys.length} signing keys`;
  const body = el('div', { className: 'menu-body verify-keys-body', testid: 'verify-keys-body' },
    el('p', { className: 'verify-keys-head' }, keys.length === 1 ? 'The public key checkpoints and exports verify with' : 'The public keys checkpoints and exports verify with'),
    el('ul', { className: 'verify-keys-list' }, ...keys.map((k) => el('li', null,
      el('span', { className: 'verify-key-id', testid: 'verify-key-id' }, k.key_id),
      k.verifies === 'exports' ? el('span', { className: 'muted' }, ' (exports only) ') : null,
      el('code', { className: 'verify-key-pub' }, k.public_key || '')))),
    el('p', { className: 'muted' }, 'Keep these beside your exports: waltrail verify checks an export with them, and a checkpoint signed with any other key (or an exports-only one) does not verify.'));
  return el('details', { className: 'menu verify-keys', testid: 'verify-keys' },
    el('summary', { className: 'verify-keys-toggle', title: 'The public keys the checkpoints are signed with' }, label), body);
}
