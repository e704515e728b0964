"""IAM for the local stack: every function reaches the emulator as its own role
from infra/template.yaml, and is refused what that role (and, for KMS, the key's
policy) does not allow, as AWS would refuse it.

moto can enforce IAM, but for DynamoDB and KMS it authorizes against resource
`*`, so a policy scoped to a table or a key (all of ours) would allow nothing.
This module decides instead, inside the emulator (moto_server.py hooks it in):

- Who: each function runs with the access key id `local-role-<binary>` (the
  workspace Cargo.toml gives it, as Lambda gives a function its role's
  credentials). Any other key is an operator's, a test's or a tenant's (a backup
  bucket's credentials) and is not limited, as an administrator is not.
- What it may do: the policies of the function's role in the SAM-transformed
  template (inline policies, and the managed ones SAM adds, from moto's copy of
  AWS's managed policies), with intrinsics resolved to the local stack's names.
- What a request is: its IAM action(s) and resource ARN(s), as AWS documents them:
  a TransactWriteItems is each of its Put/Update/Delete/ConditionCheck items,
  a Query on an index is `table/<t>/index/<i>`, a KMS call names its key's ARN
  (an alias is resolved) with `kms:EncryptionContext:*` condition keys.

Evaluation is AWS's for identity policies: an explicit Deny wins, else an Allow,
else denied. For KMS the key policy decides too: it must allow the caller itself,
or allow the account (`...:root`) and the role's policies allow the call.
What this does not model: resource policies other than KMS key policies,
permission boundaries, SCPs, signature checks, and condition operators not
listed in `_OPERATORS` (a policy using one is refused, never allowed by default).
See docs/operations.md ("IAM on the local stack").
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

ACCOUNT = "123456789012"  # moto's default account
REGION = os.environ.get("AWS_REGION", "us-east-1")
PARTITION = "aws"
STACK = "subkv"  # the local stack's "stack name": alias/subkv-backup-secrets, ...
KEY_PREFIX = "local-role-"
ROOT = f"arn:{PARTITION}:iam::{ACCOUNT}:root"


class Denied(Exception):
    """A request its caller may not make; the message is AWS's wording."""


# ---------------------------------------------------------------------------
# Policy evaluation (pure)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str, case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, 0 if case else re.IGNORECASE)


def _wildcard(pattern: str, value: str, case: bool = True) -> bool:
    """IAM's `*` and `?` matching (no character classes)."""
    return _pattern(pattern, case).fullmatch(value) is not None


def _string_equals(expected: str, actual: str) -> bool:
    return expected == actual


def _string_equals_ignore_case(expected: str, actual: str) -> bool:
    return expected.lower() == actual.lower()


def _string_like(expected: str, actual: str) -> bool:
    return _wildcard(expected, actual)


def _bool(expected: str, actual: str) -> bool:
    return str(expected).lower() == str(actual).lower()


# Operator -> (match one expected value against one actual value, negated?)
_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ignore_case, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ignore_case, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (_string_like, False),
    "ArnLike": (_string_like, False),
    "ArnNotEquals": (_string_like, True),
    "ArnNotLike": (_string_like, True),
    "Bool": (_bool, False),
}


class UnsupportedCondition(Exception):
    pass


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, list[str]]) -> bool:
    values = context.get(key)
    if operator == "Null":
        return (values is None) == _bool(_as_list(expected)[0], "true")
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    if name not in _OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise UnsupportedCondition(operator)
    match, negated = _OPERATORS[name]
    expected = [str(e) for e in _as_list(expected)]
    if values is None:
        if qualifier == "ForAllValues":
            return True  # vacuously
        return if_exists or negated

    def one(actual: str) -> bool:
        hit = any(match(e, actual) for e in expected)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    if negated and qualifier == "":
        return all(one(v) for v in values)
    return any(one(v) for v in values)


def _conditions_hold(conditions: dict[str, Any] | None, context: dict[str, list[str]]) -> bool:
    for operator, pairs in (conditions or {}).items():
        for key, expected in pairs.items():
            if not _condition_holds(operator, key, expected, context):
                return False
    return True


def _principal_matches(principal: Any, caller: str | None) -> bool:
    if principal is None:
        return True  # identity policies name no principal
    if principal == "*":
        return True
    if caller is None:
        return False
    for entry in _as_list(principal.get("AWS") if isinstance(principal, dict) else None):
        if entry == "*" or entry == caller:
            return True
    return False


def statement_effect(
    statement: dict[str, Any], action: str, resource: str, context: dict[str, list[str]],
    caller: str | None = None,
) -> str | None:
    """'Allow' or 'Deny' if `statement` applies to the request, else None."""
    if "Principal" in statement and not _principal_matches(statement["Principal"], caller):
        return None
    if "NotAction" in statement:
        if any(_wildcard(a, action, case=False) for a in _as_list(statement["NotAction"])):
            return None
    elif not any(_wildcard(a, action, case=False) for a in _as_list(statement.get("Action"))):
        return None
    if "NotResource" in statement:
        if any(_wildcard(r, resource) for r in _as_list(statement["NotResource"])):
            return None
    elif not any(_wildcard(r, resource) for r in _as_list(statement.get("Resource", "*"))):
        return None
    if not _conditions_hold(statement.get("Condition"), context):
        return None
    return statement["Effect"]


def decide(
    statements: Iterable[dict[str, Any]], action: str, resource: str, context: dict[str, list[str]],
    caller: str | None = None,
) -> str | None:
    """'Deny' if any statement denies, else 'Allow' if any allows, else None."""
    effects = {statement_effect(s, action, resource, context, caller) for s in statements}
    if "Deny" in effects:
        return "Deny"
    return "Allow" if "Allow" in effects else None


# ---------------------------------------------------------------------------
# The template's roles, resolved for the local stack


@dataclass
class Role:
    binary: str
    arn: str
    statements: list[dict[str, Any]] = field(default_factory=list)


class Resolver:
    """Resolves CloudFormation intrinsics to the local stack's values.

    `local_ids` maps a resource's logical id to what `Ref` gives locally; `attr`
    answers `Fn::GetAtt` (logical id, attribute) from the emulator's state.
    Anything else resolves to an ARN that matches nothing."""

    def __init__(self, template: dict[str, Any], local_ids: dict[str, str],
                 attr: Callable[[str, str], str | None]):
        self.template = template
        self.local_ids = local_ids
        self.attr = attr
        self.conditions: dict[str, bool] = {}
        params = template.get("Parameters", {})
        self.params = {name: p.get("Default") for name, p in params.items()}

    def pseudo(self, name: str) -> Any:
        return {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }.get(name)

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.params:
            return self.params[name]
        return self.local_ids.get(name, f"arn:unresolved:{name}")

    def get_att(self, name: str, attribute: str) -> Any:
        value = self.attr(name, attribute)
        return value if value is not None else f"arn:unresolved:{name}.{attribute}"

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(name))

        return re.sub(r"\$\{([^!}][^}]*)\}", one, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref":
                return self.ref(value)
            if key == "Fn::GetAtt":
                logical, attribute = value if isinstance(value, list) else value.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else value
                return self.sub(text, self.resolve(variables))
            if key == "Fn::Join":
                separator, parts = value
                return separator.join(str(p) for p in self.resolve(parts))
            if key == "Fn::If":
                name, when_true, when_false = value
                return self.resolve(when_true if self.condition(name) else when_false)
            if key == "Fn::Equals":
                left, right = self.resolve(value)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(value[0])
            if key == "Fn::And":
                return all(self.resolve(value))
            if key == "Fn::Or":
                return any(self.resolve(value))
            if key == "Condition":
                return self.condition(value)
            if key == "Fn::Select":
                index, items = value
                return self.resolve(items)[int(self.resolve(index))]
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not None}


@functools.cache
def _managed_policies() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def managed_policy_statements(arn: str) -> list[dict[str, Any]]:
    """A managed policy's statements, from moto's copy of AWS's managed policies."""
    name = arn.rsplit("/", 1)[-1]
    policies = _managed_policies()
    if name not in policies:
        raise KeyError(f"managed policy {arn} is not in moto's copy of AWS's managed policies")
    return _as_list(policies[name]["Document"]["Statement"])


def role_arn(logical_id: str) -> str:
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{STACK}-{logical_id}"


def load_roles(transformed: dict[str, Any], resolver: Resolver) -> dict[str, Role]:
    """Each function's role, by its binary name (its BuildProperties.Binary)."""
    resources = transformed["Resources"]
    roles: dict[str, Role] = {}
    for logical, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Function":
            continue
        binary = (resource.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
        role_ref = resource["Properties"].get("Role", {}).get("Fn::GetAtt")
        if not binary or not role_ref:
            continue
        role_id = role_ref[0] if isinstance(role_ref, list) else role_ref.split(".")[0]
        props = resources[role_id]["Properties"]
        statements: list[dict[str, Any]] = []
        for policy in _as_list(resolver.resolve(props.get("Policies"))):
            statements.extend(_as_list(policy["PolicyDocument"]["Statement"]))
        for arn in _as_list(resolver.resolve(props.get("ManagedPolicyArns"))):
            statements.extend(managed_policy_statements(arn))
        roles[binary] = Role(binary=binary, arn=role_arn(role_id), statements=statements)
    return roles


def key_policies(transformed: dict[str, Any], resolver: Resolver) -> dict[str, list[dict[str, Any]]]:
    """Each KMS key's policy statements, by its logical id."""
    return {
        logical: _as_list(resolver.resolve(r["Properties"].get("KeyPolicy", {})).get("Statement"))
        for logical, r in transformed["Resources"].items()
        if r.get("Type") == "AWS::KMS::Key"
    }


def local_ids_from_env(transformed: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """What `Ref` and `GetAtt` of a resource mean locally, read off the functions'
    environments: a variable the template sets to `Ref X` or `GetAtt X.Arn` has
    X's local name as its value in the local stack (SUBKV_CONTROL_TABLE ->
    ControlTable = subkv-control; SUBKV_BACKUP_KMS_KEY_ID -> BackupSecretsKey =
    alias/subkv-backup-secrets)."""
    ids: dict[str, str] = {}
    for resource in transformed["Resources"].values():
        if resource.get("Type") != "AWS::Lambda::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            if not isinstance(value, dict) or name not in env:
                continue
            if "Ref" in value:
                ids.setdefault(value["Ref"], env[name])
            elif "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                logical = target[0] if isinstance(target, list) else target.split(".")[0]
                ids.setdefault(logical, env[name])
    return ids


# ---------------------------------------------------------------------------
# Requests: their IAM actions, resources and condition keys


@dataclass
class Call:
    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)
    key: str | None = None  # a KMS key's ARN: its key policy decides too


_TRANSACT_WRITE = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


# Every table of the stack has its partition key in the attribute `pk`.
HASH_KEY = "pk"


def _leading_keys(op: dict[str, Any]) -> dict[str, list[str]]:
    """`dynamodb:LeadingKeys` of one item operation or base-table Query: the
    partition key value it names, as a condition context (empty if none)."""
    value = None
    for field_name in ("Key", "Item"):
        if HASH_KEY in (op.get(field_name) or {}):
            value = op[field_name][HASH_KEY]
    expression = op.get("KeyConditionExpression")
    if value is None and expression and not op.get("IndexName"):
        names = op.get("ExpressionAttributeNames") or {}
        for name, placeholder in re.findall(r"([#\w.]+)\s*=\s*(:\w+)", expression):
            if names.get(name, name) == HASH_KEY:
                value = (op.get("ExpressionAttributeValues") or {}).get(placeholder)
    if not value:
        return {}
    (_, inner), = value.items()
    return {"dynamodb:LeadingKeys": [str(inner)]}


def dynamodb_calls(action: str, params: dict[str, Any], table_arn: Callable[[str], str]) -> list[Call]:
    """The IAM actions a DynamoDB request needs, each on its resource, with the
    partition key it touches (`dynamodb:LeadingKeys`) where it names one."""
    if action == "TransactWriteItems":
        calls = []
        for item in params.get("TransactItems", []):
            (kind, op), = item.items()
            calls.append(Call(f"dynamodb:{_TRANSACT_WRITE[kind]}", table_arn(op["TableName"]), _leading_keys(op)))
        return calls
    if action == "TransactGetItems":
        return [
            Call("dynamodb:GetItem", table_arn(i["Get"]["TableName"]), _leading_keys(i["Get"]))
            for i in params.get("TransactItems", [])
        ]
    if action in ("BatchGetItem", "BatchWriteItem"):
        return [Call(f"dynamodb:{action}", table_arn(t)) for t in params.get("RequestItems", {})]
    table = params.get("TableName")
    if table is None:
        return [Call(f"dynamodb:{action}", "*")]
    resource = table_arn(table)
    if params.get("IndexName"):
        resource += f"/index/{params['IndexName']}"
    return [Call(f"dynamodb:{action}", resource, _leading_keys(params))]


def streams_calls(action: str, params: dict[str, Any]) -> list[Call]:
    arn = params.get("StreamArn")
    if arn is None and params.get("ShardIterator"):
        arn = params["ShardIterator"].split("|", 1)[0]  # moto's iterators begin with it
    return [Call(f"dynamodb:{action}", arn or "*")]


def kms_calls(action: str, params: dict[str, Any], key_arn: Callable[[str], str | None]) -> list[Call]:
    key_id = params.get("KeyId")
    if key_id is None:
        return [Call(f"kms:{action}", "*")]
    arn = key_arn(key_id) or f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{key_id}"
    context = {f"kms:EncryptionContext:{k}": [str(v)] for k, v in (params.get("EncryptionContext") or {}).items()}
    if params.get("EncryptionContext"):
        context["kms:EncryptionContextKeys"] = list(params["EncryptionContext"])
    return [Call(f"kms:{action}", arn, context, key=arn)]


# ---------------------------------------------------------------------------
# The authorizer


_UNDECIDED = object()


class Authorizer:
    """Decides the emulator's requests. Built lazily on a function's first request
    (the tables and keys exist by then: the stack bootstraps them first)."""

    def __init__(self, transformed: dict[str, Any], env: dict[str, str],
                 attr: Callable[[str, str, str], str | None],
                 key_arn: Callable[[str], str | None]):
        self.local_ids = local_ids_from_env(transformed, env)
        self.key_arn = key_arn
        self._decided: dict[tuple[Any, ...], str | None] = {}
        resolver = Resolver(transformed, self.local_ids, lambda n, a: attr(n, a, self.local_ids.get(n, "")))
        self.roles = load_roles(transformed, resolver)
        policies = key_policies(transformed, resolver)
        # Key policies by key ARN.
        self.key_policies: dict[str, list[dict[str, Any]]] = {}
        for logical, statements in policies.items():
            arn = attr(logical, "Arn", self.local_ids.get(logical, ""))
            if arn:
                self.key_policies[arn] = statements

    def role_of(self, access_key_id: str) -> Role | None:
        """The function role an access key stands for; None for any other key.
        A `local-role-` key with no role in the template has no permissions."""
        if not access_key_id.startswith(KEY_PREFIX):
            return None
        binary = access_key_id[len(KEY_PREFIX):]
        return self.roles.get(binary) or Role(binary=binary, arn=role_arn(f"unknown-{binary}"))

    def check(self, role: Role, calls: list[Call]) -> None:
        """Raises Denied unless every call is allowed. Decisions are remembered
        (the policies do not change while the emulator runs): the emulator checks
        under its DynamoDB lock, so a check must cost next to nothing."""
        for call in calls:
            memo = (role.arn, call.action, call.resource, call.key,
                    tuple(sorted((k, tuple(v)) for k, v in call.context.items())))
            refusal = self._decided.get(memo, _UNDECIDED)
            if refusal is _UNDECIDED:
                refusal = None
                try:
                    self._check_one(role, call)
                except UnsupportedCondition as unsupported:
                    refusal = (
                        f"User: {role.arn} is not authorized to perform: {call.action} on resource: "
                        f"{call.resource} (the local stack cannot evaluate condition operator {unsupported})"
                    )
                except Denied as denied:
                    refusal = str(denied)
                if len(self._decided) >= 65536:
                    self._decided.clear()
                self._decided[memo] = refusal
            if refusal is not None:
                raise Denied(refusal)

    def _check_one(self, role: Role, call: Call) -> None:
        identity = decide(role.statements, call.action, call.resource, call.context)
        if identity == "Deny":
            raise Denied(
                f"User: {role.arn} is not authorized to perform: {call.action} on resource: "
                f"{call.resource} with an explicit deny in an identity-based policy"
            )
        if call.key is not None:
            statements = self.key_policies.get(call.key)
            if statements is None:
                allowed = identity == "Allow"  # a key outside the template: IAM alone
            else:
                own = decide(statements, call.action, call.resource, call.context, role.arn)
                account = decide(statements, call.action, call.resource, call.context, ROOT)
                if own == "Deny" or account == "Deny":
                    raise Denied(
                        f"User: {role.arn} is not authorized to perform: {call.action} on resource: "
                        f"{call.resource} with an explicit deny in a resource-based policy"
                    )
                allowed = own == "Allow" or (account == "Allow" and identity == "Allow")
            if not allowed:
                raise Denied(
                    f"User: {role.arn} is not authorized to perform: {call.action} on resource: "
                    f"{call.resource} because no resource-based policy allows the {call.action} action"
                )
            return
        if identity != "Allow":
            raise Denied(
                f"User: {role.arn} is not authorized to perform: {call.action} on resource: "
                f"{call.resource} because no identity-based policy allows the {call.action} action"
            )


def log(message: str) -> None:
    print(f"iam: {message}", file=sys.stderr, flush=True)


def access_key_of(headers: Any) -> str:
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    match = re.search(r"Credential=([^/,\s]+)/", auth)
    return match.group(1) if match else ""


def scope_service(headers: Any) -> str | None:
    """The service a SigV4 signature is scoped to (Credential=<key>/<date>/<region>/<service>/...)."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
    return match.group(1) if match else None
