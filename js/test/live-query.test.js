// LiveQuery against a fake gateway speaking the live-query side of realtime:
// snapshot and deltas as a multiset, fetching again, resuming, reconnecting.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { LiveQuery } from '../src/live-query.js';
import { sleep, startGateway, within } from './support.js';

const QUERY_ID = 'q1';

/**
 * A fake gateway (it accepts WebSockets at any path; `nextHost()` gives the
 * next one, here a LiveQuery's) and a started LiveQuery of /ws/app/q1, both
 * closed when the test ends. `changes` and `errors` collect the events' details.
 */
async function setUp(t, { refuse, ...options } = {}) {
  const gateway = await startGateway({ sendHello: false, refuse });
  const live = new LiveQuery(`${gateway.url.replace(/^http/, 'ws')}/ws/app/${QUERY_ID}`, {
    WebSocket,
    backoff: { initialMs: 10, maxMs: 50 },
    ...options,
  });
  const changes = [];
  const errors = [];
  const statuses = [];
  live.addEventListener('change', (event) => changes.push(event.detail));
  live.addEventListener('error', (event) => errors.push(event.detail));
  live.addEventListener('status', (event) => statuses.push(event.detail));
  t.after(async () => {
    live.close();
    await gateway.close();
  });
  live.start();
  return { gateway, live, changes, errors, statuses };
}

/** The gateway's side of the next connection, after sending `subscribed` and, if given, a snapshot. */
async function accept(gateway, { gen = 1, snapshot } = {}) {
  const socket = await gateway.nextHost();
  socket.sendJson({ type: 'subscribed', query_id: QUERY_ID, gen });
  if (snapshot) {
    socket.sendJson({ type: 'snapshot', query_id: QUERY_ID, gen, deleted: [], ...snapshot });
  }
  return socket;
}

const delta = (seq, { gen = 1, inserted = [], deleted = [] } = {}) => ({ query_id: QUERY_ID, seq, gen, inserted, deleted });

/** Resolves once `condition()` holds, checked at once and after each event of `live`. */
function until(live, condition, what, ms = 5000) {
  return within(
    new Promise((resolve) => {
      const check = () => {
        if (!condition()) return;
        for (const type of ['change', 'status', 'error']) live.removeEventListener(type, check);
        resolve();
      };
      for (const type of ['change', 'status', 'error']) live.addEventListener(type, check);
      check();
    }),
    ms,
    what,
  );
}

/** Rows in a canonical order, to compare multisets. */
const sorted = (rows) => rows.map((row) => JSON.stringify(row)).sort();

const resumeParams = (socket) => ({
  since: socket.url.searchParams.get('since'),
  gen: socket.url.searchParams.get('gen'),
});

test('a snapshot, then deltas applied as a multiset', { timeout: 10_000 }, async (t) => {
  const { gateway, live, changes } = await setUp(t);
  const alice = { id: 1, name: 'alice' };
  const bob = { id: 2, name: 'bob' };
  const socket = await accept(gateway, { snapshot: { seq: 1, inserted: [alice, alice, bob] } });
  await until(live, () => live.seq === 1, 'the snapshot');
  assert.equal(live.status, 'live');
  assert.equal(live.gen, 1);
  assert.deepEqual(sorted(live.rows), sorted([alice, alice, bob]));

  socket.sendJson(delta(2, { deleted: [alice], inserted: [{ id: 3, name: 'carol' }] }));
  await until(live, () => live.seq === 2, 'the first delta');
  assert.deepEqual(sorted(live.rows), sorted([alice, bob, { id: 3, name: 'carol' }]), 'one alice is left');

  // an UPDATE: the old row leaves, the new one enters
  socket.sendJson(delta(3, { deleted: [bob], inserted: [{ id: 2, name: 'robert' }] }));
  await until(live, () => live.seq === 3, 'the second delta');
  assert.deepEqual(sorted(live.rows), sorted([alice, { id: 2, name: 'robert' }, { id: 3, name: 'carol' }]));

  socket.sendJson(delta(4, { deleted: [alice] }));
  await until(live, () => live.seq === 4, 'the third delta');
  assert.deepEqual(sorted(live.rows), sorted([{ id: 2, name: 'robert' }, { id: 3, name: 'carol' }]));

  assert.deepEqual(
    changes.map(({ reason, seq }) => `${reason} ${seq}`),
    ['snapshot 1', 'delta 2', 'delta 3', 'delta 4'],
  );
  assert.deepEqual(changes[2].deleted, [bob]);
  assert.deepEqual(changes[2].inserted, [{ id: 2, name: 'robert' }]);
  assert.deepEqual(sorted(changes[3].rows), sorted(live.rows));
  assert.equal(gateway.upgrades.length, 1);
});

test('deltas with a seq already applied are ignored', { timeout: 10_000 }, async (t) => {
  const { gateway, live, changes } = await setUp(t);
  const socket = await accept(gateway, { snapshot: { seq: 5, inserted: [{ n: 1 }] } });
  socket.sendJson(delta(5, { inserted: [{ n: 2 }] }));
  socket.sendJson(delta(3, { deleted: [{ n: 1 }] }));
  socket.sendJson(delta(6, { inserted: [{ n: 3 }] }));
  await until(live, () => live.seq === 6, 'delta 6');
  assert.deepEqual(sorted(live.rows), sorted([{ n: 1 }, { n: 3 }]));
  assert.deepEqual(
    changes.map(({ reason }) => reason),
    ['snapshot', 'delta'],
  );
  assert.equal(gateway.upgrades.length, 1, 'an old delta made it reconnect');
});

test('a gap in the seqs fetches the result again, without since', { timeout: 10_000 }, async (t) => {
  const { gateway, live, changes } = await setUp(t);
  const first = await accept(gateway, { snapshot: { seq: 1, inserted: [{ n: 1 }] } });
  await until(live, () => live.seq === 1, 'the snapshot');
  first.sendJson(delta(3, { inserted: [{ n: 3 }] }));
  assert.equal(await within(first.closed, 2000, 'the client to hang up'), 1000);
  assert.deepEqual(live.rows, [{ n: 1 }], 'the delta after the gap was applied');

  const second = await accept(gateway, { snapshot: { seq: 3, inserted: [{ n: 1 }, { n: 2 }, { n: 3 }] } });
  assert.deepEqual(resumeParams(second), { since: null, gen: null });
  await until(live, () => live.seq === 3, 'the new snapshot');
  assert.deepEqual(sorted(live.rows), sorted([{ n: 1 }, { n: 2 }, { n: 3 }]));
  assert.equal(changes.at(-1).reason, 'snapshot');
  assert.deepEqual(changes.at(-1).deleted, [{ n: 1 }], 'a snapshot reports the rows it replaced');
});

test('an overflow fetches the result again, without since', { timeout: 10_000 }, async (t) => {
  const { gateway, live } = await setUp(t);
  const first = await accept(gateway, { snapshot: { seq: 1, inserted: [{ n: 1 }] } });
  await until(live, () => live.seq === 1, 'the snapshot');
  first.sendJson({ type: 'overflow', query_id: QUERY_ID, seq: 2, gen: 1, fetch: true });
  await within(first.closed, 2000, 'the client to hang up');

  const second = await accept(gateway, { snapshot: { seq: 2, inserted: [{ n: 2 }] } });
  assert.deepEqual(resumeParams(second), { since: null, gen: null });
  await until(live, () => live.seq === 2, 'the new snapshot');
  assert.deepEqual(live.rows, [{ n: 2 }]);
});

test('an invalidated result is fetched again; in mode notify it is a change', { timeout: 10_000 }, async (t) => {
  await t.test('mode delta: reconnects without since', async (t) => {
    const { gateway, live } = await setUp(t);
    const first = await accept(gateway, { snapshot: { seq: 1, inserted: [{ n: 1 }] } });
    await until(live, () => live.seq === 1, 'the snapshot');
    first.sendJson({ type: 'invalidated', query_id: QUERY_ID, seq: 2, gen: 1 });
    await within(first.closed, 2000, 'the client to hang up');
    const second = await accept(gateway, { snapshot: { seq: 2, inserted: [{ n: 5 }] } });
    assert.deepEqual(resumeParams(second), { since: null, gen: null });
    await until(live, () => live.seq === 2, 'the new snapshot');
    assert.deepEqual(live.rows, [{ n: 5 }]);
  });

  await t.test('mode notify: a change, no reconnection; a drop resumes from its seq', async (t) => {
    const { gateway, live, changes } = await setUp(t);
    const first = await accept(gateway, { gen: 3 });
    first.sendJson({ type: 'invalidated', query_id: QUERY_ID, seq: 4, gen: 3 });
    await until(live, () => changes.length === 1, 'the change');
    assert.equal(changes[0].reason, 'invalidated');
    assert.equal(changes[0].seq, 4);
    assert.deepEqual(live.rows, []);
    await sleep(200);
    assert.equal(gateway.upgrades.length, 1, 'an invalidation of mode notify made it reconnect');

    first.terminate();
    const second = await gateway.nextHost();
    assert.deepEqual(resumeParams(second), { since: '4', gen: '3' });
  });
});

test('resubscribed: adopts the new gen and fetches the result again', { timeout: 10_000 }, async (t) => {
  const { gateway, live } = await setUp(t);
  const first = await accept(gateway, { snapshot: { seq: 1, inserted: [{ n: 1 }] } });
  await until(live, () => live.seq === 1, 'the snapshot');
  first.sendJson({ type: 'resubscribed', query_id: QUERY_ID, gen: 2 });
  first.close();
  const second = await accept(gateway, { gen: 2, snapshot: { seq: 4, inserted: [{ m: 1 }] } });
  assert.deepEqual(resumeParams(second), { since: null, gen: null });
  assert.equal(live.gen, 2);
  await until(live, () => live.seq === 4, 'the snapshot of gen 2');
  assert.deepEqual(live.rows, [{ m: 1 }]);

  second.terminate();
  const third = await gateway.nextHost();
  assert.deepEqual(resumeParams(third), { since: '4', gen: '2' });
});

test('after a drop it resumes with since and gen, and applies the replayed deltas', { timeout: 10_000 }, async (t) => {
  const { gateway, live, changes, statuses } = await setUp(t, { token: 'tok' });
  const first = await accept(gateway, { gen: 7, snapshot: { seq: 2, inserted: [{ n: 1 }] } });
  first.sendJson(delta(3, { gen: 7, inserted: [{ n: 2 }] }));
  await until(live, () => live.seq === 3, 'delta 3');
  first.terminate();

  const second = await accept(gateway, { gen: 7 });
  assert.deepEqual(resumeParams(second), { since: '3', gen: '7' });
  assert.equal(second.url.searchParams.get('token'), 'tok');
  second.sendJson(delta(4, { gen: 7, deleted: [{ n: 1 }] }));
  second.sendJson(delta(5, { gen: 7, inserted: [{ n: 5 }, { n: 5 }] }));
  await until(live, () => live.seq === 5, 'the replayed deltas');
  assert.deepEqual(sorted(live.rows), sorted([{ n: 2 }, { n: 5 }, { n: 5 }]));
  assert.deepEqual(
    changes.map(({ reason }) => reason),
    ['snapshot', 'delta', 'delta', 'delta'],
  );
  assert.deepEqual(statuses, ['connecting', 'live', 'connecting', 'live']);

  // a gateway that no longer has the deltas sends a snapshot instead
  second.terminate();
  const third = await accept(gateway, { gen: 7 });
  assert.deepEqual(resumeParams(third), { since: '5', gen: '7' });
  third.sendJson({ type: 'snapshot', query_id: QUERY_ID, seq: 9, gen: 7, inserted: [{ n: 9 }], deleted: [] });
  await until(live, () => live.seq === 9, 'the snapshot');
  assert.deepEqual(live.rows, [{ n: 9 }]);
});

test('token and apikey go into the query string', { timeout: 10_000 }, async (t) => {
  const { gateway } = await setUp(t, { token: 'a+b/c=d&e f', apikey: 'key 1' });
  const socket = await gateway.nextHost();
  assert.equal(socket.url.pathname, `/ws/app/${QUERY_ID}`);
  assert.equal(socket.url.searchParams.get('token'), 'a+b/c=d&e f');
  assert.equal(socket.url.searchParams.get('apikey'), 'key 1');
});

test('refused connections are errors, retried with a pause that doubles up to maxMs', { timeout: 15_000 }, async (t) => {
  t.mock.method(Math, 'random', () => 0.999); // the longest pause full jitter allows
  const refusals = [401, 403, 404, 503, 401];
  const { gateway, live, errors } = await setUp(t, {
    backoff: { initialMs: 40, maxMs: 320 },
    refuse: () => refusals[gateway.upgrades.length],
  });
  const socket = await accept(gateway);
  await until(live, () => live.status === 'live', 'live after the refusals');
  assert.equal(errors.length, refusals.length);
  refusals.forEach((status, i) => assert.match(errors[i], new RegExp(String(status))));

  socket.terminate();
  await gateway.nextHost();
  const gaps = gateway.upgrades.slice(1).map((upgrade, i) => upgrade.at - gateway.upgrades[i].at);
  // the last pause follows a successful subscription: back to initialMs
  const ceilings = [40, 80, 160, 320, 320, 40];
  assert.equal(gaps.length, ceilings.length);
  gaps.forEach((gap, i) => {
    assert.ok(gap >= ceilings[i] - 5, `pause ${i} was ${gap} ms, less than ${ceilings[i]}`);
    assert.ok(gap <= ceilings[i] + 150, `pause ${i} was ${gap} ms, much more than ${ceilings[i]}`);
  });
});

test('close() stops reconnecting, also during the pause', { timeout: 10_000 }, async (t) => {
  await t.test('while live', async (t) => {
    const { gateway, live, statuses } = await setUp(t);
    const socket = await accept(gateway);
    await until(live, () => live.status === 'live', 'live');
    live.close();
    assert.equal(live.status, 'closed');
    assert.equal(statuses.at(-1), 'closed');
    assert.equal(await within(socket.closed, 2000, 'the socket to close'), 1000);
    await sleep(200);
    assert.equal(gateway.upgrades.length, 1);
  });

  await t.test('during the pause after a refusal', async (t) => {
    t.mock.method(Math, 'random', () => 0.999);
    const { gateway, live } = await setUp(t, { backoff: { initialMs: 300, maxMs: 300 }, refuse: () => 401 });
    await until(live, () => gateway.upgrades.length === 1 && live.status === 'connecting', 'a first attempt');
    await sleep(50);
    live.close();
    await sleep(500);
    assert.equal(gateway.upgrades.length, 1);
    assert.equal(live.status, 'closed');
  });
});
