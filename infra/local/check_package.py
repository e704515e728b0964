"""Checks Lambda packages: each file is an ELF executable for the given machine
(`aarch64` or `x86_64`), and prints its size.

    check_package.py aarch64 target/lambda/kv-connect/bootstrap ...

Exits non-zero, naming the file, if one is missing or built for another machine.
"""

import os
import struct
import sys

# ELF e_machine values.
MACHINES = {"x86_64": 62, "aarch64": 183}

def describe(path: str) -> tuple[str, int, int]:
    """(class, e_type, e_machine) of the ELF file at `path`."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    klass = {1: "ELF32", 2: "ELF64"}.get(header[4], "?")
    order = "<" if header[5] == 1 else ">"
    e_type, e_machine = struct.unpack(order + "HH", header[16:20])
    return klass, e_type, e_machine

def main(argv: list[str]) -> int:
    machine, paths = argv[0], argv[1:]
    want = MACHINES[machine]
    failed = False
    for path in paths:
        try:
            klass, e_type, e_machine = describe(path)
        except (OSError, ValueError) as err:
            print(f"package: {err}", file=sys.stderr)
            failed = True
            continue
        # ET_EXEC (2) or ET_DYN (3, a position-independent executable).
        if klass != "ELF64" or e_machine != want or e_type not in (2, 3):
            print(f"package: {path} is {klass} type {e_type} machine {e_machine}, not an executable for {machine}",
                  file=sys.stderr)
            failed = True
            continue

        print(f"package: {path}: {machine} ELF executable, {os.path.getsize(path) / 1e6:.1f} MB")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
