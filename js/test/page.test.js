// The /share page in a real browser (Chromium through playwright-core), served
// the way the gateway serves it, against the fake gateway.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { attachHost, query, rows, startGateway } from './support.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`;

const PAGE = new URL('../page/share.html', import.meta.url);
const HOST_MODULE = new URL('../src/share.js', import.meta.url);
const PGLITE_DIST = new URL('../node_modules/@electric-sql/pglite/dist/', import.meta.url);
const CONTENT_TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

/** Serves what the gateway serves under /share, with PGlite from node_modules. */
async function serveShare(request, response) {
  const { pathname } = new URL(request.url, 'http://gateway');
  let body;
  let file;
  if (pathname === '/share' || pathname === '/share-without-pglite') {
    file = PAGE;
    const pglite = pathname === '/share' ? '/share/pglite/index.js' : '/nowhere/index.js';
    body = (await readFile(PAGE, 'utf8')).replaceAll('__PGLITE_URL__', pglite);
  } else if (pathname === '/share/pgshare-host.js') {
    file = HOST_MODULE;
  } else if (pathname.startsWith('/share/pglite/') && !pathname.includes('..')) {
    file = new URL(pathname.slice('/share/pglite/'.length), PGLITE_DIST);
  }
  try {
    body ??= await readFile(file);
  } catch {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { 'Content-Type': CONTENT_TYPES[extname(file.pathname)] ?? 'application/octet-stream' });
  response.end(body);
}

let browser;
let gateway;
before(async () => {
  if (skip) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  gateway = await startGateway({ onHttpRequest: serveShare });
});
after(async () => {
  await browser?.close();
  await gateway?.close();
});

const pageState = (page) => page.evaluate(() => ({ ...window.pgshareState }));

test('the page shares its PGlite, shows the connection string and the clients', { skip, timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  try {
    await page.goto(`${gateway.url}/share#database=app&token=s3cret`);
    await page.waitForFunction(() => window.pgshareState.status === 'attached', null, { timeout: 30_000 });
    const host = await attachHost(gateway);
    assert.equal(host.url.pathname, '/tunnel/app');
    assert.equal(host.url.searchParams.get('token'), 's3cret');

    host.sendJson({ type: 'clients', count: 2 });
    await page.waitForFunction(() => window.pgshareState.clients === 2, null, { timeout: 5000 });
    const state = await pageState(page);
    assert.equal(state.connectionString, 'postgres://postgres@127.0.0.1:5432/app');
    assert.equal(state.error, null);
    assert.equal(await page.textContent('#connection-string'), state.connectionString);
    assert.equal(await page.textContent('#clients'), '2');

    const { bytes } = await host.request(query("select 'from the browser'"));
    assert.deepEqual(rows(bytes), [['from the browser']]);
  } finally {
    await page.close();
  }
});

test('without a fragment the page asks for the database and the token', { skip, timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  try {
    await page.goto(`${gateway.url}/share`);
    assert.equal((await pageState(page)).status, 'idle');
    await page.fill('#database', 'typed');
    await page.fill('#token', 'typed-token');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => window.pgshareState.status === 'attached', null, { timeout: 30_000 });
    const host = await gateway.nextHost();
    assert.equal(host.url.pathname, '/tunnel/typed');
    assert.equal(host.url.searchParams.get('token'), 'typed-token');
    assert.equal(await page.isVisible('#start'), false);
  } finally {
    await page.close();
  }
});

test('a page that cannot load PGlite says how to serve it', { skip, timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  try {
    await page.goto(`${gateway.url}/share-without-pglite#database=app&token=s3cret`);
    await page.waitForFunction(() => window.pgshareState.status === 'failed', null, { timeout: 30_000 });
    const error = await page.textContent('#error');
    assert.match(error, /Could not load PGlite from http:\/\/.*\/nowhere\/index\.js/);
    assert.match(error, /--pglite-dist/);
  } finally {
    await page.close();
  }
});
