/* hello (clock, entropy, hostname, MAC after every restore), shutdown, and user lookups.
 *
 * Same semantics as sietch/agent/guest/ops.py:op_hello, init.py and users.py.
 * Where Python would answer with an error, these return 0 before touching anything,
 * and the request goes to the Python agent, which words the error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "front.h"

#ifndef AGENT_VERSION
#error "build with -DAGENT_VERSION=\"...\" (sietch/images/tools.py passes the Python agent's)"
#endif
#ifndef PROTOCOL_VERSION
#error "build with -DPROTOCOL_VERSION=N"
#endif

/* -- small file helpers -------------------------------------------------------- */

size_t read_file(const char *path, char *out, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    out[n] = '\0';
    return n;
}

void strip(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* -- hello ---------------------------------------------------------------------- */

static int b64val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict base64 (as b64decode(validate=True)): -1 on anything else. */
static long b64decode(const char *s, size_t n, unsigned char *out, size_t cap) {
    if (n % 4)
        return -1;
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64val(s[i + k])) < 0) {
                return -1;
            }
        }
        unsigned triple = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        if (len + 3 > cap)
            return -1;
        out[len++] = (unsigned char)(triple >> 16);
        if (pad < 2)
            out[len++] = (unsigned char)(triple >> 8);
        if (pad < 1)
            out[len++] = (unsigned char)triple;
    }
    return (long)len;
}

static void add_entropy(const unsigned char *data, size_t n) {
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        logmsg("cannot open /dev/urandom: %s", strerror(errno));
        return;
    }
    struct {
        int entropy_count, buf_size;
        unsigned char buf[4096];
    } req;
    req.entropy_count = (int)n * 8;
    req.buf_size = (int)n;
    memcpy(req.buf, data, n);
    if (ioctl(fd, RNDADDENTROPY, &req) < 0) {
        ssize_t ignored = write(fd, data, n); /* mixed in, though not credited */
        (void)ignored;
    }
    /* The CRNG reseeds from the pool only now and then; until it does, two clones
     * of one snapshot would hand out the same bytes. */
    if (ioctl(fd, RNDRESEEDCRNG) < 0)
        logmsg("cannot reseed the CRNG: %s", strerror(errno));
    close(fd);
}

/* Points 127.0.1.1 at name, in place (/etc/hosts may be a bind mount). */
static void name_in_hosts(const char *name) {
    static char text[256 * 1024];
    struct buf out = {0};
    int fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
    size_t n = 0;
    if (fd >= 0) {
        ssize_t r;
        while (n < sizeof text - 1 && (r = read(fd, text + n, sizeof text - 1 - n)) > 0)
            n += (size_t)r;
        close(fd);
        if (n == sizeof text - 1) {
            logmsg("cannot update /etc/hosts: larger than %zu bytes", sizeof text);
            return;
        }
    } else if (errno == ENOENT) {
        n = (size_t)snprintf(text, sizeof text, "127.0.0.1\tlocalhost");
    } else {
        logmsg("cannot update /etc/hosts: %s", strerror(errno));
        return;
    }
    text[n] = '\0';
    int lines = 0;
    for (char *line = text; line < text + n;) {
        char *end = memchr(line, '\n', (size_t)(text + n - line));
        size_t len = end ? (size_t)(end - line) : strlen(line);
        size_t shown = len && line[len - 1] == '\r' ? len - 1 : len;
        const char *w = line;
        while (w < line + shown && (*w == ' ' || *w == '\t'))
            w++;
        int ours = (size_t)(line + shown - w) >= 9 && !strncmp(w, "127.0.1.1", 9) &&
                   (w + 9 == line + shown || w[9] == ' ' || w[9] == '\t');
        if (!ours) {
            buf_add(&out, line, shown);
            buf_add(&out, "\n", 1);
            if (++lines == 1)
                buf_addf(&out, "127.0.1.1\t%s\n", name);
        }
        line += len + (end ? 1 : 0);
    }
    if (!lines)
        buf_addf(&out, "127.0.1.1\t%s\n", name);
    fd = open("/etc/hosts", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf_head(&out), buf_size(&out)) != (ssize_t)buf_size(&out))
        logmsg("cannot update /etc/hosts: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    buf_free(&out);
}

/* A restored clone's own MAC, and a gratuitous ARP so slirp learns it at once. */
static void set_mac(const unsigned char mac[6]) {
    if (access("/sys/class/net/eth0", F_OK) != 0)
        return;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        logmsg("cannot set the MAC address: %s", strerror(errno));
        return;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "eth0");
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    if (ioctl(sock, SIOCSIFHWADDR, &ifr) < 0) {
        logmsg("cannot set the MAC address: %s", strerror(errno));
        close(sock);
        return;
    }
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "eth0");
    int have_addr = ioctl(sock, SIOCGIFADDR, &ifr) == 0;
    close(sock);
    if (!have_addr)
        return; /* no address yet: nobody has learnt the old MAC for one */
    unsigned char addr[4];
    memcpy(addr, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, 4);
    unsigned char frame[42];
    memset(frame, 0xff, 6);
    memcpy(frame + 6, mac, 6);
    frame[12] = 0x08, frame[13] = 0x06;
    unsigned char *arp = frame + 14;
    arp[0] = 0, arp[1] = 1, arp[2] = 0x08, arp[3] = 0x00, arp[4] = 6, arp[5] = 4, arp[6] = 0, arp[7] = 1;
    memcpy(arp + 8, mac, 6);
    memcpy(arp + 14, addr, 4);
    memset(arp + 18, 0, 6);
    memcpy(arp + 24, addr, 4);
    int packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (packet < 0) {
        logmsg("cannot set the MAC address: %s", strerror(errno));
        return;
    }
    struct sockaddr_ll ll;
    memset(&ll, 0, sizeof ll);
    ll.sll_family = AF_PACKET;
    ll.sll_ifindex = (int)if_nametoindex("eth0");
    ll.sll_protocol = 0;
    if (bind(packet, (struct sockaddr *)&ll, sizeof ll) < 0 || send(packet, frame, sizeof frame, 0) < 0)
        logmsg("cannot set the MAC address: %s", strerror(errno));
    close(packet);
}

static int parse_mac(const char *s, unsigned char mac[6]) {
    char hex[13];
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ':')
            continue;
        if (n == 12 || !((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
            return -1;
        hex[n++] = *s;
    }
    if (n != 12)
        return -1;
    for (int i = 0; i < 6; i++) {
        char byte[3] = {hex[2 * i], hex[2 * i + 1], 0};
        mac[i] = (unsigned char)strtoul(byte, NULL, 16);
    }
    return 0;
}

static int opt_str(const struct jnode *n) { return !n || n->type == J_NULL || (n->type == J_STR && !n->has_nul); }

int op_hello(uint32_t sid, struct jnode *req) {
    struct jnode *time_n = json_get(req, "time"), *entropy_n = json_get(req, "entropy");
    struct jnode *host_n = json_get(req, "hostname"), *mac_n = json_get(req, "mac");
    if ((time_n && time_n->type != J_NULL && time_n->type != J_NUM) || !opt_str(entropy_n) ||
        !opt_str(host_n) || !opt_str(mac_n))
        return 0;
    static unsigned char entropy[4096];
    long entropy_len = 0;
    if (entropy_n && entropy_n->type == J_STR && entropy_n->str_len) {
        entropy_len = b64decode(entropy_n->str, entropy_n->str_len, entropy, sizeof entropy);
        if (entropy_len < 0)
            return 0;
    }
    const char *hostname = host_n && host_n->type == J_STR ? host_n->str : NULL;
    if (hostname && (!host_n->str_len || host_n->str_len > 64 || strpbrk(hostname, "/ \n\t")))
        return 0;
    unsigned char mac[6];
    int have_mac = mac_n && mac_n->type == J_STR && mac_n->str_len;
    if (have_mac && parse_mac(mac_n->str, mac))
        return 0;

    int clock_set = 0;
    if (time_n && time_n->type == J_NUM) {
        double t = time_n->number;
        struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
        if (ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000)
            ts.tv_nsec = 0;
        clock_set = clock_settime(CLOCK_REALTIME, &ts) == 0;
        if (!clock_set)
            logmsg("cannot set the clock: %s", strerror(errno));
    }
    if (entropy_len > 0)
        add_entropy(entropy, (size_t)entropy_len);
    if (hostname) {
        if (sethostname(hostname, strlen(hostname)) < 0)
            logmsg("cannot set the hostname: %s", strerror(errno));
        name_in_hosts(hostname);
    }
    if (have_mac)
        set_mac(mac);

    struct utsname un;
    uname(&un);
    char boot_id[128], uptime[128];
    read_file("/proc/sys/kernel/random/boot_id", boot_id, sizeof boot_id);
    strip(boot_id);
    read_file("/proc/uptime", uptime, sizeof uptime);
    char *space = strchr(uptime, ' ');
    if (space)
        *space = '\0';
    if (!*uptime || strspn(uptime, "0123456789.") != strlen(uptime))
        snprintf(uptime, sizeof uptime, "%.3f", now_mono());
    struct buf b = {0};
    buf_addf(&b,
             "{\"type\":\"result\",\"agent_version\":\"%s\",\"protocol\":%d,\"pid\":%d,\"boot_id\":",
             AGENT_VERSION, PROTOCOL_VERSION, (int)getppid());
    json_str(&b, boot_id, strlen(boot_id));
    buf_addf(&b, ",\"uptime_s\":%s,\"kernel\":", uptime);
    json_str(&b, un.release, strlen(un.release));
    buf_add(&b, ",\"hostname\":", 12);
    json_str(&b, un.nodename, strlen(un.nodename));
    buf_addf(&b, ",\"init\":true,\"clock_set\":%s}", clock_set ? "true" : "false");
    host_msg(sid, &b);
    host_frame(K_CLOSE, sid, NULL, 0);
    return 1;
}

/* -- shutdown --------------------------------------------------------------------- */

/* Here rather than forwarded: the result must reach the host before the VM is gone, and
 * only the front knows when it has (Python would power off once its answer reached us). */
int op_shutdown(uint32_t sid) {
    if (getppid() != 1)
        return 0; /* not under the VM's init: Python decides (it never powers a host off) */
    sync();
    struct buf b = {0};
    buf_add(&b, "{\"type\":\"result\"}", 17);
    host_msg(sid, &b);
    host_frame(K_CLOSE, sid, NULL, 0);
    host_flush_now(2.0);
    sync();
    reboot(RB_POWER_OFF);
    logmsg("reboot(RB_POWER_OFF) failed: %s", strerror(errno));
    execl("/run/sietch/bin/busybox", "busybox", "poweroff", "-f", (char *)NULL);
    return 1;
}

/* -- users, from the image's own /etc/passwd and /etc/group (no NSS) ---------------- */

static int split(char *line, char **fields, int max) {
    int n = 0;
    fields[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == ':') {
            *p = '\0';
            fields[n++] = p + 1;
        }
    return n;
}

static int digits(const char *s) { return *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 10; }

/* The next line of a file read into [*cursor, end), its fields split at ':' in place (at
 * most max): how many, 0 for a blank or comment line, -1 once no line is left. */
static int next_entry(char **cursor, char *end, char **fields, int max) {
    if (*cursor >= end)
        return -1;
    char *line = *cursor, *eol = strchrnul(line, '\n');
    *cursor = *eol ? eol + 1 : eol;
    *eol = '\0';
    return *line && *line != '#' ? split(line, fields, max) : 0;
}

/* A group's gid in the image's /etc/group, as users.py's group_id reads it; -1 if none. */
long group_id(const char *name) {
    static char text[1 << 20];
    char *cursor = text, *end = text + read_file("/etc/group", text, sizeof text), *f[4];
    for (int n; (n = next_entry(&cursor, end, f, 4)) >= 0;)
        if (n >= 3 && !strcmp(f[0], name) && digits(f[2]))
            return strtol(f[2], NULL, 10);
    return -1;
}

static void add_groups(struct user *u) {
    static char text[1 << 20];
    u->groups[0] = u->gid;
    u->ngroups = 1;
    char *cursor = text, *end = text + read_file("/etc/group", text, sizeof text), *f[5];
    for (int n; (n = next_entry(&cursor, end, f, 5)) >= 0;) {
        if (n >= 4 && digits(f[2])) {
            unsigned g = (unsigned)strtoul(f[2], NULL, 10);
            for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
                if (!strcmp(m, u->name)) {
                    int known = 0;
                    for (int i = 0; i < u->ngroups; i++)
                        known |= u->groups[i] == g;
                    if (!known && u->ngroups < 64)
                        u->groups[u->ngroups++] = g;
                    break;
                }
        }
    }
}

int user_lookup(const struct jnode *given, struct user *u) {
    static char text[1 << 20];
    const char *name = NULL;
    long long uid = 0;
    memset(u, 0, sizeof *u);
    if (given && given->type == J_STR) {
        if (!given->str_len || given->has_nul || given->str_len >= sizeof u->name)
            return -1;
        name = given->str;
    } else if (given && given->type == J_NUM && given->is_int) {
        if (given->integer < 0 || given->integer > 0xFFFFFFFELL)
            return -1;
        uid = given->integer;
    } else if (given && given->type != J_NULL) {
        return -1;
    }
    size_t n = read_file("/etc/passwd", text, sizeof text);
    if (n == sizeof text - 1)
        return -1;
    char *fields[8];
    char *found[8] = {0};
    for (int pass = 0; pass < 2 && !found[0]; pass++) {
        /* pass 0: by name (if a name); pass 1: by uid (a number, or a name of digits) */
        if (pass == 0 && !name)
            continue;
        if (pass == 1 && name) {
            if (!digits(name))
                break;
            uid = strtoll(name, NULL, 10);
        }
        static char copy[1 << 20];
        memcpy(copy, text, n + 1);
        char *cursor = copy;
        for (int k; !found[0] && (k = next_entry(&cursor, copy + n, fields, 8)) >= 0;) {
            if (k >= 7 && digits(fields[2]) && digits(fields[3]) &&
                (pass == 0 ? !strcmp(fields[0], name) : strtoll(fields[2], NULL, 10) == uid)) {
                memcpy(found, fields, sizeof fields);
                if (strlen(fields[0]) >= sizeof u->name || strlen(fields[5]) >= sizeof u->home ||
                    strlen(fields[6]) >= sizeof u->shell)
                    return -1;
                snprintf(u->name, sizeof u->name, "%s", fields[0]);
                u->uid = (unsigned)strtoul(fields[2], NULL, 10);
                u->gid = (unsigned)strtoul(fields[3], NULL, 10);
                snprintf(u->home, sizeof u->home, "%s", *fields[5] ? fields[5] : "/");
                snprintf(u->shell, sizeof u->shell, "%s", *fields[6] ? fields[6] : "/bin/sh");
            }
        }
    }
    if (!found[0]) {
        if (name && !digits(name))
            return 0; /* Python says "not in /etc/passwd" */
        if (uid == 0) {
            snprintf(u->name, sizeof u->name, "root");
            snprintf(u->home, sizeof u->home, "/root");
            snprintf(u->shell, sizeof u->shell, "/bin/sh");
            u->groups[0] = 0;
            u->ngroups = 1;
            return 1;
        }
        snprintf(u->name, sizeof u->name, "%lld", uid);
        u->uid = u->gid = (unsigned)uid;
        snprintf(u->home, sizeof u->home, "/");
        snprintf(u->shell, sizeof u->shell, "/bin/sh");
        u->groups[0] = (unsigned)uid;
        u->ngroups = 1;
        return 1;
    }
    add_groups(u);
    return 1;
}
