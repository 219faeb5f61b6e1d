// The program that owns the PGlite shares it with the gateway's clients: it
// waits while a remote unit of work is open, and the remote clients wait for it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { share } from '../src/share.js';
import {
  attachHost,
  bind,
  concat,
  execute,
  flush,
  parse,
  query,
  rows,
  sleep,
  startGateway,
  stateAfter,
  summary,
  sync,
  within,
} from './support.js';

let pglite;
before(async () => {
  pglite = await PGlite.create();
  await pglite.exec('create table items (id int)');
});
after(async () => {
  await pglite.close();
});

async function attach(t) {
  const gateway = await startGateway();
  const handle = await share(pglite, { url: gateway.url, database: 'app', token: 'secret' });
  t.after(async () => {
    await within(handle.close(), 5000, 'close()');
    await gateway.close();
    await pglite.exec('delete from items');
  });
  return { gateway, handle, host: await attachHost(gateway) };
}

async function countItems() {
  const result = await within(pglite.query('select count(*)::int as n from items'), 5000, 'the host query');
  return result.rows[0].n;
}

test("the host's own queries wait while a remote transaction is open", { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  assert.match(summary((await host.request(query('begin; insert into items values (1)'))).bytes), /^C C .*Z:T$/);

  const ownQuery = pglite.query('select count(*)::int as n from items');
  assert.equal(await stateAfter(ownQuery, 300), 'pending', 'the host query ran inside the remote transaction');

  const { bytes } = await host.request(query('select count(*) from items'));
  assert.deepEqual(rows(bytes), [['1']], 'the remote session runs while the host query waits');
  assert.equal(await stateAfter(ownQuery, 100), 'pending');

  assert.match(summary((await host.request(query('commit'))).bytes), /C Z:I$/);
  const result = await within(ownQuery, 5000, 'the host query after COMMIT');
  assert.equal(result.rows[0].n, 1);
});

test('a failed remote transaction holds the lock until it is rolled back', { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  await host.request(query('begin'));
  assert.match(summary((await host.request(query('select 1/0'))).bytes), /E Z:E$/);
  const ownQuery = pglite.query('select 1');
  assert.equal(await stateAfter(ownQuery, 300), 'pending');
  await host.request(query('rollback'));
  await within(ownQuery, 5000, 'the host query after ROLLBACK');
});

test('an extended-protocol sequence waiting for Sync holds the lock', { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  const request = concat([query('select 1'), parse('insert into items values (7)'), bind(), execute(), flush()]);
  const { bytes } = await host.request(request);
  assert.match(summary(bytes), /Z:I 1 2 C$/, 'an idle ReadyForQuery, then a sequence waiting for Sync');
  const ownQuery = pglite.query('select 1');
  assert.equal(await stateAfter(ownQuery, 300), 'pending');
  assert.equal(summary((await host.request(sync())).bytes), 'Z:I');
  await within(ownQuery, 5000, 'the host query after Sync');
  assert.equal(await countItems(), 1);
});

test("a remote request waits for the host's own transaction to end", { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  const events = [];
  const ownTransaction = pglite.transaction(async (tx) => {
    await tx.query('insert into items values (1)');
    await sleep(300);
    await tx.query('insert into items values (2)');
    events.push('host transaction done');
  });
  await sleep(50);
  const { bytes } = await host.request(query('select count(*) from items'));
  events.push('remote reply');
  await ownTransaction;
  assert.deepEqual(events, ['host transaction done', 'remote reply']);
  assert.deepEqual(rows(bytes), [['2']]);
});

test('a socket closed inside a transaction leaves PGlite idle, the transaction rolled back', { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  await host.request(query('begin; insert into items values (1)'));
  const ownQuery = pglite.query('select 1');
  assert.equal(await stateAfter(ownQuery, 200), 'pending');
  host.terminate();
  await within(ownQuery, 5000, 'the host query after the socket closed');
  assert.equal(pglite.isInTransaction(), false);
  assert.equal(await countItems(), 0);
});

test('a socket closed in the middle of an extended-protocol sequence commits nothing', { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  await host.request(concat([parse('insert into items values (1)'), bind(), execute(), flush()]));
  host.terminate();
  assert.equal(await countItems(), 0);
  assert.equal(pglite.isInTransaction(), false);
});

test('a socket closed after a failed statement inside a transaction leaves PGlite idle', { timeout: 15_000 }, async (t) => {
  const { host } = await attach(t);
  await host.request(query('begin; insert into items values (1)'));
  assert.match(summary((await host.request(concat([parse('select 1/0'), bind(), execute(), flush()]))).bytes), /E$/);
  host.terminate();
  assert.equal(await countItems(), 0);
  assert.equal(pglite.isInTransaction(), false);
});
