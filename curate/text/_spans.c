/* Protected spans (code, math, URLs, calculator annotations, placeholders, mask tokens) found in UTF-8
 * text, and the prose that remains once they are removed.
 *
 * Each kind is the Python regular expression quoted above its matcher, with Python `re` semantics:
 * Unicode \w, \d and \s (the same CPython tables `re` and `str.split` use), leftmost match, and the
 * search resuming where the last match ended. Kinds run in order; a match that overlaps a span of an
 * earlier kind is dropped, so a URL inside a code block stays code. curate/text/spans.py holds the
 * expressions (tests check this scanner against them on generated and real text).
 *
 * Everything works on UTF-8 bytes: every literal is ASCII except the mask token's brackets, so matches
 * are found with memchr and only the characters a class test looks at are decoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { CODE_BLOCK, CODE_INLINE, MATH_DISPLAY, MATH_INLINE, URL, CALC, PLACEHOLDER, MASK_TOKEN, N_KINDS };

typedef Py_ssize_t Pos;
typedef const unsigned char *Text;

/* ---- characters ---------------------------------------------------------------------------------- */

/* The code point at s[i] (i < n) and its length in bytes; a malformed byte reads as U+FFFD. */
static inline Py_UCS4 cp_at(Text s, Pos n, Pos i, int *len) {
    unsigned char b = s[i];
    if (b < 0x80) { *len = 1; return b; }
    if ((b & 0xE0) == 0xC0 && i + 1 < n) {
        *len = 2;
        return ((Py_UCS4)(b & 0x1F) << 6) | (s[i + 1] & 0x3F);
    }
    if ((b & 0xF0) == 0xE0 && i + 2 < n) {
        *len = 3;
        return ((Py_UCS4)(b & 0x0F) << 12) | ((Py_UCS4)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    }
    if ((b & 0xF8) == 0xF0 && i + 3 < n) {
        *len = 4;
        return ((Py_UCS4)(b & 0x07) << 18) | ((Py_UCS4)(s[i + 1] & 0x3F) << 12) |
               ((Py_UCS4)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
    }
    *len = 1;
    return 0xFFFD;
}

static inline Py_UCS4 cp(Text s, Pos n, Pos i) {
    int len;
    return cp_at(s, n, i, &len);
}

/* The code point that ends just before s[i] (i > 0). */
static inline Py_UCS4 cp_before(Text s, Pos i) {
    Pos j = i - 1;
    while (j > 0 && i - j < 4 && (s[j] & 0xC0) == 0x80) j--;
    return cp(s, i, j);
}

static inline int is_space(Py_UCS4 c) { return Py_UNICODE_ISSPACE(c); }
static inline int is_word(Py_UCS4 c) { return c == '_' || Py_UNICODE_ISALNUM(c); }
static inline int is_decimal(Py_UCS4 c) { return Py_UNICODE_ISDECIMAL(c); }
static inline int is_ascii_alpha(unsigned char b) { return (b | 0x20) >= 'a' && (b | 0x20) <= 'z'; }

/* The end of the run of characters from i on that `test` accepts. */
static inline Pos skip(Text s, Pos n, Pos i, int (*test)(Py_UCS4)) {
    int len;
    while (i < n && test(cp_at(s, n, i, &len))) i += len;
    return i;
}

static inline int word_dot_dash(Py_UCS4 c) { return is_word(c) || c == '.' || c == '-'; }

static inline int lit(Text s, Pos n, Pos i, const char *w, Pos len) {
    return i >= 0 && i + len <= n && memcmp(s + i, w, (size_t)len) == 0;
}

/* ---- matchers: the end of the match starting at i, or -1 ------------------------------------------ */

/* ```.*?(?:```|\Z)  (DOTALL) */
static Pos code_block(Text s, Pos n, Pos i) {
    if (!lit(s, n, i, "```", 3)) return -1;
    for (Pos j = i + 3; j + 3 <= n; j++) {
        const unsigned char *p = memchr(s + j, '`', (size_t)(n - j));
        if (p == NULL) break;
        j = p - s;
        if (lit(s, n, j, "```", 3)) return j + 3;
    }
    return n;
}

/* `[^`\n]+` */
static Pos code_inline(Text s, Pos n, Pos i) {
    Pos j = i + 1;
    while (j < n && s[j] != '`' && s[j] != '\n') j++;
    return j > i + 1 && j < n && s[j] == '`' ? j + 1 : -1;
}

/* The first `close` (2 bytes) at or after `from`, or -1. */
static Pos find2(Text s, Pos n, Pos from, char a, char b) {
    for (Pos j = from; j + 1 < n; j++) {
        const unsigned char *p = memchr(s + j, a, (size_t)(n - j));
        if (p == NULL) return -1;
        j = p - s;
        if (j + 1 < n && s[j + 1] == (unsigned char)b) return j;
    }
    return -1;
}

/* \$\$.+?\$\$|\\\[.+?\\\]  (DOTALL) */
static Pos math_display(Text s, Pos n, Pos i) {
    Pos j = -1;
    if (lit(s, n, i, "$$", 2)) j = find2(s, n, i + 3, '$', '$');
    else if (lit(s, n, i, "\\[", 2)) j = find2(s, n, i + 3, '\\', ']');
    return j < 0 ? -1 : j + 2;
}

/* \\\(.+?\\\)|\$(?<![\\$\w]\$)(?=\S)[^$\n]*?(?<=\S)\$(?!\d) */
static Pos math_inline(Text s, Pos n, Pos i) {
    if (lit(s, n, i, "\\(", 2)) {
        if (i + 2 >= n || s[i + 2] == '\n') return -1;
        for (Pos j = i + 3;; j++) {
            if (lit(s, n, j, "\\)", 2)) return j + 2;
            if (j >= n || s[j] == '\n') return -1;
        }
    }
    if (s[i] != '$') return -1;
    if (i > 0) {
        Py_UCS4 c = cp_before(s, i);
        if (c == '\\' || c == '$' || is_word(c)) return -1;
    }
    if (i + 1 >= n || is_space(cp(s, n, i + 1))) return -1;
    /* The content holds no '$': the first '$' after i closes the match or nothing does. */
    Pos j = i + 1;
    while (j < n && s[j] != '$' && s[j] != '\n') j++;
    if (j >= n || s[j] != '$' || is_space(cp_before(s, j))) return -1;
    return j + 1 < n && is_decimal(cp(s, n, j + 1)) ? -1 : j + 1;
}

/* \b(?:https?|ftp)://(?:\([^\s()<>]*\)|[^\s<>"'()\[\]])*(?:\([^\s()<>]*\)|[^\s<>"'()\[\].,;:!?])
 * The repetition reads a fixed sequence of tokens (a parenthesised group or one character); the match
 * ends after the last token the final element accepts: a group, or a character other than .,;:!? */
static Pos url(Text s, Pos n, Pos i) {
    Pos p;
    if (lit(s, n, i, "https://", 8)) p = i + 8;
    else if (lit(s, n, i, "http://", 7)) p = i + 7;
    else if (lit(s, n, i, "ftp://", 6)) p = i + 6;
    else return -1;
    if (i > 0 && is_word(cp_before(s, i))) return -1;
    Pos last = -1;
    int len;
    while (p < n) {
        Py_UCS4 c = cp_at(s, n, p, &len);
        if (c == '(') {
            Pos q = p + 1;
            int l;
            for (; q < n; q += l) {
                Py_UCS4 d = cp_at(s, n, q, &l);
                if (d == '(' || d == ')' || d == '<' || d == '>' || is_space(d)) break;
            }
            if (q >= n || s[q] != ')') break;
            p = last = q + 1;
            continue;
        }
        if (c == '<' || c == '>' || c == '"' || c == '\'' || c == ')' || c == '[' || c == ']' || is_space(c))
            break;
        p += len;
        if (!(c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?')) last = p;
    }
    return last;
}

/* <<[^<>\n]*>> */
static Pos calc(Text s, Pos n, Pos i) {
    if (!lit(s, n, i, "<<", 2)) return -1;
    Pos j = i + 2;
    while (j < n && s[j] != '<' && s[j] != '>' && s[j] != '\n') j++;
    return lit(s, n, j, ">>", 2) ? j + 2 : -1;
}

/* \{\{\s*[\w.\-]+\s*\}\}|\{[A-Za-z_][\w.\-]*\}|\{\d+\}|%\([\w]+\)[sdf]|%[sd]\b */
static Pos placeholder(Text s, Pos n, Pos i) {
    if (i + 1 >= n) return -1;
    unsigned char b = s[i + 1];
    if (s[i] == '{') {
        if (b == '{') {
            Pos p = skip(s, n, i + 2, is_space);
            Pos q = skip(s, n, p, word_dot_dash);
            if (q == p) return -1;
            Pos r = skip(s, n, q, is_space);
            return lit(s, n, r, "}}", 2) ? r + 2 : -1;
        }
        Pos q;
        if (is_ascii_alpha(b) || b == '_') q = skip(s, n, i + 2, word_dot_dash);
        else if (is_decimal(cp(s, n, i + 1))) q = skip(s, n, i + 1, is_decimal);
        else return -1;
        return q < n && s[q] == '}' ? q + 1 : -1;
    }
    if (s[i] != '%') return -1;
    if (b == '(') {
        Pos q = skip(s, n, i + 2, is_word);
        if (q == i + 2 || q + 1 >= n || s[q] != ')') return -1;
        return s[q + 1] == 's' || s[q + 1] == 'd' || s[q + 1] == 'f' ? q + 2 : -1;
    }
    if (b == 's' || b == 'd') return i + 2 < n && is_word(cp(s, n, i + 2)) ? -1 : i + 2;
    return -1;
}

/* ⟦\d+⟧  (U+27E6, U+27E7) */
static Pos mask_token(Text s, Pos n, Pos i) {
    if (!lit(s, n, i, "\xE2\x9F\xA6", 3)) return -1;
    Pos q = skip(s, n, i + 3, is_decimal);
    return q > i + 3 && lit(s, n, q, "\xE2\x9F\xA7", 3) ? q + 3 : -1;
}

/* Each kind: its matcher, and the bytes one of which every match starts with (a URL is found by its
 * "://", the rest by their first byte). A text holding none of a kind's bytes skips that kind. */
static const struct {
    Pos (*match)(Text, Pos, Pos);
    const char *first;
} KINDS[N_KINDS] = {
    {code_block, "`"}, {code_inline, "`"}, {math_display, "$\\"}, {math_inline, "\\$"},
    {url, ":"},        {calc, "<"},        {placeholder, "{%"},   {mask_token, "\xE2"},
};

/* ---- spans of one text --------------------------------------------------------------------------- */

typedef struct {
    Pos start, end;
    int kind;
} Span;

typedef struct {
    Span *items;
    Pos len, cap;
} Spans;

/* Insert a span unless it overlaps one taken before; the list stays sorted by start. */
static int take(Spans *taken, Pos start, Pos end, int kind) {
    Pos lo = 0, hi = taken->len;
    while (lo < hi) { /* first span starting at or after `end` */
        Pos mid = (lo + hi) / 2;
        if (taken->items[mid].start < end) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0 && taken->items[lo - 1].end > start) return 0;
    if (taken->len == taken->cap) {
        Pos cap = taken->cap ? 2 * taken->cap : 16;
        Span *items = realloc(taken->items, (size_t)cap * sizeof(Span));
        if (items == NULL) return -1;
        taken->items = items;
        taken->cap = cap;
    }
    memmove(taken->items + lo + 1, taken->items + lo, (size_t)(taken->len - lo) * sizeof(Span));
    taken->items[lo] = (Span){start, end, kind};
    taken->len++;
    return 0;
}

/* Per byte value: which of TRIGGERS it is (bit t), and whether it is ASCII whitespace or a lead byte
 * that may start non-ASCII whitespace (U+0085, U+00A0, U+1680, U+2000..U+3000). */
static const char TRIGGERS[] = "`$\\:<{%\xE2";
enum { SPACE = 1 << 8, MAYBE_SPACE = 1 << 9 };
static unsigned short BYTE_INFO[256];

static void init_byte_info(void) {
    for (int b = 0; b < 256; b++) {
        unsigned short info = b < 0x80 && Py_UNICODE_ISSPACE((Py_UCS4)b) ? SPACE : 0;
        if (b == 0xC2 || b == 0xE1 || b == 0xE2 || b == 0xE3) info |= MAYBE_SPACE;
        for (int t = 0; TRIGGERS[t]; t++)
            if ((unsigned char)TRIGGERS[t] == b) info |= 1u << t;
        BYTE_INFO[b] = info;
    }
}

static inline unsigned trigger_bit(char c) { return BYTE_INFO[(unsigned char)c] & 0xFFu; }

/* The trigger bytes `s` holds, as TRIGGERS bits, in TRIGGERS' order. One comparison per trigger rather
 * than a BYTE_INFO lookup: compilers vectorise it (15% faster on 1.9 MB of prose). */
static unsigned triggers_of(Text s, Pos n) {
    unsigned char t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0;
    for (Pos i = 0; i < n; i++) {
        unsigned char b = s[i];
        t0 |= b == '`';
        t1 |= b == '$';
        t2 |= b == '\\';
        t3 |= b == ':';
        t4 |= b == '<';
        t5 |= b == '{';
        t6 |= b == '%';
        t7 |= b == 0xE2;
    }
    return (unsigned)t0 | (unsigned)t1 << 1 | (unsigned)t2 << 2 | (unsigned)t3 << 3 | (unsigned)t4 << 4 |
           (unsigned)t5 << 5 | (unsigned)t6 << 6 | (unsigned)t7 << 7;
}

/* The next position at or after `from` holding one of `first`'s bytes that the text holds at all (n if
 * none). `next` caches the next hit of each byte so that a text is scanned once per byte. */
static Pos next_candidate(Text s, Pos n, Pos from, const char *first, unsigned present, Pos next[2]) {
    Pos best = n;
    for (int k = 0; first[k]; k++) {
        if (!(present & trigger_bit(first[k]))) continue;
        if (next[k] < from) {
            const unsigned char *p = memchr(s + from, (unsigned char)first[k], (size_t)(n - from));
            next[k] = p ? p - s : n;
        }
        if (next[k] < best) best = next[k];
    }
    return best;
}

/* The spans of `s`, whose trigger bytes are `present`. */
static int find_spans(Text s, Pos n, unsigned present, Spans *taken) {
    taken->len = 0;
    for (int kind = 0; kind < N_KINDS && present; kind++) {
        Pos next[2] = {-1, -1}, from = 0;
        while (from < n) {
            Pos at = next_candidate(s, n, from, KINDS[kind].first, present, next);
            if (at >= n) break;
            Pos start = at, end;
            if (kind == URL) { /* the scheme ends at the ':' */
                if (!lit(s, n, at, "://", 3)) { from = at + 1; continue; }
                start = lit(s, n, at - 5, "https", 5) ? at - 5 : lit(s, n, at - 4, "http", 4) ? at - 4 : at - 3;
            }
            end = start >= from ? KINDS[kind].match(s, n, start) : -1;
            if (end < 0) { from = at + 1; continue; }
            if (take(taken, start, end, kind) < 0) return -1;
            from = end;
        }
    }
    return 0;
}

/* ---- prose: the text with every span and whitespace run turned into one space, trimmed ------------ */

/* `s` with each span and each whitespace run made one space, trimmed, written to `out`; returns its
 * length in bytes, and in characters through `chars`. */
static Pos strip_into(Text s, Pos n, const Spans *spans, unsigned char *out, Pos *chars) {
    Pos o = 0, i = 0, c = 0;
    int pending = 0; /* a separator is owed before the next character */
    for (Pos k = 0; k <= spans->len; k++) {
        Pos end = k < spans->len ? spans->items[k].start : n;
        while (i < end) {
            unsigned char b = s[i];
            unsigned info = BYTE_INFO[b];
            int len = 1;
            if ((info & SPACE) || ((info & MAYBE_SPACE) && is_space(cp_at(s, n, i, &len)))) {
                pending = 1;
                i += len;
                continue;
            }
            if (pending && o > 0) {
                out[o++] = ' ';
                c++;
            }
            pending = 0;
            out[o++] = b; /* the continuation bytes of a character follow one by one */
            c += (b & 0xC0) != 0x80;
            i++;
        }
        if (k < spans->len) {
            i = spans->items[k].end;
            pending = 1;
        }
    }
    *chars = c;
    return o;
}

/* The prose of one text into `out` (see strip_into); the span search runs only where the text holds
 * a trigger byte. */
static int strip_text(Text s, Pos n, Spans *taken, unsigned char *out, Pos *len, Pos *chars) {
    unsigned present = triggers_of(s, n);
    taken->len = 0;
    if (present && find_spans(s, n, present, taken) < 0) return -1;
    *len = strip_into(s, n, taken, out, chars);
    return 0;
}

/* ---- Python ----------------------------------------------------------------------------------------- */

PyDoc_STRVAR(spans_doc,
             "spans(text: str) -> list[tuple[int, int, int]]\n\n"
             "(kind, start, end) of each protected span of text, in order of position; kind indexes\n"
             "curate.text.spans.KINDS and positions count characters.");

static PyObject *py_spans(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "spans() takes a str");
        return NULL;
    }
    Py_ssize_t n;
    Text s = (Text)PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL) return NULL;
    Spans taken = {NULL, 0, 0};
    if (find_spans(s, n, triggers_of(s, n), &taken) < 0) {
        free(taken.items);
        return PyErr_NoMemory();
    }
    PyObject *result = PyList_New(taken.len);
    /* Byte offsets to character offsets in one walk: spans are sorted and disjoint. */
    Pos chars = 0, byte = 0;
    for (Pos k = 0; result != NULL && k < taken.len; k++) {
        Pos bounds[2] = {taken.items[k].start, taken.items[k].end}, at[2];
        for (int e = 0; e < 2; e++) {
            for (; byte < bounds[e]; byte++) chars += (s[byte] & 0xC0) != 0x80;
            at[e] = chars;
        }
        PyObject *item = Py_BuildValue("(inn)", taken.items[k].kind, at[0], at[1]);
        if (item == NULL) Py_CLEAR(result);
        else PyList_SET_ITEM(result, k, item);
    }
    free(taken.items);
    return result;
}

PyDoc_STRVAR(strip_doc,
             "strip(offsets, data) -> tuple[bytes, bytes, bytes]\n\n"
             "The prose of every string of an Arrow string array, given as its offsets (a buffer of n + 1\n"
             "int32 or int64, e.g. a numpy array) and UTF-8 data: protected spans and whitespace runs\n"
             "become one space, the ends are trimmed. Returns the result's offsets (same width, from 0),\n"
             "its data, and the length of each result in characters (n int64).");

static inline int64_t offset_at(const void *offsets, int wide, Pos i) {
    return wide ? ((const int64_t *)offsets)[i] : ((const int32_t *)offsets)[i];
}

static PyObject *py_strip(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *offsets_obj, *out_offsets = NULL, *out_data = NULL, *out_chars = NULL, *result = NULL;
    Py_buffer offsets, data;
    if (!PyArg_ParseTuple(args, "Oy*", &offsets_obj, &data)) return NULL;
    if (PyObject_GetBuffer(offsets_obj, &offsets, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    int wide = offsets.itemsize == 8;
    const char *format = offsets.format ? offsets.format : "B";
    if (*format == '<' || *format == '=' || *format == '@') format++;
    char f = format[0];
    int known = f != '\0' && format[1] == '\0' &&
                ((offsets.itemsize == 4 && (f == 'i' || f == 'l')) || (wide && (f == 'l' || f == 'q')));
    if (!known || offsets.len < offsets.itemsize) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 int32 or int64 values");
        goto done;
    }
    Pos count = offsets.len / offsets.itemsize - 1;
    for (Pos i = 0; i < count; i++) {
        int64_t start = offset_at(offsets.buf, wide, i), end = offset_at(offsets.buf, wide, i + 1);
        if (start < 0 || start > end || end > data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets do not fit the data");
            goto done;
        }
    }
    /* Prose never grows: a span or whitespace run of one or more bytes becomes at most one space. */
    int64_t first = offset_at(offsets.buf, wide, 0);
    Pos capacity = (Pos)(offset_at(offsets.buf, wide, count) - first);
    out_offsets = PyBytes_FromStringAndSize(NULL, offsets.len);
    out_data = PyBytes_FromStringAndSize(NULL, capacity);
    out_chars = PyBytes_FromStringAndSize(NULL, count * (Pos)sizeof(int64_t));
    if (out_offsets == NULL || out_data == NULL || out_chars == NULL) goto done;
    int64_t *chars = (int64_t *)PyBytes_AS_STRING(out_chars);
    void *out_off = PyBytes_AS_STRING(out_offsets);
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(out_data);
    Text base = data.buf;
    Spans taken = {NULL, 0, 0};
    int failed = 0;
    Pos o = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Pos i = 0; i <= count && !failed; i++) {
        if (i > 0) {
            int64_t start = offset_at(offsets.buf, wide, i - 1);
            Text s = base + start;
            Pos n = (Pos)(offset_at(offsets.buf, wide, i) - start);
            Pos len = 0, text_chars = 0;
            failed = strip_text(s, n, &taken, out + o, &len, &text_chars) < 0;
            o += len;
            chars[i - 1] = text_chars;
        }
        if (wide) ((int64_t *)out_off)[i] = o;
        else ((int32_t *)out_off)[i] = (int32_t)o;
    }
    Py_END_ALLOW_THREADS
    free(taken.items);
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    if (_PyBytes_Resize(&out_data, o) < 0) goto done;
    result = PyTuple_Pack(3, out_offsets, out_data, out_chars);
done:
    Py_XDECREF(out_offsets);
    Py_XDECREF(out_data);
    Py_XDECREF(out_chars);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"spans", py_spans, METH_O, spans_doc},
    {"strip", py_strip, METH_VARARGS, strip_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "curate.text._spans", "Protected spans and prose of UTF-8 text.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spans(void) {
    init_byte_info();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "N_KINDS", N_KINDS) < 0) Py_CLEAR(m);
    return m;
}
