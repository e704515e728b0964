"""Local stand-in for the EventBridge schedules: invokes functions through
`cargo lambda watch`'s invoke API at fixed intervals.

    scheduler.py http://127.0.0.1:9000 kv-sweep-expired=2 [other-fn=SECONDS ...]

Each invocation's result is printed (the stack keeps it in scheduler.log).
"""

import sys
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


def main() -> None:
    base = sys.argv[1]
    jobs = []
    for arg in sys.argv[2:]:
        name, seconds = arg.split("=", 1)
        jobs.append([name, float(seconds), 0.0])
    while True:
        now = time.monotonic()
        for job in jobs:
            name, every, due = job
            if now >= due:
                try:
                    print(f"{name}: {invoke(base, name)}", flush=True)
                except Exception as err:  # the next tick retries
                    print(f"{name}: failed: {err}", flush=True)
                job[2] = time.monotonic() + every
        time.sleep(max(0.05, min(job[2] for job in jobs) - time.monotonic()) if jobs else 1)


if __name__ == "__main__":
    main()
