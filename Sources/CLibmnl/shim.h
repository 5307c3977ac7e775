#ifndef CANARY_CLIBMNL_SHIM_H
#define CANARY_CLIBMNL_SHIM_H
// libmnl: netlink sockets, message building and batching. <netinet/in.h> and
// <net/if.h> come first so that the linux/* headers do not redefine their types.
#include <netinet/in.h>
#include <net/if.h>
#include <sys/socket.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/ip_vs.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/ipset/ip_set.h>

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

/// The kernel's struct mmsghdr (glibc declares it only under _GNU_SOURCE).
struct canary_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// Receives up to `slots` (at most 64) datagrams with one recvmmsg call into consecutive
/// `slot_size`-byte slots of `buffer`, waiting (SO_RCVTIMEO) for the first only
/// (MSG_WAITFORONE). `lengths[i]` gets each datagram's length, or -1 when it did not fit its slot.
/// Returns how many datagrams were read, or -errno.
static inline int canary_receive_many(int fd, void *buffer, int slot_size, int slots, int *lengths) {
    struct canary_mmsghdr messages[64];
    struct iovec vectors[64];
    if (slots > 64) slots = 64;
    if (slots < 1) return -EINVAL;
    memset(messages, 0, sizeof(messages));
    for (int i = 0; i < slots; i++) {
        vectors[i].iov_base = (char *)buffer + (size_t)i * (size_t)slot_size;
        vectors[i].iov_len = (size_t)slot_size;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    long count = syscall(SYS_recvmmsg, fd, messages, (unsigned int)slots, 0x10000 /* MSG_WAITFORONE */, NULL);
    if (count < 0) return -errno;
    for (long i = 0; i < count; i++) {
        lengths[i] = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) ? -1 : (int)messages[i].msg_len;
    }
    return (int)count;
}
#endif
