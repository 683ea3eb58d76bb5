/* stat, and read and write of small files: a step of an RL rollout writes and reads a few
 * KiB, and through the Python agent each costs ~17 ms of emulated guest CPU (its event loop
 * and worker thread under TCG) where the front needs well under one.
 *
 * Same semantics as sietch/agent/guest/files.py. Only the plain case is served here: a
 * regular file (no symlink as the last part) in an existing directory, a read of at most
 * FILE_NATIVE_MAX bytes, a write the host says is at most that big (its `size` argument;
 * the front writes synchronously, so a big upload would hold every other stream up) and
 * not appending. Anything else, and every error before the first byte, goes to the Python
 * agent, which words the error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "front.h"

#define FILE_NATIVE_MAX (INITIAL_WINDOW / 2)

/* -- paths ------------------------------------------------------------------------ */

static const char *const FORBIDDEN[] = {"/proc", "/sys", "/dev", "/run/sietch"};

static int forbidden(const char *path) {
    for (size_t i = 0; i < sizeof FORBIDDEN / sizeof *FORBIDDEN; i++) {
        size_t n = strlen(FORBIDDEN[i]);
        if (!strncmp(path, FORBIDDEN[i], n) && (path[n] == '\0' || path[n] == '/'))
            return 1;
    }
    return 0;
}

/* "/" + normpath(value).lstrip("/"): "." and empty parts dropped, ".." taken lexically. */
static int normalise(const char *value, char *out, size_t cap) {
    size_t len = 0;
    out[len++] = '/';
    for (const char *p = value; *p;) {
        while (*p == '/')
            p++;
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (len > 1 && out[len - 1] != '/')
                len--;
            if (len > 1)
                len--;
        } else {
            if (len + n + 2 > cap)
                return -1;
            if (len > 1)
                out[len++] = '/';
            memcpy(out + len, p, n);
            len += n;
        }
        p = end;
    }
    out[len] = '\0';
    return 0;
}

/* The request's path cleaned as clean_path does, into path (PATH_MAX), its directory into
 * parent, and its last part; 0 unless it and where its directory leads are allowed. */
static int clean_path(const struct jnode *req, char *path, char *parent, const char **name) {
    const struct jnode *v = json_get(req, "path");
    if (!v || v->type != J_STR || v->has_nul || v->str[0] != '/' || !utf8_valid(v->str, v->str_len) ||
        normalise(v->str, path, PATH_MAX) || forbidden(path))
        return 0;
    const char *slash = strrchr(path, '/');
    *name = slash + 1;
    size_t plen = slash == path ? 1 : (size_t)(slash - path);
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    char resolved[PATH_MAX], real[PATH_MAX * 2];
    if (!realpath(parent, resolved))
        return 0; /* Python's realpath is lenient here: let it decide */
    snprintf(real, sizeof real, "%s%s%s", resolved, strcmp(resolved, "/") && **name ? "/" : "", *name);
    return !forbidden(real);
}

/* errors.py's _ERRNO_CODES */
static const char *errno_code(int e) {
    switch (e) {
    case ENOENT: return "not_found";
    case EEXIST: return "exists";
    case EACCES: case EPERM: case EROFS: return "permission_denied";
    case EISDIR: return "is_a_directory";
    case ENOTDIR: return "not_a_directory";
    case ENOTEMPTY: return "not_empty";
    case EINVAL: case ENAMETOOLONG: case ELOOP: return "invalid_argument";
    default: return "internal";
    }
}

/* from_os_error(exc, path) */
static void os_error(uint32_t sid, const char *path, int e) {
    char message[PATH_MAX + 128];
    snprintf(message, sizeof message, "%s: %s", path, strerror(e));
    host_error(sid, errno_code(e), message);
}

/* An optional integer argument that Python's arg_int accepts and is >= 0; -1 if absent. */
static int opt_count(const struct jnode *n, long long *out) {
    *out = -1;
    if (!n || n->type == J_NULL)
        return 1;
    if (n->type != J_NUM || !n->is_int || n->integer < 0)
        return 0;
    *out = n->integer;
    return 1;
}

/* -- stat ------------------------------------------------------------------------- */

int op_stat(uint32_t sid, struct jnode *req) {
    char path[PATH_MAX], parent[PATH_MAX], target[PATH_MAX];
    const char *name;
    if (!clean_path(req, path, parent, &name))
        return 0;
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno != ENOENT)
            return 0; /* Python words the error */
        /* answered here, since a cold boot's desktop check stats a file most images lack
         * before the Python agent is up */
        os_error(sid, path, ENOENT);
        return 1;
    }
    const char *type = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "dir" : S_ISLNK(st.st_mode) ? "symlink" : "other";
    ssize_t tlen = -1;
    if (S_ISLNK(st.st_mode)) {
        tlen = readlink(path, target, sizeof target - 1);
        if (tlen >= 0 && !utf8_valid(target, (size_t)tlen))
            return 0;
    }
    struct buf b = {0};
    buf_add(&b, "{\"type\":\"result\",\"entry\":{\"name\":", 33);
    if (*name)
        json_str(&b, name, strlen(name));
    else
        buf_add(&b, "\"/\"", 3);
    buf_add(&b, ",\"path\":", 8);
    json_str(&b, path, strlen(path));
    double mtime = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
    buf_addf(&b, ",\"type\":\"%s\",\"size\":%lld,\"mode\":%u,\"mtime\":%.17g", type, (long long)st.st_size,
             (unsigned)(st.st_mode & 07777), mtime);
    if (S_ISLNK(st.st_mode)) {
        buf_add(&b, ",\"target\":", 10);
        if (tlen >= 0)
            json_str(&b, target, (size_t)tlen);
        else
            buf_add(&b, "null", 4);
    }
    buf_addf(&b, ",\"uid\":%u,\"gid\":%u}}", (unsigned)st.st_uid, (unsigned)st.st_gid);
    host_msg(sid, &b);
    host_frame(K_CLOSE, sid, NULL, 0);
    return 1;
}

/* -- read --------------------------------------------------------------------------- */

/* Answered at once: the stat message, the bytes (within the host's initial credit, which
 * FILE_NATIVE_MAX leaves room in), the result. */
int op_read(uint32_t sid, struct jnode *req) {
    char path[PATH_MAX], parent[PATH_MAX];
    const char *name;
    long long offset, length;
    if (!clean_path(req, path, parent, &name) || !opt_count(json_get(req, "offset"), &offset) ||
        !opt_count(json_get(req, "length"), &length))
        return 0;
    offset = offset < 0 ? 0 : offset;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        ((length < 0 || length > FILE_NATIVE_MAX) && st.st_size - offset > FILE_NATIVE_MAX)) {
        close(fd);
        return 0;
    }
    struct buf b = {0};
    double mtime = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
    buf_addf(&b, "{\"type\":\"stat\",\"size\":%lld,\"mode\":%u,\"mtime\":%.17g}", (long long)st.st_size,
             (unsigned)(st.st_mode & 07777), mtime);
    host_msg(sid, &b);
    /* A file that grew since the fstat is read up to the host's credit. */
    long long want = length < 0 || length > INITIAL_WINDOW ? INITIAL_WINDOW : length, sent = 0;
    static unsigned char chunk[CHUNK];
    const unsigned char channel = CHANNEL_STDOUT;
    while (sent < want) {
        size_t ask = (size_t)(want - sent < CHUNK ? want - sent : CHUNK);
        ssize_t n = pread(fd, chunk, ask, (off_t)(offset + sent));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            os_error(sid, path, errno);
            close(fd);
            return 1;
        }
        if (n == 0)
            break;
        host_frame2(K_DATA, sid, &channel, 1, chunk, (size_t)n);
        sent += n;
    }
    close(fd);
    buf_addf(&b, "{\"type\":\"result\",\"size\":%lld}", sent);
    host_msg(sid, &b);
    host_frame(K_CLOSE, sid, NULL, 0);
    return 1;
}

/* -- write -------------------------------------------------------------------------- */

/* A write in progress: the data goes into a temp file beside the target, which replaces
 * the target at EOF; closed early, the temp file goes. */
struct fwrite {
    uint32_t id;
    int fd;
    size_t consumed;
    char path[PATH_MAX], temp[PATH_MAX];
    struct fwrite *next;
};

static struct fwrite *writes;

static struct fwrite *write_find(uint32_t sid) {
    for (struct fwrite *w = writes; w; w = w->next)
        if (w->id == sid)
            return w;
    return NULL;
}

int files_owns(uint32_t sid) { return write_find(sid) != NULL; }

static void write_end(struct fwrite *w, int keep) {
    for (struct fwrite **pp = &writes; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    close(w->fd);
    if (!keep)
        unlink(w->temp);
    free(w);
}

/* files.py's _open_temp for the plain case; -1 (nothing left behind) to let Python do it. */
static int open_temp(struct fwrite *w, const char *parent, const char *name, long long mode) {
    struct stat old, dir;
    int exists = lstat(w->path, &old) == 0;
    if ((exists && !S_ISREG(old.st_mode)) || (!exists && errno != ENOENT) || stat(parent, &dir) < 0 ||
        !S_ISDIR(dir.st_mode))
        return -1;
    unsigned char rnd[6];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
        return -1;
    int n = snprintf(w->temp, sizeof w->temp, "%s/.%s.sietch-%02x%02x%02x%02x%02x%02x.tmp",
                     strcmp(parent, "/") ? parent : "", name, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    if (n < 0 || (size_t)n >= sizeof w->temp)
        return -1;
    w->fd = open(w->temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0)
        return -1;
    mode_t m = mode >= 0 ? (mode_t)mode : exists ? old.st_mode & 07777 : 0644;
    /* the new file takes the old one's owner, else its directory's (unless root's) */
    int chown_to = exists || dir.st_uid || dir.st_gid;
    uid_t uid = exists ? old.st_uid : dir.st_uid;
    gid_t gid = exists ? old.st_gid : dir.st_gid;
    /* the chown first: it clears setuid and setgid bits, for root too */
    if ((chown_to && geteuid() == 0 && fchown(w->fd, uid, gid) < 0) || fchmod(w->fd, m) < 0) {
        close(w->fd);
        unlink(w->temp);
        return -1;
    }
    return 0;
}

int op_write(uint32_t sid, struct jnode *req) {
    long long size, mode;
    int parents, append;
    if (!opt_count(json_get(req, "size"), &size) || size < 0 || size > FILE_NATIVE_MAX ||
        !opt_count(json_get(req, "mode"), &mode) || mode > 07777 ||
        !opt_bool(json_get(req, "parents"), &parents, 1) || !opt_bool(json_get(req, "append"), &append, 0) ||
        append)
        return 0;
    struct fwrite *w = xcalloc(1, sizeof *w);
    char parent[PATH_MAX];
    const char *name;
    if (!clean_path(req, w->path, parent, &name) || !*name || open_temp(w, parent, name, mode) < 0) {
        free(w);
        return 0;
    }
    w->id = sid;
    w->next = writes;
    writes = w;
    return 1;
}

static void write_data(struct fwrite *w, const unsigned char *data, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t k = write(w->fd, data + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            os_error(w->id, w->path, errno);
            write_end(w, 0);
            return;
        }
        done += (size_t)k;
    }
    w->consumed += n;
    if (w->consumed >= WINDOW_EVERY) {
        host_window(w->id, w->consumed);
        w->consumed = 0;
    }
}

static void write_commit(struct fwrite *w) {
    struct stat st;
    if (fstat(w->fd, &st) < 0 || rename(w->temp, w->path) < 0) {
        os_error(w->id, w->path, errno);
        write_end(w, 0);
        return;
    }
    struct buf b = {0};
    buf_add(&b, "{\"type\":\"result\",\"path\":", 24);
    json_str(&b, w->path, strlen(w->path));
    buf_addf(&b, ",\"size\":%lld}", (long long)st.st_size);
    host_msg(w->id, &b);
    host_frame(K_CLOSE, w->id, NULL, 0);
    write_end(w, 1);
}

int files_frame(enum kind kind, uint32_t sid, const unsigned char *payload, size_t len) {
    struct fwrite *w = write_find(sid);
    if (!w)
        return 0;
    if (kind == K_DATA && len && payload[0] == CHANNEL_IN)
        write_data(w, payload + 1, len - 1);
    else if (kind == K_EOF)
        write_commit(w);
    else if (kind == K_CLOSE)
        write_end(w, 0);
    return 1; /* anything else (MSG, other channels) is ignored, as files.py does */
}

void files_reset(void) {
    while (writes)
        write_end(writes, 0);
}
