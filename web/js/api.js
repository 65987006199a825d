// Talking to the waltrail API with the signed-in key, and turning its failures into sentences.
import { hooks } from './hooks.js';
import { state } from './state.js';

export class ApiError extends Error {
  constructor(status, msg, retryAfter) {
    super(msg);
    this.status = status;
    this.retryAfter = retryAfter || 0;
  }
}

function apiUrl(path, params) {
  const url = new URL('api/v1/' + path, document.baseURI);
  for (const [k, v] of params || []) url.searchParams.append(k, v);
  return url;
}

export async function apiFetch(path, params, opts = {}) {
  let res;
  try {
    res = await fetch(apiUrl(path, params), {
      // X-Waltrail-Client lets the server record exports made from here with source DASHBOARD.
      headers: { Authorization: 'Bearer ' + state.key, Accept: opts.accept || 'application/json', 'X-Waltrail-Client': 'dashboard' },
      cache: 'no-store',
      credentials: 'omit',
      signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'Cannot reach the waltrail server. Check your connection.');
  }
  if (!res.ok) {
    let msg = '';
    try {
      const body = await res.json();
      msg = body && body.msg;
    } catch (_) { /* not JSON */ }
    const retry = parseInt(res.headers.get('Retry-After') || '', 10);
    throw new ApiError(res.status, msg || `${res.status} ${res.statusText || 'error'}`, Number.isFinite(retry) ? retry : 0);
  }
  return res;
}

export async function api(path, params, opts) {
  const res = await apiFetch(path, params, opts);
  let body;
  try {
    body = await res.json();
  } catch (_) {
    throw new ApiError(res.status, 'The server sent a response that is not JSON.');
  }
  if (body && typeof body.code === 'number' && body.code !== 200) {
    throw new ApiError(body.code, body.msg || 'Request failed');
  }
  return body ? body.data : null;
}

export function orgPath(suffix = '') {
  return `orgs/${encodeURIComponent(state.me.org_id)}/audit_logs${suffix}`;
}

export function errorText(e) {
  if (!(e instanceof ApiError)) return String(e && e.message || e);
  switch (e.status) {
    case 0: return e.message;
    case 403: return `Not allowed: ${e.message}`;
    case 429: return `Too many requests; try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' shortly'}.`;
    case 500: case 502: case 503: case 504: return `The server had trouble (${e.status}): ${e.message}`;
    default: return e.message;
  }
}

// A rejected key while signed in (revoked, or the server was reconfigured): back to the sign-in form.
export function handleAuthError(e) {
  if (e instanceof ApiError && e.status === 401 && state.key) {
    hooks.signOut('Your API key is no longer accepted. Sign in again.');
    return true;
  }
  return false;
}
