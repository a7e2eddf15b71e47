"""A WebSocket client for the egress proxy's tests: the real `websockets` client. Connects
to URL, prints the first message (the upstream's report of the handshake), then sends
COUNT messages one at a time, each after the answer to the last, and prints a JSON line:
the answers and the median round trip in microseconds. A refused handshake prints
its status and body instead."""

import json
import statistics
import sys
import time

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def main():
    url, count = sys.argv[1], int(sys.argv[2])
    try:
        with connect(url, open_timeout=10) as ws:
            first = ws.recv(timeout=10)
            answers, times = [], []
            for i in range(count):
                started = time.perf_counter()
                ws.send("m%d" % i)
                answers.append(ws.recv(timeout=10))
                times.append((time.perf_counter() - started) * 1e6)
            print(json.dumps({"first": first, "answers": answers[:3], "n": len(answers),
                              "median_us": statistics.median(times) if times else 0}), flush=True)
    except InvalidStatus as e:
        r = e.response
        print(json.dumps({"status": r.status_code, "body": r.body.decode(errors="replace")}), flush=True)


if __name__ == "__main__":
    main()
