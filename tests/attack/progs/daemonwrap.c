/* daemonwrap: starts a daemon the way the attack suite needs it, then execs it:
 *   - a new session (no controlling terminal), or, with --ctty PATH, that terminal as the
 *     controlling terminal of the new session (the daemon "in the foreground on a terminal");
 *   - a fresh session keyring (never the test runner's) holding one sacrificial "user" key
 *     DESC = PAYLOAD, standing for a key the daemon holds;
 *   - oom_score_adj as given (the systemd unit sets OOMScoreAdjust=-900).
 *     daemonwrap [--ctty PATH] --key DESC PAYLOAD --oom ADJ -- PROGRAM ARGS...
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/keyctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *ctty = NULL, *desc = NULL, *payload = NULL, *oom = NULL;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--ctty") && i + 1 < argc)
			ctty = argv[++i];
		else if (!strcmp(argv[i], "--key") && i + 2 < argc) {
			desc = argv[++i];
			payload = argv[++i];
		} else if (!strcmp(argv[i], "--oom") && i + 1 < argc)
			oom = argv[++i];
		else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "daemonwrap: no program\n");
		return 2;
	}
	if (setsid() < 0) {
		perror("daemonwrap: setsid");
		return 2;
	}
	if (ctty) {
		int fd = open(ctty, O_RDWR);
		if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0) {
			perror("daemonwrap: controlling terminal");
			return 2;
		}
		close(fd);
	}
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "atk-daemon-session") < 0) {
		perror("daemonwrap: join session keyring");
		return 2;
	}
	if (desc && syscall(SYS_add_key, "user", desc, payload, strlen(payload), KEY_SPEC_SESSION_KEYRING) < 0) {
		perror("daemonwrap: add_key");
		return 2;
	}
	if (oom) {
		int fd = open("/proc/self/oom_score_adj", O_WRONLY);
		if (fd < 0 || write(fd, oom, strlen(oom)) < 0) {
			perror("daemonwrap: oom_score_adj");
			return 2;
		}
		close(fd);
	}
	execv(argv[i], argv + i);
	perror("daemonwrap: exec");
	return 127;
}
