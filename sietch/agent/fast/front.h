/* sietch-front: the guest agent's compiled hot path (README: "The agent's compiled hot path").
 *
 * It owns the virtio-serial port, speaks sietch/agent/protocol.py to the host,
 * answers the hot operations itself and forwards every other stream, frame by
 * frame, to the Python agent over a socketpair. Everything here is bounded:
 * frames are checked against MAX_PAYLOAD before anything is buffered, JSON is
 * parsed with a depth limit into an arena sized from the payload.
 */
#ifndef SIETCH_FRONT_H
#define SIETCH_FRONT_H

#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/types.h>

#define HEADER_LEN 9
#define MAX_PAYLOAD (1u << 20)
#define CHUNK (64u * 1024)
#define INITIAL_WINDOW (1u << 20)
#define WINDOW_EVERY (INITIAL_WINDOW / 4)
#define MAGIC_LEN 8
#define SYNC_LEN (MAGIC_LEN + 8)
#define CHANNEL_IN 0
#define CHANNEL_STDOUT 1
#define CHANNEL_STDERR 2
#define INTERNAL_STREAM 0xFFFFFFFFu

enum kind { K_OPEN = 1, K_MSG = 2, K_DATA = 3, K_EOF = 4, K_CLOSE = 5, K_WINDOW = 6, K_SYNC = 0xFF };

extern const unsigned char MAGIC[MAGIC_LEN];

/* -- byte buffers ------------------------------------------------------- */

struct buf {
    unsigned char *p;
    size_t off, len, cap; /* live bytes are p[off..len) */
};

void buf_add(struct buf *b, const void *data, size_t n);
void buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_drop(struct buf *b, size_t n);
static inline size_t buf_size(const struct buf *b) { return b->len - b->off; }
static inline unsigned char *buf_head(const struct buf *b) { return b->p + b->off; }
void buf_free(struct buf *b);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);

/* -- JSON ---------------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
    enum jtype type;
    const char *raw; /* the value's text in the payload, for re-emitting it verbatim */
    size_t raw_len;
    const char *key; /* in an object: the member's decoded name */
    size_t key_len;
    const char *str; /* J_STR: decoded, NUL-terminated; has_nul if it held \u0000 */
    size_t str_len;
    int has_nul;
    int boolean;
    int is_int; /* J_NUM written without fraction or exponent, within int64 */
    long long integer;
    double number;
    struct jnode *child, *next;
};

struct json {
    struct jnode *nodes;
    size_t used, cap;
    char *text;
    size_t text_used, text_cap;
};

/* Parses payload (an object) into j; 0 on success, -1 on anything Python might see differently. */
int json_parse(struct json *j, const unsigned char *payload, size_t len, struct jnode **root);
void json_free(struct json *j);
struct jnode *json_get(const struct jnode *obj, const char *key);
void json_str(struct buf *b, const char *s, size_t n); /* a JSON string literal */
int utf8_valid(const char *s, size_t n);
int opt_bool(const struct jnode *n, int *out, int dflt); /* 1 if absent, null or a bool (in *out) */

/* -- the two byte streams ------------------------------------------------ */

void host_frame(enum kind kind, uint32_t sid, const void *payload, size_t len);
void host_frame2(enum kind kind, uint32_t sid, const void *a, size_t alen, const void *b, size_t blen);
void host_msg(uint32_t sid, struct buf *json_obj); /* frees json_obj's contents */
void host_error(uint32_t sid, const char *code, const char *message);
void host_window(uint32_t sid, size_t n); /* credit n more bytes to the host */
size_t host_queued(void);
void host_flush_now(double timeout); /* write what is queued for the host, waiting up to timeout */
void py_forward_open(uint32_t sid, const unsigned char *frame, size_t len, int splice);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
size_t read_file(const char *path, char *out, size_t cap); /* up to cap-1 bytes, NUL-ended */
void strip(char *s);                                      /* trailing whitespace */
void pid1_basics(void);                                   /* init.c: mounts, hostname, DNS, network */
long group_id(const char *name);                          /* the image's /etc/group; -1 if none */
double now_mono(void);
double now_real(void);

/* -- native operations --------------------------------------------------- */

/* Each returns 1 if it served the stream natively (it then owns it), 0 to forward. */
int op_hello(uint32_t sid, struct jnode *req);
int op_stat(uint32_t sid, struct jnode *req);  /* files.c */
int op_read(uint32_t sid, struct jnode *req);
int op_write(uint32_t sid, struct jnode *req);
int op_shutdown(uint32_t sid);
int op_exec(uint32_t sid, struct jnode *req);
int op_attach(uint32_t sid, struct jnode *req);
int op_signal(uint32_t sid, struct jnode *req);
int op_wait(uint32_t sid, struct jnode *req);

/* Native streams (exec, attach, wait) and the processes the front started. */
int native_owns(uint32_t sid);
void native_frame(enum kind kind, uint32_t sid, const unsigned char *payload, size_t len);
void native_reset(void);              /* the host connection ended: forget every stream */
void native_produce(void);            /* move output into the host's queue while it has room */
void native_processes(struct buf *b); /* ",{...}" per listed process, for the processes op */
int native_poll_fds(struct pollfd *fds, int max, double *deadline);
void native_poll_done(struct pollfd *fds, int n);
void native_reap(void);

/* files.c: the native writes in progress. */
int files_owns(uint32_t sid);
int files_frame(enum kind kind, uint32_t sid, const unsigned char *payload, size_t len); /* 1 if ours */
void files_reset(void);
void native_timers(void);

struct user {
    char name[256];
    char home[1024];
    char shell[1024];
    unsigned uid, gid;
    unsigned groups[64];
    int ngroups;
};
/* 1 found (or a bare uid), 0 unknown name (Python reports it), -1 odd input. */
int user_lookup(const struct jnode *given, struct user *u);

#endif
