/*
 * pgoutput TupleData, cut and converted in C (issue 13): the compiled twin of pgoutput.parse_tuple for a
 * message held in a bytes object. Built by `python -m ops.build_hot`; pgoutput.py uses it when it loaded
 * and keeps its own loop otherwise (and for large messages, which arrive as memoryviews).
 *
 * The converters are the Python ones (producers/postgresql/types.py); two are done here without a call, with
 * the same result: `int` (PyLong_FromString, the parser int() itself uses) and the text converter (strict
 * UTF-8 decoding, as str(raw, "utf-8")). Any other converter is called with the value's bytes.
 * tests/unit/test_pgoutput_compiled.py proves both parsers equal on a table of cases.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *g_unchanged, *g_binary, *g_error, *g_text_conv;

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static PyObject *fail(const char *msg) {
    PyErr_SetString(g_error, msg);
    return NULL;
}

static PyObject *to_int(const char *p, Py_ssize_t n) {
    char small[64];
    char *s = n < (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n + 1);
    if (!s) return PyErr_NoMemory();
    memcpy(s, p, (size_t)n);
    s[n] = 0;
    char *end;
    PyObject *v = PyLong_FromString(s, &end, 10);
    if (v && end != s + n) { /* an embedded NUL: int() would refuse it too */
        Py_DECREF(v);
        v = NULL;
        PyErr_SetString(PyExc_ValueError, "invalid literal for int()");
    }
    if (s != small) PyMem_Free(s);
    return v;
}

/* parse_tuple(buf, pos, convs) -> (values, pos): as pgoutput.parse_tuple for a bytes message. */
static PyObject *parse_tuple(PyObject *self, PyObject *args) {
    PyObject *bufobj, *convs;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "O!nO:parse_tuple", &PyBytes_Type, &bufobj, &pos, &convs)) return NULL;
    if (!g_error) { PyErr_SetString(PyExc_RuntimeError, "configure() first"); return NULL; }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(bufobj);
    Py_ssize_t len = PyBytes_GET_SIZE(bufobj);
    /* Every bound is checked as "what is left >= what is needed": pos comes from the caller, and pos + 2 would
     * overflow for a pos near PY_SSIZE_T_MAX (undefined behaviour, then a read far outside the buffer). */
    if (pos < 0 || pos > len || len - pos < 2) return fail("tuple data runs past the end of the message");
    Py_ssize_t ncols = ((Py_ssize_t)buf[pos] << 8) | buf[pos + 1];
    pos += 2;
    /* Each column takes at least its kind byte: a count beyond what is left is refused before any allocation. */
    if (ncols > len - pos) return fail("tuple data runs past the end of the message");
    if (convs != Py_None) {
        if (!PyTuple_Check(convs)) { PyErr_SetString(PyExc_TypeError, "convs: a tuple or None"); return NULL; }
        if (PyTuple_GET_SIZE(convs) != ncols)
            return PyErr_Format(g_error, "tuple has %zd columns, the relation %zd", ncols, PyTuple_GET_SIZE(convs));
    }
    PyObject *values = PyList_New(ncols);
    if (!values) return NULL;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= len) { Py_DECREF(values); return fail("tuple data runs past the end of the message"); }
        unsigned char kind = buf[pos];
        PyObject *v = NULL;
        if (kind == 't' || kind == 'b') {
            if (len - pos < 5) { Py_DECREF(values); return fail("tuple data runs past the end of the message"); }
            Py_ssize_t n = (Py_ssize_t)be32(buf + pos + 1);
            pos += 5;
            if (n > len - pos) { Py_DECREF(values); return fail("tuple data runs past the end of the message"); }
            const char *p = (const char *)buf + pos;
            pos += n;
            if (kind == 'b') {
                v = PyObject_CallFunction(g_binary, "y#", p, n);
            } else if (convs == Py_None) {
                v = PyBytes_FromStringAndSize(p, n);
            } else {
                PyObject *conv = PyTuple_GET_ITEM(convs, i);
                if (conv == (PyObject *)&PyLong_Type) {
                    v = to_int(p, n);
                } else if (conv == g_text_conv) {
                    v = PyUnicode_DecodeUTF8(p, n, "strict");
                } else {
                    PyObject *raw = PyBytes_FromStringAndSize(p, n);
                    v = raw ? PyObject_CallOneArg(conv, raw) : NULL;
                    Py_XDECREF(raw);
                }
            }
        } else if (kind == 'n') {
            pos += 1;
            v = Py_None;
            Py_INCREF(v);
        } else if (kind == 'u') {
            pos += 1;
            v = g_unchanged;
            Py_INCREF(v);
        } else {
            Py_DECREF(values);
            return PyErr_Format(g_error, "unknown tuple column kind %d at offset %zd", (int)kind, pos);
        }
        if (!v) { Py_DECREF(values); return NULL; }
        PyList_SET_ITEM(values, i, v);
    }
    return Py_BuildValue("(Nn)", values, pos);
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *unchanged, *binary, *error, *text_conv;
    if (!PyArg_ParseTuple(args, "OOOO:configure", &unchanged, &binary, &error, &text_conv)) return NULL;
    Py_INCREF(unchanged); Py_XSETREF(g_unchanged, unchanged);
    Py_INCREF(binary); Py_XSETREF(g_binary, binary);
    Py_INCREF(error); Py_XSETREF(g_error, error);
    Py_INCREF(text_conv); Py_XSETREF(g_text_conv, text_conv);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(UNCHANGED, BinaryValue, PgOutputError, text_converter)"},
    {"parse_tuple", parse_tuple, METH_VARARGS, "parse_tuple(buf: bytes, pos, convs) -> (values, pos)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pgoutput", "pgoutput TupleData in C (see _pgoutput.c).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__pgoutput(void) { return PyModule_Create(&module); }
