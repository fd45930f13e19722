"""Hand-made hostile files for the daemon, and a look at its memory.

Files are crafted byte by byte rather than with the libraries that would
refuse to write them: a zstd frame of RLE blocks turns 4 bytes into 128 KiB
of one byte, so a few hundred bytes on disk decode to gigabytes -- which is
exactly what an attacker sends. Nothing here needs a zstd module.
"""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Callable, Sequence

from conftest import Daemon, status

ZSTD_BLOCK = 1 << 17  # the largest zstd block (and our window: 128 KiB)


def zstd_frame(*pieces: bytes | tuple[int, int], checksum: bool = False) -> bytes:
    """A zstd frame of raw blocks (``bytes`` pieces) and RLE blocks
    (``(byte, count)`` pieces), in order. The frame declares no content size,
    so a decoder learns how much is coming only by decoding it."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0x00, 0x38])  # no content size, no checksum; 128 KiB window
    blocks: list[tuple[int, int, bytes]] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            value, count = piece
            while count > 0:
                n = min(count, ZSTD_BLOCK)
                blocks.append((1, n, bytes([value])))
                count -= n
        else:
            for i in range(0, len(piece), ZSTD_BLOCK):
                chunk = piece[i : i + ZSTD_BLOCK]
                blocks.append((0, len(chunk), chunk))
    if not blocks:
        blocks.append((0, 0, b""))
    for i, (kind, size, content) in enumerate(blocks):
        last = 1 if i == len(blocks) - 1 else 0
        out += (last | kind << 1 | size << 3).to_bytes(3, "little") + content
    return bytes(out)


def proto(version: int = 4) -> bytes:
    """PROTO opcode."""
    return bytes([0x80, version])


def short_str(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def binint(value: int) -> bytes:
    """BININT (signed 4 bytes)."""
    return b"J" + struct.pack("<i", value)


def pickle_int(value: int) -> bytes:
    """BININT when it fits in 31 bits, else LONG1 of 8 bytes (two's complement)."""
    if 0 <= value < 1 << 31:
        return binint(value)
    return b"\x8a\x08" + struct.pack("<q" if value < 0 else "<Q", value)


def array_wrapper(
    shape: tuple[int, ...] | bytes,
    dtype_code: str = "f8",
    data: bytes = b"",
    *,
    alignment: bool = True,
    shape_items: bytes | None = None,
) -> bytes:
    """A protocol-4 joblib stream of one NumpyArrayWrapper as joblib >= 1.2
    writes it (padding before the data when ``alignment``), followed by
    ``data`` and STOP. ``shape_items`` replaces the pickled shape tuple (to
    make it hostile); ``data`` is the raw bytes joblib would write, or not."""
    ops = bytearray(proto(4))
    ops += short_str("joblib.numpy_pickle") + short_str("NumpyArrayWrapper") + b"\x93"
    ops += b")\x81"  # EMPTY_TUPLE, NEWOBJ
    ops += b"}("  # EMPTY_DICT, MARK
    ops += short_str("subclass") + short_str("numpy") + short_str("ndarray") + b"\x93"
    ops += short_str("shape")
    if shape_items is not None:
        ops += shape_items
    else:
        assert isinstance(shape, tuple)
        ops += b"(" + b"".join(pickle_int(d) for d in shape) + b"t"
    ops += short_str("order") + short_str("C")
    ops += short_str("dtype") + short_str("numpy") + short_str("dtype") + b"\x93"
    ops += short_str(dtype_code) + b"\x89\x88\x87R"  # (code, False, True) REDUCE
    ops += b"(" + binint(3) + short_str("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + binint(0) + b"tb"
    ops += short_str("allow_mmap") + b"\x88"
    if alignment:
        ops += short_str("numpy_array_alignment_bytes") + b"K\x10"
    ops += b"ub"  # SETITEMS, BUILD
    if alignment:
        pad = 16 - (len(ops) + 1) % 16 or 16
        ops += bytes([pad]) + b"\xff" * pad
    return bytes(ops) + data + b"."


def vm_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process ``pid`` in KiB, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def reset_peak(pid: int) -> bool:
    """Resets VmHWM of ``pid`` to its current RSS (writing 5 to clear_refs,
    Linux >= 4.0), so the next peak measured is this case's alone. False
    where the kernel or our privileges do not allow it."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class ConfiguredDaemon(Daemon):
    """A Daemon started with extra flags and, optionally, a function run in
    the child before exec (to lower its RLIMIT_NOFILE, say)."""

    def __init__(
        self,
        binary: str,
        extra_args: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(binary)
        self.extra_args = list(extra_args)
        self.preexec_fn = preexec_fn

    def start(self, timeout: float = 15.0) -> None:
        args = [self.binary, "--socket", self.socket, "--store", self.store, *self.extra_args]
        with open(self.stderr_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn
            )
        deadline = time.monotonic() + timeout
        while status(self.socket, timeout=0.5) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("persistd did not start:\n" + self.log())
            time.sleep(0.05)
