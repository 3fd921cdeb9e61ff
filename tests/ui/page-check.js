#!/usr/bin/env node
// Headless check of the gateway's operator page with Debian's Chromium (playwright-core only, no
// downloaded browser):
//   node page-check.js --url http://127.0.0.1:PORT/ [--token T] --endpoint EP \
//     --read-path /3/0/0 --expect-value "Open Mobile Alliance" --screenshot OUT.png
// Loads the page, waits for EP in the device list, opens it, clicks the Read button of
// --read-path, waits for the value, checks the event panel has an event of EP, and saves a
// full-page screenshot, and one of the window scrolled to the value read (OUT-view.png). One line per step; exit 0 on success, 1 (and OUT.png.fail.png) on failure.
// Elements are found by their data-testid attributes (see src/http/ui/app.js).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const WAIT_MS = 15000; // bound of every wait

function parseArgs(argv) {
  const opts = { token: '' };
  const names = { '--url': 'url', '--token': 'token', '--endpoint': 'endpoint', '--read-path': 'readPath',
    '--expect-value': 'expectValue', '--screenshot': 'screenshot' };
  for (let i = 0; i < argv.length; i++) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) throw new Error(`unknown or incomplete argument: ${argv[i]}`);
    opts[key] = argv[++i];
  }
  for (const k of ['url', 'endpoint', 'readPath', 'expectValue', 'screenshot']) {
    if (opts[k] === undefined) throw new Error(`missing --${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`);
  }
  if (!/^\/?\d+\/\d+\/\d+$/.test(opts.readPath)) throw new Error('--read-path must be a resource path /obj/inst/res');
  opts.readPath = opts.readPath.startsWith('/') ? opts.readPath : '/' + opts.readPath;
  return opts;
}

/** A CSS attribute selector value in double quotes (endpoints may hold any character). */
const q = (s) => '"' + String(s).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\a ') + '"';

let step = 0;
function ok(msg) { console.log(`ok ${++step} - ${msg}`); }

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`usage error: ${e.message}`);
    console.error('usage: node page-check.js --url URL [--token T] --endpoint EP --read-path /3/0/0 --expect-value V --screenshot OUT.png');
    return 1;
  }

  const url = new URL(opts.url);
  if (opts.token) url.searchParams.set('token', opts.token); // the page reads its token from its URL

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'page-check-'));
  let context = null;
  let page = null;
  const pageErrors = [];
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 },
      timeout: WAIT_MS,
    });
    context.setDefaultTimeout(WAIT_MS);
    page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') console.log(`# console error: ${m.text()}`); });
    ok(`started ${await context.browser()?.version() ?? 'chromium'} (headless)`);

    const res = await page.goto(url.href, { waitUntil: 'load', timeout: WAIT_MS });
    if (!res || !res.ok()) throw new Error(`GET ${opts.url} answered ${res ? res.status() : 'nothing'}`);
    ok(`loaded ${opts.url} (HTTP ${res.status()})`);

    // The device list: loaded, then narrowed with the filter box so a big fleet cannot hide EP.
    const count = page.locator('[data-testid="device-count"]');
    await waitFor(async () => {
      const state = await count.getAttribute('data-state');
      // The page does not retry a failed list by itself: no point in waiting any longer.
      if (state === 'error') throw new Fatal(`the device list failed to load; banner: "${await bannerText(page)}"`);
      return state === 'loaded';
    }, 'the device list to load', async () => `device count says "${await count.textContent()}"; banner: "${await bannerText(page)}"`);
    await page.locator('[data-testid="device-filter"]').fill(opts.endpoint);
    const row = page.locator(`[data-testid="device-row"][data-endpoint=${q(opts.endpoint)}]`);
    await waitFor(() => row.isVisible(), `device ${opts.endpoint} in the device list`,
      async () => `list shows: ${await count.textContent()}`);
    ok(`device ${opts.endpoint} is in the device list (${await count.textContent()})`);

    await row.click();
    const detail = page.locator(`[data-testid="device-detail"][data-endpoint=${q(opts.endpoint)}]`);
    await waitFor(async () => (await detail.getAttribute('data-state').catch(() => null)) === 'ready',
      `the detail of ${opts.endpoint}`, async () => `detail: "${(await page.locator('[data-testid="device-detail"]').textContent()).slice(0, 200)}"`);
    ok(`opened ${opts.endpoint}: ${await detail.locator('[data-testid="object-card"]').count()} object instances`);

    const resRow = detail.locator(`[data-testid="resource-row"][data-path=${q(opts.readPath)}]`);
    await waitFor(() => resRow.isVisible(), `resource row ${opts.readPath}`,
      async () => `object cards: ${(await detail.locator('[data-testid="object-card"]').evaluateAll((es) => es.map((e) => e.dataset.path))).join(', ')}`);
    const readButton = resRow.locator('[data-testid="read-button"]');
    if (!(await readButton.count())) throw new Error(`resource ${opts.readPath} has no Read button (not readable?)`);
    await readButton.click();
    ok(`clicked Read on ${opts.readPath}`);

    const value = resRow.locator('[data-testid="resource-value"]');
    const status = resRow.locator('[data-testid="resource-status"]');
    await waitFor(async () => (await value.textContent()).trim() === opts.expectValue,
      `value of ${opts.readPath} to be "${opts.expectValue}"`,
      async () => `shown value "${(await value.textContent()).trim()}", result "${(await status.textContent()).trim()}" (${await status.getAttribute('title')})`);
    ok(`${opts.readPath} shows "${opts.expectValue}" (${(await status.textContent()).trim()})`);

    const events = page.locator(`[data-testid="event-row"][data-endpoint=${q(opts.endpoint)}]`);
    await waitFor(async () => (await events.count()) > 0, `an event of ${opts.endpoint} in the event panel`,
      async () => `event panel has ${await page.locator('[data-testid="event-row"]').count()} rows; stream: "${await page.locator('[data-testid="stream-status"]').textContent()}"`);
    const types = await events.evaluateAll((es) => [...new Set(es.map((e) => e.dataset.msgtype))]);
    ok(`event panel shows ${await events.count()} event(s) of ${opts.endpoint} (${types.join(', ')})`);

    if (pageErrors.length) throw new Error(`uncaught error(s) in the page: ${pageErrors.join(' | ')}`);
    ok('no uncaught errors in the page');

    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: WAIT_MS });
    ok(`screenshot saved to ${opts.screenshot}`);
    // What a user sees: the window scrolled to the value read (the event panel stays in view).
    const view = opts.screenshot.replace(/\.png$/, '') + '-view.png';
    await resRow.evaluate((e) => e.scrollIntoView({ block: 'center' }));
    await page.screenshot({ path: view, timeout: WAIT_MS });
    ok(`window screenshot saved to ${view}`);
    console.log('PASS');
    return 0;
  } catch (e) {
    console.log(`not ok ${++step} - ${e.message.split('\n')[0]}`);
    if (pageErrors.length) console.log(`# uncaught page errors: ${pageErrors.join(' | ')}`);
    if (page) {
      const fail = `${opts.screenshot}.fail.png`;
      await page.screenshot({ path: fail, fullPage: true, timeout: 5000 })
        .then(() => console.log(`# failure screenshot: ${fail}`))
        .catch((err) => console.log(`# no failure screenshot: ${err.message.split('\n')[0]}`));
    }
    console.log('FAIL');
    return 1;
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

/** An error that ends a wait at once. */
class Fatal extends Error {}

/** Polls `cond` until it is true or WAIT_MS passed; then fails with `what` and the page's state. */
async function waitFor(cond, what, describe) {
  const end = Date.now() + WAIT_MS;
  for (;;) {
    try {
      if (await cond()) return;
    } catch (e) {
      if (e instanceof Fatal) throw e; // other errors: the element is not there yet
    }
    if (Date.now() > end) {
      let state = '';
      try { state = describe ? ` (${await describe()})` : ''; } catch { /* page gone */ }
      throw new Error(`timed out after ${WAIT_MS / 1000} s waiting for ${what}${state}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function bannerText(page) {
  const b = page.locator('[data-testid="banner"]');
  return (await b.isVisible()) ? (await b.textContent()).trim() : '';
}

// A hard bound on the whole run, in case the browser itself hangs.
const guard = setTimeout(() => { console.log('not ok - the check did not finish in 90 s'); process.exit(1); }, 90000);
main().then((code) => { clearTimeout(guard); process.exit(code); });
