#ifndef CANARY_CLIBMNL_SHIM_H
#define CANARY_CLIBMNL_SHIM_H
// libmnl: netlink sockets, message building and batching. <netinet/in.h> and
// <net/if.h> come first so that the linux/* headers do not redefine their types.
#include <netinet/in.h>
#include <net/if.h>
#include <sys/socket.h>
#include <errno.h>
#include <unistd.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/ip_vs.h>

/// Sets SO_RCVBUFFORCE (root) or SO_RCVBUF; returns 0 or -errno.
static inline int canary_set_rcvbuf(int fd, int bytes) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) == 0) return 0;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) == 0) return 0;
    return -errno;
}

/// Sets an int-valued SOL_NETLINK option; returns 0 or -errno.
static inline int canary_set_netlink_opt(int fd, int option, int value) {
    if (setsockopt(fd, SOL_NETLINK, option, &value, sizeof(value)) == 0) return 0;
    return -errno;
}

/// Sets SO_RCVTIMEO; returns 0 or -errno.
static inline int canary_set_receive_timeout(int fd, int milliseconds) {
    struct timeval tv = { .tv_sec = milliseconds / 1000, .tv_usec = (milliseconds % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0) return 0;
    return -errno;
}

static inline int canary_errno(void) { return errno; }
#endif
