// The tunnel protocol as the host speaks it: address, hello, requests and replies, control messages.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { share } from '../src/share.js';
import {
  attachHost,
  concat,
  flush,
  messages,
  query,
  rows,
  startGateway,
  startupMessage,
  summary,
  within,
} from './support.js';

let pglite;
before(async () => {
  pglite = await PGlite.create();
});
after(async () => {
  await pglite.close();
});

/** A gateway and a share() of the file's PGlite, both closed when the test ends. */
async function setUp(t, { gatewayOptions, database = 'app', token = 'secret', ...options } = {}) {
  const gateway = await startGateway(gatewayOptions);
  const handle = await share(pglite, { url: gateway.url, database, token, ...options });
  t.after(async () => {
    await within(handle.close(), 5000, 'close()');
    await gateway.close();
  });
  return { gateway, handle };
}

test('connects to /tunnel/<database> with the token in the query string', { timeout: 10_000 }, async (t) => {
  const token = 'a+b/c=d&e f';
  const { gateway } = await setUp(t, { database: 'my db', token });
  const host = await gateway.nextHost();
  assert.equal(host.url.pathname, '/tunnel/my%20db');
  assert.equal(host.url.searchParams.get('token'), token);
});

test('accepts a ws:// address with a path, and a token function', { timeout: 10_000 }, async (t) => {
  const gateway = await startGateway();
  const handle = await share(pglite, {
    url: `${gateway.url.replace('http:', 'ws:')}/base/`,
    database: 'app',
    token: async () => 'from-function',
  });
  t.after(async () => {
    await within(handle.close(), 5000, 'close()');
    await gateway.close();
  });
  const host = await gateway.nextHost();
  assert.equal(host.url.pathname, '/base/tunnel/app');
  assert.equal(host.url.searchParams.get('token'), 'from-function');
});

test('rejects options that cannot work', async () => {
  await assert.rejects(share(pglite, { url: 'ftp://x', database: 'app', token: 't' }), TypeError);
  await assert.rejects(share(pglite, { url: 'http://x', database: '', token: 't' }), TypeError);
  await assert.rejects(share(pglite, { url: 'http://x', database: 'app' }), TypeError);
  await assert.rejects(share({}, { url: 'http://x', database: 'app', token: 't' }), TypeError);
});

test('hello attaches; a StartupMessage is answered with AuthenticationOk and ReadyForQuery', { timeout: 10_000 }, async (t) => {
  const statuses = [];
  const hellos = [];
  const { gateway, handle } = await setUp(t, {
    onStatus: (status) => statuses.push(status),
    onHello: (hello) => hellos.push(hello),
  });
  const hello = await within(handle.attached, 5000, 'attached');
  assert.equal(hello.connection_string, 'postgres://postgres@127.0.0.1:5432/app');
  assert.deepEqual(hellos, [hello]);
  assert.equal(handle.hello, hello);
  assert.equal(handle.status, 'attached');
  assert.deepEqual(statuses, ['connecting', 'attached']);

  const host = await gateway.nextHost();
  const { bytes } = await host.request(startupMessage());
  const reply = messages(bytes);
  const authentication = reply.find(({ type }) => type === 'R');
  assert.ok(authentication, 'AuthenticationOk expected');
  assert.deepEqual([...authentication.body], [0, 0, 0, 0]);
  assert.match(summary(bytes), /K Z:I$/);
});

test('a query request is answered with its rows', { timeout: 10_000 }, async (t) => {
  const { gateway } = await setUp(t);
  const host = await attachHost(gateway);
  const { bytes } = await host.request(query('select n, n * n from generate_series(1, 3) n'));
  assert.deepEqual(rows(bytes), [
    ['1', '1'],
    ['2', '4'],
    ['3', '9'],
  ]);
  assert.match(summary(bytes), /^T D D D C .*Z:I$/);
});

test('a request split over many frames is run as one', { timeout: 10_000 }, async (t) => {
  const { gateway } = await setUp(t);
  const host = await attachHost(gateway);
  const request = concat([query("select 'first'"), query("select 'second'")]);
  const { bytes } = await host.request(request, { frameSize: 3 });
  assert.deepEqual(rows(bytes), [['first'], ['second']]);
});

test('replies are split into frames of at most max_frame bytes, the last one final', { timeout: 10_000 }, async (t) => {
  const maxFrame = 64;
  const { gateway } = await setUp(t, { gatewayOptions: { hello: { max_frame: maxFrame } } });
  const host = await attachHost(gateway);
  const { frames, bytes } = await host.request(query("select repeat('x', 5000), 'end'"));
  assert.ok(frames.length > 5000 / maxFrame, `only ${frames.length} frames`);
  for (const frame of frames) assert.ok(frame.length <= maxFrame, `a frame of ${frame.length} bytes`);
  assert.deepEqual(
    frames.map((frame) => frame[0]),
    [...Array(frames.length - 1).fill(0), 0x01],
  );
  assert.deepEqual(rows(bytes), [['x'.repeat(5000), 'end']]);
});

test('an empty reply is one final frame', { timeout: 10_000 }, async (t) => {
  const { gateway } = await setUp(t);
  const host = await attachHost(gateway);
  const { frames } = await host.request(flush());
  assert.deepEqual(frames, [new Uint8Array([0x01])]);
});

test('ping is answered with pong; clients are counted; unknown messages are ignored', { timeout: 10_000 }, async (t) => {
  const counts = [];
  const { gateway, handle } = await setUp(t, { onClients: (count) => counts.push(count) });
  const host = await attachHost(gateway);
  host.sendJson({ type: 'ping' });
  await host.nextControl('pong');
  host.sendJson({ type: 'clients', count: 3 });
  host.sendJson({ type: 'something new', detail: 1 });
  host.sendFrame('not json');
  host.sendJson({ type: 'clients', count: 2 });
  host.sendJson({ type: 'ping' });
  await host.nextControl('pong');
  assert.deepEqual(counts, [3, 2]);
  assert.equal(handle.clients, 2);
  const { bytes } = await host.request(query('select 1'));
  assert.deepEqual(rows(bytes), [['1']]);
});
