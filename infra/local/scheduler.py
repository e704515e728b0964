"""Local stand-in for the EventBridge schedules: invokes functions through
`cargo lambda watch`'s invoke API at fixed intervals.

    scheduler.py http://127.0.0.1:9000 kv-sweep-expired=2 [other-fn=SECONDS ...]

Each invocation's result is printed with the time it began and how long it
took (the stack keeps it in scheduler.log; the e2e tests quote its tail when
they time out waiting for a scheduled function):

    2026-12-03T11:25:59Z kv-purge-deleted (412 ms): {"pending":0,...}
"""

import sys
import threading
import time
import urllib.request


def invoke(base: str, function: str) -> str:
    request = urllib.request.Request(
        f"{base}/2015-03-31/functions/{function}/invocations",
        data=b'{"source":"subkv.local.scheduler"}',
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read().decode("utf-8", "replace")


def every(base: str, name: str, seconds: float) -> None:
    """One schedule: invoke `name`, then wait `seconds` after it returns (as a
    schedule with no overlapping runs; AWS's may overlap, which the functions'
    leases and conditions allow)."""
    while True:
        began = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        start = time.monotonic()
        try:
            outcome = invoke(base, name)
        except Exception as err:  # the next tick retries
            outcome = f"failed: {err}"
        took = round((time.monotonic() - start) * 1000)
        print(f"{began} {name} ({took} ms): {outcome}", flush=True)
        time.sleep(seconds)


def main() -> None:
    base = sys.argv[1]
    # One thread per schedule, as EventBridge runs each rule on its own: a long
    # restore-database run must not hold back the sweeper.
    threads = []
    for arg in sys.argv[2:]:
        name, seconds = arg.split("=", 1)
        threads.append(threading.Thread(target=every, args=(base, name, float(seconds)), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
