/* Resolve each name (A only, the system resolver) and connect() at once: the
 * race the kernel's admission must win. Prints "name errno-of-connect addr"
 * per name, or "name eai" when the lookup failed. With -a, connects to every
 * address of the answer, not only the first; with -6, asks for AAAA only.
 * Usage: resolve_connect [-a] [-6] PORT NAME... */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static int try_connect(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errno;
	int err = connect(fd, sa, len) == 0 ? 0 : errno;
	close(fd);
	return err;
}

int main(int argc, char **argv)
{
	int all = 0, family = AF_INET, first = 1;
	for (; first < argc && argv[first][0] == '-'; first++) {
		if (strcmp(argv[first], "-a") == 0)
			all = 1;
		else if (strcmp(argv[first], "-6") == 0)
			family = AF_INET6;
	}
	if (first >= argc)
		return 2;
	const char *port = argv[first++];
	struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_STREAM };
	for (int i = first; i < argc; i++) {
		struct addrinfo *res;
		int rc = getaddrinfo(argv[i], port, &hints, &res);
		if (rc) {
			printf("%s eai%d\n", argv[i], rc);
			continue;
		}
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			char text[INET6_ADDRSTRLEN];
			const void *addr = family == AF_INET ?
				(const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr :
				(const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
			inet_ntop(family, addr, text, sizeof(text));
			printf("%s %d %s\n", argv[i], try_connect(ai->ai_addr, ai->ai_addrlen), text);
			if (!all)
				break;
		}
		freeaddrinfo(res);
	}
	return 0;
}
