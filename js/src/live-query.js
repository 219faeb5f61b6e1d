/**
 * Live queries of a pgshare gateway, in a browser or in Node.
 *
 * With realtime on, the gateway recomputes a subscribed query whenever a
 * table it reads changes and sends the rows that entered and left its result
 * over a WebSocket, the way pg_reactive's proxy does. `LiveQuery` keeps the
 * current result from those messages: it applies the snapshot and the deltas
 * as a multiset, resumes from the last seq it saw after a dropped connection,
 * and fetches the whole result again whenever it may have missed a change.
 * One ES module, no dependencies, no build step.
 */

/**
 * The current result of one live query, kept up to date over a WebSocket.
 *
 * Events (each with a `detail`):
 * - `change`: `{ rows, inserted, deleted, seq, reason }`. `reason` is
 *   `'snapshot'` (the whole result was received: `inserted` is it, `deleted`
 *   the rows it replaced), `'delta'` (rows entered and left), or
 *   `'invalidated'` (a subscription in mode `notify`, which sends no rows,
 *   says its result changed; `inserted` and `deleted` are empty).
 * - `status`: `'connecting'`, `'live'` (the gateway confirmed the
 *   subscription) or `'closed'`.
 * - `error`: a message, when a connection attempt failed (the gateway is
 *   unreachable or refused it) or the WebSocket reported an error.
 *   Reconnecting goes on.
 */
export class LiveQuery extends EventTarget {
  #url;
  #WebSocket;
  #initialMs;
  #maxMs;
  #status = 'closed';
  #started = false;
  #closed = false;
  /** The result: JSON text of a row → the row and how many times it is in the result. */
  #rows = new Map();
  #seq = null;
  #gen = null;
  /** A snapshot arrived under the current gen: the subscription sends rows (mode `delta`). */
  #snapshotSeen = false;
  /** The rows are those of `#seq` under `#gen`, so a new connection can ask for what followed. */
  #resumable = false;
  #socket = null;
  /** The current connection got its `subscribed`. */
  #subscribed = false;
  /** Connections opened since the last `subscribed`; sets the pause before the next one. */
  #attempt = 0;
  #timer = null;

  /**
   * @param {string} url `ws(s)://host/ws/{query_id}` or `ws(s)://host/ws/{database}/{query_id}`
   * @param {object} [options]
   * @param {string} [options.token] sent as `?token=`
   * @param {string} [options.apikey] sent as `?apikey=`
   * @param {typeof WebSocket} [options.WebSocket] WebSocket constructor; default
   *   the global one (Node 20 has none: pass the `ws` package's)
   * @param {{ initialMs?: number, maxMs?: number }} [options.backoff] the pause
   *   before reconnecting is random, up to `min(maxMs, initialMs * 2 ** attempt)`
   */
  constructor(url, options = {}) {
    super();
    const { token, apikey, WebSocket = globalThis.WebSocket, backoff = {} } = options;
    if (typeof WebSocket !== 'function') {
      throw new TypeError('LiveQuery: there is no global WebSocket here; pass options.WebSocket (in Node, the `ws` package\'s)');
    }
    this.#url = new URL(url);
    if (this.#url.protocol !== 'ws:' && this.#url.protocol !== 'wss:') {
      throw new TypeError(`LiveQuery: the URL must be ws:// or wss://, not ${this.#url.protocol}`);
    }
    if (token != null) this.#url.searchParams.set('token', token);
    if (apikey != null) this.#url.searchParams.set('apikey', apikey);
    this.#WebSocket = WebSocket;
    this.#initialMs = backoff.initialMs ?? 250;
    this.#maxMs = backoff.maxMs ?? 10_000;
  }

  /** The rows of the result, duplicates included. A new array on each call. */
  get rows() {
    const rows = [];
    for (const { row, count } of this.#rows.values()) {
      for (let i = 0; i < count; i++) rows.push(row);
    }
    return rows;
  }

  /** The seq of the last snapshot or delta applied (or notification seen); null before any. */
  get seq() {
    return this.#seq;
  }

  /** The generation of the subscription, from the gateway; null before it said. */
  get gen() {
    return this.#gen;
  }

  /** `'connecting'`, `'live'` or `'closed'` (also before `start()`). */
  get status() {
    return this.#status;
  }

  /** Connects, and keeps connected until `close()`. */
  start() {
    if (this.#started || this.#closed) return this;
    this.#started = true;
    this.#setStatus('connecting');
    this.#connect();
    return this;
  }

  /** Closes the connection and stops for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#hangUp();
    this.#setStatus('closed');
  }

  #connect() {
    this.#timer = null;
    this.#subscribed = false;
    const url = new URL(this.#url);
    if (this.#resumable) {
      url.searchParams.set('since', String(this.#seq));
      url.searchParams.set('gen', String(this.#gen));
    }
    let socket;
    try {
      socket = new this.#WebSocket(url.href);
    } catch (error) {
      this.#emitError(String(error?.message ?? error));
      this.#reconnect();
      return;
    }
    let failure = null;
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onerror = (event) => {
      failure ??= event?.message || 'cannot reach the gateway, or it refused the subscription';
    };
    socket.onclose = (event) => {
      this.#socket = null;
      if (failure || !this.#subscribed) this.#emitError(failure ?? describeClose(event));
      this.#reconnect();
    };
    this.#socket = socket;
  }

  /** Closes the current connection without reacting to its end. */
  #hangUp() {
    const socket = this.#socket;
    if (!socket) return;
    this.#socket = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = () => {}; // `ws` throws on an error event nobody listens to
    socket.close(1000);
  }

  #reconnect() {
    if (this.#closed) return;
    this.#setStatus('connecting');
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#connect(), Math.random() * ceiling);
  }

  /** Connects again without `since`, for a fresh snapshot. */
  #refetch() {
    this.#resumable = false;
    this.#hangUp();
    this.#reconnect();
  }

  #onMessage(data) {
    if (typeof data !== 'string') return; // every message is JSON text
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.#emitError('the gateway sent a message that is not JSON');
      return;
    }
    if (message === null || typeof message !== 'object') return;
    switch (message.type) {
      case 'subscribed':
        this.#subscribed = true;
        this.#attempt = 0;
        this.#adoptGen(message.gen);
        this.#setStatus('live');
        break;
      case 'snapshot':
        this.#applySnapshot(message);
        break;
      case undefined:
        this.#applyDelta(message);
        break;
      case 'overflow':
        this.#refetch();
        break;
      case 'invalidated':
        if (this.#snapshotSeen) {
          this.#refetch();
        } else {
          this.#seq = message.seq ?? this.#seq;
          this.#resumable = this.#seq !== null;
          this.#emitChange('invalidated', [], []);
        }
        break;
      case 'resubscribed':
        // the query was registered again, perhaps changed; the gateway closes this connection
        this.#adoptGen(message.gen);
        this.#refetch();
        break;
    }
  }

  /** A new gen is a new registration of the query: what was known of the old one does not carry over. */
  #adoptGen(gen) {
    if (gen === undefined || gen === this.#gen) return;
    this.#gen = gen;
    this.#snapshotSeen = false;
    this.#resumable = false;
  }

  #applySnapshot(message) {
    const replaced = this.rows;
    const inserted = asArray(message.inserted);
    this.#rows = new Map();
    for (const row of inserted) this.#add(row);
    this.#adoptGen(message.gen);
    this.#seq = message.seq;
    this.#snapshotSeen = true;
    this.#resumable = true;
    this.#emitChange('snapshot', inserted, replaced);
  }

  #applyDelta(message) {
    // Without a snapshot there are no rows to change; a seq seen already was applied.
    if (!this.#snapshotSeen || !(message.seq > this.#seq)) return;
    if (message.seq !== this.#seq + 1) {
      this.#refetch(); // a delta is missing
      return;
    }
    const inserted = asArray(message.inserted);
    const deleted = asArray(message.deleted);
    for (const row of deleted) this.#remove(row);
    for (const row of inserted) this.#add(row);
    this.#seq = message.seq;
    this.#emitChange('delta', inserted, deleted);
  }

  #add(row) {
    const key = JSON.stringify(row);
    const entry = this.#rows.get(key);
    if (entry) {
      entry.count += 1;
    } else {
      this.#rows.set(key, { row, count: 1 });
    }
  }

  /** Removes one occurrence of `row`. */
  #remove(row) {
    const key = JSON.stringify(row);
    const entry = this.#rows.get(key);
    if (!entry) return;
    entry.count -= 1;
    if (entry.count === 0) this.#rows.delete(key);
  }

  #setStatus(status) {
    if (status === this.#status) return;
    this.#status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: status }));
  }

  #emitChange(reason, inserted, deleted) {
    const detail = { rows: this.rows, inserted, deleted, seq: this.#seq, reason };
    this.dispatchEvent(new CustomEvent('change', { detail }));
  }

  #emitError(message) {
    this.dispatchEvent(new CustomEvent('error', { detail: message }));
  }
}

function asArray(value) {
  return Array.isArray(value) ? value : [];
}

function describeClose(event) {
  const reason = event?.reason ? `: ${event.reason}` : '';
  return `the connection closed before the gateway confirmed the subscription (code ${event?.code}${reason})`;
}
