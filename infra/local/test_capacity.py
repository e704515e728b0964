"""The emulator's consumed capacity (capacity.py, moto_server.py): DynamoDB's
documented units, not moto's constant."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

import capacity  # noqa: E402
import moto_server  # noqa: E402,F401  (patches moto's DynamoDB handler)


class Sizes(unittest.TestCase):
    def test_item_sizes_follow_dynamodb(self):
        self.assertEqual(capacity.item_size(None), 0)
        # Names count; a string by its UTF-8 bytes; binary by its bytes.
        self.assertEqual(capacity.item_size({"pk": {"S": "ab"}}), 4)
        self.assertEqual(capacity.item_size({"é": {"S": "é"}}), 4)
        self.assertEqual(capacity.item_size({"b": {"B": b"\x00" * 10}}), 11)
        self.assertEqual(capacity.item_size({"b": {"B": "AAAA"}}), 4)  # base64 of 3 bytes
        # Numbers: significant digits / 2 + 1.
        self.assertEqual(capacity.value_size({"N": "1"}), 2)
        self.assertEqual(capacity.value_size({"N": "12345"}), 4)
        self.assertEqual(capacity.value_size({"N": "1000"}), 2)
        self.assertEqual(capacity.value_size({"BOOL": True}), 1)
        self.assertEqual(capacity.value_size({"L": [{"S": "ab"}]}), 6)
        self.assertEqual(capacity.value_size({"M": {"k": {"S": "ab"}}}), 7)

    def test_units_round_up_per_operation(self):
        self.assertEqual(capacity.read_units(0, True), 1.0)
        self.assertEqual(capacity.read_units(4096, True), 1.0)
        self.assertEqual(capacity.read_units(4097, True), 2.0)
        self.assertEqual(capacity.read_units(4097, False), 1.0)
        self.assertEqual(capacity.write_units(0, 1024), 1.0)
        self.assertEqual(capacity.write_units(3000, 10), 3.0)
        self.assertEqual(capacity.write_units(1025, 0, transactional=True), 4.0)


@mock_aws
class Responses(unittest.TestCase):
    def setUp(self):
        self.db = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.db.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "B"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

    def put(self, sk: bytes, value_bytes: int) -> float:
        out = self.db.put_item(
            TableName="t",
            Item={"pk": {"S": "p"}, "sk": {"B": sk}, "v": {"B": b"x" * value_bytes}},
            ReturnConsumedCapacity="TOTAL",
        )
        return out["ConsumedCapacity"]["CapacityUnits"]

    def test_writes_are_charged_by_the_larger_item_per_kilobyte(self):
        # pk (2+1) + sk (2+1) + v (1+n): 7 + n bytes.
        self.assertEqual(self.put(b"a", 1017), 1.0)  # 1024 bytes
        self.assertEqual(self.put(b"a", 3000), 3.0)
        self.assertEqual(self.put(b"a", 10), 3.0)  # replacing 3,007 bytes
        self.assertEqual(self.put(b"a", 10), 1.0)
        out = self.db.delete_item(
            TableName="t",
            Key={"pk": {"S": "p"}, "sk": {"B": b"a"}},
            ReturnConsumedCapacity="TOTAL",
        )
        self.assertEqual(out["ConsumedCapacity"], {"TableName": "t", "CapacityUnits": 1.0})

    def test_a_transaction_costs_twice_per_item(self):
        self.put(b"c", 2000)  # 2,007 bytes
        out = self.db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "t", "Item": {"pk": {"S": "p"}, "sk": {"B": b"a"}, "v": {"B": b"x" * 1500}}}},
                {"ConditionCheck": {
                    "TableName": "t",
                    "Key": {"pk": {"S": "p"}, "sk": {"B": b"c"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }},
            ],
            ReturnConsumedCapacity="TOTAL",
        )
        self.assertEqual(out["ConsumedCapacity"], [{"TableName": "t", "CapacityUnits": 8.0}])

    def test_a_query_rounds_its_total_once_and_projections_do_not_shrink_it(self):
        for sk in (b"a", b"b", b"c"):
            self.put(sk, 1500)  # 1,507 bytes each: 4,521 in all
        out = self.db.query(
            TableName="t",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            ProjectionExpression="pk, sk",
            ConsistentRead=True,
            ReturnConsumedCapacity="TOTAL",
        )
        self.assertEqual(len(out["Items"]), 3)
        self.assertEqual(out["ConsumedCapacity"]["CapacityUnits"], 2.0)
        out = self.db.get_item(
            TableName="t",
            Key={"pk": {"S": "p"}, "sk": {"B": b"zz"}},
            ReturnConsumedCapacity="TOTAL",
        )
        self.assertEqual(out["ConsumedCapacity"]["CapacityUnits"], 0.5)  # missing, eventual

    def test_without_asking_nothing_is_reported(self):
        out = self.db.put_item(TableName="t", Item={"pk": {"S": "p"}, "sk": {"B": b"a"}})
        self.assertNotIn("ConsumedCapacity", out)


if __name__ == "__main__":
    unittest.main()
