// Before and after of each changed field: plain values side by side, JSON and long text as a line diff.
import { el, section } from './dom.js';

function fieldOrder(it, changes) {
  const out = [];
  for (const f of it.changed_fields || []) if (f in changes && !out.includes(f)) out.push(f);
  for (const f of Object.keys(changes)) if (!out.includes(f)) out.push(f);
  return out;
}

// DDL that changed the table's values without a row change: what the event trigger reported, no values.
function renderAltered(it, d) {
  const sec = section('Schema change', 'detail-changes');
  const text = (v) => (typeof v === 'string' ? v : '');
  const list = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string') : []);
  sec.append(el('p', {}, `${text(d.command) || 'DDL'}: ${text(d.effect) || 'values may have changed without a row change'}.`));
  if (text(d.why)) sec.append(el('p', { className: 'muted small' }, `Why it could not be read: ${d.why}`));
  if (text(d.type)) sec.append(el('p', { className: 'muted small' }, `Type ${d.type}`));
  if (Array.isArray(d.renamed)) {
    const pairs = d.renamed.filter((r) => r && typeof r.from === 'string' && typeof r.to === 'string');
    if (pairs.length) sec.append(el('p', { className: 'muted small' }, `Labels renamed: ${pairs.map((r) => `${r.from} → ${r.to}`).join(', ')}`));
  } else if (d.renamed && d.renamed.redacted) {
    sec.append(el('p', { className: 'muted small' }, 'Labels renamed (not shown: a secret column uses the type).'));
  }
  const rels = list(d.relations);
  if (rels.length) sec.append(el('p', { className: 'muted small' }, `Relations: ${rels.join(', ')}`));
  const cols = list(it.changed_fields);
  if (cols.length) sec.append(el('p', { className: 'muted small' }, `Columns: ${cols.join(', ')}`));
  sec.append(el('p', { className: 'muted small' }, 'Reported by the database\'s DDL event trigger (its messages are not sealed); no per-row values are recorded.'));
  return sec;
}

export function renderChanges(it) {
  const changes = it.changes && typeof it.changes === 'object' ? it.changes : {};
  if (it.action === 'AUDIT_ACTION_ALTERED') return renderAltered(it, changes);
  const fields = fieldOrder(it, changes);
  const sec = section(fields.length ? `Changes (${fields.length} field${fields.length === 1 ? '' : 's'})` : 'Changes', 'detail-changes');
  if (!fields.length) {
    sec.append(el('p', { className: 'muted' }, it.action === 'AUDIT_ACTION_TRUNCATED'
      ? 'The table was emptied; no per-row values are recorded.'
      : 'No field values were recorded for this item.'));
    return sec;
  }
  for (const f of fields) sec.append(renderChange(f, changes[f] || {}));
  return sec;
}

function isComplex(v) {
  if (v !== null && typeof v === 'object') return true;
  return typeof v === 'string' && (v.length > 80 || v.includes('\n') || looksLikeJson(v) !== undefined);
}

function looksLikeJson(s) {
  if (typeof s !== 'string') return undefined;
  const t = s.trim();
  if (!(t.startsWith('{') && t.endsWith('}')) && !(t.startsWith('[') && t.endsWith(']'))) return undefined;
  try { return JSON.parse(t); } catch (_) { return undefined; }
}

function pretty(v) {
  if (v === undefined) return '';
  if (typeof v === 'string') {
    const parsed = looksLikeJson(v);
    return parsed !== undefined ? JSON.stringify(parsed, null, 2) : v;
  }
  return JSON.stringify(v, null, 2);
}

function scalarNode(v, present) {
  if (!present) return el('span', { className: 'muted none' }, '—');
  if (v === null) return el('span', { className: 'muted lit' }, 'null');
  if (v === '') return el('span', { className: 'muted lit' }, '(empty)');
  if (typeof v === 'string') return el('span', { className: 'val' }, v);
  return el('span', { className: 'val lit' }, JSON.stringify(v));
}

function renderChange(field, ch) {
  const hasB = Object.prototype.hasOwnProperty.call(ch, 'before');
  const hasA = Object.prototype.hasOwnProperty.call(ch, 'after');
  let tag;
  if (ch.redacted) tag = 'hidden';
  else if (hasA && !hasB) tag = 'set';
  else if (hasB && !hasA) tag = 'removed';
  else tag = 'changed';
  const box = el('div', { className: `change change-${tag}`, testid: 'change' });
  box.dataset.field = field;
  const head = el('div', { className: 'change-head' }, el('code', { className: 'field' }, field));
  box.append(head);
  if (ch.redacted) {
    head.append(el('span', { className: 'badge badge-warn', testid: 'change-redacted' }, 'changed (value hidden)'));
    box.append(el('p', { className: 'muted small' }, 'This field is secret: waltrail records that it changed, never its value.'));
    return box;
  }
  const b = ch.before;
  const a = ch.after;
  if (isComplex(b) || isComplex(a)) {
    const bo = hasB ? (typeof b === 'string' ? looksLikeJson(b) : b) : undefined;
    const ao = hasA ? (typeof a === 'string' ? looksLikeJson(a) : a) : undefined;
    if (hasB && hasA && bo && ao && typeof bo === 'object' && typeof ao === 'object') {
      const paths = changedPaths(bo, ao, '', 0);
      if (paths.length) {
        head.append(el('span', { className: 'changed-keys muted', testid: 'changed-keys' },
          `changed: ${paths.slice(0, 12).join(', ')}${paths.length > 12 ? `, and ${paths.length - 12} more` : ''}`));
      }
    }
    box.append(renderDiff(hasB ? pretty(b) : null, hasA ? pretty(a) : null));
    return box;
  }
  const grid = el('div', { className: 'ba' },
    el('div', { className: 'ba-side ba-before', testid: 'change-before' },
      el('span', { className: 'ba-label' }, 'Before'), scalarNode(b, hasB)),
    el('div', { className: 'ba-arrow', 'aria-hidden': 'true' }, '→'),
    el('div', { className: 'ba-side ba-after', testid: 'change-after' },
      el('span', { className: 'ba-label' }, 'After'), scalarNode(a, hasA)));
  box.append(grid);
  return box;
}

// Dotted paths of keys whose values differ (objects compared key by key, a few levels deep).
function changedPaths(b, a, prefix, depth) {
  const out = [];
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!isObj(b) || !isObj(a) || depth > 3) {
    if (JSON.stringify(b) !== JSON.stringify(a)) out.push(prefix || '(value)');
    return out;
  }
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])];
  for (const k of keys) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (!(k in b)) out.push(`+${p}`);
    else if (!(k in a)) out.push(`-${p}`);
    else if (JSON.stringify(b[k]) !== JSON.stringify(a[k])) {
      if (isObj(b[k]) && isObj(a[k])) out.push(...changedPaths(b[k], a[k], p, depth + 1));
      else out.push(p);
    }
  }
  return out;
}

// Line diff (longest common subsequence) of two texts; null = that side does not exist.
function diffLines(before, after) {
  const x = before === null ? [] : before.split('\n');
  const y = after === null ? [] : after.split('\n');
  const n = x.length;
  const m = y.length;
  if (n * m > 4_000_000) {
    return [...x.map((l) => ({ op: 'del', l })), ...y.map((r) => ({ op: 'ins', r }))];
  }
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * (m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = x[i] === y[j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
    }
  }
  const ops = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { ops.push({ op: 'eq', l: x[i], r: y[j] }); i++; j++; }
    else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) { ops.push({ op: 'del', l: x[i] }); i++; }
    else { ops.push({ op: 'ins', r: y[j] }); j++; }
  }
  while (i < n) ops.push({ op: 'del', l: x[i++] });
  while (j < m) ops.push({ op: 'ins', r: y[j++] });
  return ops;
}

// Side-by-side rows: runs of deleted and inserted lines are paired up.
function pairRows(ops) {
  const rows = [];
  let k = 0;
  while (k < ops.length) {
    if (ops[k].op === 'eq') { rows.push({ kind: 'eq', l: ops[k].l, r: ops[k].r }); k++; continue; }
    const dels = [];
    const ins = [];
    while (k < ops.length && ops[k].op !== 'eq') {
      if (ops[k].op === 'del') dels.push(ops[k].l); else ins.push(ops[k].r);
      k++;
    }
    for (let t = 0; t < Math.max(dels.length, ins.length); t++) {
      rows.push({ kind: 'chg', l: t < dels.length ? dels[t] : null, r: t < ins.length ? ins[t] : null });
    }
  }
  return rows;
}

function renderDiff(before, after) {
  const ops = diffLines(before, after);
  const wrap = el('div', { className: 'diff', testid: 'diff' });
  const onlyOne = before === null || after === null;

  // Split view (wide screens).
  const split = el('table', { className: 'diff-split' + (onlyOne ? ' diff-one' : '') });
  const head = el('tr', null);
  if (before !== null) head.append(el('th', { scope: 'col' }, 'Before'));
  if (after !== null) head.append(el('th', { scope: 'col' }, 'After'));
  split.append(el('thead', null, head));
  const tb = el('tbody', null);
  const rows = pairRows(ops);
  appendCollapsible(tb, rows, (r) => {
    const tr = el('tr', { className: `dl-${r.kind}` });
    if (before !== null) {
      tr.append(el('td', { className: r.kind === 'chg' && r.l !== null ? 'del' : r.l === null ? 'gap' : '', testid: 'diff-before' }, r.l === null ? '' : r.l));
    }
    if (after !== null) {
      tr.append(el('td', { className: r.kind === 'chg' && r.r !== null ? 'ins' : r.r === null ? 'gap' : '', testid: 'diff-after' }, r.r === null ? '' : r.r));
    }
    return tr;
  }, onlyOne ? 1 : 2, () => el('tr', { className: 'dl-skip' }));
  split.append(tb);
  wrap.append(split);

  // Unified view (narrow screens).
  const uni = el('div', { className: 'diff-unified', 'aria-hidden': 'true' });
  appendCollapsible(uni, ops.map((o) => ({ kind: o.op === 'eq' ? 'eq' : 'chg', op: o.op, t: o.op === 'ins' ? o.r : o.l })), (o) => {
    const sign = o.op === 'del' ? '−' : o.op === 'ins' ? '+' : ' ';
    return el('div', { className: `ul ul-${o.op}` }, el('span', { className: 'ul-sign' }, sign), o.t);
  }, 0, () => el('div', { className: 'ul ul-skip' }));
  wrap.append(uni);
  return wrap;
}

// Long runs of unchanged lines fold into a "show N unchanged lines" row.
function appendCollapsible(parent, rows, render, colspan, makeSkip) {
  const CONTEXT = 3;
  const hasChange = rows.some((r) => r.kind !== 'eq');
  let k = 0;
  while (k < rows.length) {
    if (rows[k].kind !== 'eq' || !hasChange) { parent.append(render(rows[k])); k++; continue; }
    let end = k;
    while (end < rows.length && rows[end].kind === 'eq') end++;
    const run = rows.slice(k, end);
    const keepHead = k === 0 ? 0 : CONTEXT;
    const keepTail = end === rows.length ? 0 : CONTEXT;
    if (run.length > keepHead + keepTail + 2) {
      for (const r of run.slice(0, keepHead)) parent.append(render(r));
      const hidden = run.slice(keepHead, run.length - keepTail);
      const skip = makeSkip();
      const btn = el('button', { type: 'button', className: 'diff-expand' }, `⋯ show ${hidden.length} unchanged lines`);
      btn.addEventListener('click', () => {
        const frag = document.createDocumentFragment();
        for (const r of hidden) frag.append(render(r));
        skip.replaceWith(frag);
      });
      if (colspan) skip.append(el('td', { colSpan: colspan }, btn));
      else skip.append(btn);
      parent.append(skip);
      for (const r of run.slice(run.length - keepTail)) parent.append(render(r));
    } else {
      for (const r of run) parent.append(render(r));
    }
    k = end;
  }
}
