// Building page elements from data without ever parsing it as HTML, and the toast that reports outcomes.

export function el(tag, props, ...children) {
  const n = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'dataset') Object.assign(n.dataset, v);
      else if (k === 'testid') n.dataset.testid = v;
      else if (k === 'className') n.className = v;
      else if (k in n && !k.includes('-')) n[k] = v;
      else n.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

export const $ = (id) => document.getElementById(id);

// A titled part of the detail panel (the details, the changes and the transaction all use one).
export function section(title, testid, ...children) {
  return el('section', { className: 'd-section', testid }, el('h3', null, title), ...children);
}

let toastTimer = 0;
export function toast(msg, kind = 'info') {
  const t = $('toast');
  t.textContent = msg;
  t.dataset.kind = kind;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 8000 : 4000);
}
