// Signing in with an API key (kept for this tab only), signing out, and starting the view once signed in.
import { ApiError, api, errorText } from './api.js';
import { closeDetail, openDetail } from './detail.js';
import { $, el } from './dom.js';
import { loadFacets, renderFacets } from './facets.js';
import { readUrl, writeUrl } from './filters.js';
import { clearList, reload } from './list.js';
import { stopPolling } from './live.js';
import { KEY_STORAGE, state } from './state.js';
import { resetVerification } from './verify.js';

export function showSignIn(message) {
  $('app').hidden = true;
  $('detail').hidden = true;
  document.querySelector('[data-testid=session]').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  const input = $('signin-key');
  input.setAttribute('aria-invalid', message ? 'true' : 'false');
  input.focus();
}

export async function signIn(key, fromStorage) {
  const submit = document.querySelector('[data-testid=signin-submit]');
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  state.key = key;
  try {
    const me = await api('me');
    if (!me || !me.org_id) throw new ApiError(500, 'The server did not say which organization this key belongs to.');
    state.me = me;
    sessionStorage.setItem(KEY_STORAGE, key);
    $('signin-key').value = '';
    startApp();
  } catch (e) {
    state.key = null;
    state.me = null;
    let msg;
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      msg = fromStorage
        ? 'Your saved API key is no longer accepted. Sign in again.'
        : 'That API key was not accepted (401). Check that you copied the whole key.';
    } else if (e instanceof ApiError && e.status === 0) {
      msg = 'Cannot reach the waltrail server. Check your connection and try again.';
    } else {
      msg = `Sign-in failed: ${errorText(e)}`;
    }
    showSignIn(msg);
  } finally {
    submit.disabled = false;
    submit.textContent = 'Sign in';
  }
}

export function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.me = null;
  state.gen++;
  stopPolling();
  if (state.listAbort) state.listAbort.abort();
  closeDetail(false);
  clearList();
  state.facets = {};
  state.labels.clear();
  resetVerification();
  showSignIn(message || '');
}

function startApp() {
  const me = state.me;
  $('signin').hidden = true;
  $('app').hidden = false;
  const session = document.querySelector('[data-testid=session]');
  session.hidden = false;
  const who = me.key_name || me.principal_id || 'API key';
  const scope = me.role === 'member'
    ? `member · ${(me.projects || []).join(', ') || 'no projects'}`
    : `${me.role || 'admin'} · all projects`;
  $('signin-error').hidden = true;
  const w = document.querySelector('[data-testid=whoami]');
  w.textContent = '';
  w.append(el('span', { className: 'who' }, who), el('span', { className: 'muted' }, ` ${me.org_id} · ${scope}`));
  w.title = `Signed in with key "${who}" for organization ${me.org_id} (${me.role})`;
  readUrl();
  writeUrl(false);
  renderFacets();
  loadFacets();
  reload();
  if (state.openId) openDetail(state.openId, { focus: false });
}
