"""A real package update as a supplement: bsi's bundle beside per-file binary deltas.

For a Debian security update (by default the issue's case, ``libssl3``
3.0.19 -> 3.0.20: the base is the version installed under ``--base-root``,
the update a ``.deb``), it:

1. builds the supplement with the real CLI, ``bsi supplement build
   --from-deb NEW --base-root ROOT`` (or ``--base-deb OLD``), three ways: as
   bsi ships it (deltas, documentation left out), with ``--keep-docs`` (the
   same files as the references below), and ``--whole-files --keep-docs``
   (every changed file whole: what bsi did before deltas);
2. makes the references from the same changed files, each against its base:
   ``bsdiff4`` (the library bsi uses, as ``bsdiff``/``bspatch`` would), the
   real ``zstd -19 --patch-from`` binary, ``xdelta3 -9`` if installed, and
   the changed files alone compressed by ``zstd -19``;
3. prints each size and the ratios; the goal is a bundle of at most 1.1
   times the per-file bsdiff sum.

Without ``--new-deb`` it fetches ``libssl3=3.0.20-1~deb12u2`` with ``apt-get
download`` (Debian's archive must be reachable and the base installed: on
this project's machines ``libssl3`` 3.0.19 is). It prints a summary and exits 0
whether or not the goal is met; 1 only if the benchmark itself failed.

    .venv/bin/python benchmarks/delta.py
    .venv/bin/python benchmarks/delta.py --new-deb NEW.deb --base-deb OLD.deb
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from debian.debfile import DebFile

from bsi.cryptex import read_manifest
from bsi.cryptex.delta import make_delta
from bsi.cryptex.manifest import Manifest
from bsi.cryptex.updates import is_documentation

DEFAULT_PACKAGE = "libssl3=3.0.20-1~deb12u2"
GOAL = 1.1


def fetch(package: str, into: Path) -> Path:
    subprocess.run(
        ["apt-get", "download", package], cwd=into, check=True, capture_output=True, timeout=300
    )
    found = sorted(into.glob("*.deb"))
    if len(found) != 1:
        raise SystemExit(f"error: apt-get download {package} gave {found}")
    return found[0]


def build(new_deb: Path, base: list[str], out: Path, *extra: str) -> tuple[Manifest, int, float]:
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("bsi")), "supplement", "build",
         "--from-deb", str(new_deb), *base, "--out", str(out), *extra],
        check=True, capture_output=True,
    )  # fmt: skip
    return read_manifest(out), out.stat().st_size, time.perf_counter() - started


def unpacked(deb: Path, into: Path) -> Path:
    DebFile(str(deb)).data.tgz().extractall(into, filter="data")
    return into


def zstd_patch_from(base: Path, new: Path) -> int:
    result = subprocess.run(
        ["zstd", "-19", "-q", "-c", f"--patch-from={base}", str(new)],
        check=True, capture_output=True,
    )  # fmt: skip
    return len(result.stdout)


def zstd_alone(new: Path) -> int:
    return len(subprocess.run(["zstd", "-19", "-q", "-c", str(new)], check=True,
                              capture_output=True).stdout)  # fmt: skip


def xdelta3(base: Path, new: Path) -> int:
    result = subprocess.run(
        ["xdelta3", "-9", "-e", "-c", "-s", str(base), str(new)], check=True, capture_output=True
    )
    return len(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-deb", type=Path, help=f"the update (default: {DEFAULT_PACKAGE})")
    parser.add_argument("--base-deb", type=Path, help="the base package (default: installed)")
    parser.add_argument("--base-root", type=Path, default=Path("/"), help="root with the base")
    args = parser.parse_args()
    if shutil.which("zstd") is None:
        print("error: zstd is not installed (apt-get install zstd)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bsi-delta-bench-") as name:
        work = Path(name)
        new_deb = args.new_deb or fetch(DEFAULT_PACKAGE, work)
        base = (
            ["--base-deb", str(args.base_deb)]
            if args.base_deb
            else ["--base-root", str(args.base_root)]
        )
        shipped, shipped_size, shipped_s = build(new_deb, base, work / "shipped.cryptex")
        docs, docs_size, docs_s = build(new_deb, base, work / "docs.cryptex", "--keep-docs")
        whole, whole_size, _ = build(
            new_deb, base, work / "whole.cryptex", "--keep-docs", "--whole-files"
        )
        new_root = unpacked(new_deb, work / "new")
        base_root = unpacked(args.base_deb, work / "old") if args.base_deb else args.base_root
        changed = [e for e in docs.payloads if e.base_sha256 is not None]
        rows = []
        for entry in changed:
            old_path, new_path = base_root / entry.path, new_root / entry.path
            rows.append(
                (
                    entry.path,
                    entry.size or 0,
                    len(make_delta(old_path.read_bytes(), new_path.read_bytes())),
                    zstd_patch_from(old_path, new_path),
                    xdelta3(old_path, new_path) if shutil.which("xdelta3") else None,
                    zstd_alone(new_path),
                    is_documentation(entry.path),
                )
            )
    prerequisite = shipped.prerequisite.display()
    fixed = ", ".join(p.display() for p in shipped.fixed_in)
    print(f"update: {prerequisite} -> {fixed}; {len(changed)} changed file(s)")
    print()
    print(f"{'file':<48} {'size':>10} {'bsdiff4':>9} {'zstd-pf':>9} {'xdelta3':>9} {'zstd-19':>9}")
    for path, size, bsdiff, patch_from, xdelta, alone, doc in rows:
        shown = ("(doc) " if doc else "") + path.rsplit("/", 1)[-1]
        xd = f"{xdelta:>9,}" if xdelta is not None else f"{'-':>9}"
        print(f"{shown:<48} {size:>10,} {bsdiff:>9,} {patch_from:>9,} {xd} {alone:>9,}")
    total = sum(r[1] for r in rows)
    bsdiff_all = sum(r[2] for r in rows)
    bsdiff_code = sum(r[2] for r in rows if not r[6])
    patch_from_all = sum(r[3] for r in rows)
    xdelta_all = sum(r[4] or 0 for r in rows) if shutil.which("xdelta3") else None
    alone_all = sum(r[5] for r in rows)
    xd_total = f"{xdelta_all:>9,}" if xdelta_all is not None else f"{'-':>9}"
    print(
        f"{'sum':<48} {total:>10,} {bsdiff_all:>9,} {patch_from_all:>9,} {xd_total} {alone_all:>9,}"
    )
    print()
    print("bundles (bsi supplement build --from-deb, real CLI)")
    print(
        f"  as shipped (deltas, no docs):       {shipped_size:>10,} B  "
        f"{len(shipped.payloads)} files, {len(shipped.deltas)} as deltas, "
        f"built in {shipped_s:.1f} s"
    )
    print(
        f"  --keep-docs (same files as refs):   {docs_size:>10,} B  "
        f"{len(docs.payloads)} files, {len(docs.deltas)} as deltas, built in {docs_s:.1f} s"
    )
    print(f"  --keep-docs --whole-files (before): {whole_size:>10,} B  {len(whole.payloads)} files")
    print()
    print("ratios (bundle / per-file bsdiff4 sum)")
    for label, size, reference, what in (
        ("as shipped", shipped_size, bsdiff_all, "all changed files"),
        ("as shipped", shipped_size, bsdiff_code, "the files it carries"),
        ("--keep-docs", docs_size, bsdiff_all, "the same files"),
        ("--whole-files", whole_size, bsdiff_all, "the same files"),
    ):
        ratio = size / reference
        verdict = "meets" if ratio <= GOAL else "MISSES"
        print(f"  {label:<14} vs bsdiff of {what:<20} {ratio:6.2f}x  ({verdict} the {GOAL}x goal)")
    print(
        f"  zstd --patch-from sum / bsdiff sum: {patch_from_all / bsdiff_all:.2f}x; "
        f"zstd -19 of the files alone / bsdiff sum: {alone_all / bsdiff_all:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
