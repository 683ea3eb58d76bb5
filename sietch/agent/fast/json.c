/* A strict JSON reader for OPEN payloads and the writer helpers.
 *
 * Anything unusual (non-ASCII bytes, lone surrogates, NaN, deep nesting,
 * integers beyond int64) makes json_parse fail, and the caller forwards the
 * request to the Python agent, whose json.loads then decides: the front never
 * has to agree with Python on an edge case, only on the common shape.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"

#define MAX_DEPTH 32

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        logmsg("out of memory (%zu bytes)", n);
        abort();
    }
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        logmsg("out of memory (%zu x %zu bytes)", n, size);
        abort();
    }
    return p;
}

void buf_add(struct buf *b, const void *data, size_t n) {
    if (!n)
        return;
    if (b->len + n > b->cap) {
        if (b->off && b->off >= buf_size(b)) { /* compact before growing */
            memmove(b->p, b->p + b->off, buf_size(b));
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 256;
            while (cap < b->len + n)
                cap *= 2;
            unsigned char *p = realloc(b->p, cap);
            if (!p) {
                logmsg("out of memory (%zu bytes)", cap);
                abort();
            }
            b->p = p;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void buf_addf(struct buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        buf_add(b, small, (size_t)n);
        return;
    }
    char *big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_add(b, big, (size_t)n);
    free(big);
}

void buf_drop(struct buf *b, size_t n) {
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_free(struct buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* -- reading ------------------------------------------------------------- */

struct reader {
    struct json *j;
    const char *s, *end;
    int depth;
};

static struct jnode *new_node(struct reader *r) {
    if (r->j->used >= r->j->cap)
        return NULL;
    struct jnode *n = &r->j->nodes[r->j->used++];
    memset(n, 0, sizeof *n);
    return n;
}

static void skip_ws(struct reader *r) {
    while (r->s < r->end && (*r->s == ' ' || *r->s == '\t' || *r->s == '\n' || *r->s == '\r'))
        r->s++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Decodes a string literal at r->s (on the opening quote) into the text arena. */
static int read_string(struct reader *r, const char **out, size_t *out_len, int *has_nul) {
    r->s++;
    char *dst = r->j->text + r->j->text_used, *start = dst;
    *has_nul = 0;
    while (r->s < r->end && *r->s != '"') {
        unsigned char c = (unsigned char)*r->s;
        if (c < 0x20 || c >= 0x80)
            return -1;
        if (c != '\\') {
            *dst++ = (char)c;
            r->s++;
            continue;
        }
        if (r->end - r->s < 2)
            return -1;
        char e = r->s[1];
        r->s += 2;
        switch (e) {
        case '"': *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '/': *dst++ = '/'; break;
        case 'b': *dst++ = '\b'; break;
        case 'f': *dst++ = '\f'; break;
        case 'n': *dst++ = '\n'; break;
        case 'r': *dst++ = '\r'; break;
        case 't': *dst++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (r->end - r->s < 4 || hex4(r->s, &cp))
                return -1;
            r->s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (r->end - r->s < 6 || r->s[0] != '\\' || r->s[1] != 'u' || hex4(r->s + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                r->s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0)
                *has_nul = 1;
            if (cp < 0x80) {
                *dst++ = (char)cp;
            } else if (cp < 0x800) {
                *dst++ = (char)(0xC0 | (cp >> 6));
                *dst++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *dst++ = (char)(0xE0 | (cp >> 12));
                *dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *dst++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *dst++ = (char)(0xF0 | (cp >> 18));
                *dst++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *dst++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return -1;
        }
    }
    if (r->s >= r->end)
        return -1;
    r->s++; /* closing quote */
    *dst++ = '\0';
    *out = start;
    *out_len = (size_t)(dst - start - 1);
    r->j->text_used += (size_t)(dst - start);
    return 0;
}

static struct jnode *read_value(struct reader *r);

static int read_number(struct reader *r, struct jnode *n) {
    const char *p = r->s;
    int is_int = 1;
    if (p < r->end && *p == '-')
        p++;
    if (p >= r->end || *p < '0' || *p > '9')
        return -1;
    if (*p == '0' && p + 1 < r->end && p[1] >= '0' && p[1] <= '9')
        return -1; /* no leading zeros */
    while (p < r->end && *p >= '0' && *p <= '9')
        p++;
    if (p < r->end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= r->end || *p < '0' || *p > '9')
            return -1;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        if (p < r->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= r->end || *p < '0' || *p > '9')
            return -1;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    char tmp[64];
    size_t len = (size_t)(p - r->s);
    if (len >= sizeof tmp)
        return -1;
    memcpy(tmp, r->s, len);
    tmp[len] = '\0';
    n->type = J_NUM;
    n->number = strtod(tmp, NULL);
    if (is_int) {
        if (len > 18)
            return -1; /* beyond what int64 surely holds: let Python decide */
        n->is_int = 1;
        n->integer = strtoll(tmp, NULL, 10);
    }
    r->s = p;
    return 0;
}

static int literal(struct reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->s) < n || memcmp(r->s, word, n))
        return -1;
    r->s += n;
    return 0;
}

static struct jnode *read_value(struct reader *r) {
    skip_ws(r);
    if (r->s >= r->end)
        return NULL;
    struct jnode *n = new_node(r);
    if (!n)
        return NULL;
    const char *start = r->s;
    char c = *r->s;
    if (c == '{' || c == '[') {
        if (++r->depth > MAX_DEPTH)
            return NULL;
        char close = c == '{' ? '}' : ']';
        n->type = c == '{' ? J_OBJ : J_ARR;
        r->s++;
        skip_ws(r);
        struct jnode **tail = &n->child;
        if (r->s < r->end && *r->s == close) {
            r->s++;
        } else {
            for (;;) {
                const char *key = NULL;
                size_t key_len = 0;
                if (n->type == J_OBJ) {
                    int nul;
                    skip_ws(r);
                    if (r->s >= r->end || *r->s != '"' || read_string(r, &key, &key_len, &nul) || nul)
                        return NULL;
                    skip_ws(r);
                    if (r->s >= r->end || *r->s != ':')
                        return NULL;
                    r->s++;
                }
                struct jnode *item = read_value(r);
                if (!item)
                    return NULL;
                item->key = key;
                item->key_len = key_len;
                *tail = item;
                tail = &item->next;
                skip_ws(r);
                if (r->s < r->end && *r->s == ',') {
                    r->s++;
                    continue;
                }
                if (r->s < r->end && *r->s == close) {
                    r->s++;
                    break;
                }
                return NULL;
            }
        }
        r->depth--;
    } else if (c == '"') {
        n->type = J_STR;
        if (read_string(r, &n->str, &n->str_len, &n->has_nul))
            return NULL;
    } else if (c == 't' || c == 'f') {
        n->type = J_BOOL;
        n->boolean = c == 't';
        if (literal(r, c == 't' ? "true" : "false"))
            return NULL;
    } else if (c == 'n') {
        n->type = J_NULL;
        if (literal(r, "null"))
            return NULL;
    } else if (read_number(r, n)) {
        return NULL;
    }
    n->raw = start;
    n->raw_len = (size_t)(r->s - start);
    return n;
}

int json_parse(struct json *j, const unsigned char *payload, size_t len, struct jnode **root) {
    memset(j, 0, sizeof *j);
    /* Every node takes at least one byte of text, every decoded string at most its source. */
    j->cap = len + 1;
    j->nodes = xcalloc(j->cap, sizeof *j->nodes);
    j->text_cap = len + 1;
    j->text = xmalloc(j->text_cap);
    struct reader r = {j, (const char *)payload, (const char *)payload + len, 0};
    struct jnode *n = read_value(&r);
    skip_ws(&r);
    if (!n || n->type != J_OBJ || r.s != r.end)
        return -1;
    *root = n;
    return 0;
}

void json_free(struct json *j) {
    free(j->nodes);
    free(j->text);
    memset(j, 0, sizeof *j);
}

struct jnode *json_get(const struct jnode *obj, const char *key) {
    struct jnode *found = NULL; /* the last of duplicate keys wins, as in Python */
    size_t n = strlen(key);
    if (!obj || obj->type != J_OBJ)
        return NULL;
    for (struct jnode *c = obj->child; c; c = c->next)
        if (c->key_len == n && !memcmp(c->key, key, n))
            found = c;
    return found;
}

/* -- writing ------------------------------------------------------------- */

int utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        size_t more;
        unsigned cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(end - p) <= more)
            return 0;
        for (size_t i = 1; i <= more; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += more + 1;
    }
    return 1;
}

void json_str(struct buf *b, const char *s, size_t n) {
    buf_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_add(b, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
        } else {
            buf_addf(b, "\\u%04x", c);
        }
    }
    buf_add(b, s + run, n - run);
    buf_add(b, "\"", 1);
}

/* 1 if n is absent/null or a bool (stored in *out), 0 for any other type (arg_bool). */
int opt_bool(const struct jnode *n, int *out, int dflt) {
    *out = dflt;
    if (!n || n->type == J_NULL)
        return 1;
    if (n->type != J_BOOL)
        return 0;
    *out = n->boolean;
    return 1;
}
