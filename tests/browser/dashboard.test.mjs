// Real-browser tests of the waltrail dashboard (headless Chromium via playwright-core).
// Driven by tests/dashboard.rs, which starts waltrail, makes the changes in Postgres and passes:
//   WALTRAIL_URL, WALTRAIL_ADMIN_KEY, WALTRAIL_MEMBER_KEY, WALTRAIL_ORG, WALTRAIL_OTHER_ADMIN_KEY,
//   WALTRAIL_OTHER_ORG, WALTRAIL_PG (libpq conninfo), WALTRAIL_PSQL, WALTRAIL_CHROMIUM, WALTRAIL_SCREENSHOTS,
//   WALTRAIL_EXPECT_ADMIN_ITEMS, WALTRAIL_EXPECT_MEMBER_ITEMS, WALTRAIL_EXPECT_OTHER_ADMIN_ITEMS,
//   WALTRAIL_BULK_UPDATES, WALTRAIL_CH_URL and WALTRAIL_CH_DB (the test's ClickHouse, to tamper with).
// Run by hand: node --test --test-reporter=spec tests/browser/dashboard.test.mjs (with those set).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/dashboard.rs sets it; see the top of this file)`);
  return v;
}

const BASE = need('WALTRAIL_URL');
const ADMIN_KEY = need('WALTRAIL_ADMIN_KEY');
const MEMBER_KEY = need('WALTRAIL_MEMBER_KEY');
const ORG = need('WALTRAIL_ORG');
// Another organization with an admin of its own: a webhook is moved into it, and platform-wide items concern it.
const OTHER_ADMIN_KEY = need('WALTRAIL_OTHER_ADMIN_KEY');
const OTHER_ORG = need('WALTRAIL_OTHER_ORG');
const OTHER_ADMIN_ITEMS = Number(need('WALTRAIL_EXPECT_OTHER_ADMIN_ITEMS'));
const PG = need('WALTRAIL_PG');
const PSQL = process.env.WALTRAIL_PSQL || 'psql';
const CH_URL = need('WALTRAIL_CH_URL');
const CH_DB = need('WALTRAIL_CH_DB');
const CHROMIUM = process.env.WALTRAIL_CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.WALTRAIL_SCREENSHOTS || join(process.cwd(), 'test-output', 'screenshots');
const ADMIN_ITEMS = Number(need('WALTRAIL_EXPECT_ADMIN_ITEMS'));
const MEMBER_ITEMS = Number(need('WALTRAIL_EXPECT_MEMBER_ITEMS'));
const BULK = Number(process.env.WALTRAIL_BULK_UPDATES || '0');
const PAGE = 50;
const LAPTOP = { width: 1366, height: 860 };
const PHONE = { width: 390, height: 844 };

let browser;
let userDataDir;
const pageErrors = [];
// Console errors other than failed API calls (several tests make those fail on purpose, and the page
// reports them itself): a module that does not load or link shows up here.
const consoleErrors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  for (const f of readdirSync(SHOTS)) if (f.startsWith('failure-')) rmSync(join(SHOTS, f));
  userDataDir = mkdtempSync(join(tmpdir(), 'waltrail-chromium-'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // playwright-core gives each launch a fresh profile of its own; the extra one keeps Chromium's own
    // first-run state out of the user's home as well.
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--disk-cache-dir=${join(userDataDir, 'cache')}`,
    ],
    env: { ...process.env, HOME: userDataDir, XDG_CONFIG_HOME: userDataDir, XDG_CACHE_HOME: userDataDir },
  });
});

after(async () => {
  if (browser) await browser.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// Helpers

async function newPage(viewport = LAPTOP) {
  const context = await browser.newContext({ viewport, acceptDownloads: true, timezoneId: 'America/New_York' });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => pageErrors.push(`${e.message}\n${e.stack || ''}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/\/api\/v1\//.test(m.location().url || '')) consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('dialog', (d) => { pageErrors.push(`unexpected dialog: ${d.message()}`); d.dismiss(); });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

// Each test runs in a fresh context; a failure leaves a screenshot of what the page showed.
function uiTest(name, fn, opts = {}) {
  test(name, { timeout: opts.timeout || 90000 }, async () => {
    const page = await newPage(opts.viewport);
    try {
      await fn(page);
      assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
      assert.deepEqual(consoleErrors, [], 'no console errors on the page');
    } catch (e) {
      const file = `failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
      await shot(page, file).catch(() => {});
      e.message += `\n(page URL ${page.url()}; screenshot ${file}.png)`;
      if (consoleErrors.length) e.message += `\nconsole errors:\n${consoleErrors.join('\n')}`;
      throw e;
    } finally {
      pageErrors.length = 0;
      consoleErrors.length = 0;
      await page.context().close();
    }
  });
}

async function signIn(page, key = ADMIN_KEY, path = '') {
  await page.goto(BASE + path);
  await page.fill('[data-testid=signin-key]', key);
  await page.click('[data-testid=signin-submit]');
  await page.waitForSelector('[data-testid=app]:visible');
  await ready(page);
}

// The list has settled: loaded with rows, or showing its empty state.
async function ready(page, states = ['ready', 'empty']) {
  await page.waitForFunction((ss) => ss.includes(document.querySelector('[data-testid=audit-list]').dataset.state), states);
}

async function rows(page) {
  return page.$$eval('[data-testid=audit-row]', (trs) => trs.map((tr) => {
    const q = (t) => tr.querySelector(`[data-testid=${t}]`);
    return {
      id: tr.dataset.id,
      action: tr.dataset.action,
      actorSource: tr.dataset.actorSource,
      platformBadge: q('badge-platform')?.textContent ?? null,
      unaccountedBadge: q('badge-unaccounted')?.textContent ?? null,
      dot: tr.querySelector('.dot').className,
      summary: q('summary').textContent,
      actor: q('cell-actor').textContent,
      actorName: q('actor-name').textContent,
      actorMeta: q('actor-meta').textContent,
      resourceType: tr.querySelector('.res-type').textContent,
      resource: q('cell-resource').textContent,
      project: q('cell-project').textContent,
      time: q('cell-time').textContent,
      title: tr.querySelector('time').getAttribute('title'),
      datetime: tr.querySelector('time').getAttribute('datetime'),
    };
  }));
}

async function rowCount(page) {
  return page.locator('[data-testid=audit-row]').count();
}

function psql(sql) {
  return new Promise((resolve, reject) => {
    execFile(PSQL, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', PG, '-c', sql], { timeout: 20000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`psql failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

// A query on the test's ClickHouse database (its HTTP interface), as the operator of the store could run it.
async function ch(sql) {
  const url = new URL(CH_URL);
  url.searchParams.set('database', CH_DB);
  const res = await fetch(url, { method: 'POST', body: sql });
  const text = await res.text();
  if (!res.ok) throw new Error(`ClickHouse: ${sql}: ${res.status} ${text}`);
  return text;
}

// Change stored items behind waltrail's back; mutations run in the background, so wait until done.
async function mutate(sql) {
  await ch(sql);
  for (let i = 0; i < 300; i++) {
    const pending = Number((await ch(`SELECT count() FROM system.mutations WHERE database = '${CH_DB}' AND NOT is_done`)).trim());
    if (pending === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`mutation not done after 15 s: ${sql}`);
}

async function pickFacet(page, name, value) {
  await page.click(`[data-testid=filter-${name}-toggle]`);
  await page.check(`[data-testid=filter-${name}] input[value="${value}"]`);
  await page.keyboard.press('Escape');
  await ready(page);
}

function params(page) {
  return new URL(page.url()).searchParams;
}

async function facetOptions(page, name) {
  return page.$$eval(`[data-testid=filter-${name}] input[type=checkbox]`, (cbs) => cbs.map((c) => c.value));
}

// Each option of a dropdown as [value, the text shown for it].
async function facetOptionTexts(page, name) {
  return page.$$eval(`[data-testid=filter-${name}] label.opt`, (ls) => ls.map((l) => [l.dataset.value, l.textContent]));
}

// The API's answer, read directly (not through the page) to compare with what the page shows.
async function apiGet(path, key = ADMIN_KEY, org = ORG) {
  const res = await fetch(new URL(`api/v1/orgs/${org}/${path}`, BASE), { headers: { Authorization: `Bearer ${key}` } });
  assert.equal(res.status, 200, `GET ${path}`);
  return (await res.json()).data;
}

// ---------------------------------------------------------------------------------------------------
// Tests

uiTest('sign-in rejects a bad key with a clear message', async (page) => {
  await page.goto(BASE);
  await page.waitForSelector('[data-testid=signin-form]:visible');
  await shot(page, 'signin');
  await page.fill('[data-testid=signin-key]', 'wt_not_a_real_key');
  await page.click('[data-testid=signin-submit]');
  const err = page.locator('[data-testid=signin-error]');
  await err.waitFor({ state: 'visible' });
  assert.match(await err.textContent(), /not accepted \(401\)/);
  assert.equal(await page.isVisible('[data-testid=app]'), false, 'the audit log stays hidden');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a bad key is not kept');
  assert.ok(!page.url().includes('wt_not_a_real_key'), 'the key is not in the URL');
  await shot(page, 'signin-bad-key');
});

test('static files: the page, its stylesheet and its modules, with their headers; other names are 404', async () => {
  // Bodies are always read, so no connection is left open to keep the test process alive.
  const get = async (path) => {
    const res = await fetch(new URL(path, BASE));
    return { status: res.status, headers: res.headers, body: await res.text() };
  };
  const index = await get('');
  assert.equal(index.status, 200);
  assert.equal(index.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.match(index.headers.get('content-security-policy'), /script-src 'self'/);
  assert.equal(index.headers.get('referrer-policy'), 'no-referrer');
  assert.match(index.body, /<script type="module" src="js\/main\.js"><\/script>/);

  // Every module main.js reaches through its imports is served as JavaScript.
  const seen = new Set();
  const todo = ['main.js'];
  while (todo.length) {
    const name = todo.pop();
    if (seen.has(name)) continue;
    seen.add(name);
    const res = await get(`js/${name}`);
    assert.equal(res.status, 200, `js/${name}`);
    assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8', `js/${name} content type`);
    assert.equal(res.headers.get('cache-control'), 'no-cache', `js/${name} cache-control`);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff', `js/${name} nosniff`);
    const src = res.body;
    assert.match(src.split('\n')[0], /^\/\/ \S/, `js/${name} starts with a comment saying its job`);
    for (const m of src.matchAll(/^import [^;]* from '\.\/([a-z-]+\.js)';$/gm)) todo.push(m[1]);
  }
  assert.ok(seen.size > 10, `main.js reaches the dashboard's modules (${[...seen].join(', ')})`);

  const css = await get('app.css');
  assert.equal(css.status, 200);
  assert.equal(css.headers.get('content-type'), 'text/css; charset=utf-8');

  for (const path of ['js/nope.js', 'js/', 'js/main.js/x', 'app.js']) {
    const res = await get(path);
    assert.equal(res.status, 404, `${path} is not served`);
  }
});

uiTest('the page loads its modules with no console errors', async (page) => {
  // Every console message counts here, failed API calls included.
  const all = [];
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') all.push(`${m.type()}: ${m.text()}`); });
  const modules = [];
  page.on('response', (r) => { if (/\/js\/[^/]+\.js$/.test(r.url())) modules.push([r.url(), r.status()]); });
  await page.goto(BASE);
  await page.waitForSelector('[data-testid=signin-form]:visible');
  assert.ok(modules.length > 10, `the modules were loaded: ${JSON.stringify(modules)}`);
  assert.ok(modules.every(([, status]) => status === 200), `every module answered 200: ${JSON.stringify(modules)}`);
  await signIn(page, ADMIN_KEY);
  await page.waitForFunction(() => document.querySelector('[data-testid=filter-action] input[type=checkbox]'));
  assert.deepEqual(all, [], 'no console errors or warnings while loading and signing in');
});

uiTest('sign-in with an admin key shows the items made in Postgres, newest first', async (page) => {
  await signIn(page, ADMIN_KEY);
  assert.ok(!page.url().includes(ADMIN_KEY), 'the key is never in the URL');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('waltrail.apiKey')), ADMIN_KEY, 'the key is kept for this tab only');
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
  assert.match(await page.textContent('[data-testid=whoami]'), /dashboard-admin.*org_acme.*admin/);

  const rs = await rows(page);
  assert.equal(rs.length, Math.min(PAGE, ADMIN_ITEMS), 'one page of items');
  // Newest first by commit time.
  for (let i = 1; i < rs.length; i++) {
    assert.ok(rs[i - 1].datetime >= rs[i].datetime, `row ${i} is not older than row ${i - 1}`);
  }
  const find = (re) => {
    const r = rs.find((x) => re.test(x.summary));
    assert.ok(r, `a row whose summary matches ${re}; summaries:\n${rs.slice(0, 20).map((x) => x.summary).join('\n')}`);
    return r;
  };
  // The three deployments of one transaction are the newest.
  find(/created Deployment "trainer-c"/);
  const created = find(/alice@example\.com created Gateway "arcade"/);
  assert.match(created.actorMeta, /User · via Dashboard/);
  assert.equal(created.resource.startsWith('Gateway'), true);
  assert.equal(created.project, 'proj_web');
  assert.match(created.time, /just now|seconds? ago|minutes? ago/);
  assert.match(created.title, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? UTC$/, 'exact UTC time on hover');

  const agent = find(/updated Gateway "arcade"/);
  // The server's actor label names who the agent acted for, once: no badge repeats it.
  assert.equal(agent.actorName, 'deploy-bot (for bob@example.com)');
  assert.match(agent.actorMeta, /Agent · via SDK/);
  assert.equal(agent.actor.split('bob@example.com').length - 1, 1, `the person acted for is named once: "${agent.actor}"`);
  assert.doesNotMatch(agent.actor, /agent for/);

  const rotated = find(/rotated API key "prod-key-1"/);
  assert.ok(rotated.resource.startsWith('API key'), `resource type shown as "API key": ${rotated.resource}`);
  assert.match(rotated.actorMeta, /via API/);

  const setting = find(/created Setting "sso_required"/);
  assert.equal(setting.project, 'Org-wide');

  // A resource name made of markup is shown as text and never runs.
  const xss = find(/<img src=x onerror="window\.__xss=1">legacy-edge/);
  assert.equal(xss.action, 'AUDIT_ACTION_DELETED');
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'markup in data never runs');
  assert.equal(await page.locator('[data-testid=audit-table] img').count(), 0, 'no element made from data');

  assert.equal(await page.isVisible('[data-testid=load-more]'), ADMIN_ITEMS > PAGE);
  await shot(page, 'table');
});

uiTest('labels are the server\'s: items, filters and chips show what the API says', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });

  // Each row's actor, actor type, source and resource type are the item's labels from the API.
  const items = new Map((await apiGet(`audit_logs?limit=${PAGE}`)).items.map((it) => [it.id, it]));
  const rs = await rows(page);
  const both = rs.filter((r) => items.has(r.id));
  assert.ok(both.length >= PAGE - 5, `the table and the API show the same first page (${both.length} rows in common)`);
  for (const r of both) {
    const l = items.get(r.id).labels;
    assert.equal(r.actorName, l.actor, `row ${r.id}: actor`);
    assert.equal(r.resourceType, l.resource_type, `row ${r.id}: resource type`);
    assert.ok(r.actorMeta.startsWith(`${l.principal_type} · `), `row ${r.id}: actor type in "${r.actorMeta}"`);
    assert.ok(r.actorMeta.endsWith(` · via ${l.source}`), `row ${r.id}: source in "${r.actorMeta}"`);
  }
  const agent = both.find((r) => /updated Gateway "arcade"/.test(r.summary));
  assert.equal(agent.actorName, 'deploy-bot (for bob@example.com)');

  // Every option of the labelled dropdowns is the facets response's label for its value; a derived action
  // (configured in the mapping, not built in) is named too.
  const facets = await apiGet('audit_logs/facets');
  for (const name of ['action', 'resource_type', 'source', 'principal_type', 'actor_source']) {
    const opts = await facetOptionTexts(page, name);
    assert.ok(opts.length > 0, `${name} has options`);
    for (const [value, text] of opts) {
      assert.equal(text, facets.labels[name][value], `${name} option ${value}`);
    }
  }
  assert.deepEqual((await facetOptionTexts(page, 'action')).find(([v]) => v === 'AUDIT_ACTION_ROTATED'), ['AUDIT_ACTION_ROTATED', 'Rotated']);
  assert.deepEqual((await facetOptionTexts(page, 'resource_type')).find(([v]) => v === 'RESOURCE_TYPE_API_KEY'), ['RESOURCE_TYPE_API_KEY', 'API key']);
  assert.deepEqual((await facetOptionTexts(page, 'source')).find(([v]) => v === 'AUDIT_SOURCE_DASHBOARD'), ['AUDIT_SOURCE_DASHBOARD', 'Dashboard']);
  assert.deepEqual((await facetOptionTexts(page, 'actor_source')).find(([v]) => v === 'NONE'), ['NONE', 'Nobody can account for it']);
  assert.equal(await page.textContent('[data-testid=filter-actor_source-toggle] .facet-label'), 'How we know who');

  // The detail panel's badge and context use them as well.
  await page.locator('[data-testid=audit-row]', { hasText: 'rotated API key "prod-key-1"' }).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.equal((await page.textContent('[data-testid=detail-action]')).trim(), 'Rotated');
  assert.equal((await page.textContent('[data-testid=context-source]')).trim(), 'API');
  assert.equal((await page.textContent('[data-testid=detail-resource-history]')).trim(), 'All changes to this API key');
  await page.keyboard.press('Escape');

  // A filter value from a link is named once the server has named it; one it has not named shows as it is.
  await page.goto(`${BASE}?action=AUDIT_ACTION_ROTATED`);
  await ready(page);
  await page.waitForFunction(() => document.querySelector('[data-testid=chip]')?.textContent.includes('Action: Rotated'));
  await page.goto(`${BASE}?action=AUDIT_ACTION_RESTORED`);
  await ready(page);
  await page.waitForFunction(() => document.querySelector('[data-testid=filter-action] input[value=AUDIT_ACTION_ROTATED]'));
  assert.equal((await page.textContent('[data-testid=chip]')).replace('✕', ''), 'Action: AUDIT_ACTION_RESTORED');
  assert.equal(await page.textContent('[data-testid=filter-action-toggle] .facet-value'), 'AUDIT_ACTION_RESTORED');
});

uiTest('labels are not computed in the page: changed server labels show as sent', async (page) => {
  // Answer the page with the server's responses, labels reworded: what it shows can only come from them.
  await page.route(/\/audit_logs\/facets/, async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    for (const m of Object.values(body.data.labels)) for (const k of Object.keys(m)) m[k] = `«${m[k]}»`;
    await route.fulfill({ status: res.status(), json: body });
  });
  await page.route(/\/audit_logs\?/, async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    for (const it of body.data.items || []) for (const k of Object.keys(it.labels)) it.labels[k] = `«${it.labels[k]}»`;
    await route.fulfill({ status: res.status(), json: body });
  });
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const rs = await rows(page);
  assert.ok(rs.length > 0);
  for (const r of rs) {
    assert.match(r.actorName, /^«.*»$/, `actor of ${r.id}`);
    assert.match(r.resourceType, /^«.*»$/, `resource type of ${r.id}`);
    assert.match(r.actorMeta, /^«.*» · .*via «.*»$/, `actor type and source of ${r.id}`);
  }
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=filter-action] label.opt')]
    .some((l) => l.textContent === '«Rotated»'));
  for (const name of ['action', 'resource_type', 'source', 'principal_type', 'actor_source']) {
    for (const [value, text] of await facetOptionTexts(page, name)) assert.match(text, /^«.*»$/, `${name} option ${value}`);
  }
  // The unaccounted badge's explanation is the item's label too.
  for (const t of await page.$$eval('[data-testid=badge-unaccounted]', (bs) => bs.map((b) => b.title))) assert.match(t, /^«.*»$/);
});

uiTest('paging: Load more and infinite scroll load older items without repeats', async (page) => {
  assert.ok(ADMIN_ITEMS > 2 * PAGE, `the fixture has more than two pages (${ADMIN_ITEMS})`);
  await page.goto(BASE);
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); }); // no live rows while paging
  assert.equal(await rowCount(page), PAGE);
  // The button, pressed without scrolling to it (scrolling there would trigger the infinite scroll too).
  await page.locator('[data-testid=load-more]').evaluate((b) => b.click());
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=audit-row]').length >= n, 2 * PAGE);
  await page.waitForFunction(() => document.querySelector('[data-testid=audit-list]').dataset.state === 'ready');
  assert.equal(await rowCount(page), 2 * PAGE, 'Load more adds one page');
  // Infinite scroll: reaching the bottom loads the rest.
  await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=audit-row]').length >= n, ADMIN_ITEMS);
  await page.locator('[data-testid=list-end]').waitFor({ state: 'visible' });
  assert.equal(await page.isVisible('[data-testid=load-more]'), false, 'no Load more at the end');
  const rs = await rows(page);
  assert.equal(rs.length, ADMIN_ITEMS, 'every item once');
  assert.equal(new Set(rs.map((r) => r.id)).size, rs.length, 'no duplicate rows');
  for (let i = 1; i < rs.length; i++) {
    assert.ok(rs[i - 1].datetime >= rs[i].datetime, `row ${i} is out of order across pages`);
  }
  const bulk = rs.filter((r) => /updated Deployment "worker-pool"/.test(r.summary));
  assert.equal(bulk.length, BULK, 'all the routine updates, from every page');
  // The oldest items are the first changes made.
  assert.match(rs[rs.length - 1].summary, /created Project "(Web|ML)"/);
  assert.match(await page.textContent('[data-testid=item-count]'), new RegExp(`^${ADMIN_ITEMS} items`));
});

uiTest('each filter narrows the table and survives a reload through the URL', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });

  const cases = [
    { name: 'project_id', value: 'proj_web', check: (r) => r.project === 'proj_web', expect: MEMBER_ITEMS },
    { name: 'user', value: 'bob@example.com', check: (r) => /bob@example\.com/.test(r.actor) },
    { name: 'resource_type', value: 'RESOURCE_TYPE_API_KEY', check: (r) => r.resource.startsWith('API key'), expect: 2 },
    { name: 'action', value: 'AUDIT_ACTION_DELETED', check: (r) => r.action === 'AUDIT_ACTION_DELETED', expect: 1 },
    { name: 'source', value: 'AUDIT_SOURCE_SDK', check: (r) => /via SDK/.test(r.actorMeta), expect: 1 },
  ];
  for (const c of cases) {
    await pickFacet(page, c.name, c.value);
    assert.deepEqual(params(page).getAll(c.name), [c.value], `the URL carries ${c.name}`);
    let rs = await rows(page);
    assert.ok(rs.length > 0, `${c.name}=${c.value} leaves some rows`);
    assert.ok(rs.length < PAGE, `${c.name}=${c.value} narrows the table (${rs.length} rows)`);
    for (const r of rs) assert.ok(c.check(r), `${c.name}=${c.value} lets through: ${JSON.stringify(r)}`);
    if (c.expect !== undefined) assert.equal(rs.length, c.expect, `${c.name}=${c.value} rows`);
    const before = rs.map((r) => r.id);
    if (c.name === 'resource_type') await shot(page, 'filtered');

    await page.reload();
    await ready(page);
    rs = await rows(page);
    assert.deepEqual(rs.map((r) => r.id), before, `${c.name} survives a reload`);
    assert.equal(await page.isChecked(`[data-testid=filter-${c.name}] input[value="${c.value}"]`), true, 'the option is still ticked');
    assert.equal(await page.locator('[data-testid=chip]').count(), 1, 'one chip for the active filter');

    // Remove it through its chip.
    await page.click('[data-testid=chip]');
    await ready(page);
    assert.equal(params(page).getAll(c.name).length, 0);
    assert.equal(await rowCount(page), PAGE, 'back to the full first page');
  }

  // Several values of one filter: OR. Two filters: AND.
  await pickFacet(page, 'action', 'AUDIT_ACTION_DELETED');
  await pickFacet(page, 'action', 'AUDIT_ACTION_ROTATED');
  let rs = await rows(page);
  assert.deepEqual(rs.map((r) => r.action).sort(), ['AUDIT_ACTION_DELETED', 'AUDIT_ACTION_ROTATED']);
  assert.deepEqual(params(page).getAll('action').sort(), ['AUDIT_ACTION_DELETED', 'AUDIT_ACTION_ROTATED']);
  await pickFacet(page, 'resource_type', 'RESOURCE_TYPE_GATEWAY');
  rs = await rows(page);
  assert.equal(rs.length, 1);
  assert.match(rs[0].summary, /deleted Gateway/);
  await page.click('[data-testid=filter-clear]');
  await ready(page);
  assert.equal(new URL(page.url()).search, '', 'Clear all empties the URL');
  assert.equal(await rowCount(page), PAGE);

  // Time range (UTC): nothing after 2099, nothing before 2001, everything since an hour ago.
  await page.fill('[data-testid=filter-since]', '2099-01-01T00:00');
  await ready(page);
  assert.equal(params(page).get('since'), '2099-01-01T00:00:00Z', 'the datetime-local value is read as UTC');
  await page.locator('[data-testid=status-empty]').waitFor();
  assert.match(await page.textContent('[data-testid=status-empty]'), /No audit items match these filters/);
  await shot(page, 'empty');
  await page.reload();
  await ready(page);
  assert.equal(await page.inputValue('[data-testid=filter-since]'), '2099-01-01T00:00', 'since restored from the URL');
  assert.equal(await rowCount(page), 0);
  await page.click('[data-testid=empty-clear]');
  await ready(page);

  await page.fill('[data-testid=filter-until]', '2001-01-01T00:00');
  await ready(page);
  assert.equal(params(page).get('until'), '2001-01-01T00:00:00Z');
  assert.equal(await rowCount(page), 0);
  await page.fill('[data-testid=filter-until]', '');
  await ready(page);

  const hourAgo = new Date(Date.now() - 3600e3).toISOString().slice(0, 16);
  await page.fill('[data-testid=filter-since]', hourAgo);
  await ready(page);
  assert.equal(await rowCount(page), PAGE, 'everything is newer than an hour ago');

  // A shared link reproduces the view (and never carries the key).
  await page.goto(`${BASE}?resource_type=RESOURCE_TYPE_GATEWAY&action=AUDIT_ACTION_CREATED`);
  await ready(page);
  rs = await rows(page);
  assert.deepEqual(rs.map((r) => r.summary).sort(), ['alice@example.com created Gateway "arcade"',
    'bob@example.com created Gateway "<img src=x onerror="window.__xss=1">legacy-edge"'].sort());
  assert.ok(!page.url().includes(ADMIN_KEY));
});

uiTest('a network error shows a retry; keyboard moves between rows', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  // The list request fails (server unreachable): an error with a Retry button, no stale rows.
  await page.route(/\/audit_logs\?/, (route) => route.abort('connectionrefused'));
  await page.click('[data-testid=filter-action-toggle]');
  await page.check('[data-testid=filter-action] input[value=AUDIT_ACTION_CREATED]');
  await page.keyboard.press('Escape');
  await ready(page, ['error']);
  const err = page.locator('[data-testid=status-error]');
  assert.match(await err.textContent(), /Couldn't load audit items\. Cannot reach the waltrail server/);
  assert.equal(await rowCount(page), 0);
  await shot(page, 'error');
  await page.unroute(/\/audit_logs\?/);
  await page.click('[data-testid=retry]');
  await ready(page);
  const rs = await rows(page);
  assert.ok(rs.length > 0 && rs.every((r) => r.action === 'AUDIT_ACTION_CREATED'), 'retry loads the filtered view');

  // Arrow keys move between rows; Enter opens; Esc returns to the same row.
  await page.locator('[data-testid=audit-row]').first().focus();
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  const focused = await page.evaluate(() => document.activeElement.dataset.id);
  assert.equal(focused, rs[2].id, 'two rows down');
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.equal(await page.getAttribute('[data-testid=detail-panel]', 'data-id'), rs[2].id);
  await page.keyboard.press('Escape');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.id), rs[2].id);
});

uiTest('detail panel: before/after, JSON diff, redacted field, context, same transaction', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const panel = page.locator('[data-testid=detail-panel]');

  // The agent's config update: a JSON diff with the changed keys highlighted.
  const row = page.locator('[data-testid=audit-row]', { hasText: 'updated Gateway "arcade"' });
  await row.click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.ok(params(page).get('item'), 'the open item is in the URL');
  const config = panel.locator('[data-testid=change][data-field=config]');
  assert.match(await config.locator('[data-testid=changed-keys]').textContent(), /rate_limit\.rps.*routes|routes.*rate_limit\.rps/);
  const dels = await config.locator('td.del').allTextContents();
  const ins = await config.locator('td.ins').allTextContents();
  assert.ok(dels.some((t) => /"rps": 50/.test(t)), `before shows rps 50 highlighted: ${dels}`);
  assert.ok(ins.some((t) => /"rps": 80/.test(t)), `after shows rps 80 highlighted: ${ins}`);
  assert.ok(ins.some((t) => /"\/v1\/tools"/.test(t)), `after shows the added route: ${ins}`);
  assert.ok(!dels.some((t) => /upstream/.test(t)), 'unchanged keys are not highlighted');
  assert.match(await panel.locator('[data-testid=detail-context]').textContent(), /sess_agent/);
  assert.equal((await panel.locator('[data-testid=context-auth_method]').textContent()).trim(), 'API_KEY');
  assert.equal((await panel.locator('[data-testid=context-client_ip]').textContent()).trim(), '10.9.9.9');
  assert.equal((await panel.locator('[data-testid=context-user_agent]').textContent()).trim(), 'agent-sdk/1.0');
  assert.match(await panel.locator('[data-testid=context-on_behalf_of_display]').textContent(), /bob@example\.com/);
  // The Postgres database it was read from (the harness names each test's source test-<name>).
  assert.match((await panel.locator('[data-testid=record-source-db]').textContent()).trim(), /^test-/);
  await shot(page, 'detail');

  // Esc closes it and gives focus back to the row.
  await page.keyboard.press('Escape');
  await panel.waitFor({ state: 'hidden' });
  assert.equal(params(page).get('item'), null);
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'audit-row');

  // Keyboard: focus the rotated key's row and press Enter. The hash is redacted; the message's context shows.
  const rotated = page.locator('[data-testid=audit-row]', { hasText: 'rotated API key "prod-key-1"' });
  await rotated.focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  const hash = panel.locator('[data-testid=change][data-field=key_hash]');
  assert.equal((await hash.locator('[data-testid=change-redacted]').textContent()).trim(), 'changed (value hidden)');
  assert.ok(!(await panel.textContent()).includes('hash-two'), 'the secret value is nowhere in the panel');
  assert.equal((await panel.locator('[data-testid=context-request_id]').textContent()).trim(), 'req-rotate-1');
  assert.equal((await panel.locator('[data-testid=context-run_id]').textContent()).trim(), 'run-42');
  assert.equal((await panel.locator('[data-testid=context-key_id]').textContent()).trim(), 'key_ci');
  await shot(page, 'detail-redacted');
  await page.keyboard.press('Escape');

  // A plain before/after of a scalar field.
  await page.locator('[data-testid=audit-row]', { hasText: 'updated Deployment "worker-pool"' }).first().click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  const replicas = panel.locator('[data-testid=change][data-field=replicas]');
  assert.equal((await replicas.locator('[data-testid=change-before] .val').textContent()).trim(), String(BULK));
  assert.equal((await replicas.locator('[data-testid=change-after] .val').textContent()).trim(), String(BULK + 1));

  // The other items of one transaction, each clickable.
  // Another row, clicked while the panel is open.
  await page.locator('[data-testid=audit-row]', { hasText: 'created Deployment "trainer-a"' }).locator('[data-testid=cell-summary]').click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  const tx = panel.locator('[data-testid=tx-item]');
  assert.equal(await tx.count(), 2, 'two other items in the transaction');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=tx-item]')].every((b) => /trainer-[bc]/.test(b.textContent)));
  const target = await tx.filter({ hasText: 'trainer-c' }).getAttribute('data-id');
  await tx.filter({ hasText: 'trainer-c' }).click();
  await page.waitForFunction((id) => {
    const p = document.querySelector('[data-testid=detail-panel]');
    return p.dataset.id === id && p.dataset.state === 'ready';
  }, target);
  assert.match(await page.textContent('[data-testid=detail-summary]'), /created Deployment "trainer-c"/);
  assert.equal(params(page).get('item'), target);

  // A link to an item opens it after sign-in.
  const link = page.url();
  const other = await newPage();
  try {
    await other.goto(link);
    await other.fill('[data-testid=signin-key]', ADMIN_KEY);
    await other.click('[data-testid=signin-submit]');
    await other.waitForSelector('[data-testid=detail-panel][data-state=ready]');
    assert.match(await other.textContent('[data-testid=detail-summary]'), /trainer-c/);
  } finally {
    await other.context().close();
  }

  // "All changes to this gateway": the two-click answer to "did anyone touch it?".
  await page.keyboard.press('Escape');
  await page.locator('[data-testid=audit-row]', { hasText: 'created Gateway "arcade"' }).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  await page.click('[data-testid=detail-resource-history]');
  await ready(page);
  const rs = await rows(page);
  assert.equal(rs.length, 2);
  assert.deepEqual(params(page).getAll('resource_id'), ['gw_arcade']);
});

uiTest('unaccounted changes: a quick filter shows exactly them, in the URL and as a removable chip', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const quick = page.locator('[data-testid=quick-unaccounted]');
  assert.equal(await quick.getAttribute('aria-pressed'), 'false');
  assert.match(await quick.textContent(), /Unaccounted changes/);

  // What the server says nobody can account for: the direct SQL, the TRUNCATE and the forged event.
  const want = (await apiGet('audit_logs?actor_source=NONE&limit=100')).items;
  const summaries = want.map((it) => it.summary);
  assert.ok(summaries.some((x) => /updated Setting "sso_required"/.test(x)), `the direct SQL change: ${summaries}`);
  assert.ok(summaries.some((x) => /truncated every Webhook/.test(x)), `the TRUNCATE: ${summaries}`);
  assert.ok(summaries.some((x) => /audit event waltrail did not write/.test(x)), `the forged event: ${summaries}`);

  // Before: their rows say so with a badge explained by the server's label; no other row does.
  let rs = await rows(page);
  for (const r of rs) {
    assert.equal(r.unaccountedBadge !== null, r.actorSource === 'NONE', `row ${r.summary}: badge only when unaccounted`);
  }
  const label = want[0].labels.actor_source;
  assert.equal(label, 'Nobody can account for it');
  assert.equal(await page.locator('[data-testid=badge-unaccounted]').first().getAttribute('title'), label);

  await quick.click();
  await ready(page);
  assert.equal(await quick.getAttribute('aria-pressed'), 'true');
  assert.deepEqual(params(page).getAll('actor_source'), ['NONE'], 'the URL carries it like any filter');
  rs = await rows(page);
  assert.deepEqual(rs.map((r) => r.id), want.map((it) => it.id), 'exactly the unaccounted items, newest first');
  assert.ok(rs.every((r) => r.actorSource === 'NONE' && r.unaccountedBadge === 'Unaccounted'));
  const chip = page.locator('[data-testid=chip]');
  assert.equal(await chip.count(), 1);
  assert.equal((await chip.textContent()).replace('✕', ''), `How we know who: ${label}`);
  assert.equal(await page.isChecked('[data-testid=filter-actor_source] input[value=NONE]'), true, 'the dropdown agrees');
  assert.equal(await page.textContent('[data-testid=filter-actor_source-toggle] .facet-value'), label);
  await shot(page, 'unaccounted');

  // A reload (or a shared link) keeps it.
  await page.reload();
  await ready(page);
  assert.equal(await page.getAttribute('[data-testid=quick-unaccounted]', 'aria-pressed'), 'true');
  assert.deepEqual((await rows(page)).map((r) => r.id), want.map((it) => it.id));

  // Its chip removes it.
  await page.click('[data-testid=chip]');
  await ready(page);
  assert.equal(params(page).getAll('actor_source').length, 0);
  assert.equal(await quick.getAttribute('aria-pressed'), 'false');
  assert.equal(await rowCount(page), PAGE, 'back to the full first page');

  // The button turns it off as well; with another filter it narrows that filter's view.
  await quick.click();
  await ready(page);
  await pickFacet(page, 'resource_type', 'RESOURCE_TYPE_SETTING');
  rs = await rows(page);
  assert.deepEqual(rs.map((r) => r.summary), ['Someone updated Setting "sso_required"']);
  await quick.click();
  await ready(page);
  assert.deepEqual(params(page).getAll('actor_source'), []);
  assert.deepEqual(params(page).getAll('resource_type'), ['RESOURCE_TYPE_SETTING']);
  assert.ok((await rowCount(page)) > 1);

  // Another source from the dropdown: the button is not "on" for it.
  await page.click('[data-testid=filter-clear]');
  await ready(page);
  await pickFacet(page, 'actor_source', 'ROW_SESSION');
  assert.equal(await quick.getAttribute('aria-pressed'), 'false');
  rs = await rows(page);
  assert.ok(rs.length > 0 && rs.every((r) => r.actorSource === 'ROW_SESSION'));

  // A key that sees no such change is told so in plain words (the web team's project has none).
  const member = await newPage();
  try {
    await signIn(member, MEMBER_KEY, '?actor_source=NONE');
    assert.equal(await rowCount(member), 0);
    assert.match(await member.textContent('[data-testid=status-empty]'), /Every change here names who made it/);
  } finally {
    await member.context().close();
  }
});

uiTest('detail panel: how we know who, and whether the context message was trusted', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const panel = page.locator('[data-testid=detail-panel]');
  const open = async (text) => {
    const row = page.locator('[data-testid=audit-row]', { hasText: text });
    const id = await row.getAttribute('data-id');
    await row.click();
    await page.waitForFunction((want) => {
      const p = document.querySelector('[data-testid=detail-panel]');
      return p.dataset.id === want && p.dataset.state === 'ready';
    }, id);
    return apiGet(`audit_logs/${id}`);
  };
  const text = async (testid) => (await panel.locator(`[data-testid=${testid}]`).textContent()).trim();

  // A session on the row named the actor; no context message, so nothing to say about one.
  let it = await open('created Gateway "arcade"');
  assert.equal(it.actor_source, 'ROW_SESSION');
  assert.equal(await text('detail-actor_source'), it.labels.actor_source);
  assert.equal(await panel.locator('[data-testid=context-context_status]').count(), 0, 'no context message, no row for it');
  assert.equal(await panel.locator('[data-testid=detail-context-warning]').count(), 0);

  // An unsigned context message named the actor: accepted, and said so.
  it = await open('rotated API key "prod-key-1"');
  assert.equal(it.actor_source, 'CONTEXT_MESSAGE');
  assert.equal(it.context.context_status, 'UNSIGNED');
  assert.equal(await text('detail-actor_source'), it.labels.actor_source);
  assert.equal(await text('context-context_status'), 'Accepted without a signature');
  assert.equal(await panel.locator('[data-testid=detail-context-warning]').count(), 0);

  // A context message whose signature does not hold: a warning, and the actor from the row's session.
  it = await open('created Setting "ip_allowlist"');
  assert.equal(it.context.context_status, 'REJECTED_BAD_SIGNATURE');
  assert.equal(it.actor_source, 'ROW_SESSION');
  assert.match(await text('detail-actor'), /carol@example\.com/, 'the session\'s carol, not the message\'s alice');
  assert.equal(await text('detail-actor_source'), it.labels.actor_source);
  const warning = panel.locator('[data-testid=detail-context-warning]');
  assert.ok(await warning.isVisible(), 'a rejected context stands out');
  assert.match(await warning.textContent(), /not trusted.*signature does not hold/s);
  assert.ok((await warning.textContent()).includes(it.labels.actor_source), 'it says where the actor came from instead');
  assert.match(await text('context-context_status'), /^Rejected/);
  assert.equal(await panel.locator('[data-testid=context-context_status] .badge-warn').count(), 1);
  await shot(page, 'detail-context-rejected');

  // Nobody can account for it: the label, and a warning saying what that means.
  it = await open('updated Setting "sso_required"');
  assert.equal(it.actor_source, 'NONE');
  assert.equal(await text('detail-actor_source'), it.labels.actor_source);
  assert.match(await text('detail-unaccounted'), /Nobody can account for this change/);
  await shot(page, 'detail-unaccounted');
});

uiTest('platform-wide items are marked, and shown to every organization\'s admins', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const items = new Map((await apiGet(`audit_logs?limit=${PAGE}`)).items.map((it) => [it.id, it]));
  const rs = await rows(page);
  for (const r of rs) {
    const it = items.get(r.id);
    if (it) assert.equal(r.platformBadge !== null, it.platform_wide, `row ${r.summary}: badge when platform-wide`);
  }
  const truncate = rs.find((r) => /truncated every Webhook/.test(r.summary));
  assert.ok(truncate, 'the TRUNCATE is listed');
  assert.equal(truncate.platformBadge, 'All organizations');
  assert.equal(rs.filter((r) => r.platformBadge).length, 1, 'only the TRUNCATE concerns every organization');
  const badge = page.locator(`[data-id="${truncate.id}"] [data-testid=badge-platform]`);
  assert.match(await badge.getAttribute('title'), /every organization/);
  assert.notEqual(truncate.project, 'Org-wide', 'not called org-wide: it is in no organization');

  await page.locator(`[data-id="${truncate.id}"]`).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.match(await page.textContent('[data-testid=detail-platform]'), /every organization/);
  assert.equal((await page.textContent('[data-testid=detail-project]')).trim(), 'All organizations');
  assert.match(await page.textContent('[data-testid=detail-changes]'), /table was emptied/);
  await shot(page, 'detail-platform');

  // The other organization's admin sees it too (and the webhook moved into it), nothing else of ours.
  const other = await newPage();
  try {
    await signIn(other, OTHER_ADMIN_KEY);
    assert.match(await other.textContent('[data-testid=whoami]'), new RegExp(OTHER_ORG));
    const ors = await rows(other);
    assert.equal(ors.length, OTHER_ADMIN_ITEMS);
    const t = ors.find((r) => r.id === truncate.id);
    assert.ok(t, 'the same platform-wide item');
    assert.equal(t.platformBadge, 'All organizations');
    assert.ok(ors.every((r) => r.id === truncate.id || /moved Webhook "ci-notify"/.test(r.summary)), ors.map((r) => r.summary).join('\n'));
  } finally {
    await other.context().close();
  }
});

uiTest('moved and rejected items read well: a move as an update in both organizations, a rejected event as a warning', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const panel = page.locator('[data-testid=detail-panel]');
  let rs = await rows(page);

  // Moved out of this organization.
  const moved = rs.find((r) => r.action === 'AUDIT_ACTION_MOVED');
  assert.ok(moved, 'the move is listed');
  assert.equal(moved.summary, 'alice@example.com moved Webhook "ci-notify"');
  assert.match(moved.dot, /dot-update/, 'styled as the update it is');
  assert.equal(moved.project, 'proj_web');
  await page.locator(`[data-id="${moved.id}"]`).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.equal((await panel.locator('[data-testid=detail-action]').textContent()).trim(), 'Moved');
  assert.equal(await panel.locator('[data-testid=detail-action] .badge-update').count(), 1);
  assert.match(await panel.locator('[data-testid=detail-moved]').textContent(), /recorded in both/);
  const orgChange = panel.locator('[data-testid=change][data-field=org_id]');
  assert.equal((await orgChange.locator('[data-testid=change-before] .val').textContent()).trim(), ORG);
  assert.equal((await orgChange.locator('[data-testid=change-after] .val').textContent()).trim(), OTHER_ORG);
  await shot(page, 'detail-moved');
  await page.keyboard.press('Escape');

  // The same move, as the other organization's admin sees it: the same changes.
  const other = await newPage();
  try {
    await signIn(other, OTHER_ADMIN_KEY);
    const row = other.locator('[data-testid=audit-row][data-action=AUDIT_ACTION_MOVED]');
    assert.equal(await row.count(), 1);
    assert.equal((await row.locator('[data-testid=cell-project]').textContent()).trim(), 'proj_globex');
    await row.click();
    await other.waitForSelector('[data-testid=detail-panel][data-state=ready]');
    const oc = other.locator('[data-testid=change][data-field=org_id]');
    assert.equal((await oc.locator('[data-testid=change-before] .val').textContent()).trim(), ORG);
    assert.equal((await oc.locator('[data-testid=change-after] .val').textContent()).trim(), OTHER_ORG);
    const theirs = await apiGet(`audit_logs/${await row.getAttribute('data-id')}`, OTHER_ADMIN_KEY, OTHER_ORG);
    const ours = await apiGet(`audit_logs/${moved.id}`);
    assert.deepEqual(theirs.changes, ours.changes, 'one diff, recorded in both');
  } finally {
    await other.context().close();
  }

  // A forged audit event: a warning, with the reason and the claim as text.
  const rejected = rs.find((r) => r.action === 'AUDIT_ACTION_REJECTED');
  assert.ok(rejected, 'the rejected event is listed');
  assert.equal(rejected.summary, 'An audit event waltrail did not write was rejected');
  assert.match(rejected.dot, /dot-warn/);
  const it = await apiGet(`audit_logs/${rejected.id}`);
  await page.locator(`[data-id="${rejected.id}"]`).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.equal(await panel.locator('[data-testid=detail-action] .badge-warn').count(), 1);
  assert.match(await panel.locator('[data-testid=detail-rejected-note]').textContent(), /did not seal/);
  assert.equal((await panel.locator('[data-testid=detail-rejected-reason]').textContent()).trim(), it.changes.reason);
  assert.match(it.changes.reason, /not sealed/);
  const claimed = panel.locator('[data-testid=detail-rejected-claimed]');
  assert.deepEqual(JSON.parse(await claimed.textContent()), it.changes.claimed);
  assert.equal(it.changes.claimed.actor.actor_id, 'alice');
  assert.equal(await claimed.evaluate((e) => e.childElementCount), 0, 'the claim is text, never markup');
  assert.equal(await panel.locator('[data-testid=detail-changes]').count(), 0, 'no field changes for an event');
  assert.equal((await panel.locator('[data-testid=detail-resource]').textContent()).trim(), 'Audit event', 'the noun once');
  await shot(page, 'detail-rejected');
});

// Requests the page makes to verify the trail (GET .../audit_logs/integrity).
function countVerifications(page) {
  const seen = [];
  page.on('request', (r) => { if (/\/audit_logs\/integrity(\?|$)/.test(r.url())) seen.push(new URL(r.url()).searchParams); });
  return seen;
}

uiTest('the trail verifies: an admin sees up to when, and which keys sign it', async (page) => {
  const verifications = countVerifications(page);
  await signIn(page, ADMIN_KEY);
  const box = page.locator('[data-testid=verify]');
  await page.waitForSelector('[data-testid=verify][data-state=verified]');
  const answer = await apiGet('audit_logs/integrity');
  assert.equal(answer.status, 'verified', JSON.stringify(answer));
  assert.ok(answer.verified_until, 'the server says up to when');
  const until = box.locator('[data-testid=verify-until]');
  assert.equal(await until.getAttribute('datetime'), answer.verified_until, 'the time shown is the newest verified checkpoint\'s');
  assert.match(await box.locator('[data-testid=verify-text]').textContent(), /^Verified up to (just now|\d+ (seconds?|minutes?) ago)$/);
  const exact = await until.getAttribute('title');
  assert.match(exact, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? UTC$/, 'the exact UTC time on hover');
  assert.equal(exact.slice(0, 19), answer.verified_until.replace('T', ' ').slice(0, 19), 'in UTC, whatever the browser\'s zone');
  assert.equal(await page.locator('[data-testid=verify] [role=alert]').count(), 0);

  await shot(page, 'verified');

  // The keys an auditor keeps: the ids the server lists, with their public keys one click away.
  const keys = (await (await fetch(new URL('api/v1/integrity/keys', BASE))).json()).data.keys;
  assert.equal(keys.length, 1, 'the test signs with one key');
  assert.match(await box.locator('[data-testid=verify-keys] summary').textContent(), new RegExp(`signing key ${keys[0].key_id}`));
  await box.locator('[data-testid=verify-keys] summary').click();
  const body = box.locator('[data-testid=verify-keys-body]');
  await body.waitFor({ state: 'visible' });
  assert.deepEqual(await body.locator('[data-testid=verify-key-id]').allTextContents(), keys.map((k) => k.key_id));
  assert.match(await body.textContent(), new RegExp(keys[0].public_key));
  await shot(page, 'verify-keys');
  await page.keyboard.press('Escape');
  await body.waitFor({ state: 'hidden' });

  // Live polls do not verify again; a new time range does, once the list reloads for it.
  await page.waitForTimeout(2500);
  assert.equal(verifications.length, 1, 'one verification for the load, none for live polls');
  const hourAgo = new Date(Date.now() - 3600e3).toISOString().slice(0, 16);
  await page.fill('[data-testid=filter-since]', hourAgo);
  await ready(page);
  await page.waitForFunction(() => document.querySelector('[data-testid=verify]').dataset.state === 'verified');
  assert.equal(verifications.length, 2, 'the new range was verified once');
  assert.equal(verifications[1].get('since'), params(page).get('since'), 'for the same range as the list');
  const ranged = await apiGet(`audit_logs/integrity?since=${encodeURIComponent(params(page).get('since'))}`);
  assert.equal(await until.getAttribute('datetime'), ranged.verified_until);
  // Another filter in the same range keeps the answer it has.
  await pickFacet(page, 'action', 'AUDIT_ACTION_CREATED');
  assert.equal(verifications.length, 2, 'a facet does not change what is verified');
  // A range with nothing in it has nothing to verify (and nothing failed).
  await page.fill('[data-testid=filter-since]', '2099-01-01T00:00');
  await ready(page);
  await page.waitForFunction(() => !['loading', 'verified'].includes(document.querySelector('[data-testid=verify]').dataset.state));
  assert.equal(await box.getAttribute('data-state'), 'empty', await box.textContent());
  assert.match(await box.locator('[data-testid=verify-text]').textContent(), /Nothing to verify/);
});

uiTest('a member key sees no verification, asks for none, and logs no console error', async (page) => {
  const verifications = countVerifications(page);
  const all = [];
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') all.push(`${m.type()}: ${m.text()}`); });
  await signIn(page, MEMBER_KEY);
  await page.waitForFunction(() => document.querySelector('[data-testid=filter-action] input[type=checkbox]'));
  await page.fill('[data-testid=filter-since]', new Date(Date.now() - 3600e3).toISOString().slice(0, 16));
  await ready(page);
  assert.equal(await page.isVisible('[data-testid=verify]'), false, 'no verification block');
  assert.equal(verifications.length, 0, 'the page does not ask (the server would answer 403)');
  assert.deepEqual(all, [], 'no console errors or warnings');
  // The server agrees: verifying needs an admin key.
  const res = await fetch(new URL(`api/v1/orgs/${ORG}/audit_logs/integrity`, BASE), { headers: { Authorization: `Bearer ${MEMBER_KEY}` } });
  assert.equal(res.status, 403);
  await res.arrayBuffer();
});

uiTest('verification unavailable or unsigned: said quietly, and the list works', async (page) => {
  // The server cannot verify (ClickHouse down, say): a quiet note, never an error over the list.
  await page.route(/\/audit_logs\/integrity/, (route) => route.fulfill({
    status: 503, headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: 503, msg: 'the store is not reachable', data: null }),
  }));
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  await page.waitForSelector('[data-testid=verify][data-state=unavailable]');
  assert.equal((await page.textContent('[data-testid=verify-text]')).trim(), 'Verification unavailable');
  assert.match(await page.getAttribute('[data-testid=verify]', 'title'), /not reachable/);
  assert.equal(await page.locator('[data-testid=verify] [role=alert]').count(), 0, 'not an alarm');
  assert.equal(await rowCount(page), PAGE, 'the list is whole');
  assert.equal(await page.isVisible('[data-testid=toast]'), false, 'no error toast');
  await page.unroute(/\/audit_logs\/integrity/);

  // A deployment without a signing key: the chain holds, and nothing signs it.
  await page.route(/\/integrity\/keys/, (route) => route.fulfill({ json: { code: 200, msg: '', data: { keys: [] } } }));
  await page.route(/\/audit_logs\/integrity/, (route) => route.fulfill({ json: { code: 200, msg: '', data: {
    status: 'unsigned', verified_until: null, failure: null,
    chains: [{ chain: `${ORG} @ test`, items: 12, first_seq: 1, last_seq: 12, verified_seq: 0, verified_until_us: null, checkpoints: 0, failure: null }],
  } } }));
  await page.reload();
  await ready(page);
  await page.waitForSelector('[data-testid=verify][data-state=unsigned]');
  assert.equal((await page.textContent('[data-testid=verify-text]')).trim(), 'Chain intact, not signed (no checkpoints: configure a signing key)');
  assert.equal(await page.locator('[data-testid=verify-keys]').count(), 0, 'no keys to name');
  await shot(page, 'verify-unsigned');
});

uiTest('a tampered trail: reloading names the altered item', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  await page.waitForSelector('[data-testid=verify][data-state=verified]');
  const target = (await rows(page)).find((r) => /created Setting "sso_required"/.test(r.summary));
  assert.ok(target, 'the item to alter is listed');
  const prefix = '(forged) ';
  const where = `WHERE id = '${target.id}'`;
  // Someone with write access to the store rewrites what an item says (put back afterwards).
  await mutate(`ALTER TABLE audit_items UPDATE summary = concat('${prefix}', summary) ${where}`);
  try {
    const answer = await apiGet('audit_logs/integrity');
    assert.equal(answer.status, 'failed', JSON.stringify(answer));
    assert.ok(answer.failure.includes(target.id), `the server names the item: ${answer.failure}`);

    await page.reload();
    await ready(page);
    await page.waitForSelector('[data-testid=verify][data-state=failed]');
    const alert = page.locator('[data-testid=verify] [role=alert]');
    assert.equal(await alert.count(), 1, 'a failure is an alert');
    const failure = page.locator('[data-testid=verify-failure]');
    assert.equal((await failure.textContent()).trim(), answer.failure, 'the server\'s words, as they are');
    assert.ok((await failure.textContent()).includes(target.id), 'naming the altered item');
    assert.equal(await failure.evaluate((e) => e.childElementCount), 0, 'as text');
    assert.match(await alert.textContent(), /does not verify/);
    assert.equal(await page.locator('[data-testid=verify-until]').count(), 0, 'no "Verified" beside a failure');
    assert.equal(await rowCount(page), PAGE, 'the list still loads');
    await shot(page, 'verify-failed');

    const phone = await newPage(PHONE);
    try {
      await signIn(phone, ADMIN_KEY);
      await phone.waitForSelector('[data-testid=verify][data-state=failed]');
      assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth) <= 0, 'no sideways scroll');
      await shot(phone, 'phone-verify-failed');
    } finally {
      await phone.context().close();
    }
  } finally {
    await mutate(`ALTER TABLE audit_items UPDATE summary = substring(summary, ${prefix.length + 1}) ${where}`);
  }
  // Put back as it was, the trail verifies again.
  await page.reload();
  await ready(page);
  await page.waitForSelector('[data-testid=verify][data-state=verified]');
});

uiTest('phone width: the quick filter and the integrity marks fit', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(await page.isVisible('[data-testid=quick-unaccounted]'), 'the quick filter is not folded away');
  await page.click('[data-testid=quick-unaccounted]');
  await ready(page);
  assert.ok(await overflow() <= 0, `no horizontal scroll (${await overflow()} px too wide)`);
  assert.ok(await page.isVisible('[data-testid=badge-platform]'));
  await shot(page, 'phone-unaccounted');
  await page.locator('[data-testid=audit-row][data-action=AUDIT_ACTION_REJECTED]').click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  assert.ok(await page.isVisible('[data-testid=detail-rejected-reason]'));
  await shot(page, 'phone-detail-rejected');
}, { viewport: PHONE });

uiTest('export downloads the filtered view as CSV and NDJSON', async (page) => {
  await signIn(page, ADMIN_KEY, '?resource_type=RESOURCE_TYPE_GATEWAY');
  const shown = await rowCount(page);
  assert.equal(shown, 4);

  await page.click('[data-testid=export]');
  const [csvDl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-csv]')]);
  assert.match(csvDl.suggestedFilename(), /\.csv$/);
  const csv = readFileSync(await csvDl.path(), 'utf8').trim().split(/\r?\n/);
  assert.match(csv[0], /^id,event_id,timestamp,created_time,action,source,principal_type/);
  assert.equal(csv.length, shown + 1, `CSV has a header and one line per shown item:\n${csv.join('\n')}`);
  assert.ok(csv.slice(1).every((l) => l.includes('RESOURCE_TYPE_GATEWAY')));

  await page.click('[data-testid=export]');
  const [ndDl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-ndjson]')]);
  assert.match(ndDl.suggestedFilename(), /\.ndjson$/);
  const all = readFileSync(await ndDl.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  // Items, then the export's trailer: checkpoints of the chains and what the export covers.
  const lines = all.filter((l) => l.id);
  assert.equal(lines.length, shown);
  assert.ok(lines.every((it) => it.resource_type === 'RESOURCE_TYPE_GATEWAY'));
  assert.ok(lines.every((it) => it.record && it.chain && it.chain.chain_hash.length === 64), 'each item carries its chain');
  // The last line says it is filtered, and signs that with every line before it (and the filters).
  const last = all[all.length - 1].export;
  assert.deepEqual([last.complete, last.platform_complete], [false, false], 'a filtered export says so');
  assert.ok(last.seal && last.seal.signature.length === 128 && last.seal.lines === all.length - 1, 'the export is signed');
  assert.match(last.seal.query, /resource_type=RESOURCE_TYPE_GATEWAY/);
  assert.ok(!page.url().includes(ADMIN_KEY));
});

uiTest('a member key sees only its projects', async (page) => {
  await signIn(page, MEMBER_KEY);
  assert.match(await page.textContent('[data-testid=whoami]'), /web-team.*member.*proj_web/);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const rs = await rows(page);
  assert.equal(rs.length, MEMBER_ITEMS, 'every item of proj_web and nothing else');
  assert.ok(rs.every((r) => r.project === 'proj_web'), `only proj_web: ${rs.map((r) => r.project)}`);
  assert.deepEqual(await facetOptions(page, 'project_id'), ['proj_web'], 'the project filter offers only its projects');
  assert.ok(!(await facetOptions(page, 'user')).includes('carol@example.com'), 'users of other projects are not offered');

  // A link naming another project does not turn into a 403: the project is dropped, with a note.
  await page.goto(`${BASE}?project_id=proj_ml&project_id=proj_web`);
  await ready(page);
  assert.deepEqual(params(page).getAll('project_id'), ['proj_web']);
  assert.match(await page.textContent('[data-testid=toast]'), /proj_ml/);
  assert.equal(await rowCount(page), MEMBER_ITEMS);
  await shot(page, 'member');
});

uiTest('phone width: cards, no sideways scrolling, a full-width detail panel', async (page) => {
  await signIn(page, ADMIN_KEY);
  await page.evaluate(() => { document.getElementById('live-toggle').click(); });
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(await overflow() <= 0, `no horizontal scroll at 390px (${await overflow()} px too wide)`);
  assert.equal(await page.isVisible('[data-testid=audit-table] thead'), false, 'no table header on a phone');
  const box = await page.locator('[data-testid=audit-row]').first().boundingBox();
  assert.ok(box.width <= PHONE.width && box.width > PHONE.width - 60, `rows are full-width cards (${box.width})`);
  await shot(page, 'phone');
  // The verification line and its keys fit too.
  await page.waitForSelector('[data-testid=verify][data-state=verified]');
  await page.click('[data-testid=verify-keys] summary');
  await page.locator('[data-testid=verify-keys-body]').waitFor({ state: 'visible' });
  assert.ok(await overflow() <= 0, `the signing keys fit (${await overflow()} px too wide)`);
  await shot(page, 'phone-verify-keys');
  await page.click('[data-testid=verify-keys] summary');
  // The filters fold away behind one button.
  assert.equal(await page.isVisible('[data-testid=filter-action-toggle]'), false);
  await page.click('[data-testid=filters-toggle]');
  await page.click('[data-testid=filter-action-toggle]');
  await page.check('[data-testid=filter-action] input[value=AUDIT_ACTION_UPDATED]');
  await ready(page);
  assert.ok(await overflow() <= 0, 'filters fit');
  await shot(page, 'phone-filters');
  await page.locator('[data-testid=audit-row]', { hasText: 'updated Gateway "arcade"' }).click();
  await page.waitForSelector('[data-testid=detail-panel][data-state=ready]');
  const panel = await page.locator('[data-testid=detail-panel]').boundingBox();
  assert.ok(panel.width >= PHONE.width - 16, `the detail panel takes the whole width (${panel.width})`);
  await shot(page, 'phone-detail');
}, { viewport: PHONE });

uiTest('live mode shows a new change within 2 s, and a pill when scrolled down', async (page) => {
  await signIn(page, ADMIN_KEY);
  assert.equal(await page.isChecked('[data-testid=live-toggle]'), true, 'live mode is on by default');
  await page.waitForFunction(() => document.querySelector('[data-testid=live]').dataset.state === 'on');

  // Commit a change and time how long until its row shows. A second try is allowed so that one scheduling
  // hiccup on a busy machine does not fail the run; two slow ones do.
  let row;
  const tries = [];
  for (let attempt = 0; attempt < 2; attempt++) {
    const name = `live-gw-${attempt}-${Date.now()}`;
    await psql(`INSERT INTO gateways VALUES ('${name}', 'org_acme', 'proj_ml', '${name}', '{}', 'sess_alice')`);
    const committed = Date.now();
    row = page.locator('[data-testid=audit-row]', { hasText: `created Gateway "${name}"` });
    await row.waitFor({ timeout: 10000 });
    tries.push(Date.now() - committed);
    if (tries[tries.length - 1] <= 2000) break;
  }
  console.log(`# live: the new change appeared ${tries.join(' ms, then ')} ms after its commit`);
  assert.ok(tries[tries.length - 1] <= 2000, `the new change appeared after ${tries.join(', ')} ms (limit 2000 ms)`);
  const first = await page.locator('[data-testid=audit-row]').first().getAttribute('data-id');
  assert.equal(first, await row.getAttribute('data-id'), 'the new item is at the top');
  assert.equal(await page.isVisible('[data-testid=new-items-pill]'), false, 'no pill while at the top');
  assert.equal(new Set((await rows(page)).map((r) => r.id)).size, await rowCount(page), 'no duplicates after polling');

  // Scrolled down: the row is added above and a pill says so; the view does not jump.
  await page.evaluate(() => window.scrollTo(0, 1200));
  await page.waitForTimeout(100);
  const anchorId = await page.evaluate(() => {
    const tr = [...document.querySelectorAll('[data-testid=audit-row]')].find((r) => r.getBoundingClientRect().top > 0);
    return tr.dataset.id;
  });
  const anchorTop = await page.locator(`[data-id="${anchorId}"]`).evaluate((e) => e.getBoundingClientRect().top);
  const name2 = `live-gw2-${Date.now()}`;
  await psql(`INSERT INTO gateways VALUES ('${name2}', 'org_acme', 'proj_ml', '${name2}', '{}', 'sess_alice')`);
  const pill = page.locator('[data-testid=new-items-pill]');
  await pill.waitFor({ state: 'visible', timeout: 10000 });
  assert.match(await pill.textContent(), /1 new item/);
  const anchorTopAfter = await page.locator(`[data-id="${anchorId}"]`).evaluate((e) => e.getBoundingClientRect().top);
  assert.ok(Math.abs(anchorTopAfter - anchorTop) < 2, `the rows being read stay in place (${anchorTop} -> ${anchorTopAfter})`);
  await shot(page, 'live-pill');
  await pill.click();
  await page.waitForFunction(() => window.scrollY === 0);
  await pill.waitFor({ state: 'hidden' });
  assert.match(await page.locator('[data-testid=audit-row]').first().textContent(), new RegExp(name2));

  // Paused: nothing new arrives; resumed: it catches up from where it stopped.
  await page.click('[data-testid=live] .switch-label');
  assert.equal(await page.isChecked('[data-testid=live-toggle]'), false);
  const name3 = `live-gw3-${Date.now()}`;
  await psql(`INSERT INTO gateways VALUES ('${name3}', 'org_acme', 'proj_ml', '${name3}', '{}', 'sess_alice')`);
  await page.waitForTimeout(2500);
  assert.equal(await page.locator('[data-testid=audit-row]', { hasText: name3 }).count(), 0, 'paused');
  await page.click('[data-testid=live] .switch-label');
  await page.locator('[data-testid=audit-row]', { hasText: name3 }).waitFor({ timeout: 5000 });

  // Live rows respect the filters.
  await pickFacet(page, 'project_id', 'proj_web');
  const name4 = `live-ml-${Date.now()}`;
  await psql(`INSERT INTO gateways VALUES ('${name4}', 'org_acme', 'proj_ml', '${name4}', '{}', 'sess_alice')`);
  const name5 = `live-web-${Date.now()}`;
  await psql(`INSERT INTO gateways VALUES ('${name5}', 'org_acme', 'proj_web', '${name5}', '{}', 'sess_alice')`);
  await page.locator('[data-testid=audit-row]', { hasText: name5 }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('[data-testid=audit-row]', { hasText: name4 }).count(), 0, 'a filtered-out change stays out');

  // Rate limited (429 with Retry-After): live mode says so, waits, and carries on.
  const status = page.locator('[data-testid=live-status]');
  await page.route(/order=asc/, (route) => route.fulfill({
    status: 429, headers: { 'Retry-After': '1', 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: 429, msg: 'rate limit of 100 requests a minute exceeded; retry in 1 s', data: null }),
  }));
  await page.waitForFunction(() => /rate limit/.test(document.querySelector('[data-testid=live-status]').textContent));
  await page.unroute(/order=asc/);
  await page.waitForFunction(() => document.querySelector('[data-testid=live]').dataset.state === 'on', null, { timeout: 5000 });
  assert.equal(await status.textContent(), 'Watching for changes');
}, { timeout: 120000 });

uiTest('a key rejected while signed in returns to the sign-in form', async (page) => {
  await signIn(page, ADMIN_KEY);
  // As if the key were revoked: the next poll gets 401.
  await page.route(/\/audit_logs\?/, (route) => route.fulfill({
    status: 401, headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: 401, msg: 'invalid API key', data: null }),
  }));
  await page.waitForSelector('[data-testid=signin-form]:visible', { timeout: 5000 });
  assert.match(await page.textContent('[data-testid=signin-error]'), /no longer accepted/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('waltrail.apiKey')), null);
});

uiTest('sign-out forgets the key', async (page) => {
  await signIn(page, ADMIN_KEY, '?action=AUDIT_ACTION_CREATED');
  await page.click('[data-testid=signout]');
  await page.waitForSelector('[data-testid=signin-form]:visible');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('waltrail.apiKey')), null);
  await page.reload();
  await page.waitForSelector('[data-testid=signin-form]:visible');
  assert.equal(await page.isVisible('[data-testid=app]'), false, 'still signed out after a reload');
  // Signing in again restores the view from the URL.
  await page.fill('[data-testid=signin-key]', ADMIN_KEY);
  await page.click('[data-testid=signin-submit]');
  await ready(page);
  assert.ok((await rows(page)).every((r) => r.action === 'AUDIT_ACTION_CREATED'));
});
