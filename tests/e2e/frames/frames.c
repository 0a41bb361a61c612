/* A container-side probe for the backstop tests, built static so it runs in any image.
 *
 *   frames send IFNAME HEXFRAME...   one AF_PACKET SOCK_RAW send per frame, as given
 *   frames connect ADDR PORT         a TCP connect (5 s timeout) through the normal stack
 *
 * Prints one line per action: "ok" or the errno name; exits 1 if any failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int report(int ok)
{
	printf("%s\n", ok ? "ok" : strerror(errno));
	return ok ? 0 : 1;
}

static int send_frames(const char *ifname, int n, char **hex)
{
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0)
		return report(0);
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = if_nametoindex(ifname) };
	int failed = 0;
	for (int i = 0; i < n; i++) {
		unsigned char frame[2048];
		size_t len = strlen(hex[i]) / 2;
		if (len > sizeof(frame))
			return 2;
		for (size_t j = 0; j < len; j++)
			sscanf(hex[i] + 2 * j, "%2hhx", &frame[j]);
		failed |= report(sendto(fd, frame, len, 0, (struct sockaddr *)&to, sizeof(to)) ==
				 (ssize_t)len);
	}
	return failed;
}

static int tcp_connect(const char *addr, const char *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(atoi(port)) };
	inet_pton(AF_INET, addr, &to.sin_addr);
	return report(connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0);
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "send"))
		return send_frames(argv[2], argc - 3, argv + 3);
	if (argc == 4 && !strcmp(argv[1], "connect"))
		return tcp_connect(argv[2], argv[3]);
	fprintf(stderr, "usage: frames send IFNAME HEX... | frames connect ADDR PORT\n");
	return 2;
}
