"""A live query's messages read as Server-Sent Events from the gateway's
HTTP port (PGSHARE_HTTP), as a service without a WebSocket library would:
one JSON message per event."""

import json
import os
import urllib.request

HTTP = os.environ["PGSHARE_HTTP"]


class Events:
    def __init__(self, database, query_id):
        url = f"{HTTP}/sse/{database}/{query_id}"
        request = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
        self.stream = urllib.request.urlopen(request, timeout=10)

    def next(self):
        """The next message, as a dict; keep-alive comments are skipped."""
        data = []
        while True:
            line = self.stream.readline()
            if not line:
                raise EOFError("the event stream ended")
            line = line.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line == "" and data:
                return json.loads("\n".join(data))

    def close(self):
        self.stream.close()
