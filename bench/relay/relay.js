// The relay a user would write instead of pgshare's live-query sockets, for
// bench/realtime.sh to measure side by side: one connection LISTENs on
// channel pgr, and each notification's payload goes to every WebSocket at
// /ws/{query_id} of the query it names.
//
// Usage: node relay.js DATABASE_URL PORT   (listens on 127.0.0.1:PORT)

import pg from "pg";
import { WebSocketServer } from "ws";

const [databaseUrl, port] = process.argv.slice(2);
const sockets = new Map();

const client = new pg.Client({ connectionString: databaseUrl });
await client.connect();
client.on("notification", ({ payload }) => {
  const listeners = sockets.get(JSON.parse(payload).query_id);
  for (const socket of listeners ?? []) {
    socket.send(payload);
  }
});
await client.query("LISTEN pgr");

const server = new WebSocketServer({ host: "127.0.0.1", port: Number(port) });
server.on("connection", (socket, request) => {
  const queryId = decodeURIComponent(request.url.replace(/^\/ws\//, "").split("?")[0]);
  if (!sockets.has(queryId)) {
    sockets.set(queryId, new Set());
  }
  sockets.get(queryId).add(socket);
  socket.on("close", () => sockets.get(queryId).delete(socket));
  socket.on("error", () => socket.terminate());
});
server.on("listening", () => console.log(`relay listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
