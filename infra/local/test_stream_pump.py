"""Tests of stream_pump.py (and of the stream fixes in moto_server.py).

    .venv/bin/python -m unittest discover -s infra/local -p 'test_*.py'

The unit tests drive the pump with a fake clock, a fake DynamoDB Streams client and
a fake invoker. The integration test starts moto_server.py on a free port and a
small HTTP server standing in for `cargo lambda watch`'s invoke API.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
import unittest
import uuid
from pathlib import Path

from stream_pump import (
    FailureSink,
    HttpInvoker,
    Pump,
    Reply,
    build_event,
    follow,
    judge,
)

HERE = Path(__file__).resolve().parent
ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/subkv-kv-log/stream/2026-01-02T03:04:05.678"
CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
OK = Reply(200, None, b'{"batchItemFailures":[]}')


def raw_record(seq: int, key: bytes = b"\x00k", value: bytes = b"v", name: str = "INSERT") -> dict:
    """A GetRecords record as boto3's low-level client returns it."""
    return {
        "eventID": f"event-{seq}",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": CREATED,
            "Keys": {"pk": {"S": "db"}, "sk": {"B": key}},
            "NewImage": {"pk": {"S": "db"}, "sk": {"B": key}, "m": {"B": value}},
            "SequenceNumber": str(seq),
            "SizeBytes": 42,
            "StreamViewType": "NEW_IMAGE",
        },
    }


def client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStreams:
    """DescribeStream / GetShardIterator / GetRecords over in-memory shards.
    Iterators are "<shard>|<position>"; DescribeStream pages `page` shards at a time."""

    def __init__(self, page: int = 1) -> None:
        self.shards: dict[str, dict] = {}
        self.page = page
        self.expire_next = 0  # how many GetRecords calls to fail with ExpiredIteratorException
        self.iterator_requests: list[dict] = []

    def add_shard(self, shard_id: str, records=(), parent: str | None = None, closed: bool = False) -> None:
        self.shards[shard_id] = {"records": list(records), "parent": parent, "closed": closed}

    def describe_stream(self, StreamArn, ExclusiveStartShardId=None):
        ids = list(self.shards)
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        page = ids[start : start + self.page]
        shards = []
        for shard_id in page:
            entry = {"ShardId": shard_id, "SequenceNumberRange": {}}
            if self.shards[shard_id]["parent"]:
                entry["ParentShardId"] = self.shards[shard_id]["parent"]
            shards.append(entry)
        description = {"StreamArn": StreamArn, "Shards": shards}
        if start + self.page < len(ids):
            description["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": description}

    def get_shard_iterator(self, StreamArn, ShardId, ShardIteratorType, SequenceNumber=None):
        self.iterator_requests.append(
            {"ShardIteratorType": ShardIteratorType, "SequenceNumber": SequenceNumber}
        )
        records = self.shards[ShardId]["records"]
        if ShardIteratorType == "TRIM_HORIZON":
            position = 0
        else:
            assert ShardIteratorType == "AFTER_SEQUENCE_NUMBER"
            position = [r["dynamodb"]["SequenceNumber"] for r in records].index(SequenceNumber) + 1
        return {"ShardIterator": f"{ShardId}|{position}"}

    def get_records(self, ShardIterator, Limit):
        if self.expire_next:
            self.expire_next -= 1
            raise client_error("ExpiredIteratorException")
        shard_id, position = ShardIterator.rsplit("|", 1)
        shard = self.shards[shard_id]
        records = shard["records"][int(position) : int(position) + Limit]
        end = int(position) + len(records)
        result = {"Records": records}
        if not (shard["closed"] and end >= len(shard["records"])):
            result["NextShardIterator"] = f"{shard_id}|{end}"
        return result


class FakeInvoker:
    """Answers with `script` in turn (a Reply, an exception to raise, or a function of
    the event's records returning either), then with success."""

    def __init__(self, clock: FakeClock, *script) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[float, list[str]]] = []  # (clock time, sequence numbers)
        self.events: list[dict] = []

    def __call__(self, payload: bytes) -> Reply:
        event = json.loads(payload)
        self.events.append(event)
        seqs = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        self.calls.append((self.clock(), seqs))
        answer = self.script.pop(0) if self.script else OK
        if callable(answer) and not isinstance(answer, Reply):
            answer = answer(seqs)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def batches(self) -> list[list[str]]:
        return [seqs for _, seqs in self.calls]


def failures(*seqs: str) -> Reply:
    body = {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}
    return Reply(200, None, json.dumps(body).encode())


def make_pump(streams, invoker, clock, **options) -> tuple[Pump, list[str], list[dict]]:
    lines: list[str] = []
    sink: list[dict] = []
    options.setdefault("max_retries", 5)
    pump = Pump(streams, invoker, ARN, "backup-forward", on_failure=sink.append, log=lines.append,
                clock=clock, **options)
    return pump, lines, sink


def drive(pump: Pump, clock: FakeClock, until, steps: int = 500) -> None:
    """Steps the pump, jumping the fake clock to whatever is due next, until `until()`."""
    for _ in range(steps):
        if until():
            return
        clock.now += pump.step()
    raise AssertionError(f"condition not reached in {steps} steps")


class EventShape(unittest.TestCase):
    def test_record_is_what_lambda_sends(self):
        raw = raw_record(7, key=b"\x00\x01\xff", value=b"hello")
        raw["dynamodb"]["NewImage"].update(
            {
                "bs": {"BS": [b"a", b"\xfe"]},
                "nested": {"M": {"x": {"B": b"\x02"}, "list": {"L": [{"B": b"\x03"}, {"N": "5"}]}}},
                "n": {"N": "12"},
                "flag": {"BOOL": True},
                "nothing": {"NULL": True},
                "ss": {"SS": ["a", "b"]},
            }
        )
        raw["dynamodb"]["OldImage"] = {"pk": {"S": "db"}, "sk": {"B": b"\x00\x01\xff"}}
        event = json.loads(json.dumps(build_event([raw], ARN)))  # JSON-serializable as is
        (record,) = event["Records"]
        self.assertEqual(
            list(record),
            ["eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb",
             "eventSourceARN"],
        )
        self.assertEqual(record["eventID"], "event-7")
        self.assertEqual(record["eventName"], "INSERT")
        self.assertEqual(record["eventVersion"], "1.1")
        self.assertEqual(record["eventSource"], "aws:dynamodb")
        self.assertEqual(record["awsRegion"], "eu-west-1")  # the stream's region
        self.assertEqual(record["eventSourceARN"], ARN)
        change = record["dynamodb"]
        self.assertEqual(change["ApproximateCreationDateTime"], int(CREATED.timestamp()))
        self.assertIsInstance(change["ApproximateCreationDateTime"], int)
        self.assertEqual(change["Keys"], {"pk": {"S": "db"}, "sk": {"B": "AAH/"}})
        image = change["NewImage"]
        self.assertEqual(image["m"], {"B": base64.b64encode(b"hello").decode()})
        self.assertEqual(image["bs"], {"BS": ["YQ==", "/g=="]})
        self.assertEqual(
            image["nested"], {"M": {"x": {"B": "Ag=="}, "list": {"L": [{"B": "Aw=="}, {"N": "5"}]}}}
        )
        self.assertEqual(image["n"], {"N": "12"})
        self.assertEqual(image["flag"], {"BOOL": True})
        self.assertEqual(image["nothing"], {"NULL": True})
        self.assertEqual(image["ss"], {"SS": ["a", "b"]})
        self.assertEqual(change["OldImage"], {"pk": {"S": "db"}, "sk": {"B": "AAH/"}})
        self.assertEqual(change["SequenceNumber"], "7")
        self.assertEqual(change["SizeBytes"], 42)
        self.assertEqual(change["StreamViewType"], "NEW_IMAGE")

    def test_naive_time_is_utc_and_ttl_identity_is_renamed(self):
        raw = raw_record(1)
        raw["dynamodb"]["ApproximateCreationDateTime"] = CREATED.replace(tzinfo=None)
        raw["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
        record = build_event([raw], ARN)["Records"][0]
        self.assertEqual(record["dynamodb"]["ApproximateCreationDateTime"], int(CREATED.timestamp()))
        self.assertEqual(record["userIdentity"], {"type": "Service", "principalId": "dynamodb.amazonaws.com"})

    def test_pump_sends_the_event(self):
        clock = FakeClock()
        streams = FakeStreams()
        streams.add_shard("shard-1", [raw_record(1), raw_record(2)])
        invoker = FakeInvoker(clock)
        pump, lines, _ = make_pump(streams, invoker, clock)
        drive(pump, clock, lambda: invoker.calls)
        expected = build_event([raw_record(1), raw_record(2)], ARN)
        self.assertEqual(invoker.events[0], json.loads(json.dumps(expected)))
        self.assertIn("2 record(s) 1..2: ok", lines[-1])


class Replies(unittest.TestCase):
    batch = [raw_record(1), raw_record(2), raw_record(3)]

    def test_successes(self):
        for body in (b"", b"null", b"{}", b'{"batchItemFailures":null}', b'{"batchItemFailures":[]}'):
            with self.subTest(body=body):
                verdict = judge(Reply(200, None, body), self.batch)
                self.assertTrue(verdict.ok)
                self.assertEqual(verdict.done, 3)

    def test_partial_failure_checkpoints_at_the_lowest_sequence_number(self):
        verdict = judge(failures("3", "2"), self.batch)
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.done, 1)

    def test_whole_batch_failures(self):
        cases = {
            "non-2xx": Reply(502, None, b'{"errorType":"Boom","errorMessage":"x"}'),
            "function error header": Reply(200, "Unhandled", b'{"errorType":"Boom","errorMessage":"x"}'),
            "not JSON": Reply(200, None, b"<html>"),
            "not an object": Reply(200, None, b'"fine"'),
            "unknown identifier": failures("99"),
            "empty identifier": failures(""),
            "bad key name": Reply(200, None, b'{"batchItemFailures":[{"id":"2"}]}'),
        }
        for name, reply in cases.items():
            with self.subTest(name):
                verdict = judge(reply, self.batch)
                self.assertFalse(verdict.ok)
                self.assertEqual(verdict.done, 0)


class Delivery(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.streams = FakeStreams()

    def test_partial_failure_redelivers_from_the_failed_record_then_continues(self):
        self.streams.add_shard("shard-1", [raw_record(i) for i in range(1, 6)])
        invoker = FakeInvoker(self.clock, failures("4", "3"))
        pump, lines, sink = make_pump(self.streams, invoker, self.clock)
        drive(pump, self.clock, lambda: len(invoker.calls) == 2)
        self.assertEqual(invoker.batches, [["1", "2", "3", "4", "5"], ["3", "4", "5"]])
        self.assertAlmostEqual(invoker.calls[1][0] - invoker.calls[0][0], 0.2)  # first backoff
        self.assertIn("2 done, retrying 3 from 3", lines[-2])
        # Records written later come next; nothing already done comes again.
        self.streams.shards["shard-1"]["records"] += [raw_record(6), raw_record(7)]
        drive(pump, self.clock, lambda: len(invoker.calls) == 3)
        self.assertEqual(invoker.batches[2], ["6", "7"])
        for _ in range(20):
            self.clock.now += pump.step()
        self.assertEqual(len(invoker.calls), 3)
        self.assertEqual(sink, [])

    def test_function_error_retries_the_whole_batch(self):
        answers = {
            "invoke failure": ConnectionRefusedError("refused"),
            "non-2xx": Reply(500, None, b"internal"),
            "function error": Reply(200, "Unhandled", b'{"errorType":"Panic","errorMessage":"oops"}'),
            "unparsable reply": Reply(200, None, b"{"),
        }
        for name, answer in answers.items():
            with self.subTest(name):
                streams = FakeStreams()
                streams.add_shard("shard-1", [raw_record(1), raw_record(2)])
                invoker = FakeInvoker(self.clock, answer, answer)
                pump, lines, sink = make_pump(streams, invoker, self.clock)
                drive(pump, self.clock, lambda: len(invoker.calls) == 3)
                self.assertEqual(invoker.batches, [["1", "2"]] * 3)
                gaps = [b[0] - a[0] for a, b in zip(invoker.calls, invoker.calls[1:])]
                self.assertEqual([round(g, 3) for g in gaps], [0.2, 0.4])  # exponential
                self.assertIn("0 done, retrying 2 from 1", lines[-3])
                self.assertEqual(sink, [])

    def test_retry_limit_sends_to_the_failure_destination_and_proceeds(self):
        self.streams.add_shard("shard-1", [raw_record(1), raw_record(2)])
        bad = Reply(200, "Unhandled", b'{"errorType":"Panic","errorMessage":"oops"}')
        invoker = FakeInvoker(self.clock, *([lambda seqs: bad if "1" in seqs else OK] * 10))
        pump, lines, sink = make_pump(self.streams, invoker, self.clock, max_retries=2)
        drive(pump, self.clock, lambda: sink)
        self.assertEqual(invoker.batches, [["1", "2"]] * 3)  # the first try and 2 retries
        (entry,) = sink
        self.assertEqual(entry["requestContext"]["condition"], "RetryAttemptsExhausted")
        self.assertEqual(entry["requestContext"]["approximateInvokeCount"], 3)
        self.assertEqual(
            entry["requestContext"]["functionArn"],
            "arn:aws:lambda:eu-west-1:123456789012:function:backup-forward",
        )
        info = entry["DDBStreamBatchInfo"]
        self.assertEqual(
            (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]),
            ("shard-1", "1", "2", 2),
        )
        self.assertEqual(info["streamArn"], ARN)
        self.assertEqual(entry["subkvLocal"]["sequenceNumbers"], ["1", "2"])
        self.assertIn("Panic", entry["subkvLocal"]["lastError"])
        self.assertIn("sent to the failure destination", lines[-1])
        # The shard moves on past the discarded records.
        self.streams.shards["shard-1"]["records"].append(raw_record(3))
        drive(pump, self.clock, lambda: len(invoker.calls) == 4)
        self.assertEqual(invoker.batches[3], ["3"])

    def test_progress_restarts_the_retry_count(self):
        self.streams.add_shard("shard-1", [raw_record(1), raw_record(2), raw_record(3)])
        invoker = FakeInvoker(self.clock, failures("2"), failures("2"))
        pump, _, sink = make_pump(self.streams, invoker, self.clock, max_retries=1)
        drive(pump, self.clock, lambda: sink)
        self.assertEqual(invoker.batches, [["1", "2", "3"], ["2", "3"]])
        self.assertEqual(sink[0]["DDBStreamBatchInfo"]["startSequenceNumber"], "2")
        self.assertEqual(sink[0]["requestContext"]["approximateInvokeCount"], 2)

    def test_backoff_is_capped(self):
        self.streams.add_shard("shard-1", [raw_record(1)])
        invoker = FakeInvoker(self.clock, *([Reply(503, None, b"")] * 9))
        pump, _, sink = make_pump(self.streams, invoker, self.clock, max_retries=-1)
        drive(pump, self.clock, lambda: len(invoker.calls) == 10)
        gaps = [round(b[0] - a[0], 3) for a, b in zip(invoker.calls, invoker.calls[1:])]
        self.assertEqual(gaps, [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0])
        self.assertEqual(sink, [])

    def test_an_expired_iterator_resumes_after_the_checkpoint(self):
        self.streams.add_shard("shard-1", [raw_record(1)])
        invoker = FakeInvoker(self.clock)
        pump, _, _ = make_pump(self.streams, invoker, self.clock)
        drive(pump, self.clock, lambda: invoker.calls)
        self.streams.expire_next = 1
        self.streams.shards["shard-1"]["records"].append(raw_record(2))
        drive(pump, self.clock, lambda: len(invoker.calls) == 2)
        self.assertEqual(invoker.batches, [["1"], ["2"]])
        self.assertEqual(self.streams.iterator_requests[-1],
                         {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "1"})


class Shards(unittest.TestCase):
    def test_new_shards_are_followed_children_after_their_parent(self):
        clock = FakeClock()
        streams = FakeStreams(page=1)  # DescribeStream pages one shard at a time
        streams.add_shard("shard-a", [raw_record(1), raw_record(2)])
        invoker = FakeInvoker(clock)
        pump, lines, _ = make_pump(streams, invoker, clock)
        drive(pump, clock, lambda: invoker.calls)
        # The shard splits: a child appears, with records, while the parent still has some.
        streams.add_shard("shard-b", [raw_record(10)], parent="shard-a")
        streams.shards["shard-a"]["records"].append(raw_record(3))
        streams.shards["shard-a"]["closed"] = True
        # And an unrelated shard appears too.
        streams.add_shard("shard-c", [raw_record(20)])
        drive(pump, clock, lambda: len(invoker.calls) == 4)
        batches = invoker.batches
        self.assertEqual(batches[0], ["1", "2"])
        self.assertEqual(sorted(batches[1:]), [["10"], ["20"], ["3"]])
        self.assertLess(batches.index(["3"]), batches.index(["10"]))  # parent drained first
        self.assertTrue(any("following shard-b" in line for line in lines))
        self.assertTrue(any("shard-a: closed" in line for line in lines))
        # The drained parent is never read again; the child keeps being followed.
        reads = len(invoker.calls)
        streams.shards["shard-b"]["records"].append(raw_record(11))
        drive(pump, clock, lambda: len(invoker.calls) == reads + 1)
        self.assertEqual(invoker.batches[-1], ["11"])


class FailureFile(unittest.TestCase):
    def test_appends_json_lines(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "state", "stream-failures.jsonl")
            sink = FailureSink(path)
            sink({"a": 1})
            sink({"b": 2})
            with open(path, encoding="utf-8") as f:
                self.assertEqual([json.loads(line) for line in f], [{"a": 1}, {"b": 2}])


class IteratorExpiry(unittest.TestCase):
    def test_moto_server_forgets_iterators_after_fifteen_minutes(self):
        try:
            import moto_server  # patches moto in this process too: harmless here
        except ImportError:
            self.skipTest("moto is not installed (run `make tools`)")

        class Iterator:
            def __init__(self, age: float) -> None:
                self.issued = time.monotonic() - age

            def get(self, limit: int) -> dict:
                return {"Records": [], "Limit": limit}

        backend = types.SimpleNamespace(shard_iterators={"old": Iterator(901), "new": Iterator(10)})
        with self.assertRaises(moto_server.ExpiredIteratorException):
            moto_server._get_records(backend, "old", 5)
        self.assertEqual(list(backend.shard_iterators), ["new"])
        self.assertEqual(moto_server._get_records(backend, "new", 5), {"Records": [], "Limit": 5})


class Limits(unittest.TestCase):
    def test_moto_server_counts_binary_by_its_bytes_and_reads_100_items_a_transaction(self):
        try:
            import moto_server  # patches moto in this process too: harmless here
        except ImportError:
            self.skipTest("moto is not installed (run `make tools`)")
        import moto.dynamodb.responses
        from moto.dynamodb.exceptions import ItemSizeTooLarge
        from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

        for length in (0, 1, 2, 3, 300_000, 300_001):
            encoded = base64.b64encode(b"x" * length).decode()
            self.assertEqual(DynamoType({"B": encoded}).size(), length)
        self.assertEqual(DynamoType({"S": "abc"}).size(), 3)
        # 400,000 bytes of binary fit an item (DynamoDB takes 409,600); 410,000 do not.
        item = LimitedSizeDict()
        item["b"] = DynamoType({"B": base64.b64encode(b"x" * 400_000).decode()})
        with self.assertRaises(ItemSizeTooLarge):
            LimitedSizeDict()["b"] = DynamoType({"B": base64.b64encode(b"x" * 410_000).decode()})
        self.assertEqual(moto.dynamodb.responses.TRANSACTION_MAX_ITEMS, 100)
        self.assertIs(DynamoType.size, moto_server._size_of_binary_as_bytes)


# ---------------------------------------------------------------------------
# Integration: moto_server.py, TransactWriteItems, the pump, an invoke API stand-in


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InvokeApi(http.server.ThreadingHTTPServer):
    """Records each invocation; answers the first with one batch item failure (the
    third record, or the last if fewer), then success."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), InvokeHandler)
        self.changed = threading.Condition()
        self.events: list[dict] = []
        self.paths: list[str] = []


class InvokeHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["content-length"])))
        server: InvokeApi = self.server
        with server.changed:
            first = not server.events
            server.events.append(event)
            server.paths.append(self.path)
            server.changed.notify_all()
        records = event["Records"]
        failed = records[min(2, len(records) - 1)]["dynamodb"]["SequenceNumber"] if first else None
        body = json.dumps({"batchItemFailures": [{"itemIdentifier": failed}] if failed else []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class WithMoto(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            import boto3
        except ImportError:
            raise unittest.SkipTest("boto3 is not installed (run `make tools`)")
        port = free_port()
        cls.moto = subprocess.Popen(
            [sys.executable, str(HERE / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if cls.moto.poll() is not None or time.monotonic() > deadline:
                    cls.moto.kill()
                    raise RuntimeError("moto_server.py did not start listening")
                threading.Event().wait(0.05)  # polling the port, under the deadline
        options = dict(
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="subkv-local",
            aws_secret_access_key="subkv-local",
        )
        cls.ddb = boto3.client("dynamodb", **options)
        cls.streams = boto3.client("dynamodbstreams", **options)

    @classmethod
    def tearDownClass(cls):
        cls.moto.terminate()
        try:
            cls.moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.moto.kill()
            cls.moto.wait()

    def put(self, table: str, key: bytes, value: int) -> dict:
        item = {
            "pk": {"S": "db1"},
            "sk": {"B": key},
            "v": {"N": str(value)},
            "blob": {"B": bytes([value, 0xFF])},
        }
        return {"Put": {"TableName": table, "Item": item}}

    def stream_records(self, arn: str) -> list[dict]:
        shard = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = self.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
        return self.streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]

    def test_transactional_writes_reach_the_function_with_partial_failure_redelivery(self):
        table = f"kv-log-{uuid.uuid4().hex[:8]}"
        api = InvokeApi()
        threading.Thread(target=api.serve_forever, daemon=True).start()
        self.addCleanup(api.server_close)
        self.addCleanup(api.shutdown)
        stop = threading.Event()
        lines: list[str] = []
        sink: list[dict] = []
        invoke = HttpInvoker(f"http://127.0.0.1:{api.server_address[1]}", "backup-forward", timeout=10)
        # Started before the table exists: it waits for it.
        pump = threading.Thread(
            target=follow,
            args=(self.ddb, self.streams, invoke, "backup-forward", table, stop, lines.append),
            kwargs=dict(poll_seconds=0.05, on_failure=sink.append),
            daemon=True,
        )
        pump.start()
        self.addCleanup(pump.join, 10)
        self.addCleanup(stop.set)

        self.ddb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "B"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        arn = self.ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        keys = [b"\x00k" + bytes([i]) + b"\xff" for i in range(4)]
        # One transaction, four inserts: they reach the stream together (moto_server
        # serializes requests), so the first batch holds all four.
        self.ddb.transact_write_items(TransactItems=[self.put(table, k, 0) for k in keys])
        with api.changed:
            self.assertTrue(api.changed.wait_for(lambda: len(api.events) >= 1, timeout=15), lines)
        # A transaction cancelled after one of its writes leaves no stream record.
        with self.assertRaises(self.ddb.exceptions.TransactionCanceledException):
            self.ddb.transact_write_items(
                TransactItems=[
                    self.put(table, b"ghost", 9),
                    {"Update": {"TableName": table, "Key": {"pk": {"S": "db1"}, "sk": {"B": keys[0]}},
                                "UpdateExpression": "ADD blob :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                ]
            )
        self.ddb.transact_write_items(
            TransactItems=[self.put(table, keys[0], 1), self.put(table, keys[2], 1)]
        )
        self.ddb.transact_write_items(TransactItems=[self.put(table, keys[0], 2)])

        written = self.stream_records(arn)
        self.assertEqual([r["eventName"] for r in written], ["INSERT"] * 4 + ["MODIFY"] * 3)
        every = [r["dynamodb"]["SequenceNumber"] for r in written]

        def delivered():
            return {r["dynamodb"]["SequenceNumber"] for e in api.events for r in e["Records"]}

        with api.changed:
            self.assertTrue(api.changed.wait_for(lambda: delivered() >= set(every), timeout=15), lines)
        stop.set()
        pump.join(10)
        self.assertFalse(pump.is_alive())

        batches = [[r["dynamodb"]["SequenceNumber"] for r in e["Records"]] for e in api.events]
        self.assertEqual(batches[0], every[:4])
        # The failed record (the third) comes again, with what followed it, and not
        # the two before it.
        self.assertEqual(batches[1][:2], every[2:4])
        self.assertEqual(set(api.paths), {"/2015-03-31/functions/backup-forward/invocations"})
        self.assertEqual(sink, [])
        # In order per key: the values of each key's first deliveries only grow.
        seen, per_key = set(), {}
        for event in api.events:
            for record in event["Records"]:
                change = record["dynamodb"]
                self.assertEqual(record["eventSourceARN"], arn)
                self.assertEqual(record["eventVersion"], "1.1")
                self.assertIsInstance(change["ApproximateCreationDateTime"], int)
                # Binary values arrive base64 once (moto_server's Keys fix included).
                key = base64.b64decode(change["Keys"]["sk"]["B"])
                self.assertIn(key, keys)
                self.assertEqual(base64.b64decode(change["NewImage"]["sk"]["B"]), key)
                value = int(change["NewImage"]["v"]["N"])
                self.assertEqual(base64.b64decode(change["NewImage"]["blob"]["B"]), bytes([value, 0xFF]))
                if change["SequenceNumber"] not in seen:
                    seen.add(change["SequenceNumber"])
                    per_key.setdefault(key, []).append(value)
        self.assertEqual(per_key, {keys[0]: [0, 1, 2], keys[1]: [0], keys[2]: [0, 1], keys[3]: [0]})


if __name__ == "__main__":
    unittest.main()
