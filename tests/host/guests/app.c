/*
 * A workload for test GuestOSes that have no shell: built static (a guest without any libc),
 * dynamic against glibc, and dynamic against musl.
 *
 *   app serve ARGS...   records its argv, PID and environment in /run/app.txt, then waits;
 *                       SIGTERM ends it with status 0 (and a line "term" in /run/app.txt)
 *   app exit N          exits with status N at once
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
