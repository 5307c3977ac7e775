/*
 * The floor for issue 7's full sync: the same IPVS generic-netlink requests the agent sends
 * (IPVS_CMD_NEW_SERVICE, IPVS_CMD_NEW_DEST with the same attributes), from a minimal C program
 * over libmnl, with as many requests in flight as the socket takes: every request is encoded
 * into one large datagram up to BATCH bytes (the kernel handles a datagram's requests one after
 * another inside sendto), and the acks are read back many per syscall with recvmmsg.
 *
 *   gcc -O2 -o floor floor.c -lmnl
 *   floor RULES [BATCH_BYTES]     RULES: `ipvsadm -R` input (the subset PerfTool rules writes)
 *
 * Prints one JSON object: operations, failures, parse/netlink/total seconds. Exit 1 on any failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/ip_vs.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

struct operation {
	uint8_t command;          /* IPVS_CMD_NEW_SERVICE or IPVS_CMD_NEW_DEST */
	uint16_t protocol;        /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	struct in_addr service_address;
	uint16_t service_port;    /* network order */
	char scheduler[IP_VS_SCHEDNAME_MAXLEN];
	uint32_t flags;
	uint32_t timeout;
	struct in_addr destination_address;
	uint16_t destination_port; /* network order */
	uint32_t forwarding;
	int32_t weight;
};

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* "10.96.0.1:80" → address, port (network order). */
static int parse_endpoint(const char *text, struct in_addr *address, uint16_t *port)
{
	char copy[64];
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof(copy))
		return -1;
	memcpy(copy, text, (size_t)(colon - text));
	copy[colon - text] = '\0';
	if (inet_pton(AF_INET, copy, address) != 1)
		return -1;
	*port = htons((uint16_t)atoi(colon + 1));
	return 0;
}

/* One line of `ipvsadm -R` input: -A -t VIP:PORT -s SCHED [-p T] [-b flag-1,...] or
 * -a -t VIP:PORT -r RIP:PORT -m|-g|-i -w W. */
static int parse_line(char *line, struct operation *op)
{
	memset(op, 0, sizeof(*op));
	op->protocol = IPPROTO_TCP;
	op->weight = 1;
	char *save = NULL;
	for (char *word = strtok_r(line, " \t\n", &save); word; word = strtok_r(NULL, " \t\n", &save)) {
		char *value = NULL;
		if (!strcmp(word, "-A"))
			op->command = IPVS_CMD_NEW_SERVICE;
		else if (!strcmp(word, "-a"))
			op->command = IPVS_CMD_NEW_DEST;
		else if (!strcmp(word, "-m"))
			op->forwarding = IP_VS_CONN_F_MASQ;
		else if (!strcmp(word, "-g"))
			op->forwarding = IP_VS_CONN_F_DROUTE;
		else if (!strcmp(word, "-i"))
			op->forwarding = IP_VS_CONN_F_TUNNEL;
		else if ((value = strtok_r(NULL, " \t\n", &save)) == NULL)
			return -1;
		else if (!strcmp(word, "-t") || !strcmp(word, "-u") || !strcmp(word, "--sctp-service")) {
			op->protocol = word[1] == 't' ? IPPROTO_TCP : word[1] == 'u' ? IPPROTO_UDP : IPPROTO_SCTP;
			if (parse_endpoint(value, &op->service_address, &op->service_port))
				return -1;
		} else if (!strcmp(word, "-r")) {
			if (parse_endpoint(value, &op->destination_address, &op->destination_port))
				return -1;
		} else if (!strcmp(word, "-s"))
			snprintf(op->scheduler, sizeof(op->scheduler), "%s", value);
		else if (!strcmp(word, "-w"))
			op->weight = atoi(value);
		else if (!strcmp(word, "-p")) {
			op->flags |= IP_VS_SVC_F_PERSISTENT;
			op->timeout = (uint32_t)atoi(value);
		} else if (!strcmp(word, "-b")) {
			if (strstr(value, "flag-1"))
				op->flags |= IP_VS_SVC_F_SCHED1;
			if (strstr(value, "flag-2"))
				op->flags |= IP_VS_SVC_F_SCHED2;
			if (strstr(value, "flag-3"))
				op->flags |= IP_VS_SVC_F_SCHED3;
		} else
			return -1;
	}
	return op->command ? 0 : -1;
}

static void put_service_key(struct nlmsghdr *nlh, const struct operation *op)
{
	union nf_inet_addr address = {0};
	address.in = op->service_address;
	mnl_attr_put_u16(nlh, IPVS_SVC_ATTR_AF, AF_INET);
	mnl_attr_put_u16(nlh, IPVS_SVC_ATTR_PROTOCOL, op->protocol);
	mnl_attr_put(nlh, IPVS_SVC_ATTR_ADDR, sizeof(address), &address);
	mnl_attr_put_u16(nlh, IPVS_SVC_ATTR_PORT, op->service_port);
}

/* Appends one request; returns its length, 0 when it does not fit in the remaining room. */
static size_t encode(char *buffer, size_t room, uint16_t family, uint32_t sequence, const struct operation *op)
{
	if (room < 512)
		return 0;
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buffer);
	nlh->nlmsg_type = family;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = sequence;
	struct genlmsghdr *genl = mnl_nlmsg_put_extra_header(nlh, sizeof(*genl));
	genl->cmd = op->command;
	genl->version = IPVS_GENL_VERSION;
	struct nlattr *service = mnl_attr_nest_start(nlh, IPVS_CMD_ATTR_SERVICE);
	put_service_key(nlh, op);
	if (op->command == IPVS_CMD_NEW_SERVICE) {
		struct ip_vs_flags flags = {.flags = op->flags, .mask = ~0U};
		uint32_t netmask = 0xFFFFFFFF;
		mnl_attr_put_strz(nlh, IPVS_SVC_ATTR_SCHED_NAME, op->scheduler);
		mnl_attr_put(nlh, IPVS_SVC_ATTR_FLAGS, sizeof(flags), &flags);
		mnl_attr_put_u32(nlh, IPVS_SVC_ATTR_TIMEOUT, op->timeout);
		mnl_attr_put_u32(nlh, IPVS_SVC_ATTR_NETMASK, netmask);
		mnl_attr_nest_end(nlh, service);
	} else {
		mnl_attr_nest_end(nlh, service);
		union nf_inet_addr address = {0};
		address.in = op->destination_address;
		struct nlattr *destination = mnl_attr_nest_start(nlh, IPVS_CMD_ATTR_DEST);
		mnl_attr_put(nlh, IPVS_DEST_ATTR_ADDR, sizeof(address), &address);
		mnl_attr_put_u16(nlh, IPVS_DEST_ATTR_PORT, op->destination_port);
		mnl_attr_put_u32(nlh, IPVS_DEST_ATTR_FWD_METHOD, op->forwarding);
		mnl_attr_put_u32(nlh, IPVS_DEST_ATTR_WEIGHT, (uint32_t)op->weight);
		mnl_attr_put_u32(nlh, IPVS_DEST_ATTR_U_THRESH, 0);
		mnl_attr_put_u32(nlh, IPVS_DEST_ATTR_L_THRESH, 0);
		mnl_attr_put_u16(nlh, IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET);
		mnl_attr_nest_end(nlh, destination);
	}
	return nlh->nlmsg_len;
}

/* CTRL_CMD_GETFAMILY "IPVS" → the family id. */
static int family_attribute(const struct nlattr *attr, void *data)
{
	if (mnl_attr_get_type(attr) == CTRL_ATTR_FAMILY_ID)
		*(uint16_t *)data = mnl_attr_get_u16(attr);
	return MNL_CB_OK;
}

static int family_reply(const struct nlmsghdr *nlh, void *data)
{
	return mnl_attr_parse(nlh, sizeof(struct genlmsghdr), family_attribute, data);
}

static uint16_t resolve_family(struct mnl_socket *socket)
{
	char buffer[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buffer);
	nlh->nlmsg_type = GENL_ID_CTRL;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = 1;
	struct genlmsghdr *genl = mnl_nlmsg_put_extra_header(nlh, sizeof(*genl));
	genl->cmd = CTRL_CMD_GETFAMILY;
	genl->version = 1;
	mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME);
	if (mnl_socket_sendto(socket, nlh, nlh->nlmsg_len) < 0)
		die("sendto (resolve family)");
	uint16_t family = 0;
	for (;;) {
		ssize_t count = mnl_socket_recvfrom(socket, buffer, sizeof(buffer));
		if (count < 0)
			die("recv (resolve family)");
		int status = mnl_cb_run(buffer, (size_t)count, 1, mnl_socket_get_portid(socket), family_reply, &family);
		if (status <= MNL_CB_STOP)
			break;
	}
	if (family == 0) {
		fprintf(stderr, "floor: the kernel has no IPVS generic netlink family\n");
		exit(1);
	}
	return family;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: floor RULES [BATCH_BYTES]\n");
		return 2;
	}
	size_t batch_bytes = argc > 2 ? strtoul(argv[2], NULL, 10) : 1 << 20;
	double started = now_seconds();

	/* 1. Parse every rule before touching the kernel. */
	FILE *rules = fopen(argv[1], "r");
	if (!rules)
		die(argv[1]);
	size_t capacity = 1 << 16, count = 0;
	struct operation *ops = malloc(capacity * sizeof(*ops));
	char line[512];
	unsigned long line_number = 0;
	while (fgets(line, sizeof(line), rules)) {
		line_number++;
		if (line[0] == '\n' || line[0] == '#')
			continue;
		if (count == capacity) {
			capacity *= 2;
			ops = realloc(ops, capacity * sizeof(*ops));
		}
		if (!ops)
			die("realloc");
		if (parse_line(line, &ops[count])) {
			fprintf(stderr, "floor: %s:%lu: not understood\n", argv[1], line_number);
			return 1;
		}
		count++;
	}
	fclose(rules);
	double parsed = now_seconds();

	/* 2. A socket with room for a whole batch of requests and of acks. */
	struct mnl_socket *socket = mnl_socket_open(NETLINK_GENERIC);
	if (!socket)
		die("socket");
	if (mnl_socket_bind(socket, 0, MNL_SOCKET_AUTOPID) < 0)
		die("bind");
	int fd = mnl_socket_get_fd(socket);
	int send_buffer = (int)batch_bytes + 4096, receive_buffer = 64 << 20, one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &send_buffer, sizeof(send_buffer)) < 0)
		die("SO_SNDBUFFORCE");
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer, sizeof(receive_buffer)) < 0)
		die("SO_RCVBUFFORCE");
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	uint16_t family = resolve_family(socket);
	uint32_t port_id = mnl_socket_get_portid(socket);

	/* 3. Send batches; after each, read its acks (already queued: the kernel handled the batch in sendto). */
	enum { ACKS_PER_CALL = 1024, ACK_ROOM = 256 };
	static char ack_buffers[ACKS_PER_CALL][ACK_ROOM];
	static struct iovec iovs[ACKS_PER_CALL];
	static struct mmsghdr messages[ACKS_PER_CALL];
	for (int i = 0; i < ACKS_PER_CALL; i++) {
		iovs[i].iov_base = ack_buffers[i];
		iovs[i].iov_len = ACK_ROOM;
		messages[i].msg_hdr.msg_iov = &iovs[i];
		messages[i].msg_hdr.msg_iovlen = 1;
	}
	char *batch = malloc(batch_bytes);
	if (!batch)
		die("malloc");
	size_t failures = 0, sent = 0, acked = 0, sends = 0, receives = 0;
	int first_error = 0;
	while (sent < count) {
		size_t used = 0, in_batch = 0;
		while (sent + in_batch < count) {
			size_t length = encode(batch + used, batch_bytes - used, family, (uint32_t)(sent + in_batch + 2),
					       &ops[sent + in_batch]);
			if (length == 0)
				break;
			used += length;
			in_batch++;
		}
		if (mnl_socket_sendto(socket, batch, used) < 0)
			die("sendto");
		sends++;
		sent += in_batch;
		while (acked < sent) {
			int got = recvmmsg(fd, messages, ACKS_PER_CALL, MSG_WAITFORONE, NULL);
			if (got < 0)
				die("recvmmsg (acks)");
			receives++;
			for (int i = 0; i < got; i++) {
				int length = (int)messages[i].msg_len;
				for (struct nlmsghdr *nlh = (struct nlmsghdr *)ack_buffers[i]; mnl_nlmsg_ok(nlh, length);
				     nlh = mnl_nlmsg_next(nlh, &length)) {
					if (nlh->nlmsg_pid != port_id || nlh->nlmsg_type != NLMSG_ERROR)
						continue;
					const struct nlmsgerr *ack = mnl_nlmsg_get_payload(nlh);
					acked++;
					if (ack->error != 0) {
						if (failures++ == 0)
							first_error = -ack->error;
					}
				}
			}
		}
	}
	double done = now_seconds();
	mnl_socket_close(socket);
	printf("{\"operations\": %zu, \"failures\": %zu, \"first_error\": \"%s\", \"batch_bytes\": %zu, "
	       "\"sends\": %zu, \"receive_calls\": %zu, \"parse_seconds\": %.6f, \"netlink_seconds\": %.6f, "
	       "\"total_seconds\": %.6f}\n",
	       count, failures, first_error ? strerror(first_error) : "", batch_bytes, sends, receives, parsed - started,
	       done - parsed, done - started);
	free(batch);
	free(ops);
	return failures ? 1 : 0;
}
