"""LoadArray.path: the daemon names where each array sits in the value, so
no client scans pickles to name arrays.

Each test dumps a value with real joblib, asks the daemon for its index
(the raw Load reply) and follows every path it gives into the value
joblib itself loads back: the path must lead to an array with the same
bytes. The reply is read at the wire level, so the test needs no stubs
generated from the newest proto.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest

from conftest import Daemon
from persistd._proto import persistd_pb2 as pb

_TOKEN = re.compile(r'\[(-?\d+)\]|\[("(?:[^"\\]|\\.)*")\]|\.__dict__\[("(?:[^"\\]|\\.)*")\]|\.(\w+)')


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a serialized message."""
    out = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, wire, varint()))
        elif wire == 2:
            n = varint()
            out.append((number, wire, data[pos : pos + n]))
            pos += n
        elif wire == 1:
            out.append((number, wire, data[pos : pos + 8]))
            pos += 8
        elif wire == 5:
            out.append((number, wire, data[pos : pos + 4]))
            pos += 4
        else:
            raise ValueError("wire type %d" % wire)
    return out


def _index(daemon: Daemon, path: Path) -> tuple[list[dict[str, Any]], bytes]:
    """The arrays of the daemon's Load reply for `path` (kind, data extent,
    path) and the segment's bytes."""
    with grpc.insecure_channel("unix:" + daemon.socket) as channel:
        load = channel.unary_unary(
            "/persistd.v1.Persistd/Load",
            request_serializer=pb.LoadRequest.SerializeToString,
            response_deserializer=lambda raw: raw,
        )
        raw = load(pb.LoadRequest(source_inline=path.read_bytes(), display_name=str(path)), timeout=60)
    arrays = []
    segment = b""
    segment_path = ""
    for number, _, value in _fields(raw):
        if number == 6:  # LoadReply.arrays
            array: dict[str, Any] = {"kind": 0, "offset": 0, "length": 0, "path": ""}
            for n, _, v in _fields(value):
                if n == 1:
                    array["kind"] = v
                elif n == 2:  # Extent data
                    for m, _, w in _fields(v):
                        array["offset" if m == 1 else "length"] = w
                elif n == 9:
                    array["path"] = v.decode("utf-8")
            arrays.append(array)
        elif number == 11:
            segment = value
        elif number == 1:
            segment_path = value.decode()
    if not segment:
        segment = Path(segment_path).read_bytes()
    return arrays, segment


def _follow(value: Any, path: str) -> Any:
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        assert match, "cannot read path %r at %d" % (path, pos)
        index, key, dict_key, attribute = match.groups()
        if index is not None:
            value = value[int(index)]
        elif key is not None:
            value = value[json.loads(key)]
        elif dict_key is not None:
            value = vars(value)[json.loads(dict_key)]
        else:
            value = getattr(value, attribute)
        pos = match.end()
    return value


def _check(daemon: Daemon, tmp_path: Path, value: Any, protocol: int) -> list[str]:
    path = tmp_path / ("value_p%d.pkl" % protocol)
    joblib.dump(value, path, protocol=protocol)
    arrays, segment = _index(daemon, path)
    loaded = joblib.load(path)
    for a in arrays:
        if a["path"] == "?":  # its place cannot be told
            continue
        found = _follow(loaded, a["path"])
        assert isinstance(found, np.ndarray), a
        if a["kind"] == 0:  # RAW: the bytes at the data extent
            data = segment[a["offset"] : a["offset"] + a["length"]]
            assert data == np.ascontiguousarray(found).tobytes(), a["path"]
    return [a["path"] for a in arrays]


class Estimator:
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.coef_ = rng.random(3)
        self.trees_ = [{"value": rng.random(2), 3: rng.random(1)} for _ in range(2)]
        self.odd_ = {"a-b": rng.random(1), (1, 2): rng.random(1)}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_paths_lead_to_the_arrays(daemon: Daemon, tmp_path: Path, protocol: int) -> None:
    """Dict keys, list and tuple indices, attributes: every path the daemon
    gives reaches the array with the same bytes in what joblib loads."""
    rng = np.random.default_rng(protocol)
    value = {
        "trees": [{"feature": rng.integers(0, 9, 4), "value": rng.random((2, 2))} for _ in range(3)],
        "pair": (rng.random(1), rng.random(2)),
        7: [None, "x", rng.random(3)],
        "été \"q\"": rng.random(1),
        "model": Estimator(protocol),
        "ordered": collections.OrderedDict([("a", rng.random(1))]),
    }
    paths = _check(daemon, tmp_path, value, protocol)
    expected = [
        '["trees"][0]["feature"]', '["trees"][0]["value"]',
        '["trees"][1]["feature"]', '["trees"][1]["value"]',
        '["trees"][2]["feature"]', '["trees"][2]["value"]',
        '["pair"][0]', '["pair"][1]', "[7][2]",
        '["model"].coef_', '["model"].trees_[0]["value"]', '["model"].trees_[0][3]',
        '["model"].trees_[1]["value"]', '["model"].trees_[1][3]',
        '["model"].odd_["a-b"]', "?",  # a tuple key: no path
        '["ordered"]["a"]',
    ]
    if protocol == 0:
        # Protocol 0 writes non-ASCII str keys with escapes, which are not
        # followed: that one key has no path.
        expected.insert(9, "?")
    else:
        expected.insert(9, '["été \\"q\\""]')
    assert paths == expected


def test_a_lone_array_is_the_value(daemon: Daemon, tmp_path: Path) -> None:
    assert _check(daemon, tmp_path, np.arange(5.0), 4) == [""]
