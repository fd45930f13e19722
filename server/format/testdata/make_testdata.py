"""Generates server/format/testdata/ with real joblib (run it from the venv).

    .venv/bin/python server/format/testdata/make_testdata.py

Writes, for pickle protocols 0 to 5:
  joblib16_p<N>.pkl      joblib.dump(VALUE, protocol=N) by joblib 1.6
  joblib16_p<N>.pkl.idx  where joblib's own unpickler found each array
  joblib16_meta_p<N>.pkl (and .idx) the same for make_meta_value()
then for protocols 2 and 4 joblib16_dtypes_p<N>.pkl (and .idx) for
make_dtypes_value(), and the same .idx for three files copied from joblib's
test data (BSD):
  joblib_0.11.0_pickle_py36_np111.pkl  joblib 0.11, protocol 3, no padding
  joblib_0.10.0_pickle_py27_np17.pkl   joblib 0.10, protocol 2, Python 2
                                       (strings as BINSTRING; read here
                                       with encoding='latin1', which joblib
                                       itself refuses to do)
  joblib_0.9.2_pickle_py35_np19.pkl    joblib 0.9, NDArrayWrapper (legacy)
and writer_vectors.inc: what the Python client sends for VALUE (skeleton,
state pickles, data) as C++ string literals, for joblib_writer_test.cc;
and scanner_vectors.inc: pickles covering every opcode with the opcode list
pickletools.genops gives for them, for pickle_scanner_test.cc.

An .idx file is "end <offset just past STOP>" then one line per array:
"<raw|object|legacy> <offset> <length> <padded 0|1>", and for raw and
object arrays " <dtype> <itemsize> <shape> <C|F>" after it: numpy's
dtype.str ("-" where the reader reports no string: structured, subarray and
void dtypes, StringDType), dtype.itemsize (0 for StringDType), the dims
joined by "," ("()" for 0-d) and the wrapper's order. All of it is
recorded by instrumenting joblib's NumpyArrayWrapper/NDArrayWrapper readers
and read from the arrays they return, so it does not depend on the C++
code under test.
"""
import io
import os
import pickle
import shutil
import sys

import joblib
import numpy as np
from joblib import numpy_pickle
from joblib.numpy_pickle import NumpyArrayWrapper
from joblib.numpy_pickle_compat import NDArrayWrapper

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = '/work/shared/joblib-data'  # joblib/test/data at 53cea7b


def make_value():
    return [
        np.arange(6.).reshape(2, 3),
        {'be': np.arange(5, dtype='>i4'),
         'obj': np.array([1, 'abc', {'a': 1}], dtype=object),
         'u': np.array(['ab', 'c'], dtype='U3')},
        np.array(3.5),                                          # 0-d
        np.zeros((0, 3)),                                       # empty
        np.asfortranarray(np.arange(12, dtype='u2').reshape(3, 4)),
        np.zeros(2, dtype=[('a', 'i1'), ('b', '<f8')]),         # structured
        np.matrix([[1, 2]]),
        "C'est l'été !",
    ]


def make_dtypes_value():
    """One array per kind of dtype whose item size the reader must know."""
    out = {}
    for t in ['?', 'i1', 'u2', 'i4', 'u8', 'f2', 'f4', 'f8', 'g', 'c8', 'c16',
              'G', 'M8[ns]', 'm8[s]', 'S5', 'U3', '>U2', 'V7', '>f8', 'S0']:
        out[t] = np.zeros((2, 3), dtype=t)
    out['struct'] = np.zeros(3, dtype=[('a', 'i1'), ('b', '>f8'), ('c', 'S3')])
    out['aligned'] = np.zeros(3, dtype=np.dtype([('a', 'i1'), ('b', 'f8')], align=True))
    out['offsets'] = np.zeros(2, dtype={'names': ['x', 'y'], 'formats': ['i2', 'f4'],
                                        'offsets': [0, 8], 'itemsize': 16})
    out['nested'] = np.zeros(2, dtype=[('n', [('x', 'i2'), ('y', '>f8', (2,))]),
                                       ('u', 'U2', (2, 2))])
    out['subarray'] = np.zeros(2, dtype=('f8', (2, 3)))
    out['objstruct'] = np.array([(1, 'x')], dtype=[('i', 'i8'), ('o', 'O')])
    out['stringdtype'] = np.array(['a', 'bc'], dtype=np.dtypes.StringDType())
    out['u_again'] = np.zeros(4, dtype='U3')  # may reuse the memoized dtype
    return out


def make_meta_value():
    """Arrays whose dtype string, item size, shape and order the reader must
    report exactly: memoized dtypes, byte orders and order strings, every
    datetime unit, shapes of 0 to 10 dims (a 5- to 9-tuple of ints must not
    pass for a dtype state), structured and object dtypes."""
    f8 = np.dtype('f8')
    out = [
        np.arange(6.).reshape(2, 3), np.array(2.5), np.zeros((0, 4)),  # f8 x3
        np.asfortranarray(np.arange(6, dtype='>i4').reshape(2, 3)),
        np.asfortranarray(np.zeros((2, 3, 4), dtype='<c16')),  # 'F' again
        np.asfortranarray(np.zeros((3, 2), dtype='>c8')),
        np.zeros((4, 1), order='F'),  # C and F contiguous: order 'C'
        np.array([True, False]), np.zeros(3, dtype='>u2'),
        np.zeros(2, dtype='G'), np.zeros(2, dtype='>f2'),
        np.array(['a', 'bcd'], dtype='U10'), np.array(['x'], dtype='>U1'),
        np.array([b'ab'], dtype='S10'), np.array([b'z'], dtype='S1'),
        np.zeros(2, dtype=np.dtype('f8', metadata={'unit': 'm'})),
        np.array([np.array(1, f8)] * 2, dtype=object),
    ]
    for t in ['M8', 'M8[ns]', 'M8[10ms]', 'M8[s]', 'm8[s]', '>M8[ns]',
              '>m8[25us]', 'M8[Y]', 'M8[M]', 'M8[W]', 'M8[D]', 'm8[h]',
              'm8[m]', 'm8[ps]', 'm8[fs]', 'm8[as]', 'm8']:
        out.append(np.zeros(2, dtype=t))
    for ndim in range(11):
        out.append(np.zeros((1, 2) * (ndim // 2) + (3,) * (ndim % 2), dtype='u1'))
    out.append(np.zeros((2, 0, 5, 1, 1, 1), dtype='i8'))
    out.append(np.asfortranarray(np.zeros((2, 3), dtype=[('a', 'i2'), ('b', '>f4')])))
    out.append(np.rec.array([(1, 2.5)], dtype=[('x', 'i1'), ('y', 'f8')]))
    out.append(np.zeros(2, dtype=[('t', 'M8[us]'), ('v', 'V3'), ('s', '<i2', (2,))]))
    return out


def _meta_fields(array, order):
    dt = array.dtype
    simple = dt.fields is None and dt.subdtype is None and dt.kind not in 'VT'
    assert order in ('C', 'F')
    shape = ','.join(str(d) for d in array.shape) or '()'
    return (dt.str if simple else '-', 0 if dt.kind == 'T' else dt.itemsize,
            shape, order)


def record_index(path, encoding=None):
    """Loads `path` with joblib, recording where each array's data was and
    what the array is."""
    records = []
    orig_read_array = NumpyArrayWrapper.read_array
    orig_nd_read = NDArrayWrapper.read

    def read_array(self, unpickler, ensure_native_byte_order):
        fh = unpickler.file_handle
        start = fh.tell()
        array = orig_read_array(self, unpickler, ensure_native_byte_order)
        end = fh.tell()
        meta = _meta_fields(array, self.order)
        assert array.dtype == self.dtype and array.shape == tuple(self.shape)
        if self.dtype.hasobject:
            records.append(('object', start, end - start, 0) + meta)
        else:
            padded = self.safe_get_numpy_array_alignment_bytes() is not None
            length = array.nbytes
            records.append(('raw', end - length, length, int(padded)) + meta)
        return array

    def nd_read(self, unpickler):
        records.append(('legacy', unpickler.file_handle.tell(), 0, 0))
        return None

    NumpyArrayWrapper.read_array = read_array
    NDArrayWrapper.read = nd_read
    try:
        with open(path, 'rb') as f:
            u = numpy_pickle.NumpyUnpickler(path, f, ensure_native_byte_order=False)
            if encoding is not None:
                u.encoding = encoding  # the pure-Python unpickler's attribute
            u.load()
            end = f.tell()
    finally:
        NumpyArrayWrapper.read_array = orig_read_array
        NDArrayWrapper.read = orig_nd_read
    with open(path + '.idx', 'w') as out:
        out.write(f'end {end}\n')
        for record in records:
            out.write(' '.join(str(field) for field in record) + '\n')


class SkeletonPickler(pickle.Pickler):
    """The client's dump: arrays become persistent ids 0, 1, ..."""

    def __init__(self, f, protocol):
        super().__init__(f, protocol=protocol)
        self.arrays = []

    def persistent_id(self, obj):
        if type(obj) in (np.ndarray, np.matrix, np.memmap):
            self.arrays.append(obj)
            return len(self.arrays) - 1
        return None


def client_dump(value, protocol):
    buf = io.BytesIO()
    p = SkeletonPickler(buf, protocol)
    p.dump(value)
    specs = []
    for arr in p.arrays:
        order = 'F' if (arr.flags.f_contiguous and not arr.flags.c_contiguous) else 'C'
        state = {'subclass': type(arr), 'shape': arr.shape, 'order': order,
                 'dtype': arr.dtype, 'allow_mmap': not arr.dtype.hasobject,
                 'numpy_array_alignment_bytes': 16}
        sb = io.BytesIO()
        sp = pickle.Pickler(sb, protocol=protocol)
        sp.fast = True
        sp.dump(state)
        if arr.dtype.hasobject:
            specs.append(('kObjectStream', sb.getvalue(), pickle.dumps(arr, protocol=5)))
        else:
            specs.append(('kRaw', sb.getvalue(), arr.tobytes(order=order)))
    return buf.getvalue(), specs


def golden_arange6():
    """np.arange(6.).reshape(2, 3) at protocol 4: the client's input, what
    joblib writes, and what persistd must write (built here by the rules in
    joblib_writer.h and checked with joblib.load)."""
    import struct
    arr = np.arange(6.).reshape(2, 3)
    skeleton, specs = client_dump(arr, 4)
    _, state, data = specs[0]
    ref = os.path.join(HERE, 'arange6_p4.tmp')
    joblib.dump(arr, ref, protocol=4)
    with open(ref, 'rb') as f:
        reference = f.read()
    os.remove(ref)
    # The state pickle is PROTO 4, FRAME, the dict opcodes, STOP.
    assert state[:2] == b'\x80\x04' and state[2:3] == b'\x95' and state[-1:] == b'.'
    body = (b'\x8c\x13joblib.numpy_pickle\x8c\x11NumpyArrayWrapper\x93)\x81' +
            state[11:-1] + b'b')
    out = b'\x80\x04' + b'\x95' + struct.pack('<Q', len(body)) + body
    pad = 16 - (len(out) + 1) % 16
    out += bytes([pad]) + b'\xff' * pad + data + b'.'
    with open(ref, 'wb') as f:
        f.write(out)
    assert np.array_equal(joblib.load(ref), arr)
    os.remove(ref)
    # A state pickled without Pickler.fast: it memoizes, which must be refused.
    state_with_memo = pickle.dumps({'shape': (2, 3), 'dtype': arr.dtype}, protocol=4)
    lines = []
    for name, data_ in (('kArange6Skeleton', skeleton), ('kArange6State', state),
                        ('kArange6Data', data), ('kArange6Joblib', reference),
                        ('kArange6Expected', out), ('kStateWithMemo', state_with_memo)):
        lines.append(f'constexpr char {name}[] =')
        lines.append(cpp_literal(data_) + ';')
    return lines


def cpp_literal(data, indent='    '):
    """Octal escapes never swallow the next character, unlike \\x."""
    out, line = [], ''
    for b in data:
        c = chr(b)
        if c in '"\\?':
            piece = '\\' + c
        elif 32 <= b < 127:
            piece = c
        else:
            piece = '\\%03o' % b
        if len(line) + len(piece) > 70:
            out.append(f'{indent}"{line}"')
            line = ''
        line += piece
    out.append(f'{indent}"{line}"')
    return '\n'.join(out)


class _Cls:
    pass


def scanner_pickles():
    """Pickles that between them use every opcode of protocols 0-5."""
    import copyreg
    import struct
    value = [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63, -2**70,
             10**30, 1.5, 'text', 'é' * 3, b'bytes', bytearray(b'ba'), None,
             True, False, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1],
             {}, {'k': 'v'}, {1, 2}, frozenset({3}), _Cls, 'x' * 300]
    rec = [1]
    rec.append(rec)
    tup = ([],)
    tup[0].append(tup)
    value += [rec, tup]
    out = []
    for protocol in range(6):
        out.append(_py_dumps(value, protocol))  # the pure-Python pickler
    out.append(pickle.dumps([pickle.PickleBuffer(b'ro'),
                             pickle.PickleBuffer(bytearray(b'rw'))],
                            protocol=5, buffer_callback=lambda b: False))
    copyreg.add_extension('copyreg', '_reconstructor', 300)
    try:
        out.append(pickle.dumps(copyreg._reconstructor, protocol=2))
    finally:
        copyreg.remove_extension('copyreg', '_reconstructor', 300)
    # Opcodes no pickler of Python 3 writes.
    q = lambda n: struct.pack('<Q', n)
    i = lambda n: struct.pack('<i', n)
    body = (b'(' b'I00\n' b'I01\n' b'L12345678901234567890L\n' b'F1.25\n'
            b"S'a\\'b'\n" b'T' + i(3) + b'abc' b'U\x02de'
            b'\x8b' + i(9) + bytes(8) + b'\x01'
            b'\x8d' + q(2) + b'hi' b'\x8e' + q(3) + b'xyz'
            b'\x82\x01' b'\x83\x01\x02' b'\x84\xff\xff\xff\xff'
            b'P12\n' b'K\x07Q'
            b'N0' b'(N1' b'N2' b'0'
            b'p7\n' b'g7\n' b'r\x00\x00\x01\x00' b'j\x00\x00\x01\x00'
            b'(K\x01\x91' b'\x8f(K\x02\x90'
            b'(cmod\nname\n)o' b'(K\x01imod\nname\n'
            b'cmod\nname\n)}\x92'
            b'B\x02\x00\x00\x00ab' b'cmod\nname\n)\x81}(K\x01K\x02ub'
            b'l.')
    out.append(b'\x80\x04\x95' + q(len(body) - 1) + body[:-1] + b'.')
    return out


def _py_dumps(value, protocol):
    buf = io.BytesIO()
    pickle._Pickler(buf, protocol=protocol).dump(value)
    return buf.getvalue()


def scanner_vectors():
    import pickletools
    lines = ['// Generated by make_testdata.py with pickletools.genops. Do not edit.',
             '// Each pickle, then {code, offset, length, int arg or kNoInt,',
             '// payload size or kNoSize} for each of its opcodes.', '']
    for n, data in enumerate(scanner_pickles()):
        lines.append(f'constexpr char kPickle{n}[] =')
        lines.append(cpp_literal(data) + ';')
        ops = list(pickletools.genops(data))
        lines.append(f'const ExpectedOp kOps{n}[] = {{')
        for j, (op, arg, pos) in enumerate(ops):
            end = ops[j + 1][2] if j + 1 < len(ops) else len(data)
            int_arg = 'kNoInt'
            if isinstance(arg, bool):
                int_arg = str(int(arg))
            elif isinstance(arg, int) and -2**63 <= arg < 2**63 and op.name not in ('LONG1', 'LONG4', 'LONG') or (
                    op.name in ('LONG1', 'LONG4', 'LONG') and isinstance(arg, int) and -2**63 <= arg < 2**63):
                int_arg = str(arg) + 'LL' if arg != -2**63 else '(-9223372036854775807LL - 1)'
            size = 'kNoSize'
            if isinstance(arg, (bytes, bytearray)) and op.name not in ('STRING',):
                size = str(len(arg))
            elif isinstance(arg, str) and op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8'):
                size = str(len(arg.encode('utf-8', 'surrogatepass')))
            lines.append(f'    {{0x{op.code.encode("latin-1")[0]:02x}, {pos}, {end - pos}, {int_arg}, {size}}},  // {op.name}')
        lines.append('};')
        lines.append('')
    lines.append('const ScannerVector kScannerVectors[] = {')
    for n in range(len(scanner_pickles())):
        lines.append(f'    {{L(kPickle{n}), kOps{n}, sizeof(kOps{n}) / sizeof(kOps{n}[0])}},')
    lines.append('};')
    return '\n'.join(lines) + '\n'


def main():
    value = make_value()
    for protocol in range(6):
        path = os.path.join(HERE, f'joblib16_p{protocol}.pkl')
        joblib.dump(value, path, protocol=protocol)
        record_index(path)
        path = os.path.join(HERE, f'joblib16_meta_p{protocol}.pkl')
        joblib.dump(make_meta_value(), path, protocol=protocol)
        record_index(path)
    for protocol in (2, 4):
        path = os.path.join(HERE, f'joblib16_dtypes_p{protocol}.pkl')
        joblib.dump(make_dtypes_value(), path, protocol=protocol)
        record_index(path)
    for name in ('joblib_0.11.0_pickle_py36_np111.pkl',
                 'joblib_0.10.0_pickle_py27_np17.pkl',
                 'joblib_0.9.2_pickle_py35_np19.pkl'):
        shutil.copyfile(os.path.join(SHARED, name), os.path.join(HERE, name))
        record_index(os.path.join(HERE, name),
                     encoding='latin1' if '_py27_' in name else None)

    lines = ['// Generated by make_testdata.py from real joblib ' + joblib.__version__ +
             ', numpy ' + np.__version__ + '. Do not edit.',
             '// What the Python client sends for make_value() at protocols 0-5.', '']
    for protocol in range(6):
        skeleton, specs = client_dump(value, protocol)
        lines.append(f'constexpr char kSkeletonP{protocol}[] =')
        lines.append(cpp_literal(skeleton) + ';')
        for k, (kind, state, data) in enumerate(specs):
            lines.append(f'constexpr char kStateP{protocol}A{k}[] =')
            lines.append(cpp_literal(state) + ';')
            lines.append(f'constexpr char kDataP{protocol}A{k}[] =')
            lines.append(cpp_literal(data) + ';')
        lines.append(f'const WriterVector kVectorP{protocol} = {{')
        lines.append(f'    {protocol}, L(kSkeletonP{protocol}), {{')
        for k, (kind, _, _) in enumerate(specs):
            lines.append(f'        {{DumpArraySpec::Kind::{kind}, L(kStateP{protocol}A{k}), '
                         f'L(kDataP{protocol}A{k})}},')
        lines.append('    }};')
        lines.append('')
    lines += golden_arange6()
    with open(os.path.join(HERE, 'writer_vectors.inc'), 'w') as f:
        f.write('\n'.join(lines))
    with open(os.path.join(HERE, 'scanner_vectors.inc'), 'w') as f:
        f.write(scanner_vectors())


if __name__ == '__main__':
    sys.exit(main())
