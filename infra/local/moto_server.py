"""moto's server (`moto_server`) with two fixes to its DynamoDB, so that the
local stack's transactions behave as DynamoDB's do:

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
"""

import functools
import threading

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import main

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
        reasons = [(None, None, None)] * len(planned)
        reasons[position] = (type(error).__name__, str(error), None)
        raise TransactionCanceledException(reasons) from error


DynamoDBBackend.transact_write_items = _transact_write_items

if __name__ == "__main__":
    main()
