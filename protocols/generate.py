"""Regenerate the Python code of the wire contract: ``python -m protocols.generate``.

One pinned toolchain (grpcio-tools for protoc and the gRPC plugin, mypy-protobuf for typed
stubs, versions fixed in ``constraints.txt``) so that the generated files are reproducible
byte for byte; ``--check`` regenerates into a scratch folder and exits 1 when the committed
files differ, which is what the test suite runs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_SUBDIR = Path("protocols") / "v1"
PROTO_DIR = REPO_ROOT / PROTO_SUBDIR


def proto_files(src_root: Path = REPO_ROOT) -> list[Path]:
    return sorted((src_root / PROTO_SUBDIR).glob("*.proto"))


def generated_names(protos: list[Path]) -> list[str]:
    names = []
    for proto in protos:
        stem = proto.stem
        names += [
            f"{stem}_pb2.py",
            f"{stem}_pb2.pyi",
            f"{stem}_pb2_grpc.py",
            f"{stem}_pb2_grpc.pyi",
        ]
    return names


def _mypy_plugins() -> list[str]:
    """mypy-protobuf's plugins sit beside this interpreter, which need not be on PATH."""
    bin_dir = Path(sys.executable).parent
    flags = []
    for plugin in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        path = shutil.which(plugin, path=str(bin_dir)) or shutil.which(plugin)
        if path is None:
            raise SystemExit(f"{plugin} not found: install the dev extra (pip install -e '.[dev]')")
        flags.append(f"--plugin={plugin}={path}")
    return flags


def generate(out_root: Path, src_root: Path = REPO_ROOT) -> list[Path]:
    """Run protoc over every .proto file; outputs land in ``out_root/protocols/v1``."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    protos = proto_files(src_root)
    if not protos:
        raise SystemExit(f"no .proto files in {src_root / PROTO_SUBDIR}")
    include = Path(protoc.__file__).parent / "_proto"  # well-known types shipped with grpcio-tools
    args = [
        "protoc",
        *_mypy_plugins(),
        f"-I{src_root}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(src_root)) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    out_dir = out_root / PROTO_SUBDIR
    return [out_dir / name for name in generated_names(protos)]


def stale_files(src_root: Path = REPO_ROOT) -> list[str]:
    """Names of generated files that differ from what the .proto files produce now."""
    committed = src_root / PROTO_SUBDIR
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), src_root)
        return [
            f.name
            for f in fresh
            if not (committed / f.name).exists()
            or not filecmp.cmp(f, committed / f.name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocols.generate",
        description="Regenerate protocols/v1/*_pb2*.py(i) from the .proto files.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only report whether the generated code is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("generated code is stale: " + ", ".join(stale), file=sys.stderr)
            print("run: python -m protocols.generate", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in generate(Path(tmp)):
            shutil.copyfile(f, PROTO_DIR / f.name)
            print(f"wrote {(PROTO_DIR / f.name).relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
