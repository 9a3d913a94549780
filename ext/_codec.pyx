# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled fast path of the bus codec (``bciarm.bus._codec``).

:mod:`bciarm.bus.codec` is the reference: it validates every frame and names
the reason of every rejection.  This module takes only the common case -- a
well-formed frame of a topic the reference has already decoded once -- and
builds exactly the message the reference would; for anything else
(unusual but valid, or invalid) it returns ``None`` and the reference decides.
So it never accepts what the reference rejects, and never rejects at all.

Why: a frame is decoded once per hop, after the receiving process woke up with
cold caches, and there every Python-level check of the reference costs several
times its warm price (measured ≈ 25 µs per 1024-channel frame in the bus
benchmark).  The same checks in C touch a fraction of the memory.

The same holds for :meth:`FastCodec.encode`: it packs the reference's map
(``{"v", "type", "h", "b"}``) for a message whose fields are the usual types,
and returns ``None`` (the reference encodes) otherwise.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject, PyObject_GenericSetAttr
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.math cimport isfinite
from libc.string cimport memcpy

cimport numpy as cnp

cnp.import_array()

#: type numbers of bool .. clongdouble (NPY_BOOL = 0 ... NPY_CLONGDOUBLE = 16): plain numbers
cdef int N_PLAIN_TYPES = 17

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1

# field kinds (the reference's strings, numbered)
cdef enum:
    K_ARRAY = 0
    K_FLOAT = 1
    K_INT = 2
    K_STR = 3
    K_BOOL = 4
    K_STR_TUPLE = 5
    K_OTHER = 6


cdef class _Field:
    cdef public str name
    cdef int kind
    # arrays
    cdef dict dtypes          # dtype string -> (numpy dtype, itemsize, float kind)
    cdef Py_ssize_t ndim
    cdef tuple shape          # fixed sizes (None entries free) or None
    cdef long long max_size
    cdef bint finite


cdef class _Class:
    cdef object cls
    cdef str type_name
    cdef tuple fields         # of _Field, in field order
    cdef Py_ssize_t n_fields


cdef inline bint _i64(object v, long long* out):
    """``v`` is exactly an int within int64 (bool excluded)."""
    cdef int overflow = 0
    if type(v) is not int:
        return False
    out[0] = PyLong_AsLongLongAndOverflow(v, &overflow)
    return overflow == 0


cdef class FastCodec:
    """Fast decode/encode of well-formed frames; ``None`` sends a frame to the reference.

    Parameters
    ----------
    header_cls : type
        :class:`bciarm.bus.messages.Header`.
    schema_version : int
    frombuffer, dtype : callables
        ``numpy.frombuffer`` and ``numpy.dtype``.
    packb : callable
        The reference's msgpack packer (``use_bin_type=True``).
    unpackb : callable
        ``msgpack.unpackb`` bound to the reference's options.
    max_payload, max_src, max_str : int
        The reference's bounds.
    """

    cdef object header_cls, frombuffer, np_dtype, packb, unpackb
    cdef long long version
    cdef Py_ssize_t max_payload, max_src, max_str
    cdef dict topics          # topic bytes -> (topic str, _Class)
    cdef dict classes         # message class -> _Class
    cdef list dtype_names     # numpy type number -> its name on the wire ("<f8")
    cdef object s_v, s_type, s_h, s_b, s_dtype, s_shape, s_data

    def __init__(self, header_cls, int schema_version, frombuffer, np_dtype, packb, unpackb,
                 Py_ssize_t max_payload, Py_ssize_t max_src, Py_ssize_t max_str):
        self.header_cls = header_cls
        self.version = schema_version
        self.frombuffer = frombuffer
        self.np_dtype = np_dtype
        self.packb = packb
        self.unpackb = unpackb
        self.max_payload = max_payload
        self.max_src = max_src
        self.max_str = max_str
        self.topics = {}
        self.classes = {}
        self.dtype_names = [None] * N_PLAIN_TYPES
        self.s_v, self.s_type, self.s_h, self.s_b = "v", "type", "h", "b"
        self.s_dtype, self.s_shape, self.s_data = "dtype", "shape", "data"

    def add_class(self, cls, specs):
        """Learn a message class: ``specs`` are (name, kind, ArraySpec or None) in field order."""
        cdef _Class c = _Class()
        cdef _Field f
        kinds = {"array": K_ARRAY, "float": K_FLOAT, "int": K_INT, "str": K_STR,
                 "bool": K_BOOL, "str_tuple": K_STR_TUPLE}
        c.cls = cls
        c.type_name = cls.__name__
        out = []
        for name, kind, arr in specs:
            f = _Field()
            f.name = name
            f.kind = kinds.get(kind, K_OTHER)
            if f.kind == K_ARRAY:
                f.dtypes = {}
                for d in arr.dtypes:
                    dt = self.np_dtype(d)
                    f.dtypes[d] = (dt, dt.itemsize, dt.kind == "f")
                f.ndim = arr.ndim
                f.shape = tuple(arr.shape) if arr.shape is not None else None
                f.max_size = arr.max_size
                f.finite = arr.finite
            out.append(f)
        c.fields = tuple(out)
        c.n_fields = len(out)
        self.classes[cls] = c

    def add_topic(self, bytes topic_b, str topic, cls):
        """Take frames on ``topic`` (already decoded once by the reference) from now on."""
        c = self.classes.get(cls)
        if c is not None and len(self.topics) < 4096:
            self.topics[topic_b] = (topic, c)

    # ------------------------------------------------------------------ decode

    def decode(self, topic_b, payload):
        """``(topic, message)`` for a well-formed frame, else ``None``."""
        cdef _Class c
        cdef _Field f
        cdef PyObject* p
        cdef long long v, seq, t_ns, nseq, nt
        cdef Py_ssize_t i
        if type(topic_b) is not bytes or type(payload) is not bytes:
            return None
        if PyBytes_GET_SIZE(payload) > self.max_payload:
            return None
        p = PyDict_GetItem(self.topics, topic_b)
        if p == NULL:
            return None
        entry = <object>p
        topic = entry[0]
        c = <_Class>entry[1]
        try:
            top = self.unpackb(payload)
        except Exception:
            return None
        if type(top) is not dict or PyDict_Size(top) != 4:
            return None
        p = PyDict_GetItem(top, self.s_v)
        if p == NULL or not _i64(<object>p, &v) or v != self.version:
            return None
        p = PyDict_GetItem(top, self.s_type)
        if p == NULL or type(<object>p) is not str or <str>p != c.type_name:
            return None
        p = PyDict_GetItem(top, self.s_h)
        if p == NULL:
            return None
        h = <object>p
        if type(h) is not list or PyList_GET_SIZE(h) != 5:
            return None
        src = <object>PyList_GET_ITEM(h, 2)
        if not (_i64(<object>PyList_GET_ITEM(h, 0), &seq) and seq >= 0
                and _i64(<object>PyList_GET_ITEM(h, 1), &t_ns)
                and _i64(<object>PyList_GET_ITEM(h, 3), &nseq)
                and _i64(<object>PyList_GET_ITEM(h, 4), &nt)
                and type(src) is str and len(<str>src) <= self.max_src):
            return None
        p = PyDict_GetItem(top, self.s_b)
        if p == NULL:
            return None
        body = <object>p
        if type(body) is not dict or PyDict_Size(body) != c.n_fields:
            return None
        values = []
        for i in range(c.n_fields):
            f = <_Field>c.fields[i]
            p = PyDict_GetItem(body, f.name)
            if p == NULL:
                return None
            val = self._field(f, <object>p)
            if val is None:
                return None
            values.append(val)
        header = self.header_cls.__new__(self.header_cls)
        PyObject_GenericSetAttr(header, "seq", <object>PyList_GET_ITEM(h, 0))
        PyObject_GenericSetAttr(header, "t_ns", <object>PyList_GET_ITEM(h, 1))
        PyObject_GenericSetAttr(header, "src", src)
        PyObject_GenericSetAttr(header, "neural_seq", <object>PyList_GET_ITEM(h, 3))
        PyObject_GenericSetAttr(header, "neural_t_ns", <object>PyList_GET_ITEM(h, 4))
        msg = c.cls.__new__(c.cls)
        PyObject_GenericSetAttr(msg, "header", header)
        for i in range(c.n_fields):
            PyObject_GenericSetAttr(msg, (<_Field>c.fields[i]).name, values[i])
        return topic, msg

    cdef object _field(self, _Field f, object raw):
        cdef long long v
        cdef double x
        cdef Py_ssize_t n, i
        if f.kind == K_FLOAT:
            if type(raw) is float and isfinite(<double>raw):
                return raw
            return None
        if f.kind == K_INT:
            return raw if _i64(raw, &v) else None
        if f.kind == K_STR:
            return raw if type(raw) is str and len(<str>raw) <= self.max_str else None
        if f.kind == K_BOOL:
            return raw if type(raw) is bool else None
        if f.kind == K_STR_TUPLE:
            if type(raw) is not list:
                return None
            n = PyList_GET_SIZE(raw)
            if n > 64:
                return None
            for i in range(n):
                s = <object>PyList_GET_ITEM(raw, i)
                if type(s) is not str or len(<str>s) > 256:
                    return None
            return tuple(raw)
        if f.kind == K_ARRAY:
            return self._array(f, raw)
        return None

    cdef object _array(self, _Field f, object raw):
        cdef PyObject* p
        cdef long long n, size = 1
        cdef Py_ssize_t i, ndim, nbytes
        cdef const char* buf
        cdef double d
        cdef float s
        if type(raw) is not dict or PyDict_Size(raw) != 3:
            return None
        p = PyDict_GetItem(raw, self.s_dtype)
        if p == NULL or type(<object>p) is not str:
            return None
        p = PyDict_GetItem(f.dtypes, <object>p)
        if p == NULL:
            return None
        dtype, itemsize, is_float = <tuple>(<object>p)
        p = PyDict_GetItem(raw, self.s_shape)
        if p == NULL or type(<object>p) is not list:
            return None
        shape = <object>p
        ndim = PyList_GET_SIZE(shape)
        if ndim != f.ndim:
            return None
        for i in range(ndim):
            if not _i64(<object>PyList_GET_ITEM(shape, i), &n) or n < 0 or n > f.max_size:
                return None
            if f.shape is not None:
                want = f.shape[i]
                if want is not None and want != n:
                    return None
            size *= n
            if size > f.max_size:
                return None
        p = PyDict_GetItem(raw, self.s_data)
        if p == NULL or type(<object>p) is not bytes:
            return None
        data = <object>p
        nbytes = PyBytes_GET_SIZE(data)
        if nbytes != size * <long long>itemsize:
            return None
        if f.finite and is_float:
            buf = PyBytes_AS_STRING(data)
            if itemsize == 8:
                for i in range(<Py_ssize_t>size):
                    memcpy(&d, buf + 8 * i, 8)
                    if not isfinite(d):
                        return None
            elif itemsize == 4:
                for i in range(<Py_ssize_t>size):
                    memcpy(&s, buf + 4 * i, 4)
                    if not isfinite(s):
                        return None
            else:
                return None
        arr = self.frombuffer(data, dtype)
        if ndim != 1:
            arr = arr.reshape(tuple(shape))
        return arr

    # ------------------------------------------------------------------ encode

    def encode(self, msg):
        """The payload of ``msg`` (a registered class) if its fields are the usual
        types (C-contiguous little-endian arrays of ndim >= 1, floats, ...), else ``None``."""
        cdef PyObject* p
        cdef _Class c
        cdef _Field f
        cdef Py_ssize_t i, j, nd
        cdef cnp.npy_intp* dims
        p = PyDict_GetItem(self.classes, type(msg))
        if p == NULL:
            return None
        c = <_Class>p
        hd = msg.header
        if type(hd) is not self.header_cls:
            return None
        body = {}
        for i in range(c.n_fields):
            f = <_Field>c.fields[i]
            val = getattr(msg, f.name)
            if f.kind == K_ARRAY:
                if type(val) is not _ndarray:
                    return None
                arr = <cnp.ndarray>val
                nd = cnp.PyArray_NDIM(arr)
                if nd == 0 or not cnp.PyArray_IS_C_CONTIGUOUS(arr) \
                        or not cnp.PyArray_ISNOTSWAPPED(arr):
                    return None
                # the dtype's name on the wire ("<f8"), per type number of the plain
                # numeric types (one name each in native byte order); others: asked
                tn = cnp.PyArray_TYPE(arr)
                if 0 <= tn < N_PLAIN_TYPES:
                    name = self.dtype_names[tn]
                    if name is None:
                        name = self.dtype_names[tn] = val.dtype.str
                else:
                    name = val.dtype.str
                dims = cnp.PyArray_DIMS(arr)
                shape = [dims[j] for j in range(nd)]
                body[f.name] = {"dtype": name, "shape": shape,
                                "data": PyBytes_FromStringAndSize(<char*>cnp.PyArray_DATA(arr),
                                                                  cnp.PyArray_NBYTES(arr))}
            elif f.kind == K_FLOAT:
                if type(val) is not float:
                    return None
                body[f.name] = val
            elif f.kind == K_STR_TUPLE:
                if type(val) is not tuple:
                    return None
                body[f.name] = list(val)
            elif f.kind == K_OTHER:
                return None
            else:
                body[f.name] = val
        return self.packb({"v": self.version, "type": c.type_name,
                           "h": [hd.seq, hd.t_ns, hd.src, hd.neural_seq, hd.neural_t_ns],
                           "b": body})


import numpy as _np
_ndarray = _np.ndarray
