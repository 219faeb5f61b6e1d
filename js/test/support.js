// Test helpers: a fake pgshare gateway speaking the gateway side of the tunnel
// protocol, and the few Postgres protocol messages the tests need.

import http from 'node:http';
import { WebSocketServer } from 'ws';

const FINAL = 0x01;

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves to 'pending' if `promise` has not settled after `ms`. */
export function stateAfter(promise, ms) {
  return Promise.race([promise.then(() => 'settled'), sleep(ms).then(() => 'pending')]);
}

/** Items that arrive over time, taken in order by waiters. */
class Inbox {
  #items = [];
  #waiters = [];

  push(item) {
    const index = this.#waiters.findIndex((waiter) => waiter.accepts(item));
    if (index >= 0) {
      this.#waiters.splice(index, 1)[0].resolve(item);
    } else {
      this.#items.push(item);
    }
  }

  take(accepts = () => true) {
    const index = this.#items.findIndex(accepts);
    if (index >= 0) return Promise.resolve(this.#items.splice(index, 1)[0]);
    return new Promise((resolve) => this.#waiters.push({ accepts, resolve }));
  }

  get items() {
    return this.#items;
  }
}

/** The gateway's side of one host's WebSocket. */
export class HostSocket {
  #socket;
  #frames = new Inbox();
  #controls = new Inbox();

  constructor(socket, request) {
    this.#socket = socket;
    this.url = new URL(request.url, 'http://gateway');
    this.closed = new Promise((resolve) => socket.on('close', (code) => resolve(code)));
    socket.on('message', (data, isBinary) => {
      if (isBinary) {
        this.#frames.push(new Uint8Array(data));
      } else {
        this.#controls.push(JSON.parse(data.toString()));
      }
    });
  }

  sendJson(message) {
    this.#socket.send(JSON.stringify(message));
  }

  sendFrame(bytes) {
    this.#socket.send(bytes);
  }

  /** Sends `bytes` as one request in frames of `frameSize` payload bytes; resolves with the reply. */
  async request(bytes, { frameSize = 1024 * 1024, timeoutMs = 5000 } = {}) {
    let offset = 0;
    do {
      const end = Math.min(offset + frameSize, bytes.length);
      const frame = new Uint8Array(1 + end - offset);
      frame[0] = end === bytes.length ? FINAL : 0;
      frame.set(bytes.subarray(offset, end), 1);
      this.#socket.send(frame);
      offset = end;
    } while (offset < bytes.length);
    return within(this.reply(), timeoutMs, 'a reply');
  }

  /** Resolves with the next reply: its frames and their concatenated payload. */
  async reply() {
    const frames = [];
    do {
      frames.push(await this.#frames.take());
    } while (!(frames.at(-1)[0] & FINAL));
    return { frames, bytes: concat(frames.map((frame) => frame.subarray(1))) };
  }

  nextControl(type, timeoutMs = 5000) {
    return within(this.#controls.take((message) => message.type === type), timeoutMs, `a "${type}" message`);
  }

  close(code = 1000) {
    this.#socket.close(code);
  }

  terminate() {
    this.#socket.terminate();
  }
}

/**
 * A fake gateway on 127.0.0.1: accepts hosts at /tunnel/<database>, greets
 * them with a hello, and lets the test play the gateway's part.
 *
 * `refuse(request)` may return an HTTP status to refuse an upgrade with;
 * `hello` overrides fields of the hello; `sendHello: false` sends none;
 * `onHttpRequest` serves plain HTTP requests.
 */
export async function startGateway({ hello = {}, sendHello = true, refuse, onHttpRequest } = {}) {
  const hosts = new Inbox();
  const upgrades = [];
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    if (onHttpRequest) {
      onHttpRequest(request, response);
    } else {
      response.writeHead(404).end();
    }
  });
  const webSockets = new WebSocketServer({ noServer: true });
  server.on('upgrade', (request, socket, head) => {
    const status = refuse?.(request);
    upgrades.push({ at: performance.now(), url: request.url, status: status ?? 101 });
    if (status) {
      socket.end(`HTTP/1.1 ${status} Refused\r\nContent-Length: 8\r\nConnection: close\r\n\r\nrefused\n`);
      return;
    }
    webSockets.handleUpgrade(request, socket, head, (webSocket) => {
      sockets.add(webSocket);
      webSocket.on('close', () => sockets.delete(webSocket));
      const host = new HostSocket(webSocket, request);
      if (sendHello) {
        const database = decodeURIComponent(host.url.pathname.split('/').pop());
        host.sendJson({
          type: 'hello',
          protocol: 1,
          database,
          connection_string: `postgres://postgres@127.0.0.1:5432/${database}`,
          heartbeat_ms: 10_000,
          max_frame: 1024 * 1024,
          ...hello,
        });
      }
      hosts.push(host);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    upgrades,
    /** The next host that connects (or one that connected and was not taken yet). */
    nextHost(timeoutMs = 5000) {
      return within(hosts.take(), timeoutMs, 'a host to connect');
    },
    /** Hosts that connected and were not taken by nextHost(). */
    get waitingHosts() {
      return hosts.items.length;
    },
    async close() {
      for (const socket of sockets) socket.terminate();
      webSockets.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// Postgres protocol messages

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function cString(text) {
  return concat([encoder.encode(text), new Uint8Array([0])]);
}

function message(type, ...parts) {
  const body = concat(parts);
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setUint32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

export function startupMessage(user = 'postgres', database = 'postgres') {
  const parameters = concat([cString('user'), cString(user), cString('database'), cString(database), new Uint8Array([0])]);
  const out = new Uint8Array(8 + parameters.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length);
  view.setUint32(4, 196608); // protocol 3.0
  out.set(parameters, 8);
  return out;
}

export const query = (sql) => message('Q', cString(sql));
export const parse = (sql) => message('P', cString(''), cString(sql), new Uint8Array([0, 0]));
export const bind = () => message('B', cString(''), cString(''), new Uint8Array([0, 0, 0, 0, 0, 0]));
export const execute = () => message('E', cString(''), new Uint8Array([0, 0, 0, 0]));
export const flush = () => message('H');
export const sync = () => message('S');

/** The backend messages in `bytes`: `{ type, body }`. Throws on a partial message. */
export function messages(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let offset = 0;
  while (offset < bytes.length) {
    const length = view.getUint32(offset + 1);
    if (offset + 1 + length > bytes.length) throw new Error('partial backend message');
    out.push({ type: String.fromCharCode(bytes[offset]), body: bytes.subarray(offset + 5, offset + 1 + length) });
    offset += 1 + length;
  }
  return out;
}

/** The letters of the backend messages in `bytes`, ReadyForQuery with its status: "R S K Z:I". */
export function summary(bytes) {
  return messages(bytes)
    .map(({ type, body }) => (type === 'Z' ? `Z:${String.fromCharCode(body[0])}` : type))
    .join(' ');
}

/** The values of the DataRow messages in `bytes`, as strings. */
export function rows(bytes) {
  return messages(bytes)
    .filter(({ type }) => type === 'D')
    .map(({ body }) => {
      const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
      const values = [];
      let offset = 2;
      for (let column = 0; column < view.getUint16(0); column++) {
        const length = view.getInt32(offset);
        offset += 4;
        values.push(length < 0 ? null : decoder.decode(body.subarray(offset, offset + length)));
        offset += Math.max(length, 0);
      }
      return values;
    });
}

/** The host's side of the gateway's first request: StartupMessage, answered. */
export async function attachHost(gateway) {
  const host = await gateway.nextHost();
  const { bytes } = await host.request(startupMessage());
  if (!summary(bytes).endsWith('K Z:I')) throw new Error(`unexpected startup reply: ${summary(bytes)}`);
  return host;
}
