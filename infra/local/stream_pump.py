"""Local stand-in for a Lambda event source mapping on a DynamoDB stream: reads the
stream of a table from the emulator and invokes a function through
`cargo lambda watch`'s invoke API, as Lambda does in AWS.

    stream_pump.py http://127.0.0.1:9000 backup-forward subkv-kv-log \
        [--batch-size 100] [--max-retries 5] [--failure-file PATH] [--poll-seconds 0.25]

What it reproduces of the mapping (`FunctionResponseTypes: ReportBatchItemFailures`):

- Events: `{"Records": [...]}` in the shape Lambda sends for DynamoDB streams
  (binary attribute values base64, ApproximateCreationDateTime in epoch seconds).
- Every shard is read from TRIM_HORIZON, one batch in flight per shard; shards that
  appear later are picked up, a child shard starts once its parent is drained.
- Partial batch responses: `{"batchItemFailures":[{"itemIdentifier": SEQ}, ...]}`
  makes the lowest listed sequence number the checkpoint: the records before it are
  done, the rest is retried. A function error (invoke failure, non-2xx, an
  `X-Amz-Function-Error` header, a reply that is not JSON, or a batch response
  naming a record not in the batch) retries the whole batch.
- Retries back off exponentially (0.2 s doubling to 5 s). After --max-retries
  retries of the same records (MaximumRetryAttempts; -1 = retry forever) they are
  discarded and the batch's description goes to the failure destination
  (OnFailure), here one JSON line appended to --failure-file (default stderr).

Differences: one GetRecords result is one batch (no batching window, no
bisecting), and a retry re-sends the remaining records of the failed batch only.

It reads AWS_ENDPOINT_URL (required: it never talks to real AWS) and the usual
AWS_* region and credential variables. One line per invocation goes to stdout.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

# ---------------------------------------------------------------------------
# Event shape


def _b64(value: Any) -> Any:
    # boto3 returns B values as bytes; anything else (already text) passes as is.
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def encode_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB AttributeValue from boto3's low-level client, as Lambda's JSON has it."""
    out = {}
    for kind, inner in value.items():
        if kind == "B":
            out[kind] = _b64(inner)
        elif kind == "BS":
            out[kind] = [_b64(v) for v in inner]
        elif kind == "M":
            out[kind] = encode_item(inner)
        elif kind == "L":
            out[kind] = [encode_attribute(v) for v in inner]
        else:  # S, N, SS, NS, BOOL, NULL: JSON already
            out[kind] = inner
    return out


def encode_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: encode_attribute(value) for name, value in item.items()}


def epoch_seconds(value: Any) -> int:
    """ApproximateCreationDateTime as Lambda sends it: whole seconds since the epoch."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # the Streams API speaks UTC
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp())
    return int(float(value))


def region_of(arn: str) -> str:
    return arn.split(":")[3]


def build_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """One Lambda event record from one GetRecords record (boto3's shape)."""
    change = raw["dynamodb"]
    out: dict[str, Any] = {}
    if "ApproximateCreationDateTime" in change:
        out["ApproximateCreationDateTime"] = epoch_seconds(change["ApproximateCreationDateTime"])
    out["Keys"] = encode_item(change.get("Keys", {}))
    for image in ("NewImage", "OldImage"):
        if image in change:
            out[image] = encode_item(change[image])
    out["SequenceNumber"] = change["SequenceNumber"]
    out["SizeBytes"] = change.get("SizeBytes", 0)
    out["StreamViewType"] = change.get("StreamViewType")
    record: dict[str, Any] = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region_of(stream_arn),
    }
    identity = raw.get("userIdentity")
    if identity:  # TTL deletions: the Streams API says Type/PrincipalId, Lambda type/principalId
        record["userIdentity"] = {
            "type": identity.get("Type"),
            "principalId": identity.get("PrincipalId"),
        }
    record["dynamodb"] = out
    record["eventSourceARN"] = stream_arn
    return record


def build_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    return {"Records": [build_record(r, stream_arn) for r in records]}


def sequence_of(raw: dict[str, Any]) -> str:
    return raw["dynamodb"]["SequenceNumber"]


def _range(records: list[dict[str, Any]]) -> str:
    first, last = sequence_of(records[0]), sequence_of(records[-1])
    return first if first == last else f"{first}..{last}"


# ---------------------------------------------------------------------------
# Invocation and its outcome


@dataclass
class Reply:
    """What the invoke API answered."""

    status: int
    function_error: str | None
    body: bytes


class HttpInvoker:
    """POSTs an event to `cargo lambda watch`'s invoke API (Lambda's Invoke path)."""

    def __init__(self, base_url: str, function: str, timeout: float = 900.0):
        self.url = f"{base_url.rstrip('/')}/2015-03-31/functions/{function}/invocations"
        self.timeout = timeout  # Lambda's longest function timeout; a first build takes a while

    def __call__(self, payload: bytes) -> Reply:
        request = urllib.request.Request(
            self.url, data=payload, headers={"content-type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return Reply(
                    response.status, response.headers.get("X-Amz-Function-Error"), response.read()
                )
        except urllib.error.HTTPError as err:  # non-2xx: still a reply
            with err:
                return Reply(err.code, err.headers.get("X-Amz-Function-Error"), err.read())


@dataclass
class Verdict:
    """How much of a batch succeeded: `done` records from its start (all of them when
    `ok`); the records from index `done` on are to be retried."""

    ok: bool
    done: int
    reason: str = ""


def _error_summary(body: bytes) -> str:
    # A Lambda error payload is {"errorType","errorMessage"}: show those, shortened.
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and "errorType" in payload:
            return f"{payload.get('errorType')}: {str(payload.get('errorMessage', ''))[:200]}"
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


def judge(reply: Reply, batch: list[dict[str, Any]]) -> Verdict:
    """Lambda's reading of a reply to a batch, with ReportBatchItemFailures on."""
    whole = len(batch)
    if not 200 <= reply.status < 300:
        return Verdict(False, 0, f"HTTP {reply.status} {_error_summary(reply.body)}".rstrip())
    if reply.function_error:
        return Verdict(False, 0, f"function error ({reply.function_error}) {_error_summary(reply.body)}")
    try:
        response = json.loads(reply.body) if reply.body.strip() else None
    except ValueError:
        return Verdict(False, 0, "reply is not JSON")
    # A null or empty response, or a null or empty list: the whole batch succeeded.
    if response is None:
        return Verdict(True, whole)
    if not isinstance(response, dict):
        return Verdict(False, 0, "reply is not a batch response object")
    failures = response.get("batchItemFailures")
    if not failures:
        return Verdict(True, whole)
    if not isinstance(failures, list):
        return Verdict(False, 0, "batchItemFailures is not a list")
    position = {sequence_of(r): i for i, r in enumerate(batch)}
    failed = []
    for entry in failures:
        ident = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        # A missing, empty or unknown identifier fails the whole batch, as in Lambda.
        if not isinstance(ident, str) or ident not in position:
            return Verdict(False, 0, f"batchItemFailures names {ident!r}, not a record of the batch")
        failed.append(position[ident])
    # Records of a shard come in sequence order: the lowest sequence number is the
    # earliest position, and everything before it counts as processed.
    first = min(failed)
    return Verdict(False, first, f"{len(failed)} batch item failure(s) from {sequence_of(batch[first])}")


# ---------------------------------------------------------------------------
# Failure destination


class FailureSink:
    """The OnFailure destination: one JSON line per discarded batch, in the shape
    Lambda sends for stream sources (plus a `subkvLocal` member with the records'
    sequence numbers and the last error)."""

    def __init__(self, path: str | None):
        self.path = path

    def __call__(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        if self.path is None:
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None


# ---------------------------------------------------------------------------
# The pump


class StreamGone(Exception):
    """The stream no longer exists (its table was deleted): start over."""


def error_code(err: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (or a fake with `.response`)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


@dataclass
class Shard:
    id: str
    parent: str | None
    iterator: str | None = None  # where the next GetRecords reads; None: get one first
    closed: bool = False  # GetRecords returned no NextShardIterator: nothing more will come
    batch: list[dict[str, Any]] = field(default_factory=list)  # fetched, not yet done
    attempts: int = 0  # failed invocations of batch[0] onward
    last_error: str = ""
    last_status: int = 0
    due: float = 0.0  # clock time of this shard's next action
    checkpoint: str | None = None  # sequence number of the last record done

    @property
    def drained(self) -> bool:
        return self.closed and not self.batch


class Pump:
    """Follows one stream's shards and feeds their records to `invoke`.

    Nothing here sleeps: `step()` does whatever is due and returns how long until
    something else is, so tests drive it with a fake clock, a fake streams client
    (`describe_stream`, `get_shard_iterator`, `get_records` as boto3 has them) and
    a fake invoker (`bytes -> Reply`)."""

    def __init__(
        self,
        streams: Any,
        invoke: Callable[[bytes], Reply],
        stream_arn: str,
        function: str,
        *,
        batch_size: int = 100,
        max_retries: int = 5,
        on_failure: Callable[[dict[str, Any]], None] = FailureSink(None),
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        poll_seconds: float = 0.25,
        refresh_seconds: float = 1.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
    ):
        self.streams = streams
        self.invoke = invoke
        self.stream_arn = stream_arn
        self.function = function
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.log = log
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.refresh_seconds = refresh_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.shards: dict[str, Shard] = {}
        self.refresh_due = 0.0

    # -- shards

    def refresh_shards(self) -> None:
        """Adds the shards DescribeStream lists that are new; forgets drained shards it
        no longer lists (trimmed)."""
        listed, start = [], None
        while True:
            kwargs = {"StreamArn": self.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            try:
                description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            except Exception as err:
                if error_code(err) == "ResourceNotFoundException":
                    raise StreamGone(self.stream_arn) from err
                raise
            listed.extend(description.get("Shards", []))
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        ids = set()
        for entry in listed:
            ids.add(entry["ShardId"])
            if entry["ShardId"] not in self.shards:
                self.shards[entry["ShardId"]] = Shard(entry["ShardId"], entry.get("ParentShardId"))
                self.log(f"{self.function}: following {entry['ShardId']}")
        for shard_id in [s for s, shard in self.shards.items() if s not in ids and shard.drained]:
            del self.shards[shard_id]

    def _ready(self, shard: Shard) -> bool:
        # Lambda finishes a parent shard before it reads its children.
        parent = self.shards.get(shard.parent) if shard.parent else None
        return not shard.drained and (parent is None or parent.drained)

    # -- the loop

    def step(self) -> float:
        """Does what is due; returns the seconds until something else is."""
        now = self.clock()
        if now >= self.refresh_due:
            try:
                self.refresh_shards()
                self.refresh_due = now + self.refresh_seconds
            except StreamGone:
                raise
            except Exception as err:  # the emulator is restarting, say: try again later
                self.log(f"{self.function}: describing the stream failed: {err}")
                self.refresh_due = now + self.backoff_cap
        for shard in list(self.shards.values()):
            if self._ready(shard) and now >= shard.due:
                self._advance(shard)
        now = self.clock()
        due = [self.refresh_due] + [s.due for s in self.shards.values() if self._ready(s)]
        return max(0.0, min(due) - now)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            stop.wait(self.step())

    def _advance(self, shard: Shard) -> None:
        if not shard.batch:
            self._fetch(shard)
            if not shard.batch:
                return
        self._deliver(shard)

    def _fetch(self, shard: Shard) -> None:
        now = self.clock()
        try:
            if shard.iterator is None:
                if shard.checkpoint is None:
                    position = {"ShardIteratorType": "TRIM_HORIZON"}
                else:
                    position = {
                        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                        "SequenceNumber": shard.checkpoint,
                    }
                shard.iterator = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard.id, **position
                )["ShardIterator"]
            result = self.streams.get_records(ShardIterator=shard.iterator, Limit=min(self.batch_size, 1000))
        except Exception as err:
            code = error_code(err)
            shard.iterator = None  # a fresh one from the checkpoint next time
            if code == "ExpiredIteratorException":
                shard.due = now
            elif code == "TrimmedDataAccessException":
                # The records after the checkpoint are gone (older than 24 h): go on
                # from the oldest left, as Lambda does.
                self.log(f"{self.function}: {shard.id}: records after {shard.checkpoint} were trimmed")
                shard.checkpoint = None
                shard.due = now
            elif code == "ResourceNotFoundException":
                self.log(f"{self.function}: {shard.id}: shard is gone")
                shard.closed = True
            else:
                self.log(f"{self.function}: {shard.id}: reading the stream failed: {err}")
                shard.due = now + self.backoff_cap
            return
        shard.batch = list(result.get("Records", []))
        shard.iterator = result.get("NextShardIterator")
        if shard.iterator is None:
            shard.closed = True
            self.refresh_due = now  # a closed shard usually means new shards
            self.log(f"{self.function}: {shard.id}: closed")
        if not shard.batch:
            shard.due = now + self.poll_seconds

    def _deliver(self, shard: Shard) -> None:
        batch = shard.batch
        span = f"{shard.id}: {len(batch)} record(s) {_range(batch)}"
        payload = json.dumps(build_event(batch, self.stream_arn), separators=(",", ":")).encode()
        started = time.monotonic()
        try:
            reply = self.invoke(payload)
            verdict = judge(reply, batch)
            shard.last_status = reply.status
        except Exception as err:  # connection refused, timeout, ...
            verdict = Verdict(False, 0, f"invoke failed: {err}")
            shard.last_status = 0
        took = f"{(time.monotonic() - started) * 1000:.0f} ms"
        now = self.clock()
        if verdict.ok:
            self.log(f"{self.function}: {span}: ok ({took})")
            shard.checkpoint = sequence_of(batch[-1])
            shard.batch, shard.attempts, shard.due = [], 0, now
            return
        shard.last_error = verdict.reason
        if verdict.done > 0:
            # Progress: what is left failed once so far.
            shard.checkpoint = sequence_of(batch[verdict.done - 1])
            shard.batch = batch[verdict.done :]
            shard.attempts = 1
        else:
            shard.attempts += 1
        left = shard.batch
        retries = shard.attempts - 1  # retries of these records already made
        if 0 <= self.max_retries <= retries:
            self.log(
                f"{self.function}: {span}: {verdict.reason} ({took}); retries exhausted, "
                f"{len(left)} record(s) {_range(left)} sent to the failure destination"
            )
            self._discard(shard)
            shard.due = now
            return
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (shard.attempts - 1))
        limit = "unlimited" if self.max_retries < 0 else str(self.max_retries)
        self.log(
            f"{self.function}: {span}: {verdict.reason} ({took}); {verdict.done} done, retrying "
            f"{len(left)} from {sequence_of(left[0])} in {delay:.1f} s (retry {retries + 1} of {limit})"
        )
        shard.due = now + delay

    def _discard(self, shard: Shard) -> None:
        batch = shard.batch
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        arn = self.stream_arn.split(":")
        self.on_failure(
            {
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"arn:aws:lambda:{arn[3]}:{arn[4]}:function:{self.function}",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": shard.attempts,
                },
                "responseContext": {
                    "statusCode": shard.last_status,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "version": "1.0",
                "timestamp": _iso(dt.datetime.now(dt.timezone.utc)),
                "DDBStreamBatchInfo": {
                    "shardId": shard.id,
                    "startSequenceNumber": first["SequenceNumber"],
                    "endSequenceNumber": last["SequenceNumber"],
                    "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                    "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                    "batchSize": len(batch),
                    "streamArn": self.stream_arn,
                },
                "subkvLocal": {
                    "sequenceNumbers": [sequence_of(r) for r in batch],
                    "lastError": shard.last_error,
                },
            }
        )
        shard.checkpoint = sequence_of(batch[-1])
        shard.batch, shard.attempts = [], 0


# ---------------------------------------------------------------------------
# The daemon


def wait_for_stream(
    dynamodb: Any, table: str, stop: threading.Event, log: Callable[[str], None], every: float
) -> str | None:
    """The table's LatestStreamArn, once the table exists with a stream (None if stopped)."""
    said = None
    while not stop.is_set():
        try:
            arn = dynamodb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
            status = None if arn else "has no stream yet"
        except Exception as err:
            arn = None
            if error_code(err) == "ResourceNotFoundException":
                status = "does not exist yet"
            else:
                status = f"is not reachable ({err})"
        if arn:
            log(f"stream of {table}: {arn}")
            return arn
        if status != said:  # one line per change, not per poll
            log(f"table {table} {status}; waiting")
            said = status
        stop.wait(every)
    return None


def follow(dynamodb: Any, streams: Any, invoke: Callable[[bytes], Reply], function: str, table: str,
           stop: threading.Event, log: Callable[[str], None] = print, **options: Any) -> None:
    """Waits for the table's stream and pumps it; starts over if the stream goes away."""
    while not stop.is_set():
        arn = wait_for_stream(dynamodb, table, stop, log, every=options.get("poll_seconds", 0.25) * 4)
        if arn is None:
            return
        pump = Pump(streams, invoke, arn, function, log=log, **options)
        try:
            pump.run(stop)
        except StreamGone:
            log(f"stream {arn} is gone; waiting for the table again")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("invoke_base_url", help="e.g. http://127.0.0.1:9000 (cargo lambda watch)")
    parser.add_argument("function")
    parser.add_argument("table")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--max-retries", type=int, default=5,
        help="retries of the same records before they go to the failure destination (-1: forever)",
    )
    parser.add_argument(
        "--failure-file", default=None, help="JSON lines of discarded batches (default: stderr)"
    )
    parser.add_argument("--poll-seconds", type=float, default=0.25, help="idle polling interval of a shard")
    parser.add_argument(
        "--stream-access-key-id", default=None,
        help="read the stream with this key: the function's role's, as the event source mapping does",
    )
    args = parser.parse_args(argv)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        parser.error("AWS_ENDPOINT_URL is not set (this pump only reads a local emulator)")

    import boto3  # here, so the logic above imports without it

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)
    role = {}
    if args.stream_access_key_id:
        role = {
            "aws_access_key_id": args.stream_access_key_id,
            "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        }
    streams = boto3.client("dynamodbstreams", endpoint_url=endpoint, region_name=region, **role)
    stop = threading.Event()

    def terminate(*_: Any) -> None:
        raise SystemExit(0)  # at once, even in the middle of an invocation

    signal.signal(signal.SIGTERM, terminate)
    log = lambda line: print(line, flush=True)  # noqa: E731
    log(f"stream pump: {args.table} -> {args.function} via {args.invoke_base_url}")
    try:
        follow(
            dynamodb, streams, HttpInvoker(args.invoke_base_url, args.function), args.function, args.table,
            stop, log, batch_size=args.batch_size, max_retries=args.max_retries,
            on_failure=FailureSink(args.failure_file), poll_seconds=args.poll_seconds,
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
