/* netatk: sends raw Ethernet frames from inside a container (the network attacks of
 * tests/attack/test_network.py build the frames; this only puts them on the wire).
 *
 *   netatk IFNAME HEXFRAME [COUNT]
 *
 * Prints "sent N" and exits 0, or the failing call and exits 1. Static: the busybox guest has
 * no libc. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hexval.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: netatk IFNAME HEXFRAME [COUNT]\n");
		return 2;
	}
	size_t len = strlen(argv[2]) / 2;
	unsigned char frame[2048];
	if (len < 14 || len > sizeof(frame)) {
		fprintf(stderr, "bad frame length %zu\n", len);
		return 2;
	}
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);
		if (hi < 0 || lo < 0) {
			fprintf(stderr, "bad hex at %zu\n", i);
			return 2;
		}
		frame[i] = (unsigned char)(hi << 4 | lo);
	}
	int count = argc > 3 ? atoi(argv[3]) : 1;
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (s < 0) {
		printf("socket: %s\n", strerror(errno));
		return 1;
	}
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(argv[1]),
				   .sll_halen = 6 };
	if (!sll.sll_ifindex) {
		printf("if_nametoindex %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	memcpy(sll.sll_addr, frame, 6);
	int sent = 0;
	for (int i = 0; i < count; i++) {
		if (sendto(s, frame, len, 0, (struct sockaddr *)&sll, sizeof(sll)) != (ssize_t)len) {
			printf("sendto: %s\n", strerror(errno));
			return 1;
		}
		sent++;
		usleep(10000);
	}
	printf("sent %d\n", sent);
	return 0;
}
