"""Binary deltas: a changed file carried as the difference from the base bytes.

A supplement patches a known base — the manifest names each changed file's
``base_sha256``, and the device refuses a base that differs — so the new
content can travel as a delta against those exact bytes and be rebuilt on
the device, where its full SHA-256 is checked before anything is staged.

The encoding is BSDIFF40 (Colin Percival's bsdiff 4 format, as PyPI's
``bsdiff4`` writes it; ``bspatch`` reads it too): a 32-byte header — the
magic ``BSDIFF40`` and three 8-byte sign-and-magnitude little-endian
integers, the lengths of the bz2 control and diff blocks and the length of
the output — then the three bz2 blocks (control, diff, extra). Measured on
the real ``libssl3`` 3.0.19 -> 3.0.20 update (eight changed files, 5.9 MB),
the per-file sum was 379,399 B for bsdiff4 against 581,416 B for
python-zstandard with the base as a raw-content dictionary (level 19, long
matching; the ``zstd --patch-from`` equivalent) and 596,897 B for the real
``zstd -19 --patch-from``: on shared libraries, whose code moves by a few
bytes everywhere, bsdiff's byte-wise difference block compresses far better
than zstd's matches. bsdiff costs more CPU when building (3.7 s for the
4.7 MB ``libcrypto.so.3``), once per publish; applying is 0.09 s.

The patch comes from the network, so it is read here, not by the library's
own reader: the output length must be the one the signed manifest states
(checked before anything is allocated) and each bz2 block is decompressed
with a limit, so a small patch cannot claim or expand to gigabytes.
"""

from __future__ import annotations

import bz2

import bsdiff4
import bsdiff4.core

from bsi.cryptex.errors import InvalidBundle
from bsi.cryptex.manifest import MAX_DELTA_BYTES, human_size

MAGIC = b"BSDIFF40"
HEADER_BYTES = 32
_CONTROL_RECORD = 24  # three 8-byte integers: bytes to add, bytes to copy, seek


def make_delta(base: bytes, target: bytes) -> bytes:
    """The BSDIFF40 patch that turns ``base`` into ``target``."""
    return bytes(bsdiff4.diff(base, target))


def claimed_size(delta: bytes, *, where: str = "") -> int:
    """The output length a patch's header claims; :class:`InvalidBundle` if it has none."""
    if len(delta) < HEADER_BYTES or delta[:8] != MAGIC:
        raise InvalidBundle("the delta is not a BSDIFF40 patch (no header)", where=where)
    return _int64(delta[24:32])


def apply_delta(base: bytes, delta: bytes, *, size: int, where: str = "") -> bytes:
    """``base`` with ``delta`` applied, which must come out exactly ``size`` bytes.

    Raises :class:`InvalidBundle` — before allocating the output — when the
    patch claims another length than ``size`` (the manifest's), when ``size``
    is beyond :data:`~bsi.cryptex.manifest.MAX_DELTA_BYTES`, when a block
    would decompress past what a patch of that length can need, and when the
    patch is corrupt. The caller still checks the result's SHA-256.
    """
    claimed = claimed_size(delta, where=where)
    if claimed != size:
        raise InvalidBundle(
            f"the delta claims {human_size(claimed) if claimed >= 0 else claimed} of output; "
            f"the manifest says {human_size(size)}; refusing it before rebuilding",
            where=where,
        )
    if not 0 <= size <= MAX_DELTA_BYTES:
        raise InvalidBundle(
            f"{human_size(size)} is more than a delta may rebuild ({human_size(MAX_DELTA_BYTES)})",
            where=where,
        )
    control_length, diff_length = _int64(delta[8:16]), _int64(delta[16:24])
    if (
        control_length < 0
        or diff_length < 0
        or HEADER_BYTES + control_length + diff_length > len(delta)
    ):
        raise InvalidBundle("the delta's block lengths run past its end (truncated?)", where=where)
    start = HEADER_BYTES
    control = _bunzip(delta[start : start + control_length], _CONTROL_RECORD * (size + 2), where)
    start += control_length
    diff = _bunzip(delta[start : start + diff_length], size, where)
    extra = _bunzip(delta[start + diff_length :], size, where)
    if len(control) % _CONTROL_RECORD:
        raise InvalidBundle("the delta's control block is not whole records", where=where)
    try:
        rebuilt = bytes(bsdiff4.core.patch(base, size, control, diff, extra))
    except (ValueError, OverflowError, MemoryError) as error:
        raise InvalidBundle(f"the delta is corrupt: {error}", where=where) from None
    if len(rebuilt) != size:
        raise InvalidBundle(
            f"the delta rebuilt {len(rebuilt)} bytes, not the manifest's {size}", where=where
        )
    return rebuilt


def _int64(data: bytes) -> int:
    """bsdiff's ``offtin``: 63 bits of magnitude, little-endian, then the sign bit."""
    value = int.from_bytes(data, "little")
    magnitude = value & ~(1 << 63)
    return -magnitude if value >> 63 else magnitude


def _bunzip(data: bytes, limit: int, where: str) -> bytes:
    """One bz2 block, refused if it decompresses past ``limit`` bytes or is broken."""
    decompressor = bz2.BZ2Decompressor()
    try:
        out = decompressor.decompress(data, max_length=limit)
    except (OSError, ValueError, EOFError) as error:
        raise InvalidBundle(f"a delta block is not valid bz2: {error}", where=where) from None
    if not decompressor.eof:
        problem = (
            "ends early (truncated)"
            if decompressor.needs_input
            else f"decompresses past {human_size(limit)}, more than the file needs (a bomb?)"
        )
        raise InvalidBundle(f"a block of the delta {problem}", where=where)
    if decompressor.unused_data:
        raise InvalidBundle("a block of the delta is followed by stray bytes", where=where)
    return out
