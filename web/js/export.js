// Export downloads exactly what the filters show, through the API so the server records who exported.
import { apiFetch, errorText, handleAuthError, orgPath } from './api.js';
import { $, el, toast } from './dom.js';
import { filterParams } from './filters.js';
import { state } from './state.js';

export async function doExport(format) {
  $('export-menu').open = false;
  const buttons = document.querySelectorAll('#export-menu .menu-item, #export-menu summary');
  buttons.forEach((b) => b.setAttribute('aria-disabled', 'true'));
  const ext = format === 'csv' ? 'csv' : 'ndjson';
  toast(`Preparing ${ext.toUpperCase()} export…`);
  try {
    const res = await apiFetch(orgPath('/export'), [['format', format], ...filterParams()], {
      accept: format === 'csv' ? 'text/csv' : 'application/x-ndjson',
    });
    const blob = await res.blob();
    let name = `audit_logs-${state.me.org_id}.${ext}`;
    const cd = res.headers.get('Content-Disposition') || '';
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
    if (m) name = decodeURIComponent(m[1]).replace(/[/\\]/g, '_');
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    toast(`Exported ${name}`);
  } catch (e) {
    if (handleAuthError(e)) return;
    toast(`Export failed. ${errorText(e)}`, 'error');
  } finally {
    buttons.forEach((b) => b.removeAttribute('aria-disabled'));
  }
}
