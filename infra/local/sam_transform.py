#!/usr/bin/env python3
"""The SAM template as CloudFormation deploys it, computed offline.

    python infra/local/sam_transform.py infra/template.yaml > target/template.transformed.json

Runs the AWS::Serverless-2016-10-31 transform with the aws-sam-translator library
(what CloudFormation runs on deploy) and no AWS call: parameters take their
defaults (a NoEcho one without default gets a placeholder), the region and
partition are fixed (us-east-1, aws), and managed policy names resolve from the
map bundled with the library. `make lint` scans the result with checkov
(docs/operations.md, "Security scans").

What differs from a deployment:
- a function's local CodeUri (`..`, built by `sam build`) becomes a placeholder S3
  object, since the transform takes S3 locations only;
- each SAM resource's Metadata is copied onto the resources generated from it
  (passthrough_metadata, as `sam build` does), so the checkov skips written on a
  function also cover its role, permissions, URL and schedules.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import boto3
import yaml
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template

REGION = "us-east-1"
PARTITION = "aws"
ACCOUNT_ID = "123456789012"
STACK_NAME = "subkv"
# Stand-in for a function package (the translator accepts S3 locations only).
CODE_BUCKET = "subkv-sam-transform-placeholder"


def parameter_values(template: dict[str, Any]) -> dict[str, Any]:
    """Each parameter's default; a placeholder that fits its pattern if it has none."""
    values: dict[str, Any] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        if "Default" in spec:
            values[name] = spec["Default"]
        elif spec.get("Type") == "Number":
            values[name] = spec.get("MinValue", 1)
        else:
            # AdminTokenSha256: 64 hex digits.
            values[name] = "0" * 64
    values.update(
        {
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": STACK_NAME,
        }
    )
    return values


def _placeholder_code(template: dict[str, Any]) -> None:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        code = props.get("CodeUri")
        if code is None or (isinstance(code, str) and not code.startswith("s3://")):
            props["CodeUri"] = {"Bucket": CODE_BUCKET, "Key": f"{logical_id}.zip"}


def transform_template(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template the SAM transform makes of `template` (not modified)."""
    sam = copy.deepcopy(template)
    _placeholder_code(sam)
    params = parameter_values(sam)
    to_py27_compatible_template(sam, params)
    # A session with a region and no credentials: the translator reads its region
    # only. Managed policies come from the bundled map; the lazy fallback that
    # would ask IAM is never given.
    session = boto3.session.Session(region_name=REGION)
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    out = translator.translate(sam, parameter_values=params, passthrough_metadata=True)
    metrics.publish()  # to nowhere (else the library warns of unpublished metrics)
    return undo_mark_unicode_str_in_template(out)


def transform(template_path: str) -> dict[str, Any]:
    """The SAM-transformed form of the template at `template_path` (YAML or JSON,
    long-form intrinsics: this reads it with a plain YAML parser)."""
    with open(template_path, encoding="utf-8") as f:
        template = yaml.safe_load(f)
    return transform_template(template)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} TEMPLATE > TRANSFORMED.json", file=sys.stderr)
        return 2
    try:
        out = transform(argv[1])
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"sam_transform: {cause.message}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
