/* Resolve each name (A only, the system resolver) and connect() at once: the
 * race the kernel's admission must win. Prints "name errno-of-connect addr"
 * per name, or "name eai" when the lookup failed. With -a, connects to every
 * address of the answer, not only the first. */
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
	int all = 0, first = 2;
	if (argc > 1 && strcmp(argv[1], "-a") == 0) {
		all = 1;
		first = 3;
	}
	const char *port = argv[first - 1];
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
	for (int i = first; i < argc; i++) {
		struct addrinfo *res;
		int rc = getaddrinfo(argv[i], port, &hints, &res);
		if (rc) {
			printf("%s eai%d\n", argv[i], rc);
			continue;
		}
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			char text[INET6_ADDRSTRLEN];
			struct sockaddr_in *sin = (struct sockaddr_in *)ai->ai_addr;
			inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
			printf("%s %d %s\n", argv[i], try_connect(ai->ai_addr, ai->ai_addrlen), text);
			if (!all)
				break;
		}
		freeaddrinfo(res);
	}
	return 0;
}
