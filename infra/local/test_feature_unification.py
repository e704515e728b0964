"""Every build of the workspace asks for the same features of each dependency.

`make test` builds the workspace three ways: the functions (`make build`, and each
function alone when `cargo lambda watch` runs it), the unit tests with their
dev-dependencies, and the end-to-end tests. Cargo resolves features per build, so a
dependency asked for with other features in one of them is compiled again, and with
it everything above it (tokio: hyper, the AWS SDK...). The crate
`shared/workspace-hack` names the union; this test fails when a dependency change
makes two builds differ again, and prints the lines to put there (decision 40).
"""

import os
import subprocess
import unittest
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HACK = "subkv-workspace-hack"


def package_name(manifest: str) -> str:
    with open(manifest) as f:
        for line in f:
            if line.startswith("name = "):
                return line.split('"')[1]
    raise ValueError(f"no package name in {manifest}")


def members() -> dict:
    """Package name -> manifest path, for every workspace member."""
    out = {}
    for group in ("shared", "functions"):
        for entry in sorted(os.listdir(os.path.join(ROOT, group))):
            manifest = os.path.join(ROOT, group, entry, "Cargo.toml")
            if os.path.exists(manifest):
                out[package_name(manifest)] = manifest
    for manifest in ("infra/local/Cargo.toml", "tests/Cargo.toml"):
        path = os.path.join(ROOT, manifest)
        out[package_name(path)] = path
    return out


def resolved_features(selection: list, edges: str) -> dict:
    """`cargo tree` of a build: third-party package ("name vX.Y.Z") -> its features."""
    out = subprocess.run(
        ["cargo", "tree", *selection, "-e", edges, "-f", "{p}|{f}", "--prefix", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    features = {}
    for line in out.splitlines():
        package, bar, feature_list = line.replace(" (*)", "").replace(" (proc-macro)", "").partition("|")
        if not bar or "(/" in package:
            continue  # not a package line, or a workspace member
        features[package.strip()] = feature_list.strip()
    return features


def builds() -> dict:
    functions = sorted(os.listdir(os.path.join(ROOT, "functions")))
    out = {
        "unit tests": (["--workspace", "--exclude", "subkv-e2e"], "normal,build,dev"),
        "end-to-end tests": (["-p", "subkv-e2e"], "normal,build,dev"),
        "make build": ([arg for f in functions for arg in ("-p", f)] + ["-p", "subkv-local"], "normal,build"),
    }
    for function in functions:  # what cargo lambda watch runs: `cargo run --bin <function>`
        out[function] = (["-p", function], "normal,build")
    return out


class FeatureUnification(unittest.TestCase):
    def test_every_member_depends_on_the_workspace_hack(self):
        for name, manifest in members().items():
            if name in (HACK, "subkv-kv"):
                continue  # subkv-kv is the pure core (shared/kv/tests/pure.rs): every build that has it has crates that do
            with open(manifest) as f:
                self.assertIn(f"\n{HACK}.workspace = true\n", f.read(), f"{manifest} lacks {HACK}")

    def test_every_build_asks_for_the_same_features(self):
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {name: pool.submit(resolved_features, *build) for name, build in builds().items()}
            trees = {name: future.result() for name, future in futures.items()}
        seen = {}
        for tree in trees.values():
            for package, features in tree.items():
                seen.setdefault(package, set()).add(features)
        differing = sorted(
            package for package, variants in seen.items() if len(variants) > 1
        )
        lines = []
        for package in differing:
            name, version = package.rsplit(" v", 1)
            union = sorted({f for variant in seen[package] for f in variant.split(",") if f})
            default = "default" in union
            listed = ", ".join(f'"{f}"' for f in union if f != "default")
            extra = "" if default else ", default-features = false"
            lines.append(f'{name} = {{ version = "{version}"{extra}, features = [{listed}] }}')
        self.assertEqual(
            differing,
            [],
            "dependencies built with different features by different builds; add to "
            "shared/workspace-hack/Cargo.toml (replacing any line of the same crate):\n" + "\n".join(lines),
        )


if __name__ == "__main__":
    unittest.main()
