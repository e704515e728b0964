"""Unit tests of check_package.py (what `make package` checks its packages with)."""

import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import check_package  # noqa: E402


def elf(machine: int, e_type: int = 2, klass: int = 2) -> bytes:
    return b"\x7fELF" + bytes([klass, 1, 1]) + bytes(9) + struct.pack("<HH", e_type, machine) + bytes(44)


class CheckPackage(unittest.TestCase):
    def run_on(self, content: bytes, machine: str = "aarch64") -> int:
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(content)
        try:
            return check_package.main([machine, f.name])
        finally:
            os.unlink(f.name)

    def test_an_arm64_executable_passes(self):
        self.assertEqual(self.run_on(elf(183)), 0)
        self.assertEqual(self.run_on(elf(183, e_type=3)), 0)  # position-independent

    def test_another_machine_or_kind_fails(self):
        self.assertEqual(self.run_on(elf(62)), 1)  # x86_64
        self.assertEqual(self.run_on(elf(183, e_type=1)), 1)  # an object file
        self.assertEqual(self.run_on(elf(183, klass=1)), 1)  # 32-bit
        self.assertEqual(self.run_on(b"#!/bin/sh\n"), 1)
        self.assertEqual(check_package.main(["aarch64", "/nonexistent/bootstrap"]), 1)


if __name__ == "__main__":
    unittest.main()
