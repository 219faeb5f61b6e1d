/**
 * Live Share for pgshare: offer a PGlite database to ordinary Postgres clients.
 *
 * PGlite runs Postgres inside a browser tab or a Node process, where no other
 * program can connect to it. `share()` opens a WebSocket to a pgshare gateway
 * and becomes the *host* of one of its databases: the gateway forwards the
 * Postgres protocol bytes of its clients, one request at a time, and this
 * module runs them on the PGlite and sends back what it answered. The wire
 * protocol is described in pgshare's docs/tunnel-protocol.md.
 *
 * Works in browsers and in Node (where it uses the `ws` package unless a
 * global WebSocket exists), with no build step.
 */

/** Flags byte of a binary frame: this frame ends the request or reply. */
const FINAL = 0x01;
const DEFAULT_MAX_FRAME = 1024 * 1024;
const DEFAULT_HEARTBEAT_MS = 10_000;
/** The gateway is taken as gone after this many heartbeats without a word. */
const MISSED_HEARTBEATS = 3;
const WEBSOCKET_OPEN = 1;

/**
 * Run on PGlite when the gateway goes away while its session is inside a
 * unit of work: the first ROLLBACK ends a transaction (or an extended-protocol
 * sequence waiting for Sync) without committing anything; Sync ends an
 * extended-protocol sequence that failed, which ignores everything up to a
 * Sync; the second ROLLBACK ends the transaction block that failed sequence
 * may have left open.
 */
const ABANDON_SESSION = concat([queryMessage('ROLLBACK'), syncMessage(), queryMessage('ROLLBACK')]);

/**
 * Share `pglite` as database `database` of the pgshare gateway at `url`.
 *
 * Returns at once; the handle's `attached` promise resolves with the gateway's
 * hello once the gateway accepted the host. Reconnects after any close or error,
 * with a growing pause, until `handle.close()` is called or PGlite fails (is
 * closed, or throws).
 *
 * @param {import('@electric-sql/pglite').PGlite} pglite
 * @param {object} options
 * @param {string} options.url the gateway's HTTP address (http:, https:, ws: or wss:)
 * @param {string} options.database the database name clients use
 * @param {string | (() => string | Promise<string>)} options.token tunnel token,
 *   or a function asked for one before every connection attempt
 * @param {typeof WebSocket} [options.WebSocket] WebSocket constructor to use
 * @param {(status: string, reason?: string) => void} [options.onStatus]
 *   'connecting' | 'attached' | 'reconnecting' | 'closed' | 'failed', with why
 *   the connection ended when there is a reason to tell
 * @param {(hello: object) => void} [options.onHello] each hello from the gateway
 * @param {(count: number) => void} [options.onClients] number of connected clients
 * @param {number} [options.minBackoffMs=250] first pause before reconnecting
 * @param {number} [options.maxBackoffMs=10000] longest pause before reconnecting
 */
export async function share(pglite, options = {}) {
  const {
    url,
    database,
    token,
    onStatus,
    onHello,
    onClients,
    minBackoffMs = 250,
    maxBackoffMs = 10_000,
  } = options;
  if (typeof pglite?.execProtocolRaw !== 'function' || typeof pglite?.runExclusive !== 'function') {
    throw new TypeError('share: the first argument must be a PGlite instance');
  }
  if (typeof database !== 'string' || database === '') {
    throw new TypeError('share: `database` must be a non-empty string');
  }
  if (typeof token !== 'string' && typeof token !== 'function') {
    throw new TypeError('share: `token` must be a string or a function returning one');
  }
  tunnelUrl(url, database, ''); // throws now on a URL that cannot work
  const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket ?? (await import('ws')).default;
  const acquireLock = sessionLock(pglite);

  let status = 'connecting';
  let clients = 0;
  let hello = null;
  let stopping = false;
  let connection = null;
  let cancelPause = null;
  const attached = deferred();
  attached.promise.catch(() => {}); // a handle whose `attached` nobody awaits must not crash Node

  function setStatus(next, reason) {
    status = next;
    notify(onStatus, next, reason);
  }

  const connectionEvents = {
    onHello(message) {
      hello = message;
      setStatus('attached');
      attached.resolve(message);
      notify(onHello, message);
    },
    onClients(count) {
      clients = count;
      notify(onClients, count);
    },
  };

  async function connectOnce() {
    try {
      const address = tunnelUrl(url, database, typeof token === 'function' ? await token() : token);
      connection = new TunnelConnection(address, WebSocketImpl, pglite, acquireLock, connectionEvents);
    } catch (error) {
      // a token function that failed, or a WebSocket constructor that refused the address
      return { attached: false, pgliteFailed: false, reason: String(error?.message ?? error) };
    }
    if (stopping) connection.close('closed by the host');
    const outcome = await connection.ended;
    connection = null;
    return outcome;
  }

  async function run() {
    let retries = 0;
    setStatus('connecting');
    for (;;) {
      const outcome = await connectOnce();
      if (stopping) break;
      if (outcome.pgliteFailed) {
        setStatus('failed', outcome.reason);
        attached.reject(new Error(`PGlite failed: ${outcome.reason}`));
        return;
      }
      if (outcome.attached) retries = 0;
      setStatus('reconnecting', outcome.reason);
      const ceiling = Math.min(maxBackoffMs, minBackoffMs * 2 ** retries);
      retries += 1;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, ceiling / 2 + (Math.random() * ceiling) / 2);
        cancelPause = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      cancelPause = null;
      if (stopping) break;
    }
    setStatus('closed');
    attached.reject(new Error('share was closed before the gateway accepted the host'));
  }

  const running = run();
  return {
    attached: attached.promise,
    get status() {
      return status;
    },
    get clients() {
      return clients;
    },
    get hello() {
      return hello;
    },
    /** Stops sharing: closes the socket, rolls back a transaction left open, stops reconnecting. */
    async close() {
      stopping = true;
      cancelPause?.();
      connection?.close('closed by the host');
      await running;
    },
  };
}

/** One WebSocket to the gateway, from opening to the cleanup after it closed. */
class TunnelConnection {
  /** Resolves once the socket is gone and PGlite is left idle: `{ attached, pgliteFailed, reason }`. */
  ended;
  #socket;
  #pglite;
  #acquireLock;
  #events;
  #maxFrame = DEFAULT_MAX_FRAME;
  #heartbeatMs = DEFAULT_HEARTBEAT_MS;
  #watchdog = null;
  /** Payloads of the request being received. */
  #requestFrames = [];
  /** The requests received so far, each run after the one before. */
  #requests = Promise.resolve();
  #runningRequest = false;
  /** Releases PGlite; held during a request and while the session is inside a unit of work. */
  #releaseLock = null;
  #attached = false;
  #pgliteFailed = false;
  #closing = false;
  #errorMessage = null;
  #resolveEnded;

  constructor(address, WebSocketImpl, pglite, acquireLock, events) {
    this.#pglite = pglite;
    this.#acquireLock = acquireLock;
    this.#events = events;
    this.ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
    const socket = new WebSocketImpl(address);
    socket.binaryType = 'arraybuffer';
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onerror = (event) => {
      this.#errorMessage ??= event?.message || 'cannot reach the gateway, or it refused this host';
    };
    socket.onclose = (event) => this.close(this.#errorMessage ?? describeClose(event));
    this.#socket = socket;
    this.#armWatchdog();
  }

  /** Closes the socket (if still open) and, once the current request is done, releases PGlite. */
  async close(reason) {
    if (this.#closing) return;
    this.#closing = true;
    clearTimeout(this.#watchdog);
    if (this.#socket.readyState <= WEBSOCKET_OPEN) this.#socket.close(1000);
    await this.#requests;
    if (this.#releaseLock) {
      try {
        await this.#pglite.execProtocolRaw(ABANDON_SESSION);
      } catch (error) {
        this.#pgliteFailed = true;
        reason = `cannot roll back: ${error?.message ?? error}`;
      }
      this.#unlock();
    }
    if (this.#pglite.closed) this.#pgliteFailed = true;
    this.#resolveEnded({ attached: this.#attached, pgliteFailed: this.#pgliteFailed, reason });
  }

  #onMessage(data) {
    if (this.#closing) return;
    this.#armWatchdog();
    if (typeof data === 'string') {
      this.#onControl(data);
    } else {
      this.#onFrame(new Uint8Array(data));
    }
  }

  #onControl(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not for us: unknown control messages are ignored
    }
    switch (message?.type) {
      case 'hello':
        this.#maxFrame = Math.max(2, positiveInteger(message.max_frame) ?? DEFAULT_MAX_FRAME);
        this.#heartbeatMs = positiveInteger(message.heartbeat_ms) ?? DEFAULT_HEARTBEAT_MS;
        this.#attached = true;
        this.#armWatchdog();
        this.#events.onHello(message);
        break;
      case 'clients':
        if (Number.isInteger(message.count)) this.#events.onClients(message.count);
        break;
      case 'ping':
        this.#sendControl({ type: 'pong' });
        break;
    }
  }

  #onFrame(frame) {
    if (frame.length === 0) {
      this.close('the gateway sent a binary frame without flags byte');
      return;
    }
    this.#requestFrames.push(frame.subarray(1));
    if (frame[0] & FINAL) {
      const request = concat(this.#requestFrames);
      this.#requestFrames = [];
      this.#requests = this.#requests.then(() => this.#serve(request));
    }
  }

  async #serve(request) {
    if (this.#closing) return;
    this.#runningRequest = true;
    try {
      this.#releaseLock ??= await this.#acquireLock();
      if (this.#closing) return; // close() cleans up after us
      let reply;
      try {
        reply = await this.#pglite.execProtocolRaw(request);
      } catch (error) {
        // PGlite's state is unknown after it threw, and running anything more
        // on it can block for good (it does after a startup packet it could
        // not process): give up on it, without the ROLLBACK.
        const message = String(error?.message ?? error);
        this.#sendControl({ type: 'error', message });
        this.#pgliteFailed = true;
        this.#unlock();
        this.close(`PGlite failed: ${message}`);
        return;
      }
      this.#sendReply(reply);
      if (endsIdle(reply)) this.#unlock();
    } finally {
      this.#runningRequest = false;
    }
  }

  #unlock() {
    this.#releaseLock();
    this.#releaseLock = null;
  }

  /** Sends `reply` as binary frames of at most max_frame bytes, the last one final. */
  #sendReply(reply) {
    if (this.#socket.readyState !== WEBSOCKET_OPEN) return;
    const payloadSize = this.#maxFrame - 1;
    let offset = 0;
    do {
      const end = Math.min(offset + payloadSize, reply.length);
      const frame = new Uint8Array(1 + end - offset);
      frame[0] = end === reply.length ? FINAL : 0;
      frame.set(reply.subarray(offset, end), 1);
      this.#socket.send(frame);
      offset = end;
    } while (offset < reply.length);
  }

  #sendControl(message) {
    if (this.#socket.readyState === WEBSOCKET_OPEN) this.#socket.send(JSON.stringify(message));
  }

  /** Restarts the timer that takes the gateway as gone when it stays silent. */
  #armWatchdog() {
    clearTimeout(this.#watchdog);
    const silenceMs = MISSED_HEARTBEATS * this.#heartbeatMs;
    this.#watchdog = setTimeout(() => {
      if (this.#runningRequest) {
        this.#armWatchdog(); // the gateway waits for our reply; it has nothing to say
      } else {
        this.close(`nothing heard from the gateway for ${silenceMs} ms`);
      }
    }, silenceMs);
  }
}

/**
 * Returns a function that waits until nothing else runs on `pglite` and
 * resolves with the function that lets it run again. Takes PGlite's
 * transaction lock as well as its query lock (`runExclusive`), so that a
 * request never lands between the statements of the program's own
 * `pglite.transaction()`; the order is PGlite's own.
 */
function sessionLock(pglite) {
  const runExclusive =
    typeof pglite._runExclusiveTransaction === 'function'
      ? (fn) => pglite._runExclusiveTransaction(() => pglite.runExclusive(fn))
      : (fn) => pglite.runExclusive(fn);
  return () =>
    new Promise((acquired) => {
      runExclusive(() => new Promise((release) => acquired(release)));
    });
}

/**
 * True when the last backend message of `reply` is ReadyForQuery with status
 * idle: the session is outside any transaction and extended-protocol sequence.
 */
function endsIdle(reply) {
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  let last = -1;
  let offset = 0;
  while (offset + 5 <= reply.length) {
    last = offset;
    offset += 1 + view.getUint32(offset + 1);
  }
  return (
    offset === reply.length &&
    last >= 0 &&
    reply[last] === 0x5a && // 'Z'
    view.getUint32(last + 1) === 5 &&
    reply[last + 5] === 0x49 // 'I'
  );
}

/** The WebSocket address of the tunnel of `database` at the gateway `base`. */
function tunnelUrl(base, database, token) {
  const schemes = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' };
  let url;
  try {
    url = new URL(base);
  } catch {
    throw new TypeError(`share: \`url\` is not a URL: ${base}`);
  }
  if (!Object.hasOwn(schemes, url.protocol)) {
    throw new TypeError(`share: \`url\` must be http(s):// or ws(s)://, not ${url.protocol}`);
  }
  url.protocol = schemes[url.protocol];
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/tunnel/${encodeURIComponent(database)}`;
  url.search = `?token=${encodeURIComponent(token)}`;
  url.hash = '';
  return url.href;
}

function describeClose(event) {
  const reason = event?.reason ? `: ${event.reason}` : '';
  return `the gateway closed the connection (code ${event?.code}${reason})`;
}

function positiveInteger(value) {
  return Number.isInteger(value) && value > 0 ? value : undefined;
}

/** Calls a user callback; its exceptions must not break the connection. */
function notify(callback, ...args) {
  try {
    callback?.(...args);
  } catch (error) {
    console.error('pgshare-host: callback failed:', error);
  }
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** A simple-protocol Query message. */
function queryMessage(sql) {
  const text = new TextEncoder().encode(sql);
  const message = new Uint8Array(1 + 4 + text.length + 1);
  message[0] = 0x51; // 'Q'
  new DataView(message.buffer).setUint32(1, 4 + text.length + 1);
  message.set(text, 5);
  return message;
}

function syncMessage() {
  return new Uint8Array([0x53, 0, 0, 0, 4]); // 'S', length 4
}
