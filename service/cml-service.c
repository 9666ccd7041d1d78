/*
 * cml-service: the in-container service of the CML (GyroidOS c_service protocol, proto/c_service.proto).
 *
 * Connects to cmld's socket /run/socket/cml-service (env CML_SERVICE_SOCKET overrides it), asks
 * for the container name and DNS server, applies them (hostname, /etc/hosts, /etc/resolv.conf)
 * and reports BOOT_COMPLETED. Frames are a 4-byte big-endian length and a protobuf body, which is
 * encoded and decoded by hand here: the guest has no libraries, this is linked statically.
 *
 *   PID 1:     cml-service PROG [ARGS...]
 *              starts PROG at once and acts as init (reaps, forwards signals); SHUTDOWN from cmld
 *              or the socket closing sends SIGTERM to PROG; exits with PROG's status.
 *   not PID 1: cml-service [--shutdown-signal NUM]
 *              (e.g. busybox inittab ::once:) on SHUTDOWN sends NUM (default SIGUSR2, busybox
 *              init's poweroff) to PID 1 and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/socket/cml-service"
#define MAX_FRAME (64 * 1024)
#define CONNECT_TIMEOUT_MS 5000
#define CONNECT_RETRY_MS 100

/* ServiceToCmldMessage.Code */
enum { BOOT_COMPLETED = 1, CONTAINER_CFG_NAME_REQ = 18, CONTAINER_CFG_DNS_REQ = 19 };
/* CmldToServiceMessage.Code */
enum { SHUTDOWN = 1, CONTAINER_CFG_NAME = 17, CONTAINER_CFG_DNS = 18 };

struct msg {
	int has_code;
	uint64_t code;
	const uint8_t *name, *dns; /* fields 13 and 14, not NUL-terminated; NULL when absent */
	size_t name_len, dns_len;
};

enum state { WAIT_NAME, WAIT_DNS, BOOTED };

static pid_t child = -1; /* mode A: the main child */
static int sock = -1;
static enum state state = WAIT_NAME;
static uint8_t rbuf[4 + MAX_FRAME];
static size_t rlen;

__attribute__((format(printf, 1, 2))) static void logm(const char *fmt, ...)
{
	va_list ap;
	fputs("cml-service: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- protobuf wire format ---- */

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		uint8_t b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1; /* more than 10 bytes */
}

static int get_tag(const uint8_t **p, const uint8_t *end, uint64_t *field, unsigned *wt)
{
	uint64_t tag;
	if (get_varint(p, end, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
		return -1;
	*field = tag >> 3;
	*wt = tag & 7;
	return 0;
}

/* Skips one field whose tag has been read; groups (wire types 3/4) are skipped recursively. */
static int skip_field(const uint8_t **p, const uint8_t *end, unsigned wt, uint64_t field, int depth)
{
	uint64_t v, f;
	unsigned w;
	switch (wt) {
	case 0:
		return get_varint(p, end, &v);
	case 1:
	case 5: {
		size_t n = wt == 1 ? 8 : 4;
		if ((size_t)(end - *p) < n)
			return -1;
		*p += n;
		return 0;
	}
	case 2:
		if (get_varint(p, end, &v) < 0 || v > (uint64_t)(end - *p))
			return -1;
		*p += v;
		return 0;
	case 3:
		if (depth > 32)
			return -1;
		for (;;) {
			if (get_tag(p, end, &f, &w) < 0)
				return -1;
			if (w == 4)
				return f == field ? 0 : -1;
			if (skip_field(p, end, w, f, depth + 1) < 0)
				return -1;
		}
	default: /* 4 (unmatched end group), 6, 7 */
		return -1;
	}
}

static int decode(const uint8_t *p, size_t len, struct msg *m)
{
	const uint8_t *end = p + len;
	memset(m, 0, sizeof(*m));
	while (p < end) {
		uint64_t field, v;
		unsigned wt;
		if (get_tag(&p, end, &field, &wt) < 0)
			return -1;
		if (field == 1 && wt == 0) {
			if (get_varint(&p, end, &m->code) < 0)
				return -1;
			m->has_code = 1;
		} else if ((field == 13 || field == 14) && wt == 2) {
			if (get_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
				return -1;
			*(field == 13 ? &m->name : &m->dns) = p;
			*(field == 13 ? &m->name_len : &m->dns_len) = v;
			p += v;
		} else if (field == 1 || field == 13 || field == 14) {
			return -1; /* known field, wrong wire type */
		} else if (skip_field(&p, end, wt, field, 0) < 0) {
			return -1;
		}
	}
	return m->has_code ? 0 : -1; /* code is required */
}

/* Sends {code}; returns -1 if the connection is gone. */
static int send_code(unsigned code)
{
	uint8_t f[6] = { 0, 0, 0, 2, 0x08, (uint8_t)code }; /* all our codes fit one varint byte */
	if (sock < 0)
		return -1;
	if (send(sock, f, sizeof(f), MSG_NOSIGNAL) != (ssize_t)sizeof(f)) {
		logm("send to cmld: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- applying the configuration ---- */

/* Copies a printable string without blanks (a host name or an address) into out. */
static int text_arg(const uint8_t *s, size_t len, char *out, size_t max)
{
	if (len == 0 || len > max)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f)
			return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Writes a whole file (following symlinks, e.g. /etc/hosts -> /run/hosts); EROFS is not an error. */
static void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	if (f) {
		int bad = fputs(content, f) < 0;
		if (fclose(f) == 0 && !bad)
			return;
	}
	if (errno != EROFS)
		logm("cannot write %s: %s", path, strerror(errno));
}

static void apply_name(const struct msg *m)
{
	char name[65], buf[128];
	if (!m->name || text_arg(m->name, m->name_len, name, 64) < 0) {
		logm("no valid container name from cmld");
		return;
	}
	if (sethostname(name, strlen(name)) < 0)
		logm("sethostname(%s): %s", name, strerror(errno));
	snprintf(buf, sizeof(buf), "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n", name);
	write_file("/etc/hosts", buf);
}

static void apply_dns(const struct msg *m)
{
	char dns[256], buf[300];
	if (!m->dns || m->dns_len == 0)
		return;
	if (text_arg(m->dns, m->dns_len, dns, 255) < 0) {
		logm("invalid DNS server from cmld");
		return;
	}
	snprintf(buf, sizeof(buf), "nameserver %s\n", dns);
	write_file("/etc/resolv.conf", buf);
}

/* ---- connection ---- */

static int try_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		close(fd);
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	fcntl(fd, F_SETFL, 0); /* blocking from now on: reads follow poll(), writes are tiny */
	return fd;
}

static void disconnect(void)
{
	if (sock >= 0)
		close(sock);
	sock = -1;
	rlen = 0;
}

/* What the main loop should do after a message or an event from cmld. */
enum action { CONTINUE, SHUTDOWN_REQ, LOST, BROKEN /* unreadable stream: drop it, but not the workload */ };

static enum action handle(const uint8_t *body, size_t len)
{
	struct msg m;
	if (decode(body, len, &m) < 0) {
		logm("ignoring a malformed message (%zu bytes) from cmld", len);
		return CONTINUE;
	}
	if (m.code == SHUTDOWN)
		return SHUTDOWN_REQ;
	if (m.code == CONTAINER_CFG_NAME && state == WAIT_NAME) {
		apply_name(&m);
		state = WAIT_DNS;
		return send_code(CONTAINER_CFG_DNS_REQ) < 0 ? LOST : CONTINUE;
	}
	if (m.code == CONTAINER_CFG_DNS && state == WAIT_DNS) {
		apply_dns(&m);
		state = BOOTED;
		return send_code(BOOT_COMPLETED) < 0 ? LOST : CONTINUE;
	}
	logm("ignoring message code %llu from cmld", (unsigned long long)m.code);
	return CONTINUE;
}

/* Reads what is available and handles every complete frame. */
static enum action receive(void)
{
	ssize_t n = read(sock, rbuf + rlen, sizeof(rbuf) - rlen);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return CONTINUE;
	if (n <= 0) {
		if (n < 0)
			logm("read from cmld: %s", strerror(errno));
		else if (rlen > 0)
			logm("connection closed in the middle of a frame");
		return LOST;
	}
	rlen += (size_t)n;
	while (rlen >= 4) {
		uint32_t len = (uint32_t)rbuf[0] << 24 | (uint32_t)rbuf[1] << 16 | (uint32_t)rbuf[2] << 8 | rbuf[3];
		if (len > MAX_FRAME) {
			logm("frame of %u bytes from cmld is too large, dropping the connection", len);
			return BROKEN;
		}
		if (rlen < 4 + (size_t)len)
			break;
		enum action a = handle(rbuf + 4, len);
		if (a != CONTINUE)
			return a;
		rlen -= 4 + (size_t)len;
		memmove(rbuf, rbuf + 4 + len, rlen);
	}
	return CONTINUE;
}

/* ---- main ---- */

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void usage(void)
{
	fputs("usage: cml-service PROG [ARGS...]                (as PID 1)\n"
	      "       cml-service [--shutdown-signal NUM]       (not PID 1)\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	int shutdown_sig = SIGUSR2, i = 1, sfd = -1;
	while (i < argc && strncmp(argv[i], "--", 2) == 0) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		char *end;
		if (strcmp(argv[i], "--shutdown-signal") != 0 || i + 1 >= argc)
			usage();
		long s = strtol(argv[i + 1], &end, 10);
		if (*end || s < 1 || s > SIGRTMAX)
			usage();
		shutdown_sig = (int)s;
		i += 2;
	}
	int init_mode = getpid() == 1;
	if (init_mode != (i < argc))
		usage();

	if (init_mode) {
		sigset_t set, old;
		sigemptyset(&set);
		int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 };
		for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++)
			sigaddset(&set, sigs[k]);
		sigprocmask(SIG_BLOCK, &set, &old);
		sfd = signalfd(-1, &set, SFD_CLOEXEC);
		if (sfd < 0) {
			logm("signalfd: %s", strerror(errno));
			return 1;
		}
		child = fork();
		if (child < 0) {
			logm("fork: %s", strerror(errno));
			return 1;
		}
		if (child == 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			execvp(argv[i], argv + i);
			logm("cannot execute %s: %s", argv[i], strerror(errno));
			_exit(errno == ENOENT ? 127 : 126);
		}
	}

	const char *path = getenv("CML_SERVICE_SOCKET");
	if (!path || !*path)
		path = DEFAULT_SOCKET;
	long long deadline = now_ms() + CONNECT_TIMEOUT_MS;
	int connecting = 1;

	for (;;) {
		int timeout = -1;
		if (connecting) {
			sock = try_connect(path);
			if (sock >= 0 && send_code(CONTAINER_CFG_NAME_REQ) < 0)
				disconnect(); /* closed at once: try again */
			if (sock >= 0) {
				connecting = 0;
			} else if (now_ms() >= deadline) {
				connecting = 0;
				logm("cannot connect to %s: %s", path, strerror(errno));
				if (!init_mode)
					return 1;
				logm("running without the service connection");
			} else {
				timeout = CONNECT_RETRY_MS;
			}
		}

		struct pollfd pfd[2] = { { .fd = sfd, .events = POLLIN }, { .fd = sock, .events = POLLIN } };
		if (poll(pfd, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			logm("poll: %s", strerror(errno));
			return 1;
		}

		if (sfd >= 0 && (pfd[0].revents & POLLIN)) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo != SIGCHLD) {
					kill(child, (int)si.ssi_signo);
				} else {
					int status;
					pid_t pid;
					while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
						if (pid == child)
							return exit_code(status);
				}
			}
		}

		if (sock >= 0 && pfd[1].revents) {
			enum action a = receive();
			if (a == CONTINUE)
				continue;
			disconnect();
			if (a == BROKEN) {
				if (!init_mode)
					return 1;
				logm("running without the service connection");
				continue;
			}
			logm(a == SHUTDOWN_REQ ? "shutdown requested by cmld" : "connection to cmld closed");
			if (!init_mode) {
				if (a == SHUTDOWN_REQ && kill(1, shutdown_sig) < 0) {
					logm("kill(1, %d): %s", shutdown_sig, strerror(errno));
					return 1;
				}
				return 0;
			}
			kill(child, SIGTERM);
		}
	}
}
