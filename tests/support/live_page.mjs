// Opens the live-query page given as the first argument in headless
// Chromium (Debian's package, driven by playwright-core), prints "live"
// once it shows the query's rows, then waits until a row of the table
// contains the second argument and prints the table's rows, one per line.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.PGSHARE_JS_DIR, 'package.json'));
const { chromium } = require('playwright-core');

const [url, expected] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
  await page.goto(url);
  await page.waitForSelector('#status[data-status="live"]', { timeout: 60_000 });
  const rows = () =>
    page.$$eval('#rows tbody tr', (trs) => trs.map((tr) => tr.textContent.trim()));
  console.log(`live ${JSON.stringify(await rows())}`);
  await page.waitForFunction(
    (text) => [...document.querySelectorAll('#rows tbody tr')].some((tr) => tr.textContent.includes(text)),
    expected,
    { timeout: 60_000 },
  );
  for (const row of await rows()) {
    console.log(`row ${row}`);
  }
} finally {
  await browser.close();
}
