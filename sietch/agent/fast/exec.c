/* The front's own commands: exec (foreground, pipes), and attach/signal/wait on them.
 *
 * Semantics follow sietch/agent/guest/{execops,process,table}.py: a command runs in its
 * own session with a clean environment; its output goes to the stream within the
 * host's credit and into per-channel rings (the last 1 MiB), so if the host goes
 * away the command lives on as a background job that a later `attach` replays.
 * Background and terminal commands are the Python agent's (forwarded), so every
 * pid has one owner: the front answers attach/signal/wait only for its own pids.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "front.h"

#define RING_LIMIT (1u << 20)
#define PAUSE_AT (4 * CHUNK)
#define MAX_EXITED 256
#define STDIN_LIMIT (4u << 20)
#define PATH_DEFAULT "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define BUSYBOX "/run/sietch/bin/busybox"
#define SEG_FRAME 0xFE

enum nkind { NS_EXEC, NS_ATTACH, NS_WAIT };

struct proc {
    pid_t pid;
    int out[3];   /* by channel (1, 2); -1 once closed */
    int in_fd;    /* -1: /dev/null, or closed */
    struct buf stdin_q; /* records: sid u32 | len u32 | bytes */
    size_t stdin_bytes;
    int stdin_eof;
    struct buf ring[3];
    size_t dropped[3];
    int running, done, exit_code, sig, timed_out, background, forgotten;
    double deadline, started_at;
    char *ident; /* "cmd":"..." or "argv":[...], as the host wrote it */
    char *tag;   /* the tag's JSON, or null */
    struct proc *next;
};

struct nstream {
    uint32_t id;
    enum nkind kind;
    struct proc *proc; /* NULL once its final message is queued */
    long long credit;
    struct buf q; /* records: type u8 | len u32 | bytes; type is a channel or SEG_FRAME */
    size_t head_sent, buffered, consumed;
    int finished;
    double deadline; /* a wait's timeout */
    char timeout_text[40];
    struct nstream *next;
};

static struct proc *procs;
static struct nstream *streams;

/* -- helpers -------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void seg_add(struct nstream *s, unsigned type, const void *data, size_t len) {
    unsigned char h[5];
    h[0] = (unsigned char)type;
    put32(h + 1, (uint32_t)len);
    buf_add(&s->q, h, 5);
    buf_add(&s->q, data, len);
    if (type != SEG_FRAME)
        s->buffered += len;
}

static void seg_frame(struct nstream *s, enum kind kind, const void *payload, size_t len) {
    unsigned char h[HEADER_LEN];
    h[0] = (unsigned char)kind;
    put32(h + 1, s->id);
    put32(h + 5, (uint32_t)len);
    struct buf f = {0};
    buf_add(&f, h, sizeof h);
    buf_add(&f, payload, len);
    seg_add(s, SEG_FRAME, buf_head(&f), buf_size(&f));
    buf_free(&f);
}

static void stream_msg(struct nstream *s, struct buf *obj) {
    seg_frame(s, K_MSG, buf_head(obj), buf_size(obj));
    buf_free(obj);
}

/* The final message and CLOSE; the stream is freed once CLOSE reaches the host's queue. */
static void stream_finish(struct nstream *s, struct buf *obj) {
    if (s->finished) {
        buf_free(obj);
        return;
    }
    stream_msg(s, obj);
    seg_frame(s, K_CLOSE, NULL, 0);
    s->finished = 1;
    s->proc = NULL;
}

static void stream_error(struct nstream *s, const char *code, const char *message) {
    struct buf b = {0};
    buf_addf(&b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":", code);
    json_str(&b, message, strlen(message));
    buf_add(&b, "}", 1);
    stream_finish(s, &b);
}

static struct nstream *stream_new(uint32_t sid, enum nkind kind, struct proc *p) {
    struct nstream *s = xcalloc(1, sizeof *s);
    s->id = sid;
    s->kind = kind;
    s->proc = p;
    s->credit = INITIAL_WINDOW;
    s->next = streams;
    streams = s;
    return s;
}

static void stream_free(struct nstream *s) {
    for (struct nstream **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    buf_free(&s->q);
    free(s);
}

static struct nstream *stream_find(uint32_t sid) {
    for (struct nstream *s = streams; s; s = s->next)
        if (s->id == sid)
            return s;
    return NULL;
}

int native_owns(uint32_t sid) { return stream_find(sid) != NULL; }

static struct proc *proc_find(long long pid) {
    for (struct proc *p = procs; p; p = p->next)
        if (p->pid == pid && !p->forgotten)
            return p;
    return NULL;
}

static int proc_referenced(const struct proc *p) {
    for (struct nstream *s = streams; s; s = s->next)
        if (s->proc == p)
            return 1;
    return 0;
}

/* Frees forgotten processes nobody follows any more; only from the loop's top level. */
static void sweep(void) {
    for (struct proc **pp = &procs; *pp;) {
        struct proc *p = *pp;
        if (p->forgotten && p->done && !proc_referenced(p)) {
            *pp = p->next;
            for (int c = 1; c <= 2; c++)
                buf_free(&p->ring[c]);
            buf_free(&p->stdin_q);
            free(p->ident);
            free(p->tag);
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void json_null_or_int(struct buf *b, int v) {
    if (v < 0)
        buf_add(b, "null", 4);
    else
        buf_addf(b, "%d", v);
}

static void proc_result(struct buf *b, const struct proc *p) {
    buf_add(b, "{\"type\":\"result\",\"exit_code\":", 29);
    json_null_or_int(b, p->exit_code);
    buf_add(b, ",\"signal\":", 10);
    json_null_or_int(b, p->sig);
    buf_addf(b, ",\"timed_out\":%s", p->timed_out ? "true" : "false");
}

/* -- signals ---------------------------------------------------------------- */

static const struct {
    const char *name;
    int sig;
} SIGNALS[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT},     {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},     {"IOT", SIGIOT},       {"BUS", SIGBUS},
    {"FPE", SIGFPE},   {"KILL", SIGKILL},     {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},     {"ALRM", SIGALRM},     {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},     {"TTOU", SIGTTOU},     {"URG", SIGURG},
    {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},     {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
    {"WINCH", SIGWINCH}, {"IO", SIGIO},       {"POLL", SIGPOLL},     {"PWR", SIGPWR},
    {"SYS", SIGSYS},
};

/* As execops.parse_signal: a name (any case, SIG optional), a number, or a digit string. */
static int parse_signal(const struct jnode *v, char *why, size_t whylen) {
    long long n = -1;
    if (v && v->type == J_NUM && v->is_int) {
        n = v->integer;
    } else if (v && v->type == J_STR && v->str_len && v->str_len < 16 && !v->has_nul) {
        const char *s = v->str;
        int digits = 1;
        for (size_t i = 0; i < v->str_len; i++)
            digits &= s[i] >= '0' && s[i] <= '9';
        if (digits) {
            n = strtoll(s, NULL, 10);
        } else {
            char up[16];
            size_t i;
            for (i = 0; i < v->str_len; i++)
                up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
            up[i] = '\0';
            const char *name = strncmp(up, "SIG", 3) ? up : up + 3;
            for (size_t k = 0; k < sizeof SIGNALS / sizeof *SIGNALS; k++)
                if (!strcmp(SIGNALS[k].name, name))
                    return SIGNALS[k].sig;
            snprintf(why, whylen, "unknown signal '%s'", v->str);
            return -1;
        }
    }
    if (n > 0 && n < NSIG)
        return (int)n;
    if (v && v->raw)
        snprintf(why, whylen, "invalid signal %.*s", (int)(v->raw_len > 40 ? 40 : v->raw_len), v->raw);
    else
        snprintf(why, whylen, "invalid signal None");
    return -1;
}

static int killpg_or_pid(pid_t pid, int sig) {
    if (killpg(pid, sig) == 0)
        return 1;
    return kill(pid, sig) == 0;
}

/* -- output ------------------------------------------------------------------ */

static void ring_add(struct proc *p, int c, const unsigned char *data, size_t n) {
    struct buf *r = &p->ring[c];
    buf_add(r, data, n);
    if (buf_size(r) > RING_LIMIT) {
        size_t cut = buf_size(r) - RING_LIMIT;
        p->dropped[c] += cut;
        r->off += cut;
        if (r->off > RING_LIMIT) { /* compact now and then, not per read */
            memmove(r->p, r->p + r->off, buf_size(r));
            r->len -= r->off;
            r->off = 0;
        }
    }
}

static int follows(const struct nstream *s, const struct proc *p) {
    return s->proc == p && s->kind != NS_WAIT && !s->finished;
}

static int paused(const struct proc *p) {
    for (struct nstream *s = streams; s; s = s->next)
        if (follows(s, p) && s->buffered > PAUSE_AT)
            return 1;
    return 0;
}

static void drop_stdin(struct proc *p);
static void proc_done(struct proc *p);

static void close_out(struct proc *p, int c) {
    if (p->out[c] < 0)
        return;
    close(p->out[c]);
    p->out[c] = -1;
    if (p->out[1] < 0 && p->out[2] < 0 && !p->running)
        proc_done(p);
}

/* Reads a channel: once per wakeup while running, everything there is after exit. */
static void pump(struct proc *p, int c) {
    static unsigned char data[CHUNK];
    while (p->out[c] >= 0 && !paused(p)) {
        ssize_t n = read(p->out[c], data, sizeof data);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!p->running)
                close_out(p, c); /* pipe writes complete before exit: that was all */
            return;
        }
        if (n <= 0) {
            close_out(p, c);
            return;
        }
        ring_add(p, c, data, (size_t)n);
        for (struct nstream *s = streams; s; s = s->next)
            if (follows(s, p))
                seg_add(s, (unsigned)c, data, (size_t)n);
        if (p->running)
            return;
    }
}

static void forget(struct proc *p) { p->forgotten = 1; }

static void attach_result(struct buf *b, const struct proc *p) {
    proc_result(b, p);
    buf_addf(b, ",\"running\":%s,\"dropped\":{\"stdout\":%zu,\"stderr\":%zu}}",
             p->running ? "true" : "false", p->dropped[1], p->dropped[2]);
}

static void proc_done(struct proc *p) {
    p->done = 1;
    drop_stdin(p);
    int forget_it = 0;
    for (struct nstream *s = streams; s; s = s->next) {
        if (!follows(s, p))
            continue;
        struct buf b = {0};
        if (s->kind == NS_EXEC) {
            proc_result(&b, p);
            buf_add(&b, "}", 1);
        } else {
            attach_result(&b, p);
        }
        forget_it = 1;
        stream_finish(s, &b);
    }
    if (forget_it)
        forget(p);
    /* as table._on_done: keep at most MAX_EXITED exited processes listed */
    int exited = 0;
    for (struct proc *q = procs; q; q = q->next)
        exited += q->done && !q->forgotten;
    for (struct proc *q = procs; q && exited > MAX_EXITED; q = q->next)
        if (q->done && !q->forgotten) {
            forget(q);
            exited--;
        }
}

/* -- stdin --------------------------------------------------------------------- */

static void credit_back(uint32_t sid, size_t n) {
    struct nstream *s = stream_find(sid);
    if (!s || s->finished)
        return;
    s->consumed += n;
    if (s->consumed >= WINDOW_EVERY) {
        host_window(s->id, s->consumed);
        s->consumed = 0;
    }
}

static void drop_stdin(struct proc *p) {
    while (buf_size(&p->stdin_q) >= 8) {
        unsigned char *h = buf_head(&p->stdin_q);
        uint32_t sid = rd32(h), len = rd32(h + 4);
        credit_back(sid, len);
        buf_drop(&p->stdin_q, 8 + len);
    }
    buf_free(&p->stdin_q);
    p->stdin_bytes = 0;
    if (p->in_fd >= 0)
        close(p->in_fd);
    p->in_fd = -1;
}

static void write_stdin(struct proc *p) {
    while (p->in_fd >= 0 && buf_size(&p->stdin_q) >= 8) {
        unsigned char *h = buf_head(&p->stdin_q);
        uint32_t sid = rd32(h), len = rd32(h + 4);
        ssize_t n = len ? write(p->in_fd, h + 8, len) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            drop_stdin(p); /* EPIPE: nobody reads it any more */
            return;
        }
        credit_back(sid, (size_t)n);
        p->stdin_bytes -= (size_t)n;
        if ((uint32_t)n == len) {
            buf_drop(&p->stdin_q, 8 + len);
        } else { /* the rest becomes a shorter record, its header just before it */
            put32(h + n, sid);
            put32(h + n + 4, len - (uint32_t)n);
            buf_drop(&p->stdin_q, (size_t)n);
        }
    }
    if (p->stdin_eof && !buf_size(&p->stdin_q))
        drop_stdin(p);
}

static void to_stdin(struct nstream *s, const unsigned char *data, size_t n) {
    struct proc *p = s->proc;
    if (!p || p->in_fd < 0 || p->stdin_bytes + n > STDIN_LIMIT) {
        credit_back(s->id, n); /* dropped, as Python drops input nobody can take */
        return;
    }
    unsigned char h[8];
    put32(h, s->id);
    put32(h + 4, (uint32_t)n);
    buf_add(&p->stdin_q, h, 8);
    buf_add(&p->stdin_q, data, n);
    p->stdin_bytes += n;
    write_stdin(p);
}

/* -- frames from the host on native streams ------------------------------------- */

static void abandon(struct nstream *s) {
    struct proc *p = s->proc;
    if (p && s->kind == NS_EXEC && !p->done)
        p->background = 1; /* the host went away: the command lives on like a background job */
    stream_free(s);
}

static void control(struct nstream *s, const unsigned char *payload, size_t len) {
    struct json j;
    struct jnode *msg;
    if (json_parse(&j, payload, len, &msg)) {
        json_free(&j);
        char why[80];
        snprintf(why, sizeof why, "stream %u: malformed MSG", s->id);
        struct proc *p = s->proc;
        if (p && s->kind == NS_EXEC && !p->done)
            p->background = 1;
        stream_error(s, "invalid_argument", why);
        return;
    }
    struct jnode *type = json_get(msg, "type");
    struct proc *p = s->proc;
    if (p && type && type->type == J_STR && !strcmp(type->str, "signal")) {
        char why[80];
        int sig = parse_signal(json_get(msg, "signal"), why, sizeof why);
        if (sig > 0 && p->running)
            killpg_or_pid(p->pid, sig);
    }
    json_free(&j); /* resize: a pipe has no terminal; anything else is ignored */
}

void native_frame(enum kind kind, uint32_t sid, const unsigned char *payload, size_t len) {
    struct nstream *s = stream_find(sid);
    if (!s)
        return; /* a late frame for a stream already finished */
    if (kind == K_WINDOW) {
        if (len >= 4)
            s->credit += rd32(payload);
    } else if (kind == K_CLOSE) {
        abandon(s);
    } else if (s->kind == NS_WAIT || s->finished) {
        return;
    } else if (kind == K_DATA && len) {
        if (payload[0] == CHANNEL_IN)
            to_stdin(s, payload + 1, len - 1);
        else
            credit_back(sid, len - 1);
    } else if (kind == K_EOF) {
        if (s->proc) {
            s->proc->stdin_eof = 1;
            write_stdin(s->proc);
        }
    } else if (kind == K_MSG) {
        control(s, payload, len);
    }
}

void native_reset(void) {
    while (streams)
        abandon(streams);
}

/* -- writing to the host ----------------------------------------------------------- */

/* One record (or a credit-sized piece of it) into the host's queue; 1 if s can go on. */
static int produce_one(struct nstream *s) {
    if (buf_size(&s->q) < 5)
        return 0;
    unsigned char *h = buf_head(&s->q);
    unsigned type = h[0];
    size_t len = rd32(h + 1);
    if (type == SEG_FRAME) {
        int close = h[5] == K_CLOSE;
        host_frame2((enum kind)h[5], rd32(h + 6), h + 5 + HEADER_LEN, len - HEADER_LEN, NULL, 0);
        buf_drop(&s->q, 5 + len);
        if (close) {
            stream_free(s);
            return 0;
        }
        return 1;
    }
    size_t rest = len - s->head_sent;
    size_t n = rest < CHUNK ? rest : CHUNK;
    if ((long long)n > s->credit)
        n = s->credit > 0 ? (size_t)s->credit : 0;
    if (!n)
        return 0;
    unsigned char ch = (unsigned char)type;
    host_frame2(K_DATA, s->id, &ch, 1, h + 5 + s->head_sent, n);
    s->credit -= (long long)n;
    s->buffered -= n;
    s->head_sent += n;
    if (s->head_sent == len) {
        buf_drop(&s->q, 5 + len);
        s->head_sent = 0;
    }
    return 1;
}

void native_produce(void) {
    int progress = 1;
    while (progress && host_queued() < 4 * CHUNK) {
        progress = 0;
        struct nstream *s = streams;
        while (s && host_queued() < 4 * CHUNK) {
            struct nstream *next = s->next; /* produce_one may free s */
            progress |= produce_one(s);
            s = next;
        }
    }
}

/* -- the event loop's side ----------------------------------------------------------- */

int native_poll_fds(struct pollfd *fds, int max, double *deadline) {
    int n = 0;
    for (struct proc *p = procs; p; p = p->next) {
        int stop = paused(p);
        for (int c = 1; c <= 2 && n < max; c++)
            if (p->out[c] >= 0 && !stop)
                fds[n++] = (struct pollfd){p->out[c], POLLIN, 0};
        if (p->in_fd >= 0 && buf_size(&p->stdin_q) && n < max)
            fds[n++] = (struct pollfd){p->in_fd, POLLOUT, 0};
        if (p->running && p->deadline && p->deadline < *deadline)
            *deadline = p->deadline;
    }
    for (struct nstream *s = streams; s; s = s->next)
        if (s->kind == NS_WAIT && s->deadline && !s->finished && s->deadline < *deadline)
            *deadline = s->deadline;
    return n;
}

void native_poll_done(struct pollfd *fds, int n) {
    for (int i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        for (struct proc *p = procs; p; p = p->next) {
            if (fds[i].fd == p->in_fd && (fds[i].events & POLLOUT)) {
                write_stdin(p);
                break;
            }
            int c = fds[i].fd == p->out[1] ? 1 : fds[i].fd == p->out[2] ? 2 : 0;
            if (c) {
                pump(p, c);
                break;
            }
        }
    }
    /* after exit, output still held back by a full stream drains as credit comes */
    for (struct proc *p = procs; p; p = p->next)
        if (!p->running && !p->done && !paused(p))
            for (int c = 1; c <= 2; c++)
                pump(p, c);
}

static void wait_done(struct nstream *s, struct proc *p) {
    struct buf b = {0};
    proc_result(&b, p);
    buf_add(&b, "}", 1);
    forget(p);
    stream_finish(s, &b);
}

static void exited(struct proc *p, int status) {
    if (WIFSIGNALED(status)) {
        p->sig = WTERMSIG(status);
        p->exit_code = -1;
    } else {
        p->exit_code = WEXITSTATUS(status);
        p->sig = -1;
    }
    p->running = 0;
    drop_stdin(p);
    for (struct nstream *s = streams; s; s = s->next)
        if (s->kind == NS_WAIT && s->proc == p && !s->finished)
            wait_done(s, p);
    if (p->out[1] < 0 && p->out[2] < 0)
        proc_done(p);
    else
        for (int c = 1; c <= 2; c++)
            pump(p, c);
}

void native_reap(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        for (struct proc *p = procs; p; p = p->next)
            if (p->pid == pid && p->running) {
                exited(p, status);
                break;
            }
    }
}

void native_timers(void) {
    double now = now_mono();
    sweep(); /* here only: nothing up the stack still holds a process */
    for (struct proc *p = procs; p; p = p->next)
        if (p->running && p->deadline && now >= p->deadline) {
            p->deadline = 0;
            p->timed_out = 1;
            logmsg("pid %d: timeout, killing its process group", p->pid);
            killpg_or_pid(p->pid, SIGKILL);
        }
    for (struct nstream *s = streams; s; s = s->next)
        if (s->kind == NS_WAIT && s->deadline && !s->finished && now >= s->deadline) {
            char why[120];
            snprintf(why, sizeof why, "process %d still running after %ss",
                     s->proc ? s->proc->pid : 0, s->timeout_text);
            stream_error(s, "timeout", why);
        }
}

void native_processes(struct buf *b) {
    for (struct proc *p = procs; p; p = p->next) {
        if (p->forgotten)
            continue;
        buf_addf(b, ",{\"pid\":%d,%s,\"tag\":%s,\"pty\":false,\"running\":%s,\"exit_code\":", p->pid,
                 p->ident, p->tag, p->running ? "true" : "false");
        json_null_or_int(b, p->exit_code);
        buf_add(b, ",\"signal\":", 10);
        json_null_or_int(b, p->sig);
        buf_addf(b, ",\"timed_out\":%s,\"started_at\":%.17g,\"background\":%s}",
                 p->timed_out ? "true" : "false", p->started_at, p->background ? "true" : "false");
    }
}

/* -- exec ----------------------------------------------------------------------- */

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int plain_str(const struct jnode *n) { return n && n->type == J_STR && !n->has_nul; }

static int opt_size(const struct jnode *n) {
    return !n || n->type == J_NULL || (n->type == J_NUM && n->is_int && n->integer > 0 && n->integer < 65536);
}

struct env {
    char *vars[4096];
    int n;
};

static void env_set(struct env *e, const char *key, size_t klen, const char *value) {
    size_t vlen = strlen(value);
    char *entry = xmalloc(klen + vlen + 2);
    memcpy(entry, key, klen);
    entry[klen] = '=';
    memcpy(entry + klen + 1, value, vlen + 1);
    for (int i = 0; i < e->n; i++)
        if (!strncmp(e->vars[i], key, klen) && e->vars[i][klen] == '=') {
            free(e->vars[i]);
            e->vars[i] = entry;
            return;
        }
    e->vars[e->n++] = entry;
}

static void env_free(struct env *e) {
    for (int i = 0; i < e->n; i++)
        free(e->vars[i]);
    e->n = 0;
}

static const char *env_get(const struct env *e, const char *key) {
    size_t klen = strlen(key);
    for (int i = 0; i < e->n; i++)
        if (!strncmp(e->vars[i], key, klen) && e->vars[i][klen] == '=')
            return e->vars[i] + klen + 1;
    return NULL;
}

/* The child, between vfork and exec: never returns; reports errno on the pipe if exec fails. */
static void child(char **argv, struct env *e, const char *cwd, int fds[3], const struct user *u,
                  int do_switch, int report) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            goto fail;
    if (chdir(cwd) < 0)
        goto fail;
    if (setsid() < 0)
        goto fail;
    if (do_switch) {
        gid_t groups[64];
        for (int i = 0; i < u->ngroups; i++)
            groups[i] = u->groups[i];
        if (setgroups((size_t)u->ngroups, groups) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
            goto fail;
    }
    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, e->vars);
    } else {
        const char *path = env_get(e, "PATH");
        char full[4096];
        int err = ENOENT;
        for (const char *d = path ? path : PATH_DEFAULT; d;) {
            const char *colon = strchr(d, ':');
            size_t dl = colon ? (size_t)(colon - d) : strlen(d);
            /* A name missing from a PATH entry is skipped after a path lookup: a failed
             * execve sets up (and tears down) a new address space with argv and the
             * environment copied in first, ~0.3 ms emulated each; `true` misses three. */
            if (snprintf(full, sizeof full, "%.*s%s%s", (int)dl, d, dl ? "/" : "", argv[0]) <
                    (int)sizeof full &&
                (access(full, F_OK) == 0 || (errno != ENOENT && errno != ENOTDIR))) {
                execve(full, argv, e->vars);
                if (errno != ENOENT && errno != ENOTDIR)
                    err = errno;
            }
            d = colon ? colon + 1 : NULL;
        }
        errno = err;
    }
fail:;
    int err = errno;
    ssize_t ignored = write(report, &err, sizeof err);
    (void)ignored;
    _exit(127);
}

/* vfork: the child shares our memory until it execs, so neither are our page tables
 * copied nor our pages faulted in copy-on-write afterwards (emulated, both cost). The
 * child only makes system calls and writes to its own stack before exec or _exit. */
static pid_t start_child(char **argv, struct env *e, const char *cwd, int fds[3],
                         const struct user *u, int do_switch, int report) {
    pid_t pid = vfork();
    if (pid == 0)
        child(argv, e, cwd, fds, u, do_switch, report);
    return pid;
}

/* Starts the command; 0 if the exec failed before anything ran (Python then reports why). */
static int spawn(struct proc *p, char **argv, struct env *e, const char *cwd, int want_stdin,
                 const struct user *u, int do_switch) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    int devnull = -1, ok = 0;
    if (want_stdin ? pipe2(in, O_CLOEXEC) : (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        goto out;
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(rep, O_CLOEXEC))
        goto out;
    int fds[3] = {want_stdin ? in[0] : devnull, out[1], err[1]};
    e->vars[e->n] = NULL;
    pid_t pid = start_child(argv, e, cwd, fds, u, do_switch, rep[1]);
    if (pid < 0)
        goto out;
    close(rep[1]);
    rep[1] = -1;
    int child_errno;
    ssize_t n;
    while ((n = read(rep[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR)
        ;
    if (n > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        goto out;
    }
    p->pid = pid;
    p->out[1] = out[0], out[0] = -1;
    p->out[2] = err[0], err[0] = -1;
    if (want_stdin)
        p->in_fd = in[1], in[1] = -1;
    for (int c = 1; c <= 2; c++)
        fcntl(p->out[c], F_SETFL, O_NONBLOCK);
    if (p->in_fd >= 0)
        fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    ok = 1;
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
        if (err[i] >= 0) close(err[i]);
        if (rep[i] >= 0) close(rep[i]);
    }
    if (devnull >= 0)
        close(devnull);
    return ok;
}

int op_exec(uint32_t sid, struct jnode *req) {
    struct jnode *argv_n = json_get(req, "argv"), *cmd_n = json_get(req, "cmd");
    int has_argv = argv_n && argv_n->type != J_NULL, has_cmd = cmd_n && cmd_n->type != J_NULL;
    int pty, background, want_stdin;
    if (has_argv == has_cmd || !opt_bool(json_get(req, "pty"), &pty, 0) || pty ||
        !opt_bool(json_get(req, "background"), &background, 0) || background ||
        !opt_bool(json_get(req, "stdin"), &want_stdin, 0) || !opt_size(json_get(req, "cols")) ||
        !opt_size(json_get(req, "rows")))
        return 0; /* terminals and background jobs are the Python agent's; so are odd requests */
    struct jnode *tag = json_get(req, "tag"), *timeout = json_get(req, "timeout");
    struct jnode *env_n = json_get(req, "env"), *cwd_n = json_get(req, "cwd");
    if (tag && tag->type != J_NULL && tag->type != J_STR)
        return 0;
    double secs = 0;
    if (timeout && timeout->type != J_NULL) {
        if (timeout->type != J_NUM || !(timeout->number > 0))
            return 0;
        secs = timeout->number;
    }
    if (env_n && env_n->type != J_NULL && env_n->type != J_OBJ)
        return 0;
    if (cwd_n && cwd_n->type != J_NULL && (!plain_str(cwd_n) || cwd_n->str[0] != '/' || !is_dir(cwd_n->str)))
        return 0;
    struct user u;
    if (user_lookup(json_get(req, "user"), &u) != 1)
        return 0;
    int do_switch = u.uid != geteuid() || u.gid != getegid();
    if (do_switch && geteuid() != 0)
        return 0;

    char *argv[1024];
    int argc = 0;
    if (has_cmd) {
        if (!plain_str(cmd_n))
            return 0;
        if (access("/bin/sh", F_OK) == 0) {
            argv[argc++] = "/bin/sh";
        } else if (access(BUSYBOX, F_OK) == 0) {
            argv[argc++] = BUSYBOX;
            argv[argc++] = "sh";
        } else {
            return 0;
        }
        argv[argc++] = "-c";
        argv[argc++] = (char *)cmd_n->str;
    } else {
        if (argv_n->type != J_ARR || !argv_n->child)
            return 0;
        for (struct jnode *a = argv_n->child; a; a = a->next) {
            if (!plain_str(a) || argc >= 1023)
                return 0;
            argv[argc++] = (char *)a->str;
        }
    }
    argv[argc] = NULL;

    struct env e = {.n = 0};
    env_set(&e, "PATH", 4, PATH_DEFAULT);
    env_set(&e, "HOME", 4, u.home);
    env_set(&e, "USER", 4, u.name);
    env_set(&e, "LOGNAME", 7, u.name);
    env_set(&e, "SHELL", 5, u.shell);
    env_set(&e, "LANG", 4, "C.UTF-8");
    if (env_n && env_n->type == J_OBJ) {
        for (struct jnode *v = env_n->child; v; v = v->next) {
            if (!v->key_len || memchr(v->key, '=', v->key_len) || strlen(v->key) != v->key_len ||
                !plain_str(v) || e.n >= 4000) {
                env_free(&e);
                return 0;
            }
            env_set(&e, v->key, v->key_len, v->str);
        }
    }
    const char *cwd = cwd_n && cwd_n->type == J_STR ? cwd_n->str : is_dir(u.home) ? u.home : "/";

    struct proc *p = xcalloc(1, sizeof *p);
    p->out[0] = p->out[1] = p->out[2] = p->in_fd = -1;
    p->exit_code = p->sig = -1;
    int started = spawn(p, argv, &e, cwd, want_stdin, &u, do_switch);
    env_free(&e);
    if (!started) {
        free(p);
        return 0;
    }
    p->running = 1;
    p->started_at = now_real();
    if (secs)
        p->deadline = now_mono() + secs;
    struct buf ident = {0};
    if (has_cmd) {
        buf_add(&ident, "\"cmd\":", 6);
        buf_add(&ident, cmd_n->raw, cmd_n->raw_len);
    } else {
        buf_add(&ident, "\"argv\":", 7);
        buf_add(&ident, argv_n->raw, argv_n->raw_len);
    }
    buf_add(&ident, "", 1);
    p->ident = (char *)ident.p;
    struct buf t = {0};
    if (tag && tag->type == J_STR)
        buf_add(&t, tag->raw, tag->raw_len);
    else
        buf_add(&t, "null", 4);
    buf_add(&t, "", 1);
    p->tag = (char *)t.p;
    p->next = procs;
    procs = p;

    struct nstream *s = stream_new(sid, NS_EXEC, p);
    struct buf started_msg = {0};
    buf_addf(&started_msg, "{\"type\":\"started\",\"pid\":%d}", p->pid);
    stream_msg(s, &started_msg);
    return 1;
}

/* -- attach, signal, wait on the front's own processes ----------------------------- */

static struct proc *own_pid(struct jnode *req) {
    struct jnode *pid = json_get(req, "pid");
    return pid && pid->type == J_NUM && pid->is_int ? proc_find(pid->integer) : NULL;
}

int op_attach(uint32_t sid, struct jnode *req) {
    struct proc *p = own_pid(req);
    int follow, from_start;
    if (!p || !opt_bool(json_get(req, "follow"), &follow, 1) ||
        !opt_bool(json_get(req, "from_start"), &from_start, 1))
        return 0;
    struct nstream *s = stream_new(sid, NS_ATTACH, p);
    if (from_start)
        for (int c = 1; c <= 2; c++)
            for (size_t off = 0; off < buf_size(&p->ring[c]); off += CHUNK) {
                size_t n = buf_size(&p->ring[c]) - off;
                seg_add(s, (unsigned)c, buf_head(&p->ring[c]) + off, n < CHUNK ? n : CHUNK);
            }
    if (!follow || p->done) {
        struct buf b = {0};
        attach_result(&b, p);
        if (p->done)
            forget(p);
        stream_finish(s, &b);
    }
    return 1;
}

int op_signal(uint32_t sid, struct jnode *req) {
    struct proc *p = own_pid(req);
    if (!p)
        return 0;
    struct nstream *s = stream_new(sid, NS_WAIT, NULL);
    struct jnode *v = json_get(req, "signal");
    char why[120];
    int sig = v ? parse_signal(v, why, sizeof why) : -1;
    if (!v) {
        stream_error(s, "invalid_argument", "missing argument 'signal'");
    } else if (sig < 0) {
        stream_error(s, "invalid_argument", why);
    } else if (!p->running || !killpg_or_pid(p->pid, sig)) {
        snprintf(why, sizeof why, "process %d has exited", p->pid);
        stream_error(s, "no_such_process", why);
    } else {
        struct buf b = {0};
        buf_add(&b, "{\"type\":\"result\"}", 17);
        stream_finish(s, &b);
    }
    return 1;
}

int op_wait(uint32_t sid, struct jnode *req) {
    struct proc *p = own_pid(req);
    struct jnode *timeout = json_get(req, "timeout");
    if (!p)
        return 0;
    struct nstream *s = stream_new(sid, NS_WAIT, p);
    if (timeout && timeout->type != J_NULL && timeout->type != J_NUM) {
        s->proc = NULL;
        stream_error(s, "invalid_argument", "argument 'timeout' must be a number");
        return 1;
    }
    if (!p->running) {
        wait_done(s, p);
        return 1;
    }
    if (timeout && timeout->type == J_NUM) {
        s->deadline = now_mono() + (timeout->number > 0 ? timeout->number : 0);
        double t = timeout->number;
        if (t == (double)(long long)t)
            snprintf(s->timeout_text, sizeof s->timeout_text, "%.1f", t);
        else
            snprintf(s->timeout_text, sizeof s->timeout_text, "%.17g", t);
    }
    return 1;
}
