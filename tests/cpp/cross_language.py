"""The Python side of the C++ client's cross-language tests (client_daemon_test.cc).

    cross_language.py write DIR   joblib and persistd.dump write files into
                                  DIR, and DIR/python_manifest.tsv says what
                                  the C++ client must find in them
    cross_language.py check DIR   persistd.load and joblib.load read the files
                                  DIR/cpp_manifest.tsv lists, which the C++
                                  client wrote, and compare every array

Both manifests are tab-separated, one line per array: file, path (write) or
name (check), dtype.str, shape (comma-separated), order (C or F), and the
file beside them that holds the array's bytes in storage order
(``tobytes(order="A")``), or "-" for object arrays. Byte equality is the
test: it is value equality for every dtype, NaN payloads and -0.0 included
(big-endian arrays come back from joblib in native order, so theirs is
compared after swapping back).
The daemon is the one $PERSISTD_SOCKET names (the C++ test starts it).
"""

from __future__ import annotations

import os
import sys

import joblib
import numpy as np

import persistd

# joblib.dump's compress= for each file; persistd.dump writes the last two
# (joblib has no zstd).
JOBLIB_COMPRESS = {
    "none": 0,
    "zlib3": 3,
    "gzip": ("gzip", 3),
    "bz2": "bz2",
    "lzma": "lzma",
    "xz": "xz",
    "lz4": "lz4",
}
PERSISTD_COMPRESS = {"persistd_none": 0, "persistd_zstd": "zstd"}


def every_dtype() -> dict[str, np.ndarray]:
    """Arrays of every numeric dtype with their edge values, Fortran-ordered,
    0-d and empty arrays, and one big enough to leave the inline limits."""
    arrays: dict[str, np.ndarray] = {"bool": np.array([True, False, True])}
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(t)
        arrays[np.dtype(t).name] = np.array([info.min, 0, 1, info.max], dtype=t)
    special = [0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 1e-40]
    for t in (np.float16, np.float32, np.float64, np.longdouble):
        with np.errstate(over="ignore", under="ignore"):
            arrays[np.dtype(t).name] = np.array(special, dtype=t)
    arrays["float64_max"] = np.array([np.finfo(np.float64).max, np.finfo(np.float64).tiny])
    for t in (np.complex64, np.complex128):
        arrays[np.dtype(t).name] = np.array([1 + 2j, complex(np.nan, np.inf), -0.0j], dtype=t)
    arrays["big_endian_i4"] = np.arange(5, dtype=">i4")
    arrays["big_endian_f8"] = np.linspace(0, 1, 5).astype(">f8")
    arrays["fortran_2d"] = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    arrays["fortran_3d"] = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7)
    arrays["zero_d_f8"] = np.array(3.25)
    arrays["zero_d_i2"] = np.array(-7, dtype=np.int16)
    arrays["empty_f8"] = np.zeros((0,))
    arrays["empty_2d_i4"] = np.zeros((3, 0), dtype=np.int32)
    arrays["empty_bool"] = np.zeros((0,), dtype=bool)
    arrays["big_f4"] = np.random.default_rng(7).standard_normal(600_000).astype(np.float32)
    return arrays


class Model:
    """Pickled as __main__.Model: an object whose arrays are attributes."""

    def __init__(self) -> None:
        self.alpha = 0.5
        self.coef_ = np.arange(4.0)
        self.intercept_ = np.ones(1, dtype=np.float32)


def nested() -> tuple[dict[object, object], list[tuple[str, np.ndarray]]]:
    """A value with arrays deep in it, and each array's path in stream order."""
    a, b = np.arange(3, dtype=np.int64), np.arange(5, dtype=np.uint8)
    c, same = np.ones((2, 2)), np.full(2, 9, dtype=np.int16)
    model = Model()
    value: dict[object, object] = {
        "trees": [{"value": a, "depth": 3}, {"value": b}],
        "model": model,
        7: c,
        "plain": 3.5,
        "words": np.array(["ab", "c"]),
        "objects": np.array([1, "x"], dtype=object),
        'say "hi"': same,
    }
    paths = [
        ('["trees"][0]["value"]', a),
        ('["trees"][1]["value"]', b),
        ('["model"].coef_', model.coef_),
        ('["model"].intercept_', model.intercept_),
        ("[7]", c),
        ('["words"]', value["words"]),
        ('["objects"]', value["objects"]),
        ('["say \\"hi\\""]', same),
    ]
    return value, paths


def manifest_line(file: str, key: str, array: np.ndarray, directory: str, n: int) -> str:
    if array.dtype == object:
        bin_name = "-"
    else:
        bin_name = "%s.%d.bin" % (file, n)
        with open(os.path.join(directory, bin_name), "wb") as out:
            out.write(array.tobytes(order="A"))
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    shape = ",".join(str(d) for d in array.shape)
    return "\t".join([file, key, array.dtype.str, shape, order, bin_name])


def write(directory: str) -> None:
    lines = []
    arrays = every_dtype()
    for tag, compress in {**JOBLIB_COMPRESS, **PERSISTD_COMPRESS}.items():
        name = "dtypes_%s.pkl" % tag
        dump = persistd.dump if tag in PERSISTD_COMPRESS else joblib.dump
        dump(arrays, os.path.join(directory, name), compress=compress)
        for n, (key, array) in enumerate(arrays.items()):
            lines.append(manifest_line(name, '["%s"]' % key, array, directory, n))
    value, paths = nested()
    for name, compress in (("nested.pkl", 0), ("nested_zlib.pkl", 3)):
        joblib.dump(value, os.path.join(directory, name), compress=compress)
        for n, (path, array) in enumerate(paths):
            lines.append(manifest_line(name, path, array, directory, n))
    root = np.arange(10, dtype=np.float32)
    joblib.dump(root, os.path.join(directory, "root.pkl"))
    lines.append(manifest_line("root.pkl", "", root, directory, 0))
    with open(os.path.join(directory, "python_manifest.tsv"), "w") as out:
        out.write("\n".join(lines) + "\n")


def check(directory: str) -> int:
    expected: dict[str, list[list[str]]] = {}
    with open(os.path.join(directory, "cpp_manifest.tsv")) as manifest:
        for line in manifest.read().splitlines():
            fields = line.split("\t")
            expected.setdefault(fields[0], []).append(fields[1:])
    failures = []
    arrays = 0
    for file, entries in expected.items():
        path = os.path.join(directory, file)
        loaders = [("persistd.load", persistd.load)]
        if "zstd" not in file:  # joblib has no zstd
            loaders.append(("joblib.load", joblib.load))
        for loader_name, loader in loaders:
            try:
                value = loader(path)
            except Exception as e:  # noqa: BLE001 - reported, then the exit code fails the test
                failures.append("%s(%s) raised %r" % (loader_name, file, e))
                continue
            names = [e[0] for e in entries]
            if not isinstance(value, dict) or list(value) != names:
                failures.append("%s(%s): keys %r, expected %r" % (loader_name, file, list(value), names))
                continue
            for name, dtype, shape, order, bin_name in entries:
                array = value[name]
                want_shape = tuple(int(d) for d in shape.split(",")) if shape else ()
                with open(os.path.join(directory, bin_name), "rb") as f:
                    want_bytes = f.read()
                fortran = array.flags.f_contiguous and not array.flags.c_contiguous
                problems = []
                if not isinstance(array, np.ndarray):
                    problems.append("is a %s" % type(array).__name__)
                else:
                    want = np.frombuffer(want_bytes, dtype=dtype)
                    # joblib (and so persistd) hands out big-endian arrays in
                    # native byte order: the same values, swapped bytes.
                    if array.dtype != want.dtype and array.dtype != want.dtype.newbyteorder("="):
                        problems.append("dtype %s, expected %s" % (array.dtype.str, dtype))
                    if array.shape != want_shape:
                        problems.append("shape %r, expected %r" % (array.shape, want_shape))
                    if order == "F" and not fortran:
                        problems.append("not in Fortran order")
                    if array.dtype == want.dtype:
                        same = array.tobytes(order="A") == want_bytes
                    else:
                        same = array.astype(want.dtype).tobytes(order="A") == want_bytes
                    if not same:
                        problems.append("bytes differ")
                if problems:
                    failures.append("%s(%s)[%r]: %s" % (loader_name, file, name, "; ".join(problems)))
                arrays += 1
    for failure in failures:
        print(failure, file=sys.stderr)
    print("checked %d files, %d arrays, %d failures" % (len(expected), arrays, len(failures)))
    return 1 if failures else 0


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "write":
        write(sys.argv[2])
        return 0
    return check(sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
