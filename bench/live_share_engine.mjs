// The reference for bench/live_share.sh: the rate of pgbench's select-only
// statement on a PGlite in this Node process, called directly through
// execProtocolRaw (the call a host makes for each request), one at a time,
// with no sockets. Prints "engine <protocol> tps=<rate>" for the simple and
// prepared protocols.
//
// Usage: node bench/live_share_engine.mjs SECONDS   (needs npm ci --prefix js)
import { createRequire } from 'node:module';

const require = createRequire(new URL('../js/package.json', import.meta.url));
const { PGlite } = await import(require.resolve('@electric-sql/pglite'));

const seconds = Number(process.argv[2] ?? 10);
const ACCOUNTS = 100_000; // pgbench -s 1

const encoder = new TextEncoder();
function message(tag, ...parts) {
  const body = parts.flatMap((part) => [...part]);
  const out = new Uint8Array(5 + body.length);
  out[0] = tag.charCodeAt(0);
  new DataView(out.buffer).setUint32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}
const cstr = (text) => [...encoder.encode(text), 0];
const int16 = (n) => [n >> 8, n & 0xff];
const int32 = (n) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const concat = (...messages) => {
  const out = new Uint8Array(messages.reduce((size, m) => size + m.length, 0));
  let offset = 0;
  for (const m of messages) {
    out.set(m, offset);
    offset += m.length;
  }
  return out;
};
const aid = () => 1 + Math.floor(Math.random() * ACCOUNTS);
const SELECT = 'SELECT abalance FROM pgbench_accounts WHERE aid = ';

const pglite = await PGlite.create();
await pglite.exec(`
  CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
  INSERT INTO pgbench_accounts SELECT n, 1, 0, '' FROM generate_series(1, ${ACCOUNTS}) AS n;
`);
await pglite.exec('VACUUM ANALYZE pgbench_accounts');

/** The tags of the backend messages in `reply`. */
function tags(reply) {
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  let out = '';
  for (let offset = 0; offset + 5 <= reply.length; offset += 1 + view.getUint32(offset + 1)) {
    out += String.fromCharCode(reply[offset]);
  }
  return out;
}

async function measure(run) {
  const first = tags(await run());
  if (!first.includes('D') || first.includes('E')) throw new Error(`not a row: ${first}`);
  let count = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) await run();
    count += 100;
  }
  return count / seconds;
}

const simple = await measure(() => pglite.execProtocolRaw(message('Q', cstr(`${SELECT}${aid()}`))));
console.log(`engine simple tps=${simple.toFixed(0)}`);

await pglite.execProtocolRaw(
  concat(message('P', cstr('bench'), cstr(`${SELECT}$1`), int16(0)), message('S')),
);
const prepared = await measure(() => {
  const value = encoder.encode(String(aid()));
  return pglite.execProtocolRaw(
    concat(
      message('B', cstr(''), cstr('bench'), int16(0), int16(1), int32(value.length), value, int16(0)),
      message('E', cstr(''), int32(0)),
      message('S'),
    ),
  );
});
console.log(`engine prepared tps=${prepared.toFixed(0)}`);
await pglite.close();
