// Entry point: binds the late-bound hooks, wires the page's controls and keys, and restores a saved sign-in.
import { closeDetail, openDetail } from './detail.js';
import { $ } from './dom.js';
import { doExport } from './export.js';
import { clearAll, onTimeInput, renderFacets, toggleUnaccounted } from './facets.js';
import { readUrl } from './filters.js';
import { hooks } from './hooks.js';
import { filtersChanged, loadMore, reload, setupInfiniteScroll } from './list.js';
import { schedulePoll, scrolledAway, setLive, stopPolling, updatePill } from './live.js';
import { showSignIn, signIn, signOut } from './signin.js';
import { KEY_STORAGE, state } from './state.js';
import { refreshTimes } from './time.js';

Object.assign(hooks, { signOut, filtersChanged, reload });

function onRowActivate(ev) {
  const tr = ev.target.closest('tr.row');
  if (!tr) return;
  if (ev.type === 'click') {
    // Let people select text in a row without opening it.
    const sel = window.getSelection && window.getSelection();
    if (sel && sel.type === 'Range' && tr.contains(sel.anchorNode)) return;
  }
  openDetail(tr.dataset.id, { returnFocus: tr });
}

function onRowKey(ev) {
  const tr = ev.target.closest && ev.target.closest('tr.row');
  if (!tr || ev.target !== tr) return;
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    openDetail(tr.dataset.id, { returnFocus: tr });
  } else if (ev.key === 'ArrowDown' || ev.key === 'j') {
    ev.preventDefault();
    const next = tr.nextElementSibling;
    if (next) next.focus();
    else if (state.hasMore) loadMore();
  } else if (ev.key === 'ArrowUp' || ev.key === 'k') {
    ev.preventDefault();
    const prev = tr.previousElementSibling;
    if (prev) prev.focus();
  } else if (ev.key === 'Home') {
    ev.preventDefault();
    $('rows').firstElementChild?.focus();
  } else if (ev.key === 'End') {
    ev.preventDefault();
    $('rows').lastElementChild?.focus();
  }
}

function onGlobalKey(ev) {
  if (ev.key !== 'Escape') return;
  const openMenu = document.querySelector('details.facet[open], details.menu[open]');
  if (openMenu) {
    openMenu.open = false;
    openMenu.querySelector('summary').focus();
    ev.preventDefault();
    return;
  }
  if (!$('detail').hidden) {
    ev.preventDefault();
    closeDetail(true);
  }
}

function onDocClick(ev) {
  for (const d of document.querySelectorAll('details.facet[open], details.menu[open]')) {
    if (!d.contains(ev.target)) d.open = false;
  }
}

function onScroll() {
  if (state.newCount && !scrolledAway()) {
    state.newCount = 0;
    updatePill();
  }
}

function init() {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('signin-key').value.trim();
    if (!key) {
      showSignIn('Enter an API key.');
      return;
    }
    signIn(key, false);
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('rows').addEventListener('click', onRowActivate);
  $('rows').addEventListener('keydown', onRowKey);
  $('load-more').addEventListener('click', loadMore);
  $('clear-all').addEventListener('click', clearAll);
  $('quick-unaccounted').addEventListener('click', toggleUnaccounted);
  for (const which of ['since', 'until']) {
    $(`filter-${which}`).addEventListener('change', () => onTimeInput(which));
  }
  $('live-toggle').addEventListener('change', (ev) => setLive(ev.target.checked));
  $('new-pill').addEventListener('click', () => {
    state.newCount = 0;
    updatePill();
    window.scrollTo({ top: 0, behavior: 'smooth' });
    const first = $('rows').firstElementChild;
    if (first) first.focus({ preventScroll: true });
  });
  for (const b of document.querySelectorAll('#export-menu .menu-item')) {
    b.addEventListener('click', () => { if (!b.getAttribute('aria-disabled')) doExport(b.dataset.format); });
  }
  $('export-menu').addEventListener('toggle', () => {
    if ($('export-menu').open) for (const o of document.querySelectorAll('details.facet[open]')) o.open = false;
  });
  $('filters-toggle').addEventListener('click', () => {
    const f = $('filters');
    const open = !f.classList.contains('open');
    f.classList.toggle('open', open);
    $('filters-toggle').setAttribute('aria-expanded', String(open));
  });
  $('detail-close').addEventListener('click', () => closeDetail(true));
  document.addEventListener('keydown', onGlobalKey);
  document.addEventListener('click', onDocClick);
  window.addEventListener('scroll', onScroll, { passive: true });
  window.addEventListener('popstate', () => {
    if (!state.me) return;
    const prevOpen = state.openId;
    readUrl();
    renderFacets();
    reload();
    if (state.openId && state.openId !== prevOpen) openDetail(state.openId, { focus: false });
    else if (!state.openId && prevOpen) { state.openId = prevOpen; closeDetail(false); }
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) stopPolling();
    else if (state.live) schedulePoll(0);
  });
  setInterval(refreshTimes, 15000);
  setupInfiniteScroll();

  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) signIn(saved, true);
  else showSignIn('');
}

// A module script runs once the document is parsed, so the page's elements are all there.
init();
