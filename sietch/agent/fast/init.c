/* PID-1 basics, done by the front before it execs the Python agent.
 *
 * Same steps as sietch/agent/guest/init.py's setup (mounts, hostname, resolv.conf,
 * network), in C so that a cold-booted VM can run commands as soon as the front
 * serves the port: the Python agent's start is ~1.3 s of emulated work under TCG, and
 * a cold boot used to wait for it before the first exec. The Python agent is told
 * (SIETCH_FRONT_BASICS=1) and skips them. Every step logs and carries on when it fails,
 * as Python's do: PID 1 must boot.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "front.h"

#define GUEST_ADDRESS "10.0.2.15"
#define GUEST_NETMASK "255.255.255.0"
#define GATEWAY "10.0.2.2"
#define NAMESERVER "10.0.2.3"
/* QEMU user-mode networking's fixed addresses (init.py's). */

/* os.path.ismount: a different device than the parent, or the same inode as it. */
static int is_mount(const char *path) {
    struct stat st, parent;
    char up[256];
    snprintf(up, sizeof up, "%s/..", path);
    if (lstat(path, &st) < 0 || S_ISLNK(st.st_mode) || lstat(up, &parent) < 0)
        return 0;
    return st.st_dev != parent.st_dev || st.st_ino == parent.st_ino;
}

static void mount_basics(void) {
    if (!is_mount("/dev/pts")) {
        char options[96];
        long tty = group_id("tty");
        int n = snprintf(options, sizeof options, "ptmxmode=0666,mode=0620");
        if (tty >= 0)
            snprintf(options + n, sizeof options - (size_t)n, ",gid=%ld", tty);
        mkdir("/dev/pts", 0755);
        if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, options) < 0)
            logmsg("setup mounts: devpts on /dev/pts: %s", strerror(errno));
    }
    if (!is_mount("/dev/shm")) {
        mkdir("/dev/shm", 0755);
        if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
            logmsg("setup mounts: tmpfs on /dev/shm: %s", strerror(errno));
    }
    struct stat st;
    if (stat("/tmp", &st) < 0 || !S_ISDIR(st.st_mode)) {
        if (mkdir("/tmp", 0777) < 0 || chmod("/tmp", 01777) < 0)
            logmsg("setup mounts: /tmp: %s", strerror(errno));
    }
}

static void hostname_from_etc(void) {
    char line[256] = "";
    read_file("/etc/hostname", line, sizeof line);
    line[strcspn(line, "\n")] = '\0';
    char *name = line + strspn(line, " \t\r");
    strip(name);
    if (!*name)
        name = "sietch";
    if (sethostname(name, strlen(name)) < 0)
        logmsg("setup hostname: %s", strerror(errno));
}

/* Point DNS at slirp's resolver, unless the image configured its own. */
static void resolv_conf(void) {
    const char *path = "/etc/resolv.conf";
    struct stat st;
    if (stat(path, &st) == 0) {
        if (st.st_size > 0)
            return;
    } else if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        unlink(path); /* dangling, e.g. to systemd-resolved's stub */
    }
    static const char text[] = "nameserver " NAMESERVER "\n";
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1))
        logmsg("setup resolv.conf: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
}

static int ifreq_addr(int sock, const char *ifname, unsigned long request, const char *addr) {
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sin->sin_addr);
    return ioctl(sock, request, &ifr);
}

static int link_up(int sock, const char *ifname) {
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    ifr.ifr_flags |= IFF_UP;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

static void network_up(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        logmsg("setup network: %s", strerror(errno));
        return;
    }
    if (link_up(sock, "lo") < 0)
        logmsg("setup network: lo up: %s", strerror(errno));
    if (access("/sys/class/net/eth0", F_OK) == 0) {
        struct rtentry rt = {0};
        struct sockaddr_in *gw = (struct sockaddr_in *)&rt.rt_gateway;
        ((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
        ((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
        gw->sin_family = AF_INET;
        inet_pton(AF_INET, GATEWAY, &gw->sin_addr);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        if (link_up(sock, "eth0") < 0)
            logmsg("setup network: eth0 up: %s", strerror(errno));
        else if (ifreq_addr(sock, "eth0", SIOCSIFADDR, GUEST_ADDRESS) < 0 ||
                 ifreq_addr(sock, "eth0", SIOCSIFNETMASK, GUEST_NETMASK) < 0)
            logmsg("setup network: eth0 address: %s", strerror(errno));
        else if (ioctl(sock, SIOCADDRT, &rt) < 0 && errno != EEXIST)
            logmsg("setup network: default route: %s", strerror(errno));
    }
    close(sock);
}

void pid1_basics(void) {
    mount_basics();
    hostname_from_etc();
    resolv_conf();
    network_up();
}
