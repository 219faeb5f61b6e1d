// A live query's messages read as Server-Sent Events from the gateway's
// HTTP port (PGSHARE_HTTP), as a Node service would without a WebSocket
// library: one JSON message per event.
const http = process.env.PGSHARE_HTTP;

export class Events {
  static async open(database, queryId) {
    const controller = new AbortController();
    const response = await fetch(`${http}/sse/${database}/${queryId}`, {
      headers: { accept: 'text/event-stream' },
      signal: controller.signal,
    });
    if (!response.ok) {
      throw new Error(`GET /sse/${database}/${queryId}: ${response.status} ${await response.text()}`);
    }
    return new Events(response.body.getReader(), controller);
  }

  constructor(reader, controller) {
    this.reader = reader;
    this.controller = controller;
    this.buffer = '';
    this.decoder = new TextDecoder();
  }

  // The next message; keep-alive comments are skipped.
  async next() {
    for (;;) {
      const end = this.buffer.indexOf('\n\n');
      if (end >= 0) {
        const block = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, ''));
        if (data.length > 0) return JSON.parse(data.join('\n'));
        continue;
      }
      const { value, done } = await this.reader.read();
      if (done) throw new Error('the event stream ended');
      this.buffer += this.decoder.decode(value, { stream: true });
    }
  }

  close() {
    this.controller.abort();
  }
}
