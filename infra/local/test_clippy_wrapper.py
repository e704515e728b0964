"""`make test` lints by compiling with clippy-driver as the workspace's compiler
wrapper (decision 46), handing it `-D warnings` through CLIPPY_ARGS, the way
cargo-clippy does. That variable is cargo-clippy's interface with clippy-driver,
not a documented one: this test builds a scratch crate with a clippy warning, with
exactly the Makefile's settings, and fails if the build does not fail on it (a
toolchain that changed the interface would otherwise let warnings through `make
test` unnoticed).
"""

import os
import re
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def makefile_value(name: str) -> str:
    with open(os.path.join(ROOT, "Makefile")) as f:
        for line in f:
            m = re.match(rf"test: export {name} := (.*)$", line.rstrip("\n"))
            if m:
                return m.group(1)
    raise AssertionError(f"the Makefile sets no {name} for test")


class ClippyWrapperTest(unittest.TestCase):
    def build(self, source: str) -> subprocess.CompletedProcess:
        sysroot = subprocess.run(
            ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
        ).stdout.strip()
        wrapper = makefile_value("RUSTC_WORKSPACE_WRAPPER").replace(
            "$(CLIPPY_DRIVER)", f"{sysroot}/bin/clippy-driver"
        )
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "src"))
            with open(os.path.join(tmp, "Cargo.toml"), "w") as f:
                f.write('[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n')
            with open(os.path.join(tmp, "src", "lib.rs"), "w") as f:
                f.write(source)
            env = dict(os.environ)
            env["RUSTC_WORKSPACE_WRAPPER"] = wrapper
            env["CLIPPY_ARGS"] = makefile_value("CLIPPY_ARGS")
            env["CARGO_TARGET_DIR"] = os.path.join(tmp, "target")
            return subprocess.run(
                ["cargo", "build", "--quiet", "--offline"],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
            )

    def test_a_clippy_warning_fails_the_build(self) -> None:
        result = self.build("pub fn len(v: &Vec<u8>) -> usize { v.len() }\n")
        self.assertNotEqual(result.returncode, 0, "a clippy warning passed the build")
        self.assertIn("clippy::ptr_arg", result.stderr)

    def test_clean_code_builds(self) -> None:
        result = self.build("pub fn len(v: &[u8]) -> usize { v.len() }\n")
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
