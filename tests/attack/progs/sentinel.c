/* sentinel: a sacrificial host process for the attack suite. It keeps SECRET in memory and
 * write(2)s it to /dev/null every 20 ms (so a tracer on system call entry sees it), prints its
 * PID and the SECRET's address, and appends the name of every SIGCONT/SIGUSR1 it receives to
 * SIGNAL_LOG (a file the test reads). It ends after MAX_SECONDS or when its parent goes away.
 *     sentinel SECRET SIGNAL_LOG MAX_SECONDS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static char secret[64];
static int logfd = -1;

static void on_signal(int sig)
{
	const char *m = sig == SIGCONT ? "SIGCONT\n" : "SIGUSR1\n";
	if (write(logfd, m, strlen(m)) < 0)
		_exit(3);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	strncpy(secret, argv[1], sizeof secret - 1);
	logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 2;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_NAME, "atk-sentinel");
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	sigaction(SIGCONT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	printf("%d %p\n", getpid(), (void *)secret);
	fflush(stdout);
	time_t end = time(NULL) + atol(argv[3]);
	struct timespec ts = {0, 20 * 1000 * 1000};
	while (time(NULL) < end) {
		if (write(null, secret, 32) < 0)
			return 3;
		nanosleep(&ts, NULL);
	}
	return 0;
}
