/*
 * cservice: the in-container service of the CML, placed by cmld at /sbin/cservice in every
 * container (the original's cml-service-container-static). GyroidOS GuestOSes use it as init
 * (`init_path: "/sbin/cservice"`); guests that have their own init may run it as a boot step.
 *
 * It talks to cmld over /run/socket/cml-service (framing: 4-byte big-endian length, then a
 * protobuf body; messages of proto/c_service.proto, encoded and decoded by hand here so that the
 * binary is static and needs nothing from the guest: no libc, no NSS, no dlopen).
 *
 * Every mode first does the boot handshake: CONTAINER_CFG_NAME_REQ (sethostname, /etc/hosts),
 * CONTAINER_CFG_DNS_REQ (/etc/resolv.conf), BOOT_COMPLETED (cmld: BOOTING -> RUNNING). Then:
 *
 *   not PID 1 (any arguments are ignored):
 *       forks a handler that stays connected (AUDIT_ACK with 128 '0's first, as the original) and
 *       exits 0. On SHUTDOWN the handler ends the container: the guest's `poweroff` (or a signal
 *       to PID 1 where PID 1 handles it); where PID 1 cannot shut down (a shell script), it asks
 *       every process to terminate and powers off the container's PID namespace (reboot(2),
 *       which inside a PID namespace ends only that namespace; never done outside one).
 *   PID 1, `cservice init [args]`:
 *       execs /sbin/init with the remaining arguments (argv[0] = "/sbin/init"); nothing stays
 *       connected, so cmld stops such a container by running `halt` in it.
 *   PID 1, `cservice PROG [args]`:
 *       starts PROG (PATH search) in its own session and acts as a minimal init (dumb-init):
 *       forwards signals to PROG's process group (SIGSTOP for the tty stop signals), reaps every
 *       zombie, and keeps the connection. SHUTDOWN: SIGTERM to the group and to every process,
 *       SIGKILL after a grace period, exit. When PROG exits by itself, the rest of its group gets
 *       SIGTERM and cservice exits with PROG's status, which ends the container (the original
 *       stays as an empty init forever).
 *   PID 1, no arguments:
 *       stays as init without a child (reaps, keeps the connection; SHUTDOWN ends it).
 *
 * Logs go to stderr and, where /tmp is writable, /tmp/log/service-init.<time> (the boot and PID 1)
 * and /tmp/log/service-handler.<time> (the handler), with a `.current` symlink, as the original.
 * The environment variable CML_SERVICE_SOCKET names another socket (for tests).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/socket/cml-service"
#define LOG_DIR "/tmp/log"
#define HOSTS "/etc/hosts"
#define HOSTS_STOCK "/etc/hosts.stock"
#define RESOLV "/etc/resolv.conf"
#define INIT "/sbin/init"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define MAX_FRAME (64 * 1024)        /* frames up to this size are decoded */
#define MAX_WIRE (64u * 1024 * 1024) /* cmld's framing limit: a longer frame means a broken stream */
#define MAX_NAME 64                  /* HOST_NAME_MAX */
#define MAX_DNS 255
#define CONNECT_TIMEOUT_MS 5000
#define REPLY_TIMEOUT_MS 10000
#define GRACE_MS 10000          /* SHUTDOWN as PID 1: SIGTERM, then SIGKILL after this */
#define POWEROFF_WAIT_MS 10000  /* the guest's poweroff command may take this long */
#define CLEAN_SHUTDOWN_MS 30000 /* then its init this long, before the forced way */
#define FORCED_TERM_MS 2000     /* forced way: SIGTERM to everyone, this long before poweroff */

/* ServiceToCmldMessage.Code */
enum { BOOT_COMPLETED = 1, CONTAINER_CFG_NAME_REQ = 18, CONTAINER_CFG_DNS_REQ = 19, AUDIT_ACK = 21 };
/* CmldToServiceMessage.Code */
enum {
	SHUTDOWN = 1,
	CONTAINER_CFG_NAME = 17,
	CONTAINER_CFG_DNS = 18,
	AUDIT_NOTIFY = 19,
	AUDIT_RECORD = 20,
	AUDIT_COMPLETE = 21
};

/* ------------------------------------------------------------------------------ logging */

static int log_fd = -1;

static void timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm); /* UTC: a static binary has no time zone data to rely on */
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%06ld+0000", ts.tv_nsec / 1000);
}

__attribute__((format(printf, 2, 3))) static void logm(const char *level, const char *fmt, ...)
{
	char msg[512], ts[64], line[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	int n = snprintf(line, sizeof(line), "cservice: %s\n", msg);
	if (n >= (int)sizeof(line))
		n = (int)sizeof(line) - 1;
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nothing to do: stderr is often /dev/null or closed */
	}
	if (log_fd >= 0) {
		timestamp(ts, sizeof(ts));
		n = snprintf(line, sizeof(line), "%s [%d] %s %s\n", ts, (int)getpid(), level, msg);
		if (write(log_fd, line, (size_t)(n < (int)sizeof(line) ? n : (int)sizeof(line) - 1)) < 0)
			log_fd = -1;
	}
}
#define INFO(...) logm("INFO", __VA_ARGS__)
#define WARN(...) logm("WARN", __VA_ARGS__)
#define ERR(...) logm("ERROR", __VA_ARGS__)

/* /tmp/log/<name>.<time>, and <name>.current pointing at it. Quietly nothing where /tmp is
 * missing or read-only; never follows a symlink someone planted there. */
static void log_open(const char *name)
{
	char ts[64], path[256], cur[256];
	struct stat st;
	if (log_fd >= 0) {
		close(log_fd);
		log_fd = -1;
	}
	if (mkdir(LOG_DIR, 0755) < 0 && errno != EEXIST)
		return;
	if (lstat(LOG_DIR, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return;
	timestamp(ts, sizeof(ts));
	snprintf(path, sizeof(path), LOG_DIR "/%s.%s", name, ts);
	log_fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		return;
	snprintf(cur, sizeof(cur), LOG_DIR "/%s.current", name);
	unlink(cur);
	if (symlink(path + sizeof(LOG_DIR), cur) < 0) {
		/* the log itself is what matters */
	}
}

/* ------------------------------------------------------------------------------ clock */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(long long deadline)
{
	long long r = deadline - now_ms();
	return r < 0 ? 0 : r > 3600000 ? 3600000 : (int)r;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------------------ protobuf */

struct msg {
	uint64_t code;
	char name[MAX_NAME + 1], dns[MAX_DNS + 1];
	int has_name, has_dns; /* 1: valid text in name/dns; -1: present but unusable */
};

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (*p >= end)
			return -1;
		uint8_t b = *(*p)++;
		if (shift == 63 && b > 1)
			return -1; /* does not fit 64 bits */
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

static int get_tag(const uint8_t **p, const uint8_t *end, uint64_t *field, unsigned *wt)
{
	uint64_t tag;
	if (get_varint(p, end, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
		return -1;
	*field = tag >> 3;
	*wt = (unsigned)(tag & 7);
	return 0;
}

/* Skips the value of a field whose tag was read; groups are skipped to their matching end. */
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
		if (depth >= 32)
			return -1;
		for (;;) {
			if (get_tag(p, end, &f, &w) < 0)
				return -1;
			if (w == 4)
				return f == field ? 0 : -1;
			if (skip_field(p, end, w, f, depth + 1) < 0)
				return -1;
		}
	default: /* 4: end group without a start; 6, 7: no such wire type */
		return -1;
	}
}

/* A host name or an address goes into a config file line: printable, no blanks, bounded. */
static int copy_text(const uint8_t *s, uint64_t len, char *out, size_t max)
{
	if (len == 0 || len > max)
		return -1;
	for (uint64_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] == 0x7f)
			return -1;
	memcpy(out, s, (size_t)len);
	out[len] = '\0';
	return 0;
}

/* CmldToServiceMessage: code (1, required), container_cfg_name (13), container_cfg_dns (14);
 * audit_record (16) and audit_remaining_storage (17) and any unknown field are skipped. */
static int decode(const uint8_t *p, size_t len, struct msg *m)
{
	const uint8_t *end = p + len;
	int has_code = 0;
	memset(m, 0, sizeof(*m));
	while (p < end) {
		uint64_t field, v;
		unsigned wt;
		if (get_tag(&p, end, &field, &wt) < 0)
			return -1;
		if (field == 1) {
			if (wt != 0 || get_varint(&p, end, &m->code) < 0)
				return -1;
			has_code = 1;
		} else if (field == 13 || field == 14) {
			if (wt != 2 || get_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
				return -1;
			if (field == 13)
				m->has_name = copy_text(p, v, m->name, MAX_NAME) < 0 ? -1 : 1;
			else
				m->has_dns = v == 0 ? 0 : copy_text(p, v, m->dns, MAX_DNS) < 0 ? -1 : 1;
			p += v;
		} else if ((field == 16 && wt != 2) || (field == 17 && wt != 0)) {
			return -1;
		} else if (skip_field(&p, end, wt, field, 0) < 0) {
			return -1;
		}
	}
	return has_code ? 0 : -1;
}

/* ------------------------------------------------------------------------------ connection */

struct conn {
	int fd;
	size_t len;    /* bytes in buf */
	uint64_t skip; /* bytes of an oversized frame still to discard */
	uint8_t buf[4 + MAX_FRAME];
};

static struct conn conn = { .fd = -1 };

static void conn_close(void)
{
	if (conn.fd >= 0)
		close(conn.fd);
	conn.fd = -1;
	conn.len = 0;
	conn.skip = 0;
}

static int conn_open(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	long long deadline = now_ms() + CONNECT_TIMEOUT_MS;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		ERR("socket path %s is too long", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			ERR("socket: %s", strerror(errno));
			return -1;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			conn.fd = fd;
			conn.len = 0;
			conn.skip = 0;
			return 0;
		}
		int e = errno;
		close(fd);
		/* cmld listens before init runs; only a service started very early may have to wait */
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN && e != EINTR) || now_ms() >= deadline) {
			ERR("cannot connect to %s: %s", path, strerror(e));
			return -1;
		}
		sleep_ms(100);
	}
}

static int send_all(const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(conn.fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ServiceToCmldMessage {code, audit_ack (17) if given}; every code fits one varint byte. */
static int conn_send(unsigned code, const char *ack)
{
	uint8_t f[4 + 2 + 2 + 2 + 128]; /* length, code, tag 17, its length (2 bytes from 128 on), ack */
	size_t n = 4;
	f[n++] = 0x08;
	f[n++] = (uint8_t)code;
	if (ack) {
		size_t alen = strlen(ack);
		if (alen > 128)
			return -1;
		f[n++] = 0x8a; /* field 17, wire type 2 */
		f[n++] = 0x01;
		if (alen >= 0x80) {
			f[n++] = (uint8_t)(0x80 | (alen & 0x7f));
			f[n++] = (uint8_t)(alen >> 7);
		} else {
			f[n++] = (uint8_t)alen;
		}
		memcpy(f + n, ack, alen);
		n += alen;
	}
	uint32_t body = (uint32_t)(n - 4);
	f[0] = (uint8_t)(body >> 24);
	f[1] = (uint8_t)(body >> 16);
	f[2] = (uint8_t)(body >> 8);
	f[3] = (uint8_t)body;
	if (conn.fd < 0 || send_all(f, n) < 0) {
		WARN("cannot send message %u to cmld: %s", code, conn.fd < 0 ? "not connected" : strerror(errno));
		return -1;
	}
	return 0;
}

/* Takes the next message out of the buffer. 1: *m holds it; 0: no complete message yet;
 * -1: the stream is broken (a frame longer than any cmld sends). Malformed and oversized
 * frames are logged and dropped here. */
static int conn_pop(struct msg *m)
{
	for (;;) {
		if (conn.skip > 0) {
			size_t n = conn.len < conn.skip ? conn.len : (size_t)conn.skip;
			memmove(conn.buf, conn.buf + n, conn.len - n);
			conn.len -= n;
			conn.skip -= n;
			if (conn.skip > 0)
				return 0;
		}
		if (conn.len < 4)
			return 0;
		uint32_t len = (uint32_t)conn.buf[0] << 24 | (uint32_t)conn.buf[1] << 16 | (uint32_t)conn.buf[2] << 8 |
			       conn.buf[3];
		if (len >= MAX_WIRE) {
			ERR("frame of %u bytes from cmld: the stream is broken", len);
			return -1;
		}
		if (len > MAX_FRAME) {
			WARN("ignoring a frame of %u bytes from cmld (more than %d)", len, MAX_FRAME);
			memmove(conn.buf, conn.buf + 4, conn.len - 4);
			conn.len -= 4;
			conn.skip = len;
			continue;
		}
		if (conn.len < 4 + (size_t)len)
			return 0;
		int bad = decode(conn.buf + 4, len, m) < 0;
		conn.len -= 4 + (size_t)len;
		memmove(conn.buf, conn.buf + 4 + len, conn.len);
		if (!bad)
			return 1;
		WARN("ignoring a malformed message (%u bytes) from cmld", len);
	}
}

/* One read into the buffer. 1: data (or nothing yet); 0: closed by cmld; -1: error. */
static int conn_fill(void)
{
	if (conn.len == sizeof(conn.buf))
		return 1; /* cannot happen: conn_pop leaves room for the rest of any frame it waits for */
	ssize_t n = read(conn.fd, conn.buf + conn.len, sizeof(conn.buf) - conn.len);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : -1;
	if (n == 0)
		return 0;
	conn.len += (size_t)n;
	return 1;
}

/* Waits for the next message until the deadline. 1: message; 0: timeout; -1: connection gone. */
static int conn_recv(struct msg *m, long long deadline)
{
	for (;;) {
		int r = conn_pop(m);
		if (r != 0)
			return r;
		struct pollfd pfd = { .fd = conn.fd, .events = POLLIN };
		int p = poll(&pfd, 1, remaining(deadline));
		if (p < 0 && errno != EINTR)
			return -1;
		if (p == 0)
			return 0;
		if (p > 0 && (r = conn_fill()) <= 0)
			return -1;
	}
}

/* ------------------------------------------------------------------------------ configuration */

static int copy_file(const char *from, const char *to)
{
	char buf[4096];
	int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = -1;
	if (in < 0)
		return -1;
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		goto done;
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto done;
		if (n == 0)
			break;
		if (write(out, buf, (size_t)n) != n)
			goto done;
	}
	rc = 0;
done:
	{
		int e = errno;
		close(in);
		if (out >= 0 && close(out) < 0 && rc == 0)
			rc = -1;
		else
			errno = e;
	}
	return rc;
}

static int write_text(const char *path, const char *text, int append)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
	if (fd < 0)
		return -1;
	size_t len = strlen(text);
	int rc = write(fd, text, len) == (ssize_t)len ? 0 : -1;
	int e = errno;
	if (close(fd) < 0 && rc == 0)
		return -1;
	errno = e;
	return rc;
}

static void warn_file(const char *what, const char *path)
{
	WARN("cannot %s %s: %s (going on)", what, path, strerror(errno));
}

/* As the original: the stock /etc/hosts is saved once as hosts.stock (and restored from there
 * at every later boot), then the line `127.0.1.1<TAB> <name>` is appended. */
static void apply_name(const char *name)
{
	char line[MAX_NAME + 16];
	struct utsname u;
	/* cmld sets it already; a container without CAP_SYS_ADMIN could not set it again */
	if ((uname(&u) < 0 || strcmp(u.nodename, name) != 0) && sethostname(name, strlen(name)) < 0)
		WARN("sethostname(%s): %s", name, strerror(errno));
	if (access(HOSTS, F_OK) == 0) {
		if (access(HOSTS_STOCK, F_OK) != 0) {
			if (copy_file(HOSTS, HOSTS_STOCK) < 0)
				warn_file("save the stock", HOSTS_STOCK);
		} else if (copy_file(HOSTS_STOCK, HOSTS) < 0) {
			warn_file("restore", HOSTS " from " HOSTS_STOCK);
		}
	}
	snprintf(line, sizeof(line), "127.0.1.1\t %s\n", name);
	if (write_text(HOSTS, line, 1) < 0)
		warn_file("write", HOSTS);
	else
		INFO("host name %s", name);
}

static void apply_dns(const char *dns)
{
	char line[MAX_DNS + 16];
	snprintf(line, sizeof(line), "nameserver %s\n", dns);
	if (write_text(RESOLV, line, 0) < 0)
		warn_file("write", RESOLV);
	else
		INFO("DNS server %s", dns);
}

/* ------------------------------------------------------------------------------ boot */

enum boot { BOOTED, BOOT_SHUTDOWN, BOOT_LOST };

/* Sends `req` and waits for the reply `want`; other messages are logged and skipped. */
static enum boot request(unsigned req, uint64_t want, struct msg *m)
{
	if (conn_send(req, NULL) < 0)
		return BOOT_LOST;
	long long deadline = now_ms() + REPLY_TIMEOUT_MS;
	for (;;) {
		int r = conn_recv(m, deadline);
		if (r < 0) {
			ERR("connection to cmld lost during the boot");
			return BOOT_LOST;
		}
		if (r == 0) {
			WARN("no reply to request %u from cmld within %d s (going on without it)", req,
			     REPLY_TIMEOUT_MS / 1000);
			m->code = 0;
			return BOOTED;
		}
		if (m->code == want)
			return BOOTED;
		if (m->code == SHUTDOWN)
			return BOOT_SHUTDOWN;
		INFO("ignoring message code %llu from cmld while waiting for %llu", (unsigned long long)m->code,
		     (unsigned long long)want);
	}
}

static enum boot boot(void)
{
	struct msg m;
	enum boot b = request(CONTAINER_CFG_NAME_REQ, CONTAINER_CFG_NAME, &m);
	if (b != BOOTED)
		return b;
	if (m.code == CONTAINER_CFG_NAME) {
		if (m.has_name == 1)
			apply_name(m.name);
		else
			WARN("no usable container name from cmld (empty, too long or with blanks); not applied");
	}
	b = request(CONTAINER_CFG_DNS_REQ, CONTAINER_CFG_DNS, &m);
	if (b != BOOTED)
		return b;
	if (m.code == CONTAINER_CFG_DNS) {
		if (m.has_dns == 1)
			apply_dns(m.dns);
		else if (m.has_dns == 0)
			INFO("cmld has no DNS server for this container; %s left as it is", RESOLV);
		else
			WARN("unusable DNS server from cmld; %s left as it is", RESOLV);
	}
	if (conn_send(BOOT_COMPLETED, NULL) < 0)
		return BOOT_LOST;
	INFO("boot completed");
	return BOOTED;
}

static void send_audit_ack(void)
{
	char zeros[129];
	memset(zeros, '0', 128);
	zeros[128] = '\0';
	conn_send(AUDIT_ACK, zeros);
}

/* What a message after the boot means; only SHUTDOWN calls for action. */
static int is_shutdown(const struct msg *m)
{
	switch (m->code) {
	case SHUTDOWN:
		INFO("shutdown requested by cmld");
		return 1;
	case AUDIT_NOTIFY:
	case AUDIT_RECORD:
	case AUDIT_COMPLETE:
		return 0; /* audit records are not stored in the container yet */
	default:
		INFO("ignoring message code %llu from cmld", (unsigned long long)m->code);
		return 0;
	}
}

/* ------------------------------------------------------------------------------ PID 1 */

static pid_t child = -1;
static int child_status = -1; /* exit code for our own exit, once the child is gone */

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void forward(int sig)
{
	if (child > 0 && kill(-child, sig) < 0 && errno == ESRCH)
		kill(child, sig); /* not (yet) a group leader */
}

/* Reaps every zombie; returns 1 once the main child is gone. */
static int reap(void)
{
	int status, gone = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == child) {
			child_status = exit_code(status);
			INFO("%s %d", WIFEXITED(status) ? "program exited with status" : "program killed by signal",
			     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			gone = 1;
		}
	}
	return gone;
}

static pid_t start_program(char **argv, const sigset_t *mask)
{
	pid_t pid = fork();
	if (pid < 0) {
		ERR("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, mask, NULL);
		if (setsid() < 0)
			ERR("setsid: %s", strerror(errno));
		if (!getenv("PATH"))
			setenv("PATH", DEFAULT_PATH, 0);
		execvp(argv[0], argv);
		int e = errno;
		ERR("cannot execute %s: %s", argv[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
	INFO("started %s (pid %d)", argv[0], (int)pid);
	return pid;
}

/* PID 1 as a minimal init: signals, zombies and the connection to cmld. Never returns. */
static void init_loop(int sfd)
{
	long long deadline = -1; /* set once SHUTDOWN asked everyone to terminate */
	for (;;) {
		struct pollfd pfd[2] = { { .fd = sfd, .events = POLLIN }, { .fd = conn.fd, .events = POLLIN } };
		int timeout = deadline < 0 ? -1 : remaining(deadline);
		if (deadline >= 0 && child <= 0) {
			/* no program to wait for: done as soon as nothing else is left */
			if (kill(-1, 0) < 0 && errno == ESRCH)
				exit(child_status < 0 ? 0 : child_status);
			timeout = timeout < 100 ? timeout : 100;
		}
		int n = poll(pfd, conn.fd >= 0 ? 2 : 1, timeout);
		if (n < 0 && errno != EINTR) {
			ERR("poll: %s", strerror(errno));
			sleep_ms(100);
			continue;
		}
		if (deadline >= 0 && remaining(deadline) == 0) {
			WARN("processes left after %d s: killing them", GRACE_MS / 1000);
			kill(-1, SIGKILL);
			exit(child_status < 0 ? 128 + SIGKILL : child_status);
		}
		if (n <= 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGCHLD) {
					if (reap() && child > 0) {
						forward(SIGTERM); /* whatever is left of its group */
						child = -1;
						INFO("the program has ended: the container ends with status %d", child_status);
						exit(child_status);
					}
				} else if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
					/* the child's group is orphaned: only SIGSTOP stops it. PID 1 of a
					 * namespace cannot stop itself, so unlike dumb-init it does not try. */
					forward(SIGSTOP);
				} else {
					forward(sig);
				}
			}
		}
		if (conn.fd >= 0 && pfd[1].revents) {
			int r = conn_fill();
			struct msg m;
			int p = 0;
			while (r > 0 && (p = conn_pop(&m)) == 1) {
				if (is_shutdown(&m) && deadline < 0) {
					deadline = now_ms() + GRACE_MS;
					forward(SIGTERM);
					kill(-1, SIGTERM);
				}
			}
			if (r <= 0 || p < 0) {
				WARN("connection to cmld %s; running on without it", r == 0 ? "closed" : "broken");
				conn_close();
			}
		}
	}
}

/* ------------------------------------------------------------------------------ handler */

/* Signals PID 1 handles (SigCgt of /proc/1/status); 0 where that cannot be read. */
static uint64_t pid1_caught(void)
{
	char buf[4096];
	int fd = open("/proc/1/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *p = strstr(buf, "\nSigCgt:");
	return p ? strtoull(p + 8, NULL, 16) : 0;
}

static int caught(uint64_t mask, int sig)
{
	return (mask >> (sig - 1)) & 1;
}

/* True only where /proc is our own PID namespace's and that namespace is not the host's (whose
 * PID 2 is the kernel thread kthreadd): reboot(2) there would power off the machine. */
static int in_child_pid_namespace(void)
{
	char self[32], line[128];
	ssize_t n = readlink("/proc/self", self, sizeof(self) - 1);
	if (n <= 0)
		return 0;
	self[n] = '\0';
	if (strtol(self, NULL, 10) != (long)getpid())
		return 0;
	int fd = open("/proc/2/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 1; /* no PID 2 at all: not the host */
	n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	line[n] = '\0';
	return strstr(line, "(kthreadd)") == NULL;
}

/* The guest's own poweroff, if it has one: its exit status, or -1. */
static int run_poweroff(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char *argv[] = { "poweroff", NULL };
		if (!getenv("PATH"))
			setenv("PATH", DEFAULT_PATH, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	long long deadline = now_ms() + POWEROFF_WAIT_MS;
	int status;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 || remaining(deadline) == 0) {
			WARN("poweroff did not finish within %d s", POWEROFF_WAIT_MS / 1000);
			return -1;
		}
		sleep_ms(50);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
		INFO("the guest has no poweroff command");
		return -1;
	}
	INFO("poweroff exited with status %d", exit_code(status));
	return exit_code(status);
}

/* SHUTDOWN in the handler: make the container end. Returns only where it cannot. */
static void shutdown_container(void)
{
	/* An init that can power off handles one of these: SIGUSR2 (busybox init: poweroff),
	 * SIGRTMIN+4 (systemd: poweroff), SIGPWR (sysvinit). Shells catch SIGINT and SIGCHLD only,
	 * and a shell as PID 1 of a namespace ignores every signal it does not catch. */
	uint64_t mask = pid1_caught();
	int clean = caught(mask, SIGUSR2) || caught(mask, SIGRTMIN + 4) || caught(mask, SIGPWR);
	if (clean) {
		if (run_poweroff() != 0) {
			int sig = caught(mask, SIGUSR2) ? SIGUSR2 : caught(mask, SIGRTMIN + 4) ? SIGRTMIN + 4 : 0;
			if (sig) {
				INFO("sending signal %d to init", sig);
				kill(1, sig);
			}
		}
		long long deadline = now_ms() + CLEAN_SHUTDOWN_MS;
		while (remaining(deadline) > 0)
			sleep_ms(100); /* the container normally ends, and we with it */
		WARN("init did not end the container within %d s", CLEAN_SHUTDOWN_MS / 1000);
	} else {
		INFO("init handles no shutdown signal");
	}
	if (!in_child_pid_namespace()) {
		ERR("not in a container's PID namespace: not powering off");
		return;
	}
	INFO("asking every process to terminate, then powering off the container");
	kill(-1, SIGTERM);
	long long deadline = now_ms() + FORCED_TERM_MS;
	while (remaining(deadline) > 0 && !(kill(-1, 0) < 0 && errno == ESRCH))
		sleep_ms(50);
	sync();
	/* Inside a PID namespace this ends the namespace (its init dies as if by SIGINT). */
	reboot(RB_POWER_OFF);
	ERR("reboot(POWER_OFF): %s", strerror(errno));
}

static void handler_loop(void)
{
	send_audit_ack();
	for (;;) {
		struct msg m;
		int r = conn_recv(&m, now_ms() + 3600000);
		if (r < 0) {
			INFO("connection to cmld closed");
			exit(0);
		}
		if (r == 1 && is_shutdown(&m)) {
			shutdown_container();
			exit(1);
		}
	}
}

static void start_handler(void)
{
	pid_t pid = fork();
	if (pid < 0) {
		ERR("cannot start the handler: fork: %s", strerror(errno));
		return;
	}
	if (pid > 0) {
		INFO("handler started (pid %d)", (int)pid);
		return;
	}
	/* Detached, and holding none of the caller's files (a caller reading our output to its end
	 * must not wait for the handler). */
	setsid();
	if (chdir("/") < 0) {
		/* the handler needs no working directory */
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int fd = 0; fd < 3; fd++) {
		if (null >= 0)
			dup2(null, fd);
		else
			close(fd);
	}
	if (null > 2)
		close(null);
	log_open("service-handler");
	handler_loop();
}

/* ------------------------------------------------------------------------------ main */

static void usage(const char *prog)
{
	printf("usage: %s                   boot step of a guest's own init: hostname, DNS, boot completed;\n"
	       "                                   a handler stays connected for cmld's shutdown request\n"
	       "       %s init [ARGS...]    as PID 1: the same, then exec /sbin/init ARGS\n"
	       "       %s PROG [ARGS...]    as PID 1: the same, then run PROG as a minimal init\n",
	       prog, prog, prog);
}

int main(int argc, char **argv)
{
	int pid1 = getpid() == 1;
	const char *path = getenv("CML_SERVICE_SOCKET");
	if (!path || !*path)
		path = DEFAULT_SOCKET;
	if (!pid1 && argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage("cservice");
		return 0;
	}

	sigset_t all, old;
	sigfillset(&all);
	if (pid1) /* every signal is read from a signalfd in the loop; none is lost meanwhile */
		sigprocmask(SIG_BLOCK, &all, &old);
	else
		sigprocmask(SIG_BLOCK, NULL, &old);

	log_open("service-init");
	INFO("starting as %s%s%s", pid1 ? "PID 1" : "a boot step", argc > 1 ? ", arguments from " : "",
	     argc > 1 ? argv[1] : "");
	if (!pid1 && argc > 1)
		INFO("not PID 1: the arguments are ignored");

	enum boot b = BOOT_LOST;
	if (conn_open(path) == 0)
		b = boot();
	if (b == BOOT_LOST)
		conn_close();

	if (!pid1) {
		if (b == BOOT_LOST)
			return 1;
		if (b == BOOT_SHUTDOWN) {
			shutdown_container();
			return 1;
		}
		start_handler();
		return 0;
	}

	if (b == BOOT_SHUTDOWN) {
		INFO("shutdown requested during the boot: nothing is started");
		return 0;
	}
	if (b == BOOT_LOST)
		WARN("running without the connection to cmld (the container stays BOOTING)");

	if (argc >= 2 && !strcmp(argv[1], "init")) {
		argv[1] = INIT;
		INFO("executing %s", INIT);
		if (log_fd >= 0)
			close(log_fd);
		log_fd = -1;
		sigprocmask(SIG_SETMASK, &old, NULL);
		execv(INIT, argv + 1); /* the connection closes on exec */
		int e = errno;
		sigprocmask(SIG_BLOCK, &all, NULL);
		log_open("service-init");
		ERR("cannot execute %s: %s; staying as init without a program", INIT, strerror(e));
	} else if (argc >= 2) {
		child = start_program(argv + 1, &old);
	} else {
		INFO("running as init without a program");
	}

	int sfd = signalfd(-1, &all, SFD_CLOEXEC);
	if (sfd < 0) {
		ERR("signalfd: %s", strerror(errno));
		return 1;
	}
	if (conn.fd >= 0)
		send_audit_ack(); /* this connection stays open as the handler's */
	init_loop(sfd);
	return 0;
}
