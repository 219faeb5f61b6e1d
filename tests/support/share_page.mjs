// Opens the share page given as the first argument in headless Chromium
// (Debian's package, driven by playwright-core), prints "attached" once the
// page's PGlite is attached to the gateway, and keeps the tab open until the
// process is killed.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.PGSHARE_JS_DIR, 'package.json'));
const { chromium } = require('playwright-core');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const page = await browser.newPage();
page.on('console', (message) => console.error(`page: ${message.text()}`));
page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
await page.goto(process.argv[2]);
await page.waitForFunction(() => window.pgshareState?.status === 'attached', null, {
  timeout: 90_000,
});
console.log('attached');
const close = async () => {
  await browser.close();
  process.exit(0);
};
process.on('SIGTERM', close);
process.on('SIGINT', close);
