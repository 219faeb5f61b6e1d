// The pgshare-host command.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { attachHost, query, rows, startGateway, within } from './support.js';

const CLI = new URL('../bin/pgshare-host.js', import.meta.url).pathname;

/** Runs the CLI; `output` collects stdout and stderr, `exited` resolves with the exit code. */
function run(args, env = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, PGSHARE_URL: '', PGSHARE_DATABASE: '', PGSHARE_TOKEN: '', ...env },
  });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (data) => (output.stdout += data));
  child.stderr.on('data', (data) => (output.stderr += data));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output, exited };
}

async function waitForLine(output, line) {
  while (!output.stdout.split('\n').includes(line)) await new Promise((resolve) => setTimeout(resolve, 20));
}

test('--help explains every flag', { timeout: 10_000 }, async () => {
  const { output, exited } = run(['--help']);
  assert.equal(await exited, 0);
  for (const flag of ['--url', '--database', '--token', '--data', '--help']) {
    assert.ok(output.stdout.includes(flag), `${flag} missing from --help`);
  }
});

test('a missing setting is a usage error', { timeout: 10_000 }, async () => {
  const { output, exited } = run(['--url', 'http://127.0.0.1:1', '--database', 'app']);
  assert.equal(await exited, 2);
  assert.match(output.stderr, /missing --token/);
});

test('attaches, serves, and stops cleanly on SIGTERM with its data kept', { timeout: 60_000 }, async (t) => {
  const gateway = await startGateway();
  const dataDir = await mkdtemp(join(tmpdir(), 'pgshare-host-test-'));
  t.after(async () => {
    await gateway.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const first = run(['--url', gateway.url, '--data', dataDir], { PGSHARE_DATABASE: 'app', PGSHARE_TOKEN: 'secret' });
  t.after(() => first.child.kill('SIGKILL'));
  await within(waitForLine(first.output, 'attached app'), 30_000, '"attached app" on stdout');
  assert.match(first.output.stderr, /postgres:\/\/postgres@127\.0\.0\.1:5432\/app/);
  const host = await attachHost(gateway);
  assert.equal(host.url.searchParams.get('token'), 'secret');
  await host.request(query("create table notes (text text); insert into notes values ('kept')"));
  first.child.kill('SIGTERM');
  assert.equal(await within(first.exited, 15_000, 'the CLI to exit'), 0);
  assert.equal(first.output.stdout, 'attached app\n');

  const second = run(['--url', gateway.url, '--database', 'app', '--token', 'secret', '--data', dataDir]);
  t.after(() => second.child.kill('SIGKILL'));
  await within(waitForLine(second.output, 'attached app'), 30_000, '"attached app" on stdout');
  const again = await attachHost(gateway);
  assert.deepEqual(rows((await again.request(query('select text from notes'))).bytes), [['kept']]);
  second.child.kill('SIGINT');
  assert.equal(await within(second.exited, 15_000, 'the CLI to exit'), 0);
});
