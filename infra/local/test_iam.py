"""Unit tests of iam.py: IAM's evaluation rules, what a request needs, and the
template's roles as the local stack enforces them.

    .venv/bin/python -m unittest discover -s infra/local -p 'test_*.py'
"""

import os
import sys
import tomllib
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import iam  # noqa: E402
from sam_transform import transform  # noqa: E402

ROOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TEMPLATE = os.path.join(ROOT_DIR, "infra", "template.yaml")
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/"
KEY = "arn:aws:kms:us-east-1:123456789012:key/"

# The local stack's names (infra/local/stack.sh).
ENV = {
    "SUBKV_CONTROL_TABLE": "subkv-control",
    "SUBKV_KV_DATA_TABLE": "subkv-kv-data",
    "SUBKV_KV_LOG_TABLE": "subkv-kv-log",
    "SUBKV_BACKUP_KMS_KEY_ID": "alias/subkv-backup-secrets",
    "SUBKV_DATA_TOKEN_KEY_ID": "alias/subkv-data-token",
}
KEYS = {"alias/subkv-backup-secrets": KEY + "backup", "alias/subkv-data-token": KEY + "token"}


def allow(action, resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action, resource="*", **extra):
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


class Evaluation(unittest.TestCase):
    def test_nothing_allowed_is_denied_and_a_deny_wins(self):
        self.assertIsNone(iam.decide([], "dynamodb:GetItem", TABLE + "t", {}))
        statements = [allow("dynamodb:*", TABLE + "*"), deny("dynamodb:DeleteItem", TABLE + "t")]
        self.assertEqual(iam.decide(statements, "dynamodb:GetItem", TABLE + "t", {}), "Allow")
        self.assertEqual(iam.decide(statements, "dynamodb:DeleteItem", TABLE + "t", {}), "Deny")
        self.assertEqual(iam.decide(statements, "dynamodb:DeleteItem", TABLE + "u", {}), "Allow")

    def test_actions_match_without_case_and_resources_with_it(self):
        statements = [allow("DynamoDB:get*", TABLE + "T")]
        self.assertEqual(iam.decide(statements, "dynamodb:GetItem", TABLE + "T", {}), "Allow")
        self.assertIsNone(iam.decide(statements, "dynamodb:GetItem", TABLE + "t", {}))
        self.assertIsNone(iam.decide(statements, "dynamodb:PutItem", TABLE + "T", {}))

    def test_a_table_grant_does_not_cover_its_indexes(self):
        statements = [allow("dynamodb:Query", TABLE + "t")]
        self.assertEqual(iam.decide(statements, "dynamodb:Query", TABLE + "t", {}), "Allow")
        self.assertIsNone(iam.decide(statements, "dynamodb:Query", TABLE + "t/index/i", {}))

    def test_not_action_and_not_resource(self):
        statements = [{"Effect": "Allow", "NotAction": "kms:Decrypt", "NotResource": KEY + "secret"}]
        self.assertEqual(iam.decide(statements, "kms:Encrypt", KEY + "other", {}), "Allow")
        self.assertIsNone(iam.decide(statements, "kms:Decrypt", KEY + "other", {}))
        self.assertIsNone(iam.decide(statements, "kms:Encrypt", KEY + "secret", {}))

    def test_null_requires_the_key_present_or_absent(self):
        present = [allow("kms:Encrypt", Condition={"Null": {"kms:EncryptionContext:a": "false"}})]
        self.assertIsNone(iam.decide(present, "kms:Encrypt", KEY + "k", {}))
        context = {"kms:EncryptionContext:a": ["1"]}
        self.assertEqual(iam.decide(present, "kms:Encrypt", KEY + "k", context), "Allow")

    def test_string_conditions_and_set_qualifiers(self):
        leading = [allow("dynamodb:GetItem", Condition={
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["DB#*"]}})]
        self.assertEqual(iam.decide(leading, "dynamodb:GetItem", "t", {"dynamodb:LeadingKeys": ["DB#1"]}), "Allow")
        self.assertIsNone(iam.decide(leading, "dynamodb:GetItem", "t", {"dynamodb:LeadingKeys": ["DB#1", "ORG#2"]}))
        equals = [allow("kms:Decrypt", Condition={"StringEquals": {"kms:EncryptionContext:db": "d1"}})]
        self.assertEqual(iam.decide(equals, "kms:Decrypt", "k", {"kms:EncryptionContext:db": ["d1"]}), "Allow")
        self.assertIsNone(iam.decide(equals, "kms:Decrypt", "k", {"kms:EncryptionContext:db": ["d2"]}))
        self.assertIsNone(iam.decide(equals, "kms:Decrypt", "k", {}))
        not_equals = [deny("kms:*", Condition={"StringNotEquals": {"aws:PrincipalTag/t": "x"}})]
        self.assertEqual(iam.decide(not_equals, "kms:Sign", "k", {}), "Deny")

    def test_an_unknown_operator_is_never_an_allow(self):
        statements = [allow("s3:GetObject", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})]
        with self.assertRaises(iam.UnsupportedCondition):
            iam.decide(statements, "s3:GetObject", "*", {})

    def test_principals_of_a_resource_policy(self):
        statements = [allow("kms:GenerateMac", Principal={"AWS": ["arn:r1"]})]
        self.assertEqual(iam.decide(statements, "kms:GenerateMac", "k", {}, "arn:r1"), "Allow")
        self.assertIsNone(iam.decide(statements, "kms:GenerateMac", "k", {}, "arn:r2"))


class Requests(unittest.TestCase):
    def test_a_transaction_needs_each_of_its_items(self):
        calls = iam.dynamodb_calls("TransactWriteItems", {"TransactItems": [
            {"Put": {"TableName": "a"}}, {"ConditionCheck": {"TableName": "b"}},
            {"Update": {"TableName": "a"}}, {"Delete": {"TableName": "c"}},
        ]}, lambda t: TABLE + t)
        self.assertEqual(
            [(c.action, c.resource) for c in calls],
            [("dynamodb:PutItem", TABLE + "a"), ("dynamodb:ConditionCheckItem", TABLE + "b"),
             ("dynamodb:UpdateItem", TABLE + "a"), ("dynamodb:DeleteItem", TABLE + "c")],
        )
        gets = iam.dynamodb_calls("TransactGetItems", {"TransactItems": [{"Get": {"TableName": "a"}}]},
                                  lambda t: TABLE + t)
        self.assertEqual([(c.action, c.resource) for c in gets], [("dynamodb:GetItem", TABLE + "a")])

    def test_the_partition_key_is_a_condition_key(self):
        (put,) = iam.dynamodb_calls("PutItem", {"TableName": "t", "Item": {"pk": {"S": "USAGE#1"}, "sk": {"S": "x"}}},
                                    lambda t: TABLE + t)
        self.assertEqual(put.context, {"dynamodb:LeadingKeys": ["USAGE#1"]})
        (query,) = iam.dynamodb_calls("Query", {
            "TableName": "t", "KeyConditionExpression": "#p = :v AND sk > :s",
            "ExpressionAttributeNames": {"#p": "pk"}, "ExpressionAttributeValues": {":v": {"S": "ORG#2"}, ":s": {"S": ""}},
        }, lambda t: TABLE + t)
        self.assertEqual(query.context, {"dynamodb:LeadingKeys": ["ORG#2"]})
        (on_index,) = iam.dynamodb_calls("Query", {
            "TableName": "t", "IndexName": "due", "KeyConditionExpression": "dueIndex = :v",
            "ExpressionAttributeValues": {":v": {"S": "purge"}},
        }, lambda t: TABLE + t)
        self.assertEqual(on_index.context, {})

    def test_a_query_of_an_index_and_a_batch(self):
        (query,) = iam.dynamodb_calls("Query", {"TableName": "t", "IndexName": "due"}, lambda t: TABLE + t)
        self.assertEqual((query.action, query.resource), ("dynamodb:Query", TABLE + "t/index/due"))
        batch = iam.dynamodb_calls("BatchGetItem", {"RequestItems": {"a": {}, "b": {}}}, lambda t: TABLE + t)
        self.assertEqual([c.resource for c in batch], [TABLE + "a", TABLE + "b"])

    def test_a_kms_call_names_its_key_and_context(self):
        (call,) = iam.kms_calls("Decrypt", {"KeyId": "alias/x", "EncryptionContext": {"db": "1"}},
                                {"alias/x": KEY + "x"}.get)
        self.assertEqual((call.action, call.resource, call.key), ("kms:Decrypt", KEY + "x", KEY + "x"))
        self.assertEqual(call.context["kms:EncryptionContext:db"], ["1"])
        self.assertEqual(call.context["kms:EncryptionContextKeys"], ["db"])


class TemplateRoles(unittest.TestCase):
    """The template's roles, resolved as the emulator resolves them."""

    @classmethod
    def setUpClass(cls):
        cls.template = transform(TEMPLATE)
        resources = cls.template["Resources"]

        def attr(logical, attribute, local_id):
            kind = resources.get(logical, {}).get("Type")
            if kind == "AWS::DynamoDB::Table":
                arn = TABLE + local_id
                return arn if attribute == "Arn" else arn + "/stream/2026-01-01T00:00:00.000"
            if kind == "AWS::KMS::Key":
                return KEYS.get(local_id)
            if kind == "AWS::IAM::Role":
                return iam.role_arn(logical)
            return None

        cls.authorizer = iam.Authorizer(cls.template, ENV, attr, KEYS.get)

    def allowed(self, binary, calls):
        try:
            self.authorizer.check(self.authorizer.role_of(iam.KEY_PREFIX + binary), calls)
            return True
        except iam.Denied:
            return False

    def dynamo(self, binary, action, table, **params):
        return self.allowed(binary, iam.dynamodb_calls(action, {"TableName": table, **params}, lambda t: TABLE + t))

    def kms(self, binary, action, alias, context=None):
        params = {"KeyId": alias, "EncryptionContext": context or {}}
        return self.allowed(binary, iam.kms_calls(action, params, KEYS.get))

    def test_every_function_has_its_role_and_its_key(self):
        functions = sorted(os.listdir(os.path.join(ROOT_DIR, "functions")))
        self.assertEqual(sorted(self.authorizer.roles), functions)
        with open(os.path.join(ROOT_DIR, "Cargo.toml"), "rb") as manifest:
            bins = tomllib.load(manifest)["workspace"]["metadata"]["lambda"]["bin"]
        for function in functions:
            self.assertEqual(bins[function]["env"]["AWS_ACCESS_KEY_ID"], iam.KEY_PREFIX + function)

    def test_a_key_outside_the_template_may_do_nothing(self):
        self.assertFalse(self.dynamo("none", "GetItem", "subkv-control"))

    def test_a_read_route_cannot_write(self):
        self.assertTrue(self.dynamo("get-database", "GetItem", "subkv-control"))
        self.assertFalse(self.dynamo("get-database", "PutItem", "subkv-control"))
        self.assertFalse(self.dynamo("get-database", "GetItem", "subkv-kv-data"))

    def test_the_data_path_writes_only_its_usage_to_the_control_table(self):
        usage = {"Key": {"pk": {"S": "USAGE#org"}, "sk": {"S": "2026-12-03T10#db"}}}
        token = {"Key": {"pk": {"S": "ORG#org"}, "sk": {"S": "TOKEN#t"}}}
        for binary in ("kv-connect", "kv-snapshot-read", "kv-atomic-write", "kv-watch"):
            self.assertTrue(self.dynamo(binary, "UpdateItem", "subkv-control", **usage), binary)
            self.assertFalse(self.dynamo(binary, "UpdateItem", "subkv-control", **token), binary)
            self.assertFalse(self.dynamo(binary, "PutItem", "subkv-control", **usage), binary)
        self.assertFalse(self.dynamo("kv-sweep-expired", "UpdateItem", "subkv-control", **usage))

    def test_authentication_may_only_stamp_a_token_when_it_was_used(self):
        by_hash = {"Key": {"pk": {"S": "TOKEN#abc"}, "sk": {"S": "TOKEN"}}}
        database = {"Key": {"pk": {"S": "ORG#org"}, "sk": {"S": "DB#db"}}}
        for binary in ("get-database", "list-organizations", "create-token", "kv-connect"):
            self.assertTrue(self.dynamo(binary, "UpdateItem", "subkv-control", **by_hash), binary)
            self.assertFalse(self.dynamo(binary, "UpdateItem", "subkv-control", **database), binary)
        self.assertFalse(self.dynamo("kv-snapshot-read", "UpdateItem", "subkv-control", **by_hash))

    def test_the_backup_engine_keeps_its_ledger(self):
        for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"):
            self.assertTrue(self.dynamo("backup-forward", action, "subkv-control"), action)
        self.assertTrue(self.dynamo("backup-forward", "Query", "subkv-control", IndexName="due"))

    def streams(self, binary, action, table):
        arn = f"{TABLE}{table}/stream/2026-01-01T00:00:00.000"
        return self.allowed(binary, iam.streams_calls(action, {"StreamArn": arn}))

    def test_storage_usage_counts_into_usage_items_and_finds_owners(self):
        storage = {"Key": {"pk": {"S": "USAGE#org"}, "sk": {"S": "STORAGE#db"}}}
        organization = {"Key": {"pk": {"S": "ORG#org"}, "sk": {"S": "ORG"}}}
        owner = {"Key": {"pk": {"S": "DB#db"}, "sk": {"S": "DB"}}}
        for action in ("UpdateItem", "GetItem"):
            self.assertTrue(self.dynamo("kv-storage-usage", action, "subkv-control", **storage), action)
            self.assertFalse(self.dynamo("kv-storage-usage", action, "subkv-control", **organization), action)
            self.assertFalse(self.dynamo("kv-storage-usage", action, "subkv-control", **owner), action)
        self.assertFalse(self.dynamo("kv-storage-usage", "PutItem", "subkv-control", **storage))
        self.assertFalse(self.dynamo("kv-storage-usage", "DeleteItem", "subkv-control", **storage))

        def query(pk):
            return {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": pk}}}

        self.assertTrue(self.dynamo("kv-storage-usage", "Query", "subkv-control", **query("DB#db")))
        self.assertFalse(self.dynamo("kv-storage-usage", "Query", "subkv-control", **query("USAGE#org")))
        self.assertFalse(self.dynamo("kv-storage-usage", "Query", "subkv-control", **query("ORG#org")))
        self.assertFalse(self.dynamo("kv-storage-usage", "Query", "subkv-control", IndexName="due"))
        # Nothing of the KV tables but the data table's stream.
        self.assertFalse(self.dynamo("kv-storage-usage", "GetItem", "subkv-kv-data"))
        self.assertFalse(self.dynamo("kv-storage-usage", "Query", "subkv-kv-log"))

    def test_each_stream_is_read_by_its_consumer(self):
        for action in ("DescribeStream", "GetShardIterator", "GetRecords"):
            self.assertTrue(self.streams("kv-storage-usage", action, "subkv-kv-data"), action)
            self.assertFalse(self.streams("kv-storage-usage", action, "subkv-kv-log"), action)
            self.assertTrue(self.streams("backup-forward", action, "subkv-kv-log"), action)
            self.assertFalse(self.streams("backup-forward", action, "subkv-kv-data"), action)
            self.assertFalse(self.streams("kv-atomic-write", action, "subkv-kv-data"), action)

    def test_the_purge_leaves_only_the_owner_of_a_purged_database(self):
        gone = {"Item": {"pk": {"S": "DB#db"}, "sk": {"S": "GONE"}, "organizationId": {"S": "org"}}}
        usage = {"Item": {"pk": {"S": "USAGE#org"}, "sk": {"S": "STORAGE#db"}}}
        self.assertTrue(self.dynamo("kv-purge-deleted", "PutItem", "subkv-control", **gone))
        self.assertFalse(self.dynamo("kv-purge-deleted", "PutItem", "subkv-control", **usage))

    def test_the_write_path_reads_its_organizations_stored_bytes(self):
        stored = {"KeyConditionExpression": "pk = :p AND begins_with(sk, :s)", "ExpressionAttributeValues": {
            ":p": {"S": "USAGE#org"}, ":s": {"S": "STORAGE#"}}}
        self.assertTrue(self.dynamo("kv-atomic-write", "Query", "subkv-control", **stored))
        other = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "ORG#org"}}}
        self.assertFalse(self.dynamo("kv-atomic-write", "Query", "subkv-control", **other))

    def test_a_watch_reads_its_quotas_and_flushes_its_usage(self):
        stored = {"KeyConditionExpression": "pk = :p AND begins_with(sk, :s)", "ExpressionAttributeValues": {
            ":p": {"S": "USAGE#org"}, ":s": {"S": "STORAGE#"}}}
        self.assertTrue(self.dynamo("kv-watch", "Query", "subkv-control", **stored))
        hour = {"Key": {"pk": {"S": "USAGE#org"}, "sk": {"S": "2026-12-03T10#db"}}}
        self.assertTrue(self.dynamo("kv-watch", "UpdateItem", "subkv-control", **hour))
        token = {"Key": {"pk": {"S": "ORG#org"}, "sk": {"S": "ORG"}}}
        self.assertFalse(self.dynamo("kv-watch", "UpdateItem", "subkv-control", **token))

    def test_only_enable_backup_seals_and_only_the_engine_opens_backup_secrets(self):
        context = {"subkv:backupId": "b", "subkv:databaseId": "d"}
        self.assertTrue(self.kms("enable-backup", "Encrypt", "alias/subkv-backup-secrets", context))
        self.assertFalse(self.kms("enable-backup", "Encrypt", "alias/subkv-backup-secrets"))
        self.assertFalse(self.kms("enable-backup", "Decrypt", "alias/subkv-backup-secrets", context))
        self.assertTrue(self.kms("backup-forward", "Decrypt", "alias/subkv-backup-secrets", context))
        self.assertFalse(self.kms("get-backup", "Decrypt", "alias/subkv-backup-secrets", context))

    def test_only_the_data_path_derives_the_token_key(self):
        for binary in ("kv-connect", "kv-snapshot-read", "kv-atomic-write", "kv-watch"):
            self.assertTrue(self.kms(binary, "GenerateMac", "alias/subkv-data-token"), binary)
        self.assertFalse(self.kms("get-database", "GenerateMac", "alias/subkv-data-token"))
        self.assertFalse(self.kms("kv-connect", "Decrypt", "alias/subkv-backup-secrets",
                                  {"subkv:backupId": "b", "subkv:databaseId": "d"}))

    def test_broad_kms_rights_in_iam_do_not_open_the_keys(self):
        """A principal granted kms:* on * by IAM (an operator's tool, another
        application's role) still cannot use the keys: their policies do not
        delegate use to the account, only administration."""
        broad = iam.Role(binary="other", arn=iam.role_arn("SomeOtherRole"),
                         statements=[allow("kms:*", "*")])
        context = {"subkv:backupId": "b", "subkv:databaseId": "d"}
        for action, alias, ctx in [("GenerateMac", "alias/subkv-data-token", {}),
                                   ("Decrypt", "alias/subkv-backup-secrets", context),
                                   ("Encrypt", "alias/subkv-backup-secrets", context)]:
            call = iam.kms_calls(action, {"KeyId": alias, "EncryptionContext": ctx}, KEYS.get)
            with self.assertRaises(iam.Denied, msg=action):
                self.authorizer.check(broad, call)
        # ...while the account still administers them.
        self.authorizer.check(broad, iam.kms_calls("DescribeKey", {"KeyId": "alias/subkv-data-token"}, KEYS.get))
        self.authorizer.check(broad, iam.kms_calls("PutKeyPolicy", {"KeyId": "alias/subkv-data-token"}, KEYS.get))


if __name__ == "__main__":
    unittest.main()
