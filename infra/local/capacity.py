"""The capacity units DynamoDB charges a request, for the local emulator.

moto answers `ReturnConsumedCapacity` with a constant (0.5 or 1 unit a call,
whatever the item sizes), and nothing for transactions. subkv meters its
tenants' usage from what DynamoDB reports (docs/usage.md), so the emulator
reports what DynamoDB documents instead (developer guide, "DynamoDB read and
write operations" and "Managing capacity for transactions"):

- An item's size: the UTF-8 length of each attribute name plus its value's
  size: a string's UTF-8 length, a binary's bytes, a number's significant
  digits / 2 + 1, 1 for a boolean or null, a list or map 3 + 1 per element
  plus the elements', a set the sum of its elements.
- Reads: a strongly consistent read of up to 4 KB is 1 unit, eventually
  consistent 0.5. GetItem and each BatchGetItem item round the item up to the
  next 4 KB (a missing item still costs the minimum); a Query adds up the items
  it reads and rounds the total up once.
- Writes: 1 unit per 1 KB of the larger of the item before and after, rounded
  up, at least 1 (a delete: the item before). In a transaction each item,
  ConditionCheck included, costs twice that.

What the model leaves out: items a Query's FilterExpression drops (subkv's
data path has none) and writes to indexes (an entry with an expiry is also
written to the data table's `expiry` index, which DynamoDB counts and this does
not).
"""

from __future__ import annotations

import base64
import math
from collections import defaultdict

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024


def value_size(value: dict) -> int:
    """The size of one attribute value, in DynamoDB's JSON (`{"S": "..."}`)."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode("utf-8"))
    if kind == "B":
        return len(_binary(inner))
    if kind == "N":
        return _number_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in inner)
    if kind == "NS":
        return sum(_number_size(n) for n in inner)
    if kind == "BS":
        return sum(len(_binary(b)) for b in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict | None) -> int:
    """The size of an item (attribute name -> value), 0 for none."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def read_units(size: int, consistent: bool) -> float:
    """One read of `size` bytes (an item, or a Query's total), at least the minimum."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units(before: int, after: int, transactional: bool = False) -> float:
    """One item written (or deleted, or checked in a transaction)."""
    units = max(1, math.ceil(max(before, after) / WRITE_UNIT_BYTES))
    return float(units * (2 if transactional else 1))


class Tally:
    """Units by table, as a response's ConsumedCapacity reports them."""

    def __init__(self) -> None:
        self.units: dict[str, float] = defaultdict(float)

    def add(self, table: str, units: float) -> None:
        self.units[table] += units

    def single(self, table: str) -> dict:
        return {"TableName": table, "CapacityUnits": self.units.get(table, 0.0)}

    def per_table(self) -> list[dict]:
        return [self.single(table) for table in self.units]


def _binary(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return base64.b64decode(value)


def _number_size(text: str) -> int:
    digits = text.lstrip("+-").split("e")[0].split("E")[0].replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1
