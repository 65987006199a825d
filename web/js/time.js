// Times are stored in UTC and typed in UTC; people read them as "5 minutes ago" with the exact UTC on hover.
import { el } from './dom.js';

function parseTs(ts) {
  if (!ts) return NaN;
  // Keep milliseconds: some engines reject more than 3 fractional digits.
  return Date.parse(String(ts).replace(/(\.\d{3})\d+/, '$1'));
}

export function exactUtc(ts) {
  const ms = parseTs(ts);
  if (Number.isNaN(ms)) return String(ts || '');
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.000Z$|Z$/, '') + ' UTC';
}

const rtf = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat
  ? new Intl.RelativeTimeFormat('en', { numeric: 'always' })
  : null;

function relTime(ts, now = Date.now()) {
  const ms = parseTs(ts);
  if (Number.isNaN(ms)) return '';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  const f = (n, unit) => (rtf ? rtf.format(-n, unit) : `${n} ${unit}${n === 1 ? '' : 's'} ago`);
  if (s < 10) return 'just now';
  if (s < 45) return f(s, 'second');
  const m = Math.round(s / 60);
  if (m < 45) return f(Math.max(1, m), 'minute');
  const h = Math.round(s / 3600);
  if (h < 22) return f(Math.max(1, h), 'hour');
  const d = Math.round(s / 86400);
  if (d < 7) return f(Math.max(1, d), 'day');
  if (d < 30) return f(Math.max(1, Math.round(d / 7)), 'week');
  if (d < 365) return f(Math.max(1, Math.round(d / 30)), 'month');
  return f(Math.max(1, Math.round(d / 365)), 'year');
}

export function timeEl(ts) {
  const t = el('time', { className: 'reltime', dateTime: ts || '', title: exactUtc(ts) }, relTime(ts));
  t.dataset.ts = ts || '';
  return t;
}

export function refreshTimes() {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[data-ts]')) {
    const txt = relTime(t.dataset.ts, now);
    if (t.textContent !== txt) t.textContent = txt;
  }
}

// "2026-11-27T10:00" (datetime-local, read as UTC) <-> "2026-11-27T10:00:00Z" (RFC 3339).
export function localInputToRfc3339(v) {
  if (!v) return '';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::(\d{2}))?/.exec(v);
  if (!m) return '';
  return `${m[1]}T${m[2]}:${m[3] || '00'}Z`;
}

export function rfc3339ToLocalInput(v) {
  const ms = parseTs(v);
  if (Number.isNaN(ms)) return '';
  return new Date(ms).toISOString().slice(0, 16);
}

export function normalizeTimeParam(v) {
  if (!v) return '';
  // Accept what a person may type into a URL: "2026-11-27", "2026-11-27T10:00", full RFC 3339.
  let s = v.trim();
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) s += 'T00:00:00Z';
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s += 'Z';
  const ms = parseTs(s);
  if (Number.isNaN(ms)) return '';
  return new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
}
