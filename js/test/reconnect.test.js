// Losing the gateway and finding it again: reconnection with backoff, heartbeats, close(), PGlite failures.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { share } from '../src/share.js';
import { attachHost, query, rows, sleep, startGateway, within } from './support.js';

let pglite;
before(async () => {
  pglite = await PGlite.create();
});
after(async () => {
  await pglite.close();
});

async function setUp(t, { gatewayOptions, db = pglite, ...options } = {}) {
  const gateway = await startGateway(gatewayOptions);
  const statuses = [];
  const handle = await share(db, {
    url: gateway.url,
    database: 'app',
    token: 'secret',
    onStatus: (status, reason) => statuses.push({ status, reason }),
    ...options,
  });
  t.after(async () => {
    await within(handle.close(), 5000, 'close()');
    await gateway.close();
  });
  return { gateway, handle, statuses };
}

const gapsBetween = (upgrades) => upgrades.slice(1).map((upgrade, i) => upgrade.at - upgrades[i].at);

test('reconnects after the gateway closed the socket, and works again', { timeout: 15_000 }, async (t) => {
  const { gateway, handle, statuses } = await setUp(t, { minBackoffMs: 100 });
  const first = await attachHost(gateway);
  first.close(4001);
  const second = await attachHost(gateway);
  const { bytes } = await second.request(query('select 42'));
  assert.deepEqual(rows(bytes), [['42']]);
  assert.equal(handle.status, 'attached');
  assert.deepEqual(
    statuses.map(({ status }) => status),
    ['connecting', 'attached', 'reconnecting', 'attached'],
  );
  assert.match(statuses[2].reason, /code 4001/);
  const [gap] = gapsBetween(gateway.upgrades);
  assert.ok(gap >= 50, `reconnected after ${gap} ms, before the backoff`);
});

test('the pause between refused attempts doubles, with jitter, up to maxBackoffMs', { timeout: 15_000 }, async (t) => {
  const refusals = 6;
  const { gateway, handle, statuses } = await setUp(t, {
    minBackoffMs: 40,
    maxBackoffMs: 400,
    gatewayOptions: { refuse: () => (gateway.upgrades.length < refusals ? 401 : undefined) },
  });
  await within(handle.attached, 10_000, 'attached after the refusals');
  const gaps = gapsBetween(gateway.upgrades);
  const ceilings = [40, 80, 160, 320, 400, 400];
  assert.equal(gaps.length, ceilings.length);
  gaps.forEach((gap, i) => {
    assert.ok(gap >= ceilings[i] / 2 - 5, `pause ${i} was ${gap} ms, less than half of ${ceilings[i]}`);
    assert.ok(gap <= ceilings[i] + 250, `pause ${i} was ${gap} ms, much more than ${ceilings[i]}`);
  });
  assert.ok(gaps[3] > gaps[0] * 2, `pauses did not grow: ${gaps}`);
  assert.equal(statuses[1].status, 'reconnecting');
  assert.match(statuses[1].reason, /401/);
});

test('a gateway silent for three heartbeats is taken as gone', { timeout: 15_000 }, async (t) => {
  const { gateway, statuses } = await setUp(t, { minBackoffMs: 10, gatewayOptions: { hello: { heartbeat_ms: 50 } } });
  const first = await gateway.nextHost();
  const closedAt = await within(first.closed.then(() => performance.now()), 2000, 'the host to give up');
  assert.ok(closedAt - gateway.upgrades[0].at >= 140, 'gave up before three heartbeats');
  await gateway.nextHost();
  assert.match(statuses.find(({ status }) => status === 'reconnecting').reason, /nothing heard from the gateway for 150 ms/);
});

test('a gateway that pings is not taken as gone', { timeout: 15_000 }, async (t) => {
  const { gateway } = await setUp(t, { minBackoffMs: 10, gatewayOptions: { hello: { heartbeat_ms: 50 } } });
  const host = await gateway.nextHost();
  for (let i = 0; i < 12; i++) {
    host.sendJson({ type: 'ping' });
    await host.nextControl('pong');
    await sleep(50);
  }
  assert.equal(gateway.upgrades.length, 1);
});

test('close() stops reconnecting', { timeout: 15_000 }, async (t) => {
  const { gateway, handle, statuses } = await setUp(t, { minBackoffMs: 10 });
  const host = await attachHost(gateway);
  await handle.close();
  assert.equal(handle.status, 'closed');
  assert.equal(statuses.at(-1).status, 'closed');
  assert.equal(await within(host.closed, 2000, 'the socket to close'), 1000);
  await sleep(300);
  assert.equal(gateway.upgrades.length, 1);
});

test('close() during the pause before reconnecting ends at once; attached rejects', { timeout: 15_000 }, async (t) => {
  const { gateway, handle } = await setUp(t, { minBackoffMs: 5000, gatewayOptions: { refuse: () => 401 } });
  await within(
    (async () => {
      while (gateway.upgrades.length === 0) await sleep(10);
    })(),
    5000,
    'a first attempt',
  );
  await sleep(50);
  const started = performance.now();
  await handle.close();
  assert.ok(performance.now() - started < 500, 'close() waited for the backoff');
  await assert.rejects(handle.attached, /closed before the gateway accepted/);
  assert.equal(gateway.upgrades.length, 1);
});

test('when PGlite throws, the host says so, closes the socket and stops with status failed', { timeout: 15_000 }, async (t) => {
  const { gateway, handle, statuses } = await setUp(t, { minBackoffMs: 10 });
  const host = await attachHost(gateway);
  pglite.execProtocolRaw = async () => {
    delete pglite.execProtocolRaw; // only this request fails
    throw new Error('boom');
  };
  host.sendFrame(new Uint8Array([0x01, ...query('select 1')]));
  assert.deepEqual(await host.nextControl('error'), { type: 'error', message: 'boom' });
  await within(host.closed, 2000, 'the socket to close');
  await sleep(200);
  assert.equal(handle.status, 'failed');
  assert.deepEqual(statuses.at(-1), { status: 'failed', reason: 'PGlite failed: boom' });
  assert.equal(gateway.upgrades.length, 1, 'reconnected after PGlite failed');
  await within(pglite.query('select 1'), 2000, 'the PGlite lock to be released');
});

test('a PGlite closed under the share stops it when the gateway closes the socket', { timeout: 20_000 }, async (t) => {
  const own = await PGlite.create();
  const { gateway, handle } = await setUp(t, { db: own, minBackoffMs: 10 });
  const host = await attachHost(gateway);
  await own.close();
  host.close(4001);
  await within(host.closed, 2000, 'the socket to close');
  await sleep(200);
  assert.equal(handle.status, 'failed');
  assert.equal(gateway.upgrades.length, 1, 'reconnected with a closed PGlite');
});

test('a PGlite closed under the share fails the next request and stops the share', { timeout: 20_000 }, async (t) => {
  const own = await PGlite.create();
  const { gateway, handle, statuses } = await setUp(t, { db: own, minBackoffMs: 10 });
  const host = await attachHost(gateway);
  await own.close();
  host.sendFrame(new Uint8Array([0x01, ...query('select 1')]));
  const error = await host.nextControl('error');
  assert.equal(typeof error.message, 'string');
  await within(host.closed, 2000, 'the socket to close');
  await sleep(200);
  assert.equal(handle.status, 'failed');
  assert.equal(statuses.at(-1).status, 'failed');
  assert.equal(gateway.upgrades.length, 1, 'reconnected with a dead PGlite');
});
