# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels of the Kalman-filter velocity decoder (``bciarm.decoders._kalman``).

All arrays are C-contiguous float64, matrices row-major. ``d`` is the state
dimension (kinematics plus the trailing constant 1), ``N`` the number of
channels. Each kernel's docstring gives its NumPy equivalent; the Python side
(:mod:`bciarm.decoders.kalman`) owns validation of model matrices and the
filter state, and these kernels only check what they must to stay memory-safe.

Two update rules are implemented, each as one ``nogil`` inner routine shared by
the single-step kernel, the batch kernel and the stateful filter objects, so a
batch run performs exactly the same floating-point operations as a loop of
single steps:

* steady:  ``x <- F x + K z``                               O(N d + d^2)
* full (information / Woodbury form)::

      x- = A x;  P- = A P A' + W
      P  = solve(I + P- S, P-)          # S = C' Q^-1 C, d x d
      x  = x- + P (G z - S x-)          # G = C' Q^-1,   d x N
                                                            O(N d + d^3)

The full filter objects and ``full_batch`` skip the covariance half once its
floating-point limit cycle is known (see ``_full_update_cached``): the result
is bit-identical to recomputing it.

Only the ``G z`` / ``K z`` products touch N-sized data; they go through BLAS
``dgemv``. Nothing N x N is ever formed here.

A step first computes the new state into scratch memory and commits it only if
every entry is finite, so a NaN/Inf observation (or a diverging filter) raises
``ValueError`` and leaves the state untouched. Checking the d-sized result
instead of the N-sized input keeps the check O(d); IEEE arithmetic guarantees a
non-finite z_i reaches the result (NaN * 0 is NaN, Inf * 0 is NaN).
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport fabs, isfinite
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from scipy.linalg.cython_blas cimport dgemv

cnp.import_array()

# Steady-state scratch lives on the C stack up to this state size.
cdef enum:
    _STACK_D = 32


# --------------------------------------------------------------------------
# nogil building blocks
# --------------------------------------------------------------------------

cdef inline void _gemv_wide(const double* M, const double* v, double* out,
                            int rows, int cols) noexcept nogil:
    """out = M @ v for a row-major (rows x cols) M, via BLAS.

    A row-major M is the column-major (cols x rows) matrix M', so M @ v is
    dgemv('T') on it: each output is one contiguous dot product of length cols.
    """
    cdef char trans = b'T'
    cdef int inc = 1
    cdef double one = 1.0
    cdef double zero = 0.0
    dgemv(&trans, &cols, &rows, &one, <double*>M, &cols, <double*>v, &inc,
          &zero, out, &inc)


cdef inline bint _all_finite(const double* v, Py_ssize_t n) noexcept nogil:
    """np.isfinite(v).all()"""
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(v[i]):
            return False
    return True


cdef inline void _emit(const double* x, double* out, int n_out, int n_pos,
                       double gain) noexcept nogil:
    """out[:] = x[:n_out]; out[n_pos:] *= gain   (gain scales velocity only)"""
    cdef int i
    for i in range(n_pos):
        out[i] = x[i]
    for i in range(n_pos, n_out):
        out[i] = gain * x[i]


cdef void _solve_small(double* M, double* B, int d) noexcept nogil:
    """B[:] = np.linalg.solve(M, B) for d x d row-major M and B; M is destroyed.

    Gaussian elimination with partial pivoting on the augmented system [M | B].
    d is a state size (3-7 typically), so this beats a LAPACK call.
    """
    cdef int col, r, c, p
    cdef double best, f, tmp, piv
    for col in range(d):
        p = col
        best = fabs(M[col * d + col])
        for r in range(col + 1, d):
            if fabs(M[r * d + col]) > best:
                best = fabs(M[r * d + col])
                p = r
        if p != col:
            for c in range(col, d):
                tmp = M[col * d + c]
                M[col * d + c] = M[p * d + c]
                M[p * d + c] = tmp
            for c in range(d):
                tmp = B[col * d + c]
                B[col * d + c] = B[p * d + c]
                B[p * d + c] = tmp
        piv = M[col * d + col]
        for r in range(col + 1, d):
            f = M[r * d + col] / piv
            for c in range(col + 1, d):
                M[r * d + c] -= f * M[col * d + c]
            for c in range(d):
                B[r * d + c] -= f * B[col * d + c]
    for r in range(d - 1, -1, -1):
        for p in range(r + 1, d):
            f = M[r * d + p]
            for c in range(d):
                B[r * d + c] -= f * B[p * d + c]
        piv = M[r * d + r]
        for c in range(d):
            B[r * d + c] /= piv


cdef bint _steady_update(const double* F, const double* K, double* x,
                         const double* z, double* xn, int d, int n) noexcept nogil:
    """x[:] = F @ x + K @ z, committed only if finite (returns False otherwise).

    xn is d-sized scratch.
    """
    cdef int i, j
    cdef double acc
    _gemv_wide(K, z, xn, d, n)                      # xn = K z
    for i in range(d):                              # xn += F x
        acc = xn[i]
        for j in range(d):
            acc += F[i * d + j] * x[j]
        xn[i] = acc
    if not _all_finite(xn, d):
        return False
    memcpy(x, xn, d * sizeof(double))
    return True


cdef inline Py_ssize_t _full_work_size(Py_ssize_t d) noexcept nogil:
    return 3 * d * d + 3 * d


cdef bint _full_update(const double* A, const double* W, const double* S,
                       const double* G, double* x, double* P, const double* z,
                       double* work, int d, int n) noexcept nogil:
    """One information-form Kalman step; x, P updated in place if finite.

    NumPy equivalent::

        xp = A @ x
        Pp = A @ P @ A.T + W
        Pn = np.linalg.solve(np.eye(d) + Pp @ S, Pp);  Pn = (Pn + Pn.T) / 2
        x[:] = xp + Pn @ (G @ z - S @ xp);  P[:] = Pn

    work holds _full_work_size(d) doubles: Pp, M, Pn (d x d), xp, r, xn (d).
    """
    cdef double* Pp = work
    cdef double* M = work + d * d
    cdef double* Pn = work + 2 * d * d
    cdef double* xp = work + 3 * d * d
    cdef double* r = xp + d
    cdef double* xn = r + d
    cdef int i, j, k
    cdef double acc, sym

    for i in range(d):                              # xp = A x
        acc = 0.0
        for j in range(d):
            acc += A[i * d + j] * x[j]
        xp[i] = acc
    for i in range(d):                              # M = A P (scratch)
        for j in range(d):
            acc = 0.0
            for k in range(d):
                acc += A[i * d + k] * P[k * d + j]
            M[i * d + j] = acc
    for i in range(d):                              # Pp = (A P) A' + W
        for j in range(d):
            acc = W[i * d + j]
            for k in range(d):
                acc += M[i * d + k] * A[j * d + k]
            Pp[i * d + j] = acc
    for i in range(d):                              # M = I + Pp S ; Pn = Pp
        for j in range(d):
            acc = 1.0 if i == j else 0.0
            for k in range(d):
                acc += Pp[i * d + k] * S[k * d + j]
            M[i * d + j] = acc
            Pn[i * d + j] = Pp[i * d + j]
    _solve_small(M, Pn, d)                          # Pn = solve(M, Pp)
    for i in range(d):                              # Pn = (Pn + Pn') / 2
        for j in range(i + 1, d):
            sym = 0.5 * (Pn[i * d + j] + Pn[j * d + i])
            Pn[i * d + j] = sym
            Pn[j * d + i] = sym
    _gemv_wide(G, z, r, d, n)                       # r = G z - S xp
    for i in range(d):
        acc = r[i]
        for j in range(d):
            acc -= S[i * d + j] * xp[j]
        r[i] = acc
    for i in range(d):                              # xn = xp + Pn r
        acc = xp[i]
        for j in range(d):
            acc += Pn[i * d + j] * r[j]
        xn[i] = acc
    if not (_all_finite(xn, d) and _all_finite(Pn, d * d)):
        return False
    memcpy(x, xn, d * sizeof(double))
    memcpy(P, Pn, d * d * sizeof(double))
    return True


cdef bint _full_update_known(const double* A, const double* S, const double* G,
                             double* x, const double* Pn, const double* z,
                             double* work, int d, int n) noexcept nogil:
    """The state half of :func:`_full_update` when its new covariance Pn is known.

    Performs exactly the state operations of :func:`_full_update` (same order,
    same rounding) with the given Pn, so the result is bit-identical. O(N d + d^2).
    """
    cdef double* xp = work + 3 * d * d
    cdef double* r = xp + d
    cdef double* xn = r + d
    cdef int i, j
    cdef double acc
    for i in range(d):                              # xp = A x
        acc = 0.0
        for j in range(d):
            acc += A[i * d + j] * x[j]
        xp[i] = acc
    _gemv_wide(G, z, r, d, n)                       # r = G z - S xp
    for i in range(d):
        acc = r[i]
        for j in range(d):
            acc -= S[i * d + j] * xp[j]
        r[i] = acc
    for i in range(d):                              # xn = xp + Pn r
        acc = xp[i]
        for j in range(d):
            acc += Pn[i * d + j] * r[j]
        xn[i] = acc
    if not _all_finite(xn, d):
        return False
    memcpy(x, xn, d * sizeof(double))
    return True


# The covariance recursion does not depend on the data. After a transient it
# reaches a floating-point limit: a fixed point or, with rounding in the last
# bits, a short cycle (periods 2 and 6 are seen with 7 states). Once the cycle
# is known the next P is a look-up, and a step only needs its O(N d + d^2) state
# half -- bit-identical to computing P. Anything that changes P from outside
# (reset, an intervention on the covariance) is caught by comparing P with the
# expected cycle member (O(d^2)) and resumes the full recursion.

cdef enum:
    _MAX_CYCLE = 8      # longest covariance cycle looked for


cdef inline Py_ssize_t _cycle_work_size(Py_ssize_t d) noexcept nogil:
    # the cycle, the last _MAX_CYCLE inputs of the recursion, its last output
    return (2 * _MAX_CYCLE + 1) * d * d


cdef bint _full_update_cached(const double* A, const double* W, const double* S,
                              const double* G, double* x, double* P, const double* z,
                              double* work, int d, int n, double* cyc,
                              int* state) noexcept nogil:
    """:func:`_full_update`, looking P up once the recursion's limit cycle is known.

    ``cyc`` holds :func:`_cycle_work_size` doubles; ``state`` four ints, all
    0 at the start: cycle length, position in the cycle, number of
    consecutive recursion inputs remembered, ring head.
    """
    cdef Py_ssize_t dd = d * d
    cdef size_t nb = dd * sizeof(double)
    cdef double* members = cyc                          # _MAX_CYCLE x (d x d)
    cdef double* ring = cyc + _MAX_CYCLE * dd           # _MAX_CYCLE x (d x d)
    cdef double* last = cyc + 2 * _MAX_CYCLE * dd       # output of the last recursion step
    cdef int ncyc = state[0], pos = state[1], nhist = state[2], head = state[3]
    cdef int nxt, k, i, idx
    if ncyc > 0 and memcmp(P, members + pos * dd, nb) == 0:
        nxt = pos + 1 if pos + 1 < ncyc else 0
        if not _full_update_known(A, S, G, x, members + nxt * dd, z, work, d, n):
            return False
        if nxt != pos:
            memcpy(P, members + nxt * dd, nb)
        state[1] = nxt
        return True
    state[0] = 0
    if nhist > 0 and memcmp(P, last, nb) != 0:
        nhist = 0                   # P changed from outside: the history is not a chain
    head = head + 1 if head + 1 < _MAX_CYCLE else 0
    memcpy(ring + head * dd, P, nb)
    if nhist < _MAX_CYCLE:
        nhist += 1
    if not _full_update(A, W, S, G, x, P, z, work, d, n):
        state[2] = 0
        return False
    # ring[head - j] are consecutive inputs, each mapped to the next; if the new
    # P equals ring[head - k], the cycle is ring[head - k .. head].
    for k in range(nhist):
        idx = head - k if head >= k else head - k + _MAX_CYCLE
        if memcmp(P, ring + idx * dd, nb) == 0:
            for i in range(k + 1):
                memcpy(members + i * dd, ring + ((idx + i) % _MAX_CYCLE) * dd, nb)
            state[0] = k + 1
            state[1] = 0
            break
    memcpy(last, P, nb)
    state[2] = nhist
    state[3] = head
    return True


# --------------------------------------------------------------------------
# Python-level argument helpers (GIL held)
# --------------------------------------------------------------------------

cdef inline bint _is_f64_carray(object a, int ndim):
    """True if a is an exact ndarray, native float64, C-contiguous, aligned."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_CheckExact(a):
        return False
    arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISBEHAVED_RO(arr))


cdef cnp.ndarray _observation(object z, Py_ssize_t n):
    """z as a C-contiguous float64 vector of length n (no copy when it already is)."""
    cdef cnp.ndarray arr
    if _is_f64_carray(z, 1):
        arr = <cnp.ndarray>z
    else:
        arr = np.ascontiguousarray(z, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(
                f"z must be a 1-D array of {n} channel values, got shape {np.shape(arr)}")
    if cnp.PyArray_DIM(arr, 0) != n:
        raise ValueError(f"z must have {n} channel values, got {cnp.PyArray_DIM(arr, 0)}")
    return arr


cdef inline cnp.ndarray _empty_vector(Py_ssize_t n):
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    return <cnp.ndarray>cnp.PyArray_EMPTY(1, dims, cnp.NPY_DOUBLE, 0)


cdef int _check_square(const double[:, ::1] M, Py_ssize_t d, str name) except -1:
    if M.shape[0] != d or M.shape[1] != d:
        raise ValueError(f"{name} must be {d}x{d}, got {M.shape[0]}x{M.shape[1]}")
    return 0


cdef int _check_wide(const double[:, ::1] M, Py_ssize_t d, str name) except -1:
    if M.shape[0] != d or M.shape[1] < 1:
        raise ValueError(f"{name} must be {d}xN with N >= 1, got {M.shape[0]}x{M.shape[1]}")
    return 0


cdef int _check_output(Py_ssize_t n_out, Py_ssize_t d, int n_pos) except -1:
    if n_out < 1 or n_out > d:
        raise ValueError(f"output length must be in [1, {d}], got {n_out}")
    if n_pos < 0 or n_pos > n_out:
        raise ValueError(f"n_pos must be in [0, {n_out}], got {n_pos}")
    return 0


_NONFINITE = ("non-finite state (z contains NaN/Inf, or the filter diverged); "
              "the filter state was left unchanged")


def full_work_size(Py_ssize_t d):
    """Number of float64 scratch values :func:`full_step` needs for state size d."""
    return _full_work_size(d)


# --------------------------------------------------------------------------
# Steady-state kernels
# --------------------------------------------------------------------------

def steady_step(const double[:, ::1] F, const double[:, ::1] K, double[::1] x,
                z, double[::1] out, int n_pos=0, double gain=1.0):
    """One steady-state step, in place.

    NumPy equivalent::

        x[:] = F @ x + K @ z
        out[:] = x[:len(out)];  out[n_pos:] *= gain

    Raises ValueError (x unchanged) if the new state is not finite.
    """
    cdef int d = F.shape[0]
    cdef int n = K.shape[1]
    cdef double stack[_STACK_D]
    cdef double* xn = stack
    cdef bint ok
    _check_square(F, d, "F")
    _check_wide(K, d, "K")
    if x.shape[0] != d:
        raise ValueError(f"x must have length {d}, got {x.shape[0]}")
    _check_output(out.shape[0], d, n_pos)
    cdef cnp.ndarray zarr = _observation(z, n)
    cdef const double* zp = <const double*>cnp.PyArray_DATA(zarr)
    with nogil:
        if d > _STACK_D:
            xn = <double*>malloc(d * sizeof(double))
        if xn == NULL:
            ok = False
        else:
            ok = _steady_update(&F[0, 0], &K[0, 0], &x[0], zp, xn, d, n)
            if ok:
                _emit(&x[0], &out[0], out.shape[0], n_pos, gain)
        if d > _STACK_D and xn != NULL:
            free(xn)
    if xn == NULL:
        raise MemoryError()
    if not ok:
        raise ValueError(_NONFINITE)


def steady_batch(const double[:, ::1] F, const double[:, ::1] K, const double[::1] x0,
                 const double[:, ::1] Z, double[:, ::1] out, int n_pos=0, double gain=1.0):
    """Run the steady-state filter over the rows of Z from state x0 (x0 not modified).

    NumPy equivalent::

        x = x0.copy()
        for t, z in enumerate(Z):
            x = F @ x + K @ z
            out[t] = x[:out.shape[1]];  out[t, n_pos:] *= gain

    Performs exactly the operations of repeated :func:`steady_step`. Raises
    ValueError naming the first row that gives a non-finite state.
    """
    cdef int d = F.shape[0]
    cdef int n = K.shape[1]
    cdef Py_ssize_t T = Z.shape[0], t
    cdef Py_ssize_t bad = -1
    _check_square(F, d, "F")
    _check_wide(K, d, "K")
    if x0.shape[0] != d:
        raise ValueError(f"x0 must have length {d}, got {x0.shape[0]}")
    if Z.shape[1] != n:
        raise ValueError(f"Z must have {n} columns (channels), got {Z.shape[1]}")
    if out.shape[0] != T:
        raise ValueError(f"out must have {T} rows, got {out.shape[0]}")
    _check_output(out.shape[1], d, n_pos)
    if T == 0:
        return
    cdef double[::1] x = np.array(x0, dtype=np.float64)
    cdef double[::1] xn = np.empty(d, dtype=np.float64)
    with nogil:
        for t in range(T):
            if not _steady_update(&F[0, 0], &K[0, 0], &x[0], &Z[t, 0], &xn[0], d, n):
                bad = t
                break
            _emit(&x[0], &out[t, 0], out.shape[1], n_pos, gain)
    if bad >= 0:
        raise ValueError(f"row {bad} of Z gives a " + _NONFINITE.split(";")[0])


# --------------------------------------------------------------------------
# Full (time-varying gain) kernels
# --------------------------------------------------------------------------

cdef int _check_full(const double[:, ::1] A, const double[:, ::1] W, const double[:, ::1] S,
                     const double[:, ::1] G, Py_ssize_t x_len, const double[:, ::1] P,
                     str xname) except -1:
    cdef Py_ssize_t d = A.shape[0]
    _check_square(A, d, "A")
    _check_square(W, d, "W")
    _check_square(S, d, "S")
    _check_wide(G, d, "G")
    _check_square(P, d, "P")
    if x_len != d:
        raise ValueError(f"{xname} must have length {d}, got {x_len}")
    return 0


def full_step(const double[:, ::1] A, const double[:, ::1] W, const double[:, ::1] S,
              const double[:, ::1] G, double[::1] x, double[:, ::1] P, z,
              double[::1] out, double[::1] work, int n_pos=0, double gain=1.0):
    """One information-form Kalman step, x and P updated in place.

    NumPy equivalent::

        xp = A @ x
        Pp = A @ P @ A.T + W
        P[:] = np.linalg.solve(np.eye(d) + Pp @ S, Pp)   # then symmetrised
        x[:] = xp + P @ (G @ z - S @ xp)
        out[:] = x[:len(out)];  out[n_pos:] *= gain

    with S = C' Q^-1 C and G = C' Q^-1 precomputed. ``work`` is scratch of at
    least ``full_work_size(d)`` values. Raises ValueError (x, P unchanged) if the
    new state is not finite.
    """
    cdef int d = A.shape[0]
    cdef int n = G.shape[1]
    cdef bint ok
    _check_full(A, W, S, G, x.shape[0], P, "x")
    _check_output(out.shape[0], d, n_pos)
    if work.shape[0] < _full_work_size(d):
        raise ValueError(f"work must hold at least {_full_work_size(d)} values")
    cdef cnp.ndarray zarr = _observation(z, n)
    cdef const double* zp = <const double*>cnp.PyArray_DATA(zarr)
    with nogil:
        ok = _full_update(&A[0, 0], &W[0, 0], &S[0, 0], &G[0, 0], &x[0], &P[0, 0],
                          zp, &work[0], d, n)
        if ok:
            _emit(&x[0], &out[0], out.shape[0], n_pos, gain)
    if not ok:
        raise ValueError(_NONFINITE)


def full_batch(const double[:, ::1] A, const double[:, ::1] W, const double[:, ::1] S,
               const double[:, ::1] G, const double[::1] x0, const double[:, ::1] P0,
               const double[:, ::1] Z, double[:, ::1] out, int n_pos=0, double gain=1.0):
    """Run the information-form filter over the rows of Z from (x0, P0), not modified.

    NumPy equivalent: ``x, P = x0.copy(), P0.copy()`` then, for each row z of Z,
    the update of :func:`full_step`, writing the emitted kinematics to ``out[t]``.
    Performs exactly the operations of repeated :func:`full_step`.
    """
    cdef int d = A.shape[0]
    cdef int n = G.shape[1]
    cdef Py_ssize_t T = Z.shape[0], t
    cdef Py_ssize_t bad = -1
    _check_full(A, W, S, G, x0.shape[0], P0, "x0")
    if Z.shape[1] != n:
        raise ValueError(f"Z must have {n} columns (channels), got {Z.shape[1]}")
    if out.shape[0] != T:
        raise ValueError(f"out must have {T} rows, got {out.shape[0]}")
    _check_output(out.shape[1], d, n_pos)
    if T == 0:
        return
    cdef double[::1] x = np.array(x0, dtype=np.float64)
    cdef double[:, ::1] P = np.array(P0, dtype=np.float64)
    cdef double[::1] work = np.empty(_full_work_size(d), dtype=np.float64)
    cdef double[::1] cyc = np.empty(_cycle_work_size(d), dtype=np.float64)
    cdef int cstate[4]
    cstate[0] = cstate[1] = cstate[2] = cstate[3] = 0
    with nogil:
        for t in range(T):
            if not _full_update_cached(&A[0, 0], &W[0, 0], &S[0, 0], &G[0, 0], &x[0], &P[0, 0],
                                       &Z[t, 0], &work[0], d, n, &cyc[0], cstate):
                bad = t
                break
            _emit(&x[0], &out[t, 0], out.shape[1], n_pos, gain)
    if bad >= 0:
        raise ValueError(f"row {bad} of Z gives a " + _NONFINITE.split(";")[0])


# --------------------------------------------------------------------------
# Stateful filters: the low-latency online path
# --------------------------------------------------------------------------
#
# The module-level kernels above convert every argument to a memoryview on each
# call (~0.1-0.2 us apiece). These objects bind the model matrices and the state
# arrays once, so an online step only converts z and allocates the output.

cdef class SteadyFilter:
    """Online steady-state filter over caller-owned arrays F, K and state x.

    Parameters
    ----------
    F : (d, d) ndarray
    K : (d, N) ndarray
    x : (d,) ndarray
        State, updated in place by :meth:`step`; the caller keeps the reference.
    n_out : int
        Number of leading state entries returned per step (d - 1: no constant).
    n_pos : int
        Leading returned entries that ``gain`` does not scale (positions).
    """
    cdef const double[:, ::1] _F
    cdef const double[:, ::1] _K
    cdef double[::1] _x
    cdef double[::1] _xn
    cdef readonly int state_dim, n_channels, n_out, n_pos

    def __cinit__(self, F, K, x, int n_out, int n_pos=0):
        self._F = F
        self._K = K
        self._x = x
        self.state_dim = self._F.shape[0]
        self.n_channels = self._K.shape[1]
        _check_square(self._F, self.state_dim, "F")
        _check_wide(self._K, self.state_dim, "K")
        if self._x.shape[0] != self.state_dim:
            raise ValueError(f"x must have length {self.state_dim}")
        _check_output(n_out, self.state_dim, n_pos)
        self.n_out = n_out
        self.n_pos = n_pos
        self._xn = np.empty(self.state_dim, dtype=np.float64)

    @property
    def work_nbytes(self):
        """Bytes of scratch memory the filter holds (O(d), independent of N)."""
        return self._xn.shape[0] * sizeof(double)

    def step(self, z, double gain=1.0):
        """Advance one bin; return the kinematics as a new float64 vector.

        Same arithmetic as :func:`steady_step`.
        """
        cdef cnp.ndarray zarr = _observation(z, self.n_channels)
        cdef cnp.ndarray out = _empty_vector(self.n_out)
        cdef double* op = <double*>cnp.PyArray_DATA(out)
        cdef const double* zp = <const double*>cnp.PyArray_DATA(zarr)
        cdef bint ok
        with nogil:
            ok = _steady_update(&self._F[0, 0], &self._K[0, 0], &self._x[0], zp,
                                &self._xn[0], self.state_dim, self.n_channels)
            if ok:
                _emit(&self._x[0], op, self.n_out, self.n_pos, gain)
        if not ok:
            raise ValueError(_NONFINITE)
        return out


cdef class FullFilter:
    """Online information-form filter over caller-owned arrays.

    Parameters
    ----------
    A, W, S : (d, d) ndarray
    G : (d, N) ndarray
    x : (d,) ndarray
    P : (d, d) ndarray
        State and posterior covariance, updated in place by :meth:`step`.
    n_out, n_pos : int
        As for :class:`SteadyFilter`.
    cache : bool
        Look the covariance up once its floating-point limit cycle is known
        (default; bit-identical). False recomputes the covariance recursion on
        every step (the benchmark's ``bciarm-full-nocache``).
    """
    cdef const double[:, ::1] _A
    cdef const double[:, ::1] _W
    cdef const double[:, ::1] _S
    cdef const double[:, ::1] _G
    cdef double[::1] _x
    cdef double[:, ::1] _P
    cdef double[::1] _work
    cdef double[::1] _cyc
    cdef int _cstate[4]
    cdef readonly int state_dim, n_channels, n_out, n_pos
    cdef readonly bint cache

    def __cinit__(self, A, W, S, G, x, P, int n_out, int n_pos=0, bint cache=True):
        self._A = A
        self._W = W
        self._S = S
        self._G = G
        self._x = x
        self._P = P
        self.state_dim = self._A.shape[0]
        self.n_channels = self._G.shape[1]
        _check_full(self._A, self._W, self._S, self._G, self._x.shape[0], self._P, "x")
        _check_output(n_out, self.state_dim, n_pos)
        self.n_out = n_out
        self.n_pos = n_pos
        self._work = np.empty(_full_work_size(self.state_dim), dtype=np.float64)
        self._cyc = np.zeros(_cycle_work_size(self.state_dim), dtype=np.float64)
        self._cstate[0] = self._cstate[1] = self._cstate[2] = self._cstate[3] = 0
        self.cache = cache

    @property
    def work_nbytes(self):
        """Bytes of scratch memory the filter holds (O(d^2), independent of N)."""
        return (self._work.shape[0] + self._cyc.shape[0]) * sizeof(double)

    @property
    def covariance_converged(self):
        """True while P is on the covariance recursion's known limit cycle.

        Steps then look the next P up instead of computing it (bit-identical).
        """
        cdef Py_ssize_t dd = self.state_dim * self.state_dim
        return bool(self._cstate[0] > 0 and memcmp(
            &self._P[0, 0], &self._cyc[self._cstate[1] * dd], dd * sizeof(double)) == 0)

    def step(self, z, double gain=1.0):
        """Advance one bin; return the kinematics as a new float64 vector.

        Same arithmetic as :func:`full_step`.
        """
        cdef cnp.ndarray zarr = _observation(z, self.n_channels)
        cdef cnp.ndarray out = _empty_vector(self.n_out)
        cdef double* op = <double*>cnp.PyArray_DATA(out)
        cdef const double* zp = <const double*>cnp.PyArray_DATA(zarr)
        cdef bint ok
        with nogil:
            if self.cache:
                ok = _full_update_cached(&self._A[0, 0], &self._W[0, 0], &self._S[0, 0],
                                         &self._G[0, 0], &self._x[0], &self._P[0, 0], zp,
                                         &self._work[0], self.state_dim, self.n_channels,
                                         &self._cyc[0], self._cstate)
            else:
                ok = _full_update(&self._A[0, 0], &self._W[0, 0], &self._S[0, 0],
                                  &self._G[0, 0], &self._x[0], &self._P[0, 0], zp,
                                  &self._work[0], self.state_dim, self.n_channels)
            if ok:
                _emit(&self._x[0], op, self.n_out, self.n_pos, gain)
        if not ok:
            raise ValueError(_NONFINITE)
        return out
