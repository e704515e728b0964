"""Local stand-in for the EventBridge schedules: invokes functions through
`cargo lambda watch`'s invoke API at fixed intervals.

    scheduler.py http://127.0.0.1:9000 kv-sweep-expired=2 [other-fn=SECONDS ...]

Each invocation's result is printed (the stack keeps it in scheduler.log).
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
        try:
            print(f"{name}: {invoke(base, name)}", flush=True)
        except Exception as err:  # the next tick retries
            print(f"{name}: failed: {err}", flush=True)
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
