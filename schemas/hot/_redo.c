/*
 * The compiled hot path of the redo codec (issue 13): Avro binary of a redo entry whose body is a
 * Transaction, written from and read into Ark's own objects (TxnChunk, RowChange), without fastavro's
 * per-value union resolution and without the intermediate dict records.
 *
 * It handles exactly the current redo_entry schema (schemas/avro/redo_entry.v6.avsc; v5 differs only in TableMeta), and nothing else:
 * schemas/hot/__init__.py checks the schema's fingerprint before it uses this module, and the unit tests
 * (tests/unit/test_hot_codec.py) prove its bytes identical to fastavro's on a table of cases.
 *
 * Anything unusual (an int beyond 64 bits, a value of a type the schema's unions do not name, a string
 * that is not valid UTF-8) makes encode() return None: the caller then takes the fastavro path, which
 * decides what such a value becomes (or says why it cannot be encoded). decode() raises ValueError for
 * bytes that are not a well-formed Transaction entry and returns None for another kind of body.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Configured once by configure(): the UNCHANGED sentinel, the classes decode() builds, and Op's members. */
static PyObject *g_unchanged, *g_row_change, *g_part_ref, *g_value_part, *g_ops[4];

/* Attribute names, interned once. */
static PyObject *s_txn_id, *s_commit, *s_text, *s_key, *s_commit_time_us, *s_chunk_index, *s_last, *s_confirm,
    *s_first_row, *s_changes, *s_part, *s_table, *s_op, *s_values, *s_old_key, *s_parts, *s_row, *s_column,
    *s_count, *s_total_bytes, *s_crc, *s_index, *s_data;

/* ---------------------------------------------------------------------------------------------- writing */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

/* Returned by the writers: OK, FALLBACK (let fastavro decide) or ERROR (a Python exception is set). */
enum { OK = 0, FALLBACK = 1, ERR = -1 };

static int out_reserve(Out *o, Py_ssize_t extra) {
    if (o->len + extra <= o->cap) return OK;
    Py_ssize_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + extra) cap *= 2;
    char *b = PyMem_Realloc(o->buf, (size_t)cap);
    if (!b) { PyErr_NoMemory(); return ERR; }
    o->buf = b;
    o->cap = cap;
    return OK;
}

static int put_long(Out *o, int64_t n) {
    if (out_reserve(o, 10) != OK) return ERR;
    uint64_t z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
    while (z & ~(uint64_t)0x7F) {
        o->buf[o->len++] = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    o->buf[o->len++] = (char)z;
    return OK;
}

static int put_raw(Out *o, const char *p, Py_ssize_t n) {
    if (put_long(o, n) != OK || out_reserve(o, n) != OK) return ERR;
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return OK;
}

/* A Python int as an Avro long; FALLBACK for anything but an int within 64 bits. A bool is an int to Python, but
 * fastavro refuses it where a long sits inside a union (PartRef, ValuePart): fastavro decides for bools. */
static int put_int_obj(Out *o, PyObject *v) {
    if (!PyLong_Check(v) || PyBool_Check(v)) return FALLBACK;
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return FALLBACK;
    if (n == -1 && PyErr_Occurred()) return ERR;
    return put_long(o, (int64_t)n);
}

static int put_str_obj(Out *o, PyObject *v) {
    if (!PyUnicode_Check(v)) return FALLBACK;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(v, &n);
    if (!p) { PyErr_Clear(); return FALLBACK; } /* lone surrogates: fastavro says what it makes of them */
    return put_raw(o, p, n);
}

static int put_bytes_obj(Out *o, PyObject *v) {
    if (!PyBytes_Check(v)) return FALLBACK;
    return put_raw(o, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
}

/* A value of a union: with_unchanged is the values union [null, Unchanged, boolean, long, double, string, bytes],
 * without it the old_key union [null, boolean, long, double, string, bytes]. */
static int put_value(Out *o, PyObject *v, int with_unchanged) {
    int shift = with_unchanged ? 1 : 0;
    if (v == Py_None) return put_long(o, 0);
    if (v == g_unchanged) return with_unchanged ? put_long(o, 1) : FALLBACK;
    if (PyBool_Check(v)) {
        if (put_long(o, 1 + shift) != OK || out_reserve(o, 1) != OK) return ERR;
        o->buf[o->len++] = (char)(v == Py_True);
        return OK;
    }
    if (PyLong_Check(v)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return FALLBACK; /* beyond a long: fastavro's union picks double */
        if (n == -1 && PyErr_Occurred()) return ERR;
        if (put_long(o, 2 + shift) != OK) return ERR;
        return put_long(o, (int64_t)n);
    }
    if (PyFloat_Check(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (put_long(o, 3 + shift) != OK || out_reserve(o, 8) != OK) return ERR;
        for (int i = 0; i < 8; i++) o->buf[o->len++] = (char)((bits >> (8 * i)) & 0xFF); /* little-endian */
        return OK;
    }
    if (PyUnicode_Check(v)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(v, &n);
        if (!p) { PyErr_Clear(); return FALLBACK; }
        if (put_long(o, 4 + shift) != OK) return ERR;
        return put_raw(o, p, n);
    }
    if (PyBytes_Check(v)) {
        if (put_long(o, 5 + shift) != OK) return ERR;
        return put_raw(o, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    }
    return FALLBACK;
}

/* Attributes names[0..n) of obj into out (new references); on failure none is held and -1 is returned. */
static int get_attrs(PyObject *obj, PyObject *const *names, PyObject **out, int n) {
    for (int i = 0; i < n; i++) {
        out[i] = PyObject_GetAttr(obj, names[i]);
        if (!out[i]) {
            for (int j = 0; j < i; j++) Py_CLEAR(out[j]);
            return -1;
        }
    }
    return 0;
}

static void drop_attrs(PyObject **a, int n) {
    for (int i = 0; i < n; i++) Py_CLEAR(a[i]);
}

#define TRY(expr) do { rc = (expr); if (rc != OK) goto done; } while (0)

static int put_value_list(Out *o, PyObject *list, int with_unchanged) {
    if (!PyList_Check(list)) return FALLBACK;
    Py_ssize_t n = PyList_GET_SIZE(list);
    int rc;
    if (n > 0) {
        if ((rc = put_long(o, n)) != OK) return rc;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
            if ((rc = put_value(o, PyList_GET_ITEM(list, i), with_unchanged)) != OK) return rc;
    }
    return put_long(o, 0);
}

static int put_part_ref(Out *o, PyObject *p) {
    PyObject *const names[5] = {s_row, s_column, s_count, s_total_bytes, s_crc};
    PyObject *a[5];
    int rc = OK;
    if (get_attrs(p, names, a, 5) < 0) return ERR;
    for (int i = 0; i < 5; i++) TRY(put_int_obj(o, a[i]));
done:
    drop_attrs(a, 5);
    return rc;
}

/* One of Op's members (by identity: the fastavro path writes op.value, which a plain string does not have). */
static int put_op(Out *o, PyObject *op) {
    for (int i = 0; i < 4; i++)
        if (op == g_ops[i]) return put_long(o, i);
    return FALLBACK;
}

static int put_change(Out *o, PyObject *ch) {
    int rc = OK;
    PyObject *table = NULL, *op = NULL, *values = NULL, *old_key = NULL, *parts = NULL;
    if (!(table = PyObject_GetAttr(ch, s_table)) || !(op = PyObject_GetAttr(ch, s_op))
        || !(values = PyObject_GetAttr(ch, s_values)) || !(old_key = PyObject_GetAttr(ch, s_old_key))
        || !(parts = PyObject_GetAttr(ch, s_parts))) { rc = ERR; goto done; }
    TRY(put_str_obj(o, table));
    TRY(put_op(o, op));
    TRY(put_value_list(o, values, 1));
    if (old_key == Py_None) {
        TRY(put_long(o, 0));
    } else {
        TRY(put_long(o, 1));
        TRY(put_value_list(o, old_key, 0));
    }
    if (parts == Py_None) {
        TRY(put_long(o, 0));
    } else {
        if (!PyList_Check(parts)) { rc = FALLBACK; goto done; }
        TRY(put_long(o, 1));
        Py_ssize_t n = PyList_GET_SIZE(parts);
        if (n > 0) {
            TRY(put_long(o, n));
            for (Py_ssize_t i = 0; i < n; i++) { /* as for changes in put_chunk */
                if (PyList_GET_SIZE(parts) != n) { rc = FALLBACK; goto done; }
                PyObject *ref = PyList_GET_ITEM(parts, i);
                Py_INCREF(ref);
                rc = put_part_ref(o, ref);
                Py_DECREF(ref);
                if (rc != OK) goto done;
            }
        }
        TRY(put_long(o, 0));
    }
done:
    Py_XDECREF(table); Py_XDECREF(op); Py_XDECREF(values); Py_XDECREF(old_key); Py_XDECREF(parts);
    return rc;
}

static int put_value_part(Out *o, PyObject *p) {
    PyObject *const names[7] = {s_table, s_row, s_column, s_index, s_count, s_total_bytes, s_data};
    PyObject *a[7];
    int rc = OK;
    if (get_attrs(p, names, a, 7) < 0) return ERR;
    TRY(put_str_obj(o, a[0]));
    for (int i = 1; i < 6; i++) TRY(put_int_obj(o, a[i]));
    TRY(put_bytes_obj(o, a[6]));
done:
    drop_attrs(a, 7);
    return rc;
}

static int put_chunk(Out *o, PyObject *c) {
    enum { TXN_ID, COMMIT, TS, CHUNK_INDEX, LAST, CONFIRM, FIRST_ROW, CHANGES, PART, N };
    PyObject *const names[N] = {s_txn_id, s_commit, s_commit_time_us, s_chunk_index, s_last, s_confirm, s_first_row,
                                s_changes, s_part};
    PyObject *const pos_names[2] = {s_text, s_key};
    PyObject *a[N], *pos[2] = {NULL, NULL};
    int rc = OK;
    if (get_attrs(c, names, a, N) < 0) return ERR;
    if (get_attrs(a[COMMIT], pos_names, pos, 2) < 0) { rc = ERR; goto done; }
    PyObject *changes = a[CHANGES];
    if (!PyList_Check(changes)) { rc = FALLBACK; goto done; }
    TRY(put_str_obj(o, a[TXN_ID])); TRY(put_str_obj(o, pos[0])); TRY(put_bytes_obj(o, pos[1]));
    TRY(put_int_obj(o, a[TS])); TRY(put_int_obj(o, a[CHUNK_INDEX]));
    int truth = PyObject_IsTrue(a[LAST]);
    if (truth < 0) { rc = ERR; goto done; }
    TRY(out_reserve(o, 1));
    o->buf[o->len++] = (char)truth;
    TRY(put_str_obj(o, a[CONFIRM])); TRY(put_int_obj(o, a[FIRST_ROW]));
    Py_ssize_t n = PyList_GET_SIZE(changes);
    TRY(put_long(o, n)); /* row_count */
    if (n > 0) {
        TRY(put_long(o, n));
        for (Py_ssize_t i = 0; i < n; i++) {
            /* The count is written: a list that changed size under us (attribute code of an odd object) goes to
             * fastavro, and the item is held while its attributes are read. */
            if (PyList_GET_SIZE(changes) != n) { rc = FALLBACK; goto done; }
            PyObject *change = PyList_GET_ITEM(changes, i);
            Py_INCREF(change);
            rc = put_change(o, change);
            Py_DECREF(change);
            if (rc != OK) goto done;
        }
    }
    TRY(put_long(o, 0));
    if (a[PART] == Py_None) {
        TRY(put_long(o, 0));
    } else {
        TRY(put_long(o, 1));
        TRY(put_value_part(o, a[PART]));
    }
done:
    drop_attrs(pos, 2);
    drop_attrs(a, N);
    return rc;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *group, *engine, *epoch, *chunk;
    if (!PyArg_ParseTuple(args, "OOOO:encode", &group, &engine, &epoch, &chunk)) return NULL;
    if (!g_unchanged) { PyErr_SetString(PyExc_RuntimeError, "schemas.hot._redo: configure() first"); return NULL; }
    Out o = {NULL, 0, 0};
    int rc;
    if ((rc = put_str_obj(&o, group)) == OK && (rc = put_str_obj(&o, engine)) == OK
        && (rc = put_int_obj(&o, epoch)) == OK && (rc = put_long(&o, 0)) == OK) /* body: Transaction, branch 0 */
        rc = put_chunk(&o, chunk);
    PyObject *res;
    if (rc == OK) res = PyBytes_FromStringAndSize(o.buf, o.len);
    else if (rc == FALLBACK) { res = Py_None; Py_INCREF(res); }
    else res = NULL;
    PyMem_Free(o.buf);
    return res;
}

/* ---------------------------------------------------------------------------------------------- reading */
typedef struct {
    const unsigned char *p, *end;
} In;

static int bad(const char *what) {
    PyErr_Format(PyExc_ValueError, "malformed redo entry: %s", what);
    return -1;
}

static int get_long(In *in, int64_t *out) {
    uint64_t z = 0;
    int shift = 0;
    for (;;) {
        if (in->p >= in->end) return bad("a number runs past the end");
        unsigned char b = *in->p++;
        z |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
        if (shift > 63) return bad("a number is longer than 10 bytes");
    }
    *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return 0;
}

static int get_span(In *in, const char **p, Py_ssize_t *n) {
    int64_t len;
    if (get_long(in, &len) < 0) return -1;
    if (len < 0 || len > in->end - in->p) return bad("a string or bytes runs past the end");
    *p = (const char *)in->p;
    *n = (Py_ssize_t)len;
    in->p += len;
    return 0;
}

static PyObject *get_str(In *in) {
    const char *p;
    Py_ssize_t n;
    if (get_span(in, &p, &n) < 0) return NULL;
    return PyUnicode_DecodeUTF8(p, n, "strict");
}

static PyObject *get_bytes(In *in) {
    const char *p;
    Py_ssize_t n;
    if (get_span(in, &p, &n) < 0) return NULL;
    return PyBytes_FromStringAndSize(p, n);
}

static PyObject *get_int(In *in) {
    int64_t v;
    if (get_long(in, &v) < 0) return NULL;
    return PyLong_FromLongLong(v);
}

/* An array's block count (a negative count is followed by the block's byte size). */
static int get_block(In *in, int64_t *count) {
    if (get_long(in, count) < 0) return -1;
    if (*count < 0) {
        int64_t size;
        /* -INT64_MIN does not exist (undefined behaviour): such a count is corrupt, not a huge block. */
        if (*count == INT64_MIN) return bad("an array's item count is out of range");
        *count = -*count;
        if (get_long(in, &size) < 0) return -1;
    }
    if (*count > in->end - in->p) return bad("an array claims more items than there are bytes");
    return 0;
}

static PyObject *get_value(In *in, int with_unchanged) {
    int64_t branch;
    if (get_long(in, &branch) < 0) return NULL;
    if (!with_unchanged && branch >= 1) { /* old_key's union has no Unchanged branch */
        if (branch > 5) { bad("unknown union branch of a value"); return NULL; } /* and +1 must not overflow */
        branch += 1;
    }
    switch (branch) {
    case 0: Py_RETURN_NONE;
    case 1: Py_INCREF(g_unchanged); return g_unchanged;
    case 2:
        if (in->p >= in->end) { bad("a boolean runs past the end"); return NULL; }
        return PyBool_FromLong(*in->p++ != 0);
    case 3: return get_int(in);
    case 4: {
        if (in->end - in->p < 8) { bad("a double runs past the end"); return NULL; }
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits |= (uint64_t)in->p[i] << (8 * i);
        in->p += 8;
        double d;
        memcpy(&d, &bits, 8);
        return PyFloat_FromDouble(d);
    }
    case 5: return get_str(in);
    case 6: return get_bytes(in);
    default: bad("unknown union branch of a value"); return NULL;
    }
}

static PyObject *get_value_list(In *in, int with_unchanged) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (;;) {
        int64_t count;
        if (get_block(in, &count) < 0) goto fail;
        if (count == 0) return list;
        for (int64_t i = 0; i < count; i++) {
            PyObject *v = get_value(in, with_unchanged);
            if (!v || PyList_Append(list, v) < 0) { Py_XDECREF(v); goto fail; }
            Py_DECREF(v);
        }
    }
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *get_ints(In *in, int n) {
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *v = get_int(in);
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *get_parts(In *in) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (;;) {
        int64_t count;
        if (get_block(in, &count) < 0) goto fail;
        if (count == 0) return list;
        for (int64_t i = 0; i < count; i++) {
            PyObject *args = get_ints(in, 5); /* row, column, count, total_bytes, crc */
            PyObject *ref = args ? PyObject_Call(g_part_ref, args, NULL) : NULL;
            Py_XDECREF(args);
            if (!ref || PyList_Append(list, ref) < 0) { Py_XDECREF(ref); goto fail; }
            Py_DECREF(ref);
        }
    }
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *get_change(In *in) {
    PyObject *table = NULL, *values = NULL, *old_key = NULL, *parts = NULL, *res = NULL;
    int64_t op, branch;
    if (!(table = get_str(in))) goto done;
    if (get_long(in, &op) < 0) goto done;
    if (op < 0 || op > 3) { bad("unknown op"); goto done; }
    if (!(values = get_value_list(in, 1))) goto done;
    if (get_long(in, &branch) < 0) goto done;
    if (branch == 0) { old_key = Py_None; Py_INCREF(old_key); }
    else if (branch == 1) { if (!(old_key = get_value_list(in, 0))) goto done; }
    else { bad("unknown union branch of old_key"); goto done; }
    if (get_long(in, &branch) < 0) goto done;
    if (branch == 0) { parts = Py_None; Py_INCREF(parts); }
    else if (branch == 1) { if (!(parts = get_parts(in))) goto done; }
    else { bad("unknown union branch of parts"); goto done; }
    res = PyObject_CallFunctionObjArgs(g_row_change, table, g_ops[op], values, old_key, parts, NULL);
done:
    Py_XDECREF(table); Py_XDECREF(values); Py_XDECREF(old_key); Py_XDECREF(parts);
    return res;
}

static PyObject *get_value_part(In *in) {
    PyObject *table = get_str(in);
    if (!table) return NULL;
    PyObject *nums = get_ints(in, 5); /* row, column, index, count, total_bytes */
    PyObject *data = nums ? get_bytes(in) : NULL;
    PyObject *res = NULL;
    if (data)
        res = PyObject_CallFunctionObjArgs(g_value_part, table, PyTuple_GET_ITEM(nums, 0), PyTuple_GET_ITEM(nums, 1),
                                           PyTuple_GET_ITEM(nums, 2), PyTuple_GET_ITEM(nums, 3),
                                           PyTuple_GET_ITEM(nums, 4), data, NULL);
    Py_DECREF(table); Py_XDECREF(nums); Py_XDECREF(data);
    return res;
}

/* decode(payload) -> (group, engine, epoch, txn_id, commit_text, commit_key, commit_time_us, chunk_index, last,
 *                     confirm, first_row, changes, part), or None when the body is not a Transaction. */
static PyObject *decode(PyObject *self, PyObject *arg) {
    if (!g_unchanged) { PyErr_SetString(PyExc_RuntimeError, "schemas.hot._redo: configure() first"); return NULL; }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    In in = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *f[13] = {NULL};
    PyObject *res = NULL;
    int64_t branch, row_count, v;
    if (!(f[0] = get_str(&in)) || !(f[1] = get_str(&in)) || !(f[2] = get_int(&in))) goto done;
    if (get_long(&in, &branch) < 0) goto done;
    if (branch != 0) { res = Py_None; Py_INCREF(res); goto done; }
    if (!(f[3] = get_str(&in)) || !(f[4] = get_str(&in)) || !(f[5] = get_bytes(&in)) || !(f[6] = get_int(&in))
        || !(f[7] = get_int(&in)))
        goto done;
    if (in.p >= in.end) { bad("a boolean runs past the end"); goto done; }
    f[8] = PyBool_FromLong(*in.p++ != 0);
    if (!(f[9] = get_str(&in)) || !(f[10] = get_int(&in))) goto done;
    if (get_long(&in, &row_count) < 0) goto done;
    if (!(f[11] = PyList_New(0))) goto done;
    for (;;) {
        if (get_block(&in, &v) < 0) goto done;
        if (v == 0) break;
        for (int64_t i = 0; i < v; i++) {
            PyObject *ch = get_change(&in);
            if (!ch || PyList_Append(f[11], ch) < 0) { Py_XDECREF(ch); goto done; }
            Py_DECREF(ch);
        }
    }
    if (get_long(&in, &branch) < 0) goto done;
    if (branch == 0) { f[12] = Py_None; Py_INCREF(Py_None); }
    else if (branch == 1) { if (!(f[12] = get_value_part(&in))) goto done; }
    else { bad("unknown union branch of part"); goto done; }
    res = PyTuple_New(13);
    if (!res) goto done;
    for (int i = 0; i < 13; i++) { PyTuple_SET_ITEM(res, i, f[i]); f[i] = NULL; }
done:
    for (int i = 0; i < 13; i++) Py_XDECREF(f[i]);
    PyBuffer_Release(&view);
    return res;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *unchanged, *row_change, *part_ref, *value_part, *ops;
    if (!PyArg_ParseTuple(args, "OOOOO:configure", &unchanged, &row_change, &part_ref, &value_part, &ops)) return NULL;
    if (!PyTuple_Check(ops) || PyTuple_GET_SIZE(ops) != 4) {
        PyErr_SetString(PyExc_TypeError, "ops: a tuple of the 4 Op members, in the schema's symbol order");
        return NULL;
    }
    Py_INCREF(unchanged); Py_XSETREF(g_unchanged, unchanged);
    Py_INCREF(row_change); Py_XSETREF(g_row_change, row_change);
    Py_INCREF(part_ref); Py_XSETREF(g_part_ref, part_ref);
    Py_INCREF(value_part); Py_XSETREF(g_value_part, value_part);
    for (int i = 0; i < 4; i++) { PyObject *m = PyTuple_GET_ITEM(ops, i); Py_INCREF(m); Py_XSETREF(g_ops[i], m); }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(unchanged, RowChange, PartRef, ValuePart, ops): once, first."},
    {"encode", encode, METH_VARARGS,
     "encode(group, engine, epoch, chunk) -> bytes of a redo entry with a Transaction body, or None (use fastavro)."},
    {"decode", decode, METH_O, "decode(payload) -> a tuple of the Transaction's fields, or None for another body."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_redo", "Compiled redo codec (see _redo.c).", -1, methods};

PyMODINIT_FUNC PyInit__redo(void) {
#define INTERN(var, name) if (!(var = PyUnicode_InternFromString(name))) return NULL;
    INTERN(s_txn_id, "txn_id") INTERN(s_commit, "commit") INTERN(s_text, "text") INTERN(s_key, "key")
    INTERN(s_commit_time_us, "commit_time_us") INTERN(s_chunk_index, "chunk_index") INTERN(s_last, "last")
    INTERN(s_confirm, "confirm") INTERN(s_first_row, "first_row") INTERN(s_changes, "changes") INTERN(s_part, "part")
    INTERN(s_table, "table") INTERN(s_op, "op") INTERN(s_values, "values") INTERN(s_old_key, "old_key")
    INTERN(s_parts, "parts") INTERN(s_row, "row") INTERN(s_column, "column") INTERN(s_count, "count")
    INTERN(s_total_bytes, "total_bytes") INTERN(s_crc, "crc") INTERN(s_index, "index") INTERN(s_data, "data")
    return PyModule_Create(&module);
}
