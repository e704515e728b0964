"""Tests of sam_transform.py: the SAM transform of infra/template.yaml, offline.

    .venv/bin/python -m unittest discover -s infra/local -p 'test_*.py'
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import unittest
from pathlib import Path
from unittest import mock

import boto3
import yaml

import sam_transform

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent / "template.yaml"
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def load_sam() -> dict:
    with TEMPLATE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


class TransformTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.sam = load_sam()
        # No AWS client may be made (IAM for managed policies, SAR, ...): offline.
        with mock.patch.object(boto3.session.Session, "client", side_effect=AssertionError("AWS client")):
            cls.out = sam_transform.transform(str(TEMPLATE))
        cls.resources = cls.out["Resources"]

    def sam_functions(self) -> dict:
        return {k: v for k, v in self.sam["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}

    def test_no_serverless_resources_left(self) -> None:
        self.assertNotIn("Transform", self.out)
        left = sorted(k for k, v in self.resources.items() if v["Type"].startswith("AWS::Serverless::"))
        self.assertEqual(left, [])
        # Plain CloudFormation resources are kept as written.
        for name in ("ControlTable", "KvDataTable", "KvLogTable", "Edge", "BackupForwardStream"):
            self.assertEqual(self.resources[name], self.sam["Resources"][name], name)

    def test_every_function_becomes_a_lambda_function_with_its_own_role(self) -> None:
        functions = self.sam_functions()
        # One per crate under functions/.
        crates = [d for d in (HERE.parent.parent / "functions").iterdir() if (d / "Cargo.toml").exists()]
        self.assertEqual(len(functions), len(crates))
        for name, sam_fn in functions.items():
            with self.subTest(function=name):
                fn = self.resources[name]
                self.assertEqual(fn["Type"], "AWS::Lambda::Function")
                props = fn["Properties"]
                # Globals merged in.
                self.assertEqual(props["Runtime"], "provided.al2023")
                self.assertEqual(props["Handler"], "bootstrap")
                self.assertEqual(props["Architectures"], ["arm64"])
                env = props["Environment"]["Variables"]
                self.assertEqual(env["SUBKV_CONTROL_TABLE"], {"Ref": "ControlTable"})
                for var, value in (sam_fn["Properties"].get("Environment") or {}).get("Variables", {}).items():
                    self.assertEqual(env[var], value, var)

                self.assertEqual(props["Role"], {"Fn::GetAtt": [f"{name}Role", "Arn"]})
                role = self.resources[f"{name}Role"]
                self.assertEqual(role["Type"], "AWS::IAM::Role")
                trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
                self.assertEqual(trust[0]["Principal"], {"Service": ["lambda.amazonaws.com"]})
                self.assertIn(BASIC_EXECUTION, role["Properties"]["ManagedPolicyArns"])
                # The function's inline policies, statement for statement.
                inline = [p["PolicyDocument"] for p in role["Properties"]["Policies"]]
                self.assertEqual(inline, sam_fn["Properties"]["Policies"])

    def test_function_urls_and_schedules(self) -> None:
        for name in ("KvWatchFunction", "KvSnapshotReadFunction"):
            url = self.resources[f"{name}Url"]
            self.assertEqual(url["Type"], "AWS::Lambda::Url")
            self.assertEqual(url["Properties"]["TargetFunctionArn"], {"Ref": name})
            self.assertEqual(url["Properties"]["AuthType"], "NONE")
            self.assertEqual(url["Properties"]["InvokeMode"], "RESPONSE_STREAM")
        schedules = {k: v for k, v in self.resources.items() if v["Type"] == "AWS::Scheduler::Schedule"}
        self.assertEqual(
            sorted(schedules),
            [
                "BackupForwardFunctionCatchUp",
                "KvPurgeDeletedFunctionSchedule",
                "KvSweepExpiredFunctionSchedule",
                "RestoreDatabaseFunctionSchedule",
            ],
        )

    def test_scan_suppressions_reach_generated_resources(self) -> None:
        # A function's Metadata (its checkov skips) is copied onto its role and URL.
        skips = self.sam["Resources"]["KvWatchFunction"]["Metadata"]["checkov"]
        for name in ("KvWatchFunction", "KvWatchFunctionRole", "KvWatchFunctionUrl"):
            self.assertEqual(self.resources[name]["Metadata"]["checkov"], skips, name)
        self.assertEqual(self.out["Metadata"], self.sam["Metadata"])

    def test_input_is_not_modified(self) -> None:
        sam = load_sam()
        before = copy.deepcopy(sam)
        sam_transform.transform_template(sam)
        self.assertEqual(sam, before)

    def test_command_line_writes_json(self) -> None:
        run = subprocess.run(
            [sys.executable, str(HERE / "sam_transform.py"), str(TEMPLATE)],
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(json.loads(run.stdout), self.out)


if __name__ == "__main__":
    unittest.main()
