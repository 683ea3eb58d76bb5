/* sietch-front: start-up, the event loop, framing, and forwarding to the Python agent.
 *
 *   sietch-front PYTHON ARGS...
 *
 * run by the tools disk's launcher as PID 1: it makes a socketpair and forks;
 * the parent (still PID 1) execs the Python agent with SIETCH_FRONT_FD set to
 * its end, the child serves the virtio-serial port. So Python stays PID 1 (init,
 * reaping, services) and the port is opened by one process only.
 *
 * Towards Python the front is the host: it sends SYNC, waits for the answer
 * (dropping whatever came before it), and forwards every stream it does not
 * serve itself verbatim. As PID 1 it does the PID-1 basics (init.c) before
 * it execs Python, so a cold-booted VM runs commands before Python has even
 * started. An image with services of its own (/etc/sietch/start) is the
 * exception: they must be up before anything else runs, so until Python says
 * it is ready (the answer to an internal `processes` request, which Python
 * serves only after its PID-1 setup) every stream is forwarded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <endian.h>

#include "front.h"

const unsigned char MAGIC[MAGIC_LEN] = {0xff, 'S', 'I', 'E', 'T', 'C', 'H', 0x01};

#define PORT_NAME "org.sietch.agent"
#define SERVICES_START "/etc/sietch/start" /* services.py's START */
#define PYTHON_START_NICE 10
#define READ_SIZE (256 * 1024)
#define WRITE_HIGH (4 * CHUNK)
#define PY_READ_PAUSE (2u << 20) /* host queue size above which Python's socket is not read */
#define TORN_FRAME_AFTER 2.0
#define TORN_SYNC_AFTER 0.25

/* A parser over one byte stream, in the shape of protocol.Parser. */
struct parser {
    struct buf in;
    int scanning;
    int want; /* scanning only for the answer to our SYNC (want_nonce) */
    unsigned char nonce[8];
};

static int port_fd = -1, py_fd = -1, sig_fd = -1;
static int host_up;       /* a host has the port open */
static struct parser hostp, pyp;
static struct buf host_out, py_out;
static unsigned char host_nonce[8];
static int have_host_nonce;
static double partial_since;
static int partial_suspect;
static int py_ready;
static int early; /* serve before Python is ready: the basics are done, no services */

/* Streams forwarded to Python, by host stream id. */
struct pystream {
    uint32_t id;
    int splice; /* a processes op: the front's own processes join its result */
};
static struct pystream *pys;
static size_t npys, cappys;

void logmsg(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    /* The agent's own prefix: the console reads as one agent's log, as before the front. */
    dprintf(2, "sietch-agent: [%8.3f] front: %s\n", (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, line);
}

double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put_header(unsigned char *h, enum kind kind, uint32_t sid, uint32_t len) {
    h[0] = (unsigned char)kind;
    h[1] = (unsigned char)(sid >> 24), h[2] = (unsigned char)(sid >> 16);
    h[3] = (unsigned char)(sid >> 8), h[4] = (unsigned char)sid;
    h[5] = (unsigned char)(len >> 24), h[6] = (unsigned char)(len >> 16);
    h[7] = (unsigned char)(len >> 8), h[8] = (unsigned char)len;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void host_frame2(enum kind kind, uint32_t sid, const void *a, size_t alen, const void *b, size_t blen) {
    if (!host_up)
        return;
    unsigned char h[HEADER_LEN];
    put_header(h, kind, sid, (uint32_t)(alen + blen));
    buf_add(&host_out, h, sizeof h);
    buf_add(&host_out, a, alen);
    buf_add(&host_out, b, blen);
}

void host_frame(enum kind kind, uint32_t sid, const void *payload, size_t len) {
    host_frame2(kind, sid, payload, len, NULL, 0);
}

void host_msg(uint32_t sid, struct buf *obj) {
    if (buf_size(obj) > MAX_PAYLOAD) {
        buf_free(obj);
        host_error(sid, "internal", "result too large");
        return;
    }
    host_frame(K_MSG, sid, buf_head(obj), buf_size(obj));
    buf_free(obj);
}

void host_error(uint32_t sid, const char *code, const char *message) {
    struct buf b = {0};
    buf_addf(&b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":", code);
    json_str(&b, message, strlen(message));
    buf_add(&b, "}", 1);
    host_msg(sid, &b);
    host_frame(K_CLOSE, sid, NULL, 0);
}

void host_window(uint32_t sid, size_t n) {
    unsigned char w[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    host_frame(K_WINDOW, sid, w, 4);
}

size_t host_queued(void) { return buf_size(&host_out); }

static void py_frame(enum kind kind, uint32_t sid, const void *payload, size_t len) {
    unsigned char h[HEADER_LEN];
    put_header(h, kind, sid, (uint32_t)len);
    buf_add(&py_out, h, sizeof h);
    buf_add(&py_out, payload, len);
}

/* -- streams forwarded to Python ------------------------------------------ */

static struct pystream *py_find(uint32_t sid) {
    for (size_t i = 0; i < npys; i++)
        if (pys[i].id == sid)
            return &pys[i];
    return NULL;
}

static void py_forget(uint32_t sid) {
    for (size_t i = 0; i < npys; i++)
        if (pys[i].id == sid) {
            pys[i] = pys[--npys];
            return;
        }
}

void py_forward_open(uint32_t sid, const unsigned char *frame, size_t len, int splice) {
    if (npys == cappys) {
        cappys = cappys ? cappys * 2 : 64;
        pys = realloc(pys, cappys * sizeof *pys);
        if (!pys)
            abort();
    }
    pys[npys++] = (struct pystream){sid, splice};
    buf_add(&py_out, frame, len);
}

/* A new SYNC to Python: it forgets the streams of the host connection that ended. */
static void py_resync(void) {
    unsigned char payload[SYNC_LEN];
    memcpy(payload, MAGIC, MAGIC_LEN);
    for (int i = 0; i < 8; i++)
        pyp.nonce[i] = (unsigned char)(random() & 0xff);
    memcpy(payload + MAGIC_LEN, pyp.nonce, 8);
    py_frame(K_SYNC, 0, payload, sizeof payload);
    pyp.scanning = 1;
    pyp.want = 1;
    npys = 0;
    if (!py_ready) /* ask again: the old request went with the old connection */
        py_frame(K_OPEN, INTERNAL_STREAM, "{\"op\":\"processes\"}", 18);
}

/* -- framing --------------------------------------------------------------- */

static int valid_kind(unsigned k) { return (k >= K_OPEN && k <= K_WINDOW) || k == K_SYNC; }

/* Drops bytes up to the next acceptable SYNC frame; 1 once found. */
static int scan(struct parser *p) {
    unsigned char target[HEADER_LEN + SYNC_LEN];
    put_header(target, K_SYNC, 0, SYNC_LEN);
    memcpy(target + HEADER_LEN, MAGIC, MAGIC_LEN);
    size_t tlen = HEADER_LEN + MAGIC_LEN;
    if (p->want) {
        memcpy(target + tlen, p->nonce, 8);
        tlen += 8;
    }
    unsigned char *hit = memmem(buf_head(&p->in), buf_size(&p->in), target, tlen);
    if (!hit) {
        if (buf_size(&p->in) > tlen - 1)
            buf_drop(&p->in, buf_size(&p->in) - (tlen - 1));
        return 0;
    }
    buf_drop(&p->in, (size_t)(hit - buf_head(&p->in)));
    p->scanning = 0;
    p->want = 0;
    return 1;
}

/* The next whole frame in p->in, or 0; *frame points into the buffer until the next call. */
static int next_frame(struct parser *p, unsigned char **frame, size_t *len) {
    for (;;) {
        if (p->scanning && !scan(p))
            return 0;
        if (buf_size(&p->in) < HEADER_LEN)
            return 0;
        unsigned char *h = buf_head(&p->in);
        uint32_t length = get32(h + 5);
        if (!valid_kind(h[0]) || length > MAX_PAYLOAD + 1) {
            p->scanning = 1;
            buf_drop(&p->in, 1);
            continue;
        }
        if (buf_size(&p->in) < HEADER_LEN + (size_t)length)
            return 0;
        *frame = h;
        *len = HEADER_LEN + length;
        buf_drop(&p->in, *len);
        return 1;
    }
}

/* -- frames from the host ---------------------------------------------------- */

static void flush(int fd, struct buf *b);

static void host_sync(const unsigned char *payload, size_t len, uint32_t sid) {
    if (len != SYNC_LEN || memcmp(payload, MAGIC, MAGIC_LEN)) {
        logmsg("malformed SYNC ignored");
        return;
    }
    if (have_host_nonce && !memcmp(payload + MAGIC_LEN, host_nonce, 8)) {
        host_frame(K_SYNC, sid, payload, len); /* a repeat: same connection */
        return;
    }
    native_reset();
    files_reset();
    if (npys)
        py_resync();
    buf_free(&host_out);
    memcpy(host_nonce, payload + MAGIC_LEN, 8);
    have_host_nonce = 1;
    host_frame(K_SYNC, sid, payload, len);
    flush(port_fd, &host_out); /* the answer first: the console line costs emulated UART time */
    uint64_t nonce;
    memcpy(&nonce, host_nonce, 8);
    logmsg("SYNC %016llx: new host connection", (unsigned long long)be64toh(nonce));
}

static int serve_native(uint32_t sid, struct jnode *req) {
    struct jnode *op = json_get(req, "op");
    if (!op || op->type != J_STR)
        return 0;
    const char *name = op->str;
    if (!strcmp(name, "hello"))
        return op_hello(sid, req);
    if (!strcmp(name, "exec"))
        return op_exec(sid, req);
    if (!strcmp(name, "stat"))
        return op_stat(sid, req);
    if (!strcmp(name, "read"))
        return op_read(sid, req);
    if (!strcmp(name, "write"))
        return op_write(sid, req);
    if (!strcmp(name, "attach"))
        return op_attach(sid, req);
    if (!strcmp(name, "signal"))
        return op_signal(sid, req);
    if (!strcmp(name, "wait"))
        return op_wait(sid, req);
    if (!strcmp(name, "shutdown"))
        return op_shutdown(sid);
    return 0;
}

static void host_open(const unsigned char *frame, size_t len) {
    uint32_t sid = get32(frame + 1);
    if (py_find(sid) || native_owns(sid) || files_owns(sid)) {
        logmsg("OPEN for stream %u, which is still open: ignored", sid);
        return;
    }
    int splice = 0;
    if (py_ready || early) {
        struct json j;
        struct jnode *req;
        if (json_parse(&j, frame + HEADER_LEN, len - HEADER_LEN, &req) == 0) {
            int served = serve_native(sid, req);
            struct jnode *op = json_get(req, "op");
            splice = op && op->type == J_STR && !strcmp(op->str, "processes");
            json_free(&j);
            if (served)
                return;
        } else {
            json_free(&j);
        }
    }
    py_forward_open(sid, frame, len, splice);
}

static void host_handle(unsigned char *frame, size_t len) {
    enum kind kind = frame[0];
    uint32_t sid = get32(frame + 1);
    const unsigned char *payload = frame + HEADER_LEN;
    size_t plen = len - HEADER_LEN;
    if (kind == K_SYNC) {
        host_sync(payload, plen, sid);
        return;
    }
    if (!have_host_nonce)
        return; /* nothing before the first SYNC is meant for us */
    if (kind == K_OPEN) {
        host_open(frame, len);
        return;
    }
    if (py_find(sid)) {
        buf_add(&py_out, frame, len);
        if (kind == K_CLOSE)
            py_forget(sid);
        return;
    }
    if (!files_frame(kind, sid, payload, plen))
        native_frame(kind, sid, payload, plen);
}

static void host_gone(void) {
    logmsg("host connection ended");
    host_up = 0;
    have_host_nonce = 0;
    native_reset();
    files_reset();
    if (npys)
        py_resync();
    buf_free(&host_out);
    buf_free(&hostp.in);
    hostp.scanning = 1;
}

static void host_read(void) {
    static unsigned char data[READ_SIZE];
    for (int turn = 0; turn < 16; turn++) {
        ssize_t n = read(port_fd, data, sizeof data);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0) {
            if (n < 0)
                logmsg("port read failed: %s", strerror(errno));
            host_gone();
            return;
        }
        int between = buf_size(&hostp.in) == 0;
        buf_add(&hostp.in, data, (size_t)n);
        unsigned char *frame;
        size_t len;
        int framed = 0;
        while (host_up && next_frame(&hostp, &frame, &len)) {
            host_handle(frame, len);
            framed = 1;
        }
        if (!host_up)
            return; /* a write failed meanwhile: the connection is gone */
        size_t held = hostp.scanning ? 0 : buf_size(&hostp.in);
        if (between || framed) {
            partial_since = now_mono();
            partial_suspect = 0;
        }
        if (held && memmem(data + ((size_t)n > held ? (size_t)n - held : 0),
                           (size_t)n > held ? held : (size_t)n, MAGIC, MAGIC_LEN))
            partial_suspect = 1;
    }
}

/* A frame left half-sent by a host that went away unnoticed would swallow the next SYNC. */
static void torn_check(void) {
    if (!host_up || hostp.scanning || !buf_size(&hostp.in))
        return;
    double after = partial_suspect ? TORN_SYNC_AFTER : TORN_FRAME_AFTER;
    if (now_mono() - partial_since < after)
        return;
    logmsg("a frame stayed incomplete for %.2fs: presumed torn, rescanning for SYNC",
           now_mono() - partial_since);
    hostp.scanning = 1;
    partial_suspect = 0;
    partial_since = now_mono();
    unsigned char *frame;
    size_t len;
    while (next_frame(&hostp, &frame, &len))
        host_handle(frame, len);
}

/* -- frames from Python -------------------------------------------------------- */

/* The processes result with the front's own processes added to its list. */
static void splice_processes(uint32_t sid, const unsigned char *payload, size_t len) {
    static const char head[] = "{\"type\":\"result\",\"processes\":[";
    size_t hl = sizeof head - 1;
    struct buf mine = {0};
    native_processes(&mine);
    if (!buf_size(&mine) || len < hl + 2 || memcmp(payload, head, hl) ||
        memcmp(payload + len - 2, "]}", 2)) {
        buf_free(&mine);
        host_frame(K_MSG, sid, payload, len);
        return;
    }
    struct buf out = {0};
    buf_add(&out, payload, len - 2);
    /* mine starts with ",": drop it when Python's list is empty */
    size_t skip = len == hl + 2 ? 1 : 0;
    buf_add(&out, buf_head(&mine) + skip, buf_size(&mine) - skip);
    buf_add(&out, "]}", 2);
    buf_free(&mine);
    host_msg(sid, &out);
}

static void py_handle(unsigned char *frame, size_t len) {
    enum kind kind = frame[0];
    uint32_t sid = get32(frame + 1);
    if (kind == K_SYNC)
        return; /* the answer to our SYNC, or a repeat of it */
    if (sid == INTERNAL_STREAM) {
        if (kind == K_MSG && !py_ready) {
            py_ready = 1;
            logmsg("the Python agent is ready: serving the hot path");
        }
        return;
    }
    struct pystream *s = py_find(sid);
    if (!s)
        return; /* a stream the host already closed */
    if (kind == K_MSG && s->splice)
        splice_processes(sid, frame + HEADER_LEN, len - HEADER_LEN);
    else if (host_up)
        buf_add(&host_out, frame, len);
    if (kind == K_CLOSE)
        py_forget(sid);
}

static void py_read(void) {
    static unsigned char data[READ_SIZE];
    ssize_t n = read(py_fd, data, sizeof data);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        logmsg("the Python agent's socket closed: exiting");
        exit(1);
    }
    buf_add(&pyp.in, data, (size_t)n);
    unsigned char *frame;
    size_t len;
    while (next_frame(&pyp, &frame, &len))
        py_handle(frame, len);
}

/* -- writing ------------------------------------------------------------------- */

static void flush(int fd, struct buf *b) {
    while (buf_size(b)) {
        ssize_t n = write(fd, buf_head(b), buf_size(b));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && fd == port_fd) {
                logmsg("port write failed: %s", strerror(errno));
                host_gone();
            }
            return;
        }
        buf_drop(b, (size_t)n);
    }
}

void host_flush_now(double timeout) {
    double until = now_mono() + timeout;
    while (host_up && buf_size(&host_out) && now_mono() < until) {
        flush(port_fd, &host_out);
        struct pollfd p = {port_fd, POLLOUT, 0};
        if (buf_size(&host_out))
            poll(&p, 1, 50);
    }
}

/* -- the port ------------------------------------------------------------------ */

static char *find_port(void) {
    static char path[300];
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return NULL;
    struct dirent *e;
    char *found = NULL;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char file[300], name[64] = {0};
        snprintf(file, sizeof file, "/sys/class/virtio-ports/%.200s/name", e->d_name);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == ' '))
            name[--n] = '\0';
        snprintf(path, sizeof path, "/dev/%.200s", e->d_name);
        if (n > 0 && !strcmp(name, PORT_NAME) && access(path, F_OK) == 0) {
            found = path;
            break;
        }
    }
    closedir(d);
    return found;
}

static int host_connected(void) {
    struct pollfd p = {port_fd, POLLIN | POLLOUT, 0};
    return poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP);
}

static void set_async(int on) {
    int flags = fcntl(port_fd, F_GETFL);
    fcntl(port_fd, F_SETFL, on ? flags | O_ASYNC : flags & ~O_ASYNC);
}

static void serve(void) {
    static struct pollfd fds[8192]; /* a pipe pair per running command: far above what runs at once */
    for (;;) {
        if (!host_up && host_connected()) {
            set_async(0);
            host_up = 1;
            hostp.scanning = 1;
        } else if (!host_up) {
            set_async(1); /* SIGIO when the host opens its end */
        }
        native_produce();
        if (host_up)
            flush(port_fd, &host_out);
        flush(py_fd, &py_out);
        int n = 0;
        double deadline = now_mono() + (host_up ? 60.0 : 1.0);
        fds[n++] = (struct pollfd){sig_fd, POLLIN, 0};
        fds[n++] = (struct pollfd){py_fd, (short)((buf_size(&host_out) < PY_READ_PAUSE ? POLLIN : 0) |
                                                  (buf_size(&py_out) ? POLLOUT : 0)), 0};
        if (host_up)
            fds[n++] = (struct pollfd){port_fd, (short)(POLLIN | (buf_size(&host_out) ? POLLOUT : 0)), 0};
        int first_native = n;
        n += native_poll_fds(fds + n, (int)(sizeof fds / sizeof *fds) - n, &deadline);
        if (host_up && !hostp.scanning && buf_size(&hostp.in)) {
            double torn = partial_since + (partial_suspect ? TORN_SYNC_AFTER : TORN_FRAME_AFTER);
            if (torn < deadline)
                deadline = torn;
        }
        double wait = deadline - now_mono();
        int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        int ready = poll(fds, (nfds_t)n, ms);
        if (ready < 0) {
            if (errno != EINTR)
                logmsg("poll: %s", strerror(errno));
            continue;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sig_fd, &si, sizeof si) == sizeof si)
                if (si.ssi_signo == SIGCHLD)
                    native_reap();
        }
        if (fds[1].revents & (POLLIN | POLLHUP))
            py_read();
        if (fds[1].revents & POLLOUT)
            flush(py_fd, &py_out);
        if (host_up && fds[2].revents) {
            if (fds[2].revents & POLLIN)
                host_read();
            else if (fds[2].revents & (POLLHUP | POLLERR))
                host_gone();
            if (host_up && (fds[2].revents & POLLOUT))
                flush(port_fd, &host_out);
        }
        native_poll_done(fds + first_native, n - first_native);
        native_reap();
        native_timers();
        torn_check();
    }
}

static void run_front(int fd) {
    py_fd = fd;
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGIO);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    srandom((unsigned)(now_real() * 1e6) ^ (unsigned)getpid());
    fcntl(py_fd, F_SETFL, fcntl(py_fd, F_GETFL) | O_NONBLOCK);
    pyp.scanning = 1;
    hostp.scanning = 1;
    py_resync();
    char *path = NULL;
    for (int tries = 0; !(path = find_port()); tries++) {
        if (tries == 250)
            logmsg("virtio-serial port %s not found yet; still looking", PORT_NAME);
        usleep(20000);
    }
    port_fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (port_fd < 0) {
        logmsg("cannot open %s: %s", path, strerror(errno));
        exit(1);
    }
    fcntl(port_fd, F_SETOWN, getpid());
    logmsg("serving on %s", path);
    serve();
}

int main(int argc, char **argv) {
    if (argc < 2) {
        dprintf(2, "usage: sietch-front PROGRAM ARGS...\n");
        return 2;
    }
    if (getpid() == 1) {
        pid1_basics();
        setenv("SIETCH_FRONT_BASICS", "1", 1); /* Python's setup skips them */
        early = access(SERVICES_START, X_OK) != 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            run_front(sv[1]);
            _exit(1);
        }
        if (pid > 0) {
            char fdarg[16];
            close(sv[1]);
            fcntl(sv[0], F_SETFD, 0); /* Python inherits its end */
            snprintf(fdarg, sizeof fdarg, "%d", sv[0]);
            setenv("SIETCH_FRONT_FD", fdarg, 1);
            /* Python's start shares the vCPU with the first commands we serve: it goes
             * niced until its setup puts it back (init.py) */
            if (early && setpriority(PRIO_PROCESS, 0, PYTHON_START_NICE) < 0)
                logmsg("cannot nice the Python agent's start: %s", strerror(errno));
        } else {
            dprintf(2, "sietch-front: fork failed (%s): the Python agent serves the port\n",
                    strerror(errno));
        }
    }
    execv(argv[1], argv + 1);
    dprintf(2, "sietch-front: cannot exec %s: %s\n", argv[1], strerror(errno));
    return 127;
}
