/*
 * A workload for test GuestOSes that have no shell: built static (a guest without any libc),
 * dynamic against glibc, and dynamic against musl.
 *
 *   app serve ARGS...   records its argv, PID and environment in /run/app.txt, then waits;
 *                       SIGTERM ends it with status 0 (and a line "term" in /run/app.txt)
 *   app exit N          exits with status N at once
 *   app leave-on-shutdown
 *                       a service that misbehaves: reports BOOT_COMPLETED on cmld's service socket,
 *                       and at the first message from cmld (SHUTDOWN) closes and exits, leaving
 *                       the container running
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;
static volatile sig_atomic_t term;

static void on_term(int sig)
{
	(void)sig;
	term = 1;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "exit"))
		return atoi(argv[2]);
	if (argc >= 2 && !strcmp(argv[1], "leave-on-shutdown")) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "/run/socket/cml-service" };
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		char buf[64];
		if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return 4;
		if (write(s, "\0\0\0\2\x08\x01", 6) != 6) /* BOOT_COMPLETED */
			return 5;
		return read(s, buf, sizeof(buf)) > 0 ? 0 : 6;
	}
	if (argc < 2 || strcmp(argv[1], "serve")) {
		fprintf(stderr, "usage: app serve ARGS... | app exit N\n");
		return 2;
	}
	signal(SIGTERM, on_term);
	FILE *f = fopen("/run/app.txt", "w");
	if (!f)
		return 3;
	fprintf(f, "pid=%d ppid=%d\n", (int)getpid(), (int)getppid());
	for (int i = 0; i < argc; i++)
		fprintf(f, "argv=%s\n", argv[i]);
	for (char **e = environ; *e; e++)
		fprintf(f, "env=%s\n", *e);
	fclose(f);
	while (!term)
		pause();
	f = fopen("/run/app.txt", "a");
	if (f) {
		fputs("term\n", f);
		fclose(f);
	}
	return 0;
}
