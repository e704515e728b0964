"""moto's server (`moto_server`) with fixes to its DynamoDB, so that the
local stack's transactions and limits behave as DynamoDB's do:

1. Requests are served one at a time. moto evaluates and applies a
   TransactWriteItems item by item without a lock, so two concurrent
   transactions could both pass a condition meant to let only one through.
2. TransactWriteItems checks every condition first and writes only if all hold.
   moto instead deep-copies each table a transaction touches before starting and
   restores the copy on cancellation: that erased writes made in between, cost
   time proportional to the table (its stream records included), and leaked the
   copies (a few thousand commits grew the emulator to many GB).

DynamoDB Streams share the lock (they read the same tables); S3 and KMS stay
concurrent. See docs/decisions.md ("The local emulator's DynamoDB transactions").

And two fixes to its limits (subkv sizes what it writes by DynamoDB's, issue 12):

6. A binary attribute counts its bytes towards the 400 KB item limit, as in
   DynamoDB. moto counted its base64 text, a third more: an item of 310 KB of
   binary was refused.
7. TransactGetItems takes up to 100 items, as DynamoDB does (moto: 25).

And three fixes to its DynamoDB Streams, for the stream pump (stream_pump.py):

3. A stream record's Keys carry binary key attributes as the raw bytes, as its
   images do. moto base64-encoded them once in the record and the response
   encoded them again, so a `B` sort key reached readers as base64 text.
4. A transaction cancelled after some of its writes (see 2.) leaves no stream
   records: the writes are undone and so are their records, as in DynamoDB,
   where a cancelled transaction never reaches the stream.
5. Shard iterators expire 15 minutes after they are issued, as DynamoDB's do
   (ExpiredIteratorException). moto kept every iterator it ever issued: a
   reader polling an idle stream four times a second grew it by ~0.5 GB a day.

And ConsumedCapacity (capacity.py): asked for, a response reports the units
DynamoDB documents for it (moto: a constant a call), which subkv meters.

And IAM (iam.py): a request signed with a function's key (`local-role-<binary>`)
is refused unless that function's role in infra/template.yaml allows it, with
the error AWS answers (AccessDeniedException; S3's AccessDenied).
"""

import functools
import json
import os
import sys
import threading
import time

import moto.dynamodb.responses

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import StreamRecord
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.core.authorization import ActionAuthenticatorMixin
from moto.kms.responses import KmsResponse
from moto.s3.exceptions import S3AccessDeniedError
from moto.s3.responses import S3Response
from moto.server import main

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capacity  # noqa: E402
import iam  # noqa: E402
from sam_transform import transform  # noqa: E402

_dynamodb = threading.Lock()


def _serialized(call_action):
    @functools.wraps(call_action)
    def wrapper(self):
        with _dynamodb:
            return call_action(self)

    return wrapper


for _handler in (DynamoHandler, DynamoDBStreamsHandler):
    _handler.call_action = _serialized(_handler.call_action)


def _transact_write_items(self, transact_items):
    """All conditions, then all writes (callers hold the lock)."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    planned, reasons, seen = [], [], set()
    for entry in transact_items:
        if len(entry) != 1:
            raise TransactWriteSingleOpException
        kind, op = next(iter(entry.items()))
        if kind not in ("ConditionCheck", "Put", "Delete", "Update"):
            raise ValueError(f"unsupported transaction operation {kind}")
        name = op["TableName"]
        table = self.get_table(name)
        if kind == "Put":
            key = {a: op["Item"][a] for a in table.table_key_attrs}
        else:
            key = op["Key"]
        target = (name, tuple(sorted((a, str(v)) for a, v in key.items())))
        if target in seen:
            raise MultipleTransactionsException()
        seen.add(target)
        current = self.get_item(name, key)
        condition = op.get("ConditionExpression")
        holds = condition is None or get_filter_expression(
            condition,
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        ).expr(current)
        if holds:
            reasons.append((None, None, None))
        else:
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
        planned.append((kind, op, name, key, current))
    if any(code for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)

    # Where each touched table's stream ends now: a rollback cuts it back there.
    stream_marks = {}
    for _, _, name, _, _ in planned:
        shard = self.get_table(name).stream_shard
        if shard is not None:
            stream_marks[name] = len(shard.items)
    applied, position = [], 0
    try:
        for position, (kind, op, name, key, current) in enumerate(planned):
            before = current.to_json()["Attributes"] if current else None
            if kind == "Put":
                self.put_item(name, op["Item"])
            elif kind == "Delete":
                self.delete_item(name, key)
            elif kind == "Update":
                self.update_item(
                    name,
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=op.get("ExpressionAttributeNames"),
                    expression_attribute_values=op.get("ExpressionAttributeValues"),
                )
            else:
                continue
            applied.append((name, key, before))
    except Exception as error:
        # A write refused after the conditions passed (e.g. an invalid update):
        # put back what the earlier writes replaced, then cancel.
        for name, key, before in reversed(applied):
            if before is None:
                self.delete_item(name, key)
            else:
                self.put_item(name, before)
        # Neither the undone writes nor the undoing reach the stream. No reader saw
        # them (streams share the lock), and moto numbers a shard's records by their
        # position, so the next record takes the first freed sequence number.
        for name, mark in stream_marks.items():
            shard = self.get_table(name).stream_shard
            if shard is not None:
                del shard.items[mark:]
        reasons = [(None, None, None)] * len(planned)
        reasons[position] = (type(error).__name__, str(error), None)
        raise TransactionCanceledException(reasons) from error


DynamoDBBackend.transact_write_items = _transact_write_items


_stream_record_init = StreamRecord.__init__


def _stream_record_with_raw_keys(self, table, stream_type, event_name, old, new, seq):
    """moto's record, with Keys taken from the item's attributes as the images are
    (binary values as bytes, which the response encodes once)."""
    _stream_record_init(self, table, stream_type, event_name, old, new, seq)
    attributes = (old if old is not None else new).to_json()["Attributes"]
    change = self.record["dynamodb"]
    change["Keys"] = {a: attributes[a] for a in table.table_key_attrs if a in attributes}
    change["SizeBytes"] = len(dynamo_json_dump(change))


StreamRecord.__init__ = _stream_record_with_raw_keys


ITERATOR_LIFETIME_SECONDS = 15 * 60  # DynamoDB Streams' shard iterator lifetime


class ExpiredIteratorException(JsonRESTError):
    def __init__(self):
        super().__init__(
            "ExpiredIteratorException",
            "The shard iterator has expired and can no longer be used to retrieve stream records.",
        )


_shard_iterator_init = ShardIterator.__init__


def _shard_iterator_stamped(self, *args, **kwargs):
    _shard_iterator_init(self, *args, **kwargs)
    self.issued = time.monotonic()


ShardIterator.__init__ = _shard_iterator_stamped


def _get_records(self, iterator_arn, limit):
    """moto's GetRecords, after forgetting the iterators past their lifetime
    (callers hold the lock). The dict keeps issue order: the oldest come first."""
    horizon = time.monotonic() - ITERATOR_LIFETIME_SECONDS
    iterators = self.shard_iterators
    while iterators:
        oldest = next(iter(iterators))
        if getattr(iterators[oldest], "issued", horizon) > horizon:
            break
        del iterators[oldest]
    iterator = iterators.get(iterator_arn)
    if iterator is None:  # expired, or never issued by this server
        raise ExpiredIteratorException()
    return iterator.get(limit)


DynamoDBStreamsBackend.get_records = _get_records

_dynamo_type_size = DynamoType.size


def _size_of_binary_as_bytes(self):
    """moto's attribute size, with a binary value counted by its bytes (moto keeps
    it as the base64 text of the request, and counted that)."""
    if self.type == "B" and isinstance(self.value, str):
        text = self.value.rstrip("=")
        return len(text) * 3 // 4
    return _dynamo_type_size(self)


DynamoType.size = _size_of_binary_as_bytes
moto.dynamodb.responses.TRANSACTION_MAX_ITEMS = 100  # TransactGetItems, as DynamoDB


# ---------------------------------------------------------------------------
# Consumed capacity (capacity.py): what DynamoDB would charge, not moto's constant.


def _item_now(backend, table: str, key: dict) -> dict | None:
    try:
        item = backend.get_item(table, key)
    except Exception:  # no such table or key: moto's own call answers the error
        return None
    return item.to_json()["Attributes"] if item else None


def _key_in(backend, table: str, item: dict) -> dict:
    return {a: item[a] for a in backend.get_table(table).table_key_attrs if a in item}


def _write_targets(backend, action: str, body: dict) -> list[tuple[str, dict, bool]]:
    """(table, key, transactional) of every item a write request touches."""
    if action == "TransactWriteItems":
        targets = []
        for entry in body.get("TransactItems", []):
            (kind, op), = entry.items()
            table = op["TableName"]
            key = _key_in(backend, table, op["Item"]) if kind == "Put" else op["Key"]
            targets.append((table, key, True))
        return targets
    if action == "BatchWriteItem":
        targets = []
        for table, requests in body.get("RequestItems", {}).items():
            for request in requests:
                if "PutRequest" in request:
                    key = _key_in(backend, table, request["PutRequest"]["Item"])
                else:
                    key = request["DeleteRequest"]["Key"]
                targets.append((table, key, False))
        return targets
    table = body["TableName"]
    key = _key_in(backend, table, body["Item"]) if action == "PutItem" else body["Key"]
    return [(table, key, False)]


def _metered(method, action: str):
    """A DynamoDB response method whose ConsumedCapacity, when asked for, is
    DynamoDB's (callers hold the lock, so the items before and after are the
    request's own)."""

    @functools.wraps(method)
    def wrapper(self):
        body = self.body if isinstance(self.body, dict) else _params(self)
        wanted = body.get("ReturnConsumedCapacity", "NONE")
        if wanted not in ("TOTAL", "INDEXES"):
            return method(self)
        backend = self.dynamodb_backend
        tally = capacity.Tally()
        writes = action in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
        before = []
        if writes:
            try:
                targets = _write_targets(backend, action, body)
            except Exception:  # malformed: moto's own call answers the error
                targets = []
            before = [capacity.item_size(_item_now(backend, t, k)) for t, k, _ in targets]
        result = method(self)
        answer = result.result
        if writes:
            for (table, key, transactional), size in zip(targets, before):
                after = capacity.item_size(_item_now(backend, table, key))
                tally.add(table, capacity.write_units(size, after, transactional))
        elif action == "GetItem":
            table = body["TableName"]
            size = capacity.item_size(_item_now(backend, table, body["Key"]))
            tally.add(table, capacity.read_units(size, body.get("ConsistentRead", False)))
        elif action == "BatchGetItem":
            for table, request in body.get("RequestItems", {}).items():
                for key in request.get("Keys", []):
                    size = capacity.item_size(_item_now(backend, table, key))
                    tally.add(table, capacity.read_units(size, request.get("ConsistentRead", False)))
        elif action == "Query":
            table = body["TableName"]
            total = sum(
                capacity.item_size(_item_now(backend, table, _key_in(backend, table, item)))
                for item in answer.get("Items", [])
            )
            tally.add(table, capacity.read_units(total, body.get("ConsistentRead", False)))
        if action in ("TransactWriteItems", "BatchWriteItem", "BatchGetItem"):
            answer["ConsumedCapacity"] = tally.per_table()
        else:
            answer["ConsumedCapacity"] = tally.single(body["TableName"])
        return result

    return wrapper


for _method, _action in (
    ("get_item", "GetItem"),
    ("batch_get_item", "BatchGetItem"),
    ("query", "Query"),
    ("put_item", "PutItem"),
    ("update_item", "UpdateItem"),
    ("delete_item", "DeleteItem"),
    ("transact_write_items", "TransactWriteItems"),
    ("batch_write_item", "BatchWriteItem"),
):
    setattr(DynamoHandler, _method, _metered(getattr(DynamoHandler, _method), _action))


# ---------------------------------------------------------------------------
# IAM (iam.py)

_TEMPLATE = os.environ.get(
    "SUBKV_IAM_TEMPLATE",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "template.yaml"),
)
_transformed = transform(_TEMPLATE)
_authorizer: iam.Authorizer | None = None
_authorizer_lock = threading.Lock()
_seen: set[str] = set()


def _backend(service: str):
    from moto.backends import get_backend

    return get_backend(service)[iam.ACCOUNT][iam.REGION]


def _key_arn(key_id: str) -> str | None:
    kms = _backend("kms")
    try:
        return kms.describe_key(kms.any_id_to_key_id(key_id)).arn
    except Exception:
        return None


def _attribute(logical: str, attribute: str, local_id: str) -> str | None:
    """`Fn::GetAtt` of a resource, from the emulator's state (its local name)."""
    resource = _transformed["Resources"].get(logical, {})
    kind = resource.get("Type")
    if kind == "AWS::IAM::Role" and attribute == "Arn":
        return iam.role_arn(logical)
    if kind == "AWS::DynamoDB::Table" and local_id:
        table = _backend("dynamodb").get_table(local_id)
        if attribute == "Arn":
            return table.table_arn
        if attribute == "StreamArn":
            return f"{table.table_arn}/stream/{table.latest_stream_label}"
    if kind == "AWS::KMS::Key" and local_id and attribute == "Arn":
        return _key_arn(local_id)
    return None


def _authorizer_now() -> iam.Authorizer:
    global _authorizer
    with _authorizer_lock:
        if _authorizer is None:
            _authorizer = iam.Authorizer(_transformed, dict(os.environ), _attribute, _key_arn)
            iam.log(f"enforcing the roles of {len(_authorizer.roles)} functions from {_TEMPLATE}")
        return _authorizer


def _params(handler) -> dict:
    body = getattr(handler, "body", None)
    if isinstance(body, dict):
        return body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body or "{}")
    except ValueError:
        return {}


def _table_arn(name: str) -> str:
    return f"arn:{iam.PARTITION}:dynamodb:{iam.REGION}:{iam.ACCOUNT}:table/{name}"


def _authorize(self, iam_request_cls, resource="*"):
    """Replaces moto's IAM check (which authorizes DynamoDB and KMS against `*`)."""
    role_key = iam.access_key_of(self.headers)
    if not role_key.startswith(iam.KEY_PREFIX):
        return  # an operator's, a test's or a tenant's credentials
    authorizer = _authorizer_now()
    role = authorizer.role_of(role_key)
    if role_key not in _seen:
        _seen.add(role_key)  # one line per function: which role it calls as
        iam.log(f"{role_key} calls as {role.arn}")
    action = self._get_action()
    if isinstance(self, DynamoHandler):
        calls = iam.dynamodb_calls(action, _params(self), _table_arn)
    elif isinstance(self, DynamoDBStreamsHandler):
        calls = iam.streams_calls(action, _params(self))
    elif isinstance(self, KmsResponse):
        calls = iam.kms_calls(action, _params(self), _key_arn)
    elif isinstance(self, S3Response):
        calls = [iam.Call(f"s3:{self.data.get('Action') or action}", resource)]
    else:
        service = iam.scope_service(self.headers) or "unknown"
        calls = [iam.Call(f"{service}:{action}", resource)]
    try:
        authorizer.check(role, calls)
    except iam.Denied as denied:
        iam.log(f"denied: {denied}")
        if isinstance(self, S3Response):
            raise S3AccessDeniedError() from None
        raise JsonRESTError("AccessDeniedException", str(denied)) from None


ActionAuthenticatorMixin._authenticate_and_authorize_action = _authorize

if __name__ == "__main__":
    main()
