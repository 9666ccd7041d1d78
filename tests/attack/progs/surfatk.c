/* surfatk: the attacks on the surfaces of tests/attack/test_surface_*.py, run inside a container
 * as its root. Like netatk it only carries the bytes out and reports what the kernel and cmld
 * answered, one fact per line; the test on the host builds the messages and judges.
 *
 *   surfatk sock PATH HEX...        connect to the unix socket PATH, send each HEX chunk, then print
 *                                   every byte cmld answers within 3 s: "reply HEX", "eof" or
 *                                   "timeout"; "connect ERR" if refused
 *   surfatk flood PATH N HEX SECS   open N connections to PATH that send nothing (held until cmld's
 *                                   idle timeout), then send HEX on one more connection
 *                                   and print "served HEX" or "starved"; hold all for SECS
 *   surfatk uevent_send HEX         send HEX as a NETLINK_KOBJECT_UEVENT multicast (group 1):
 *                                   "sent N" or "send ERR"
 *   surfatk uevent_listen SECS      print every uevent heard for SECS: "event ACTION@DEVPATH|K=V|..."
 *   surfatk newlink KIND NAME       RTM_NEWLINK of that kind: "ack 0" or "ack -ERRNO"
 *   surfatk movelink IFNAME pid N   RTM_SETLINK IFLA_NET_NS_PID N: "ack ..."
 *   surfatk movelink IFNAME fd PATH RTM_SETLINK IFLA_NET_NS_FD (PATH opened first): "open ERR" or "ack ..."
 *
 * Static: the busybox guest has no libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hexval.h"

static size_t unhex(const char *hex, unsigned char **out)
{
	size_t n = strlen(hex) / 2;
	unsigned char *b = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	*out = b;
	return n;
}

static void print_hex(const char *tag, const unsigned char *b, size_t n)
{
	printf("%s ", tag);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, path, sizeof a.sun_path - 1);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
		return -1;
	return s;
}

/* Reads what arrives until EOF or `ms` of silence; returns the bytes read. */
static size_t drain(int s, unsigned char *buf, size_t cap, int ms, int *eof)
{
	size_t got = 0;
	*eof = 0;
	for (;;) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		if (poll(&p, 1, ms) <= 0)
			return got;
		ssize_t n = read(s, buf + got, cap - got);
		if (n <= 0) {
			*eof = 1;
			return got;
		}
		got += (size_t)n;
		if (got == cap)
			return got;
		ms = 500; /* the rest of a reply follows quickly */
	}
}

static int cmd_sock(int argc, char **argv)
{
	int s = unix_connect(argv[2]);
	if (s < 0) {
		printf("connect %s\n", strerror(errno));
		return 0;
	}
	for (int i = 3; i < argc; i++) {
		unsigned char *b;
		size_t n = unhex(argv[i], &b);
		if (n && write(s, b, n) < 0)
			printf("write %s\n", strerror(errno));
		free(b);
	}
	static unsigned char buf[1 << 20];
	int eof;
	size_t got = drain(s, buf, sizeof buf, 3000, &eof);
	if (got)
		print_hex("reply", buf, got);
	printf(eof ? "eof\n" : "timeout\n");
	return 0;
}

static int cmd_flood(int argc, char **argv)
{
	(void)argc;
	int n = atoi(argv[3]), opened = 0;
	for (int i = 0; i < n; i++) {
		int s = unix_connect(argv[2]);
		if (s < 0)
			break;
		opened++;
	}
	printf("opened %d\n", opened);
	fflush(stdout);
	int s = unix_connect(argv[2]);
	unsigned char *b;
	size_t len = unhex(argv[4], &b);
	static unsigned char buf[65536];
	int eof = 0;
	size_t got = 0;
	if (s >= 0 && write(s, b, len) == (ssize_t)len)
		got = drain(s, buf, sizeof buf, 10000, &eof);
	if (got)
		print_hex("served", buf, got);
	else
		printf("starved %s\n", s < 0 ? strerror(errno) : (eof ? "closed" : "no answer in 10 s"));
	fflush(stdout);
	sleep((unsigned)atoi(argv[5]));
	return 0;
}

static int uevent_socket(void)
{
	return socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
}

static int cmd_uevent_send(char **argv)
{
	int s = uevent_socket();
	if (s < 0) {
		printf("socket %s\n", strerror(errno));
		return 0;
	}
	unsigned char *b;
	size_t n = unhex(argv[2], &b);
	struct sockaddr_nl to = {.nl_family = AF_NETLINK, .nl_groups = 1};
	ssize_t r = sendto(s, b, n, 0, (struct sockaddr *)&to, sizeof to);
	if (r < 0)
		printf("send %s\n", strerror(errno));
	else
		printf("sent %zd\n", r);
	return 0;
}

static int cmd_uevent_listen(char **argv)
{
	int s = uevent_socket();
	struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_groups = 1};
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
		printf("listen %s\n", strerror(errno));
		return 0;
	}
	printf("listening\n");
	fflush(stdout);
	time_t end = time(NULL) + atoi(argv[2]);
	static char buf[8192 + 1];
	while (time(NULL) < end) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t n = recv(s, buf, sizeof buf - 1, 0);
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == 0 || buf[i] == '\n')
				buf[i] = '|';
		buf[n] = 0;
		printf("event %s\n", buf);
		fflush(stdout);
	}
	printf("end\n");
	return 0;
}

/* ------------------------------------------------------------------ rtnetlink */

struct req {
	struct nlmsghdr h;
	struct ifinfomsg i;
	char attrs[512];
};

static struct rtattr *put(struct req *r, int type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
	a->rta_type = (unsigned short)type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

static void talk(struct req *r)
{
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		printf("socket %s\n", strerror(errno));
		return;
	}
	if (send(s, r, r->h.nlmsg_len, 0) < 0) {
		printf("send %s\n", strerror(errno));
		return;
	}
	char buf[4096];
	ssize_t n = recv(s, buf, sizeof buf, 0);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (n < (ssize_t)sizeof *h || h->nlmsg_type != NLMSG_ERROR) {
		printf("ack none\n");
		return;
	}
	struct nlmsgerr *e = NLMSG_DATA(h);
	printf("ack %d %s\n", e->error, e->error ? strerror(-e->error) : "ok");
}

static void init_req(struct req *r, int type, int flags)
{
	memset(r, 0, sizeof *r);
	r->h.nlmsg_len = NLMSG_LENGTH(sizeof r->i);
	r->h.nlmsg_type = (unsigned short)type;
	r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
	r->i.ifi_family = AF_UNSPEC;
}

static int cmd_newlink(char **argv)
{
	struct req r;
	init_req(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	put(&r, IFLA_IFNAME, argv[3], strlen(argv[3]) + 1);
	struct rtattr *li = put(&r, IFLA_LINKINFO, NULL, 0);
	put(&r, IFLA_INFO_KIND, argv[2], strlen(argv[2]));
	li->rta_len = (unsigned short)((char *)&r + r.h.nlmsg_len - (char *)li);
	talk(&r);
	return 0;
}

static int cmd_movelink(char **argv)
{
	struct req r;
	init_req(&r, RTM_NEWLINK, 0);
	r.i.ifi_index = (int)if_nametoindex(argv[2]);
	if (!r.i.ifi_index) {
		printf("ifindex %s\n", strerror(errno));
		return 0;
	}
	if (!strcmp(argv[3], "pid")) {
		unsigned pid = (unsigned)atoi(argv[4]);
		put(&r, IFLA_NET_NS_PID, &pid, sizeof pid);
	} else {
		int fd = open(argv[4], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			printf("open %s\n", strerror(errno));
			return 0;
		}
		put(&r, IFLA_NET_NS_FD, &fd, sizeof fd);
	}
	talk(&r);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "sock"))
		return cmd_sock(argc, argv);
	if (argc == 6 && !strcmp(argv[1], "flood"))
		return cmd_flood(argc, argv);
	if (argc == 3 && !strcmp(argv[1], "uevent_send"))
		return cmd_uevent_send(argv);
	if (argc == 3 && !strcmp(argv[1], "uevent_listen"))
		return cmd_uevent_listen(argv);
	if (argc == 4 && !strcmp(argv[1], "newlink"))
		return cmd_newlink(argv);
	if (argc == 5 && !strcmp(argv[1], "movelink"))
		return cmd_movelink(argv);
	fprintf(stderr, "usage: see the comment at the top of surfatk.c\n");
	return 2;
}
