/* vsock-echo: the test tool for Swiftlet's virtio-vsock (Firecracker's hybrid model), static, for
 * the default guest (AF_VSOCK side) and the lab's L2 (Unix-socket side). Built with gcc -static by
 * scripts/build-guest and scripts/lab.
 *
 *   vsock-echo listen PORT [COUNT]          guest: accept COUNT (default 1) AF_VSOCK connections on
 *                                           PORT, each echoed until its peer closes, concurrently
 *   vsock-echo connect CID PORT DATA        guest: connect to CID:PORT, send DATA, read as many bytes
 *                                           back, print them
 *   vsock-echo unix-connect PATH PORT DATA  host: connect to the device's socket PATH, write
 *                                           "CONNECT PORT\n", read the "OK N" line (printed on stderr),
 *                                           then as connect
 *   vsock-echo unix-listen PATH [COUNT]     host: listen on the Unix socket PATH (e.g. <socket>_<port>)
 *                                           and echo, as listen
 * DATA "@N" stands for N bytes of a fixed pattern; then "bytes=N fnv=HASH ok|MISMATCH" is printed
 * instead of the data. Sending and receiving run together (poll), so flow control is exercised
 * without deadlock. Exit status 0 on success, 1 on any failure (message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static void die(const char *what) {
    fprintf(stderr, "vsock-echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void echo(int fd) {
    char buffer[65536];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(fd, buffer + done, n - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return;
            done += w;
        }
    }
}

static void serve(int listener, int count) {
    for (int i = 0; i < count; i++) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) die("accept");
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) { echo(fd); close(fd); _exit(0); }
        close(fd);
    }
    while (wait(NULL) > 0) {}
}

static unsigned char pattern(size_t i) { return (unsigned char)((i * 7 + (i >> 9)) & 0xff); }

/* Sends DATA on fd while reading the echo; prints the result. */
static int exchange(int fd, const char *data) {
    size_t total;
    unsigned char *out;
    int patterned = data[0] == '@';
    if (patterned) {
        total = strtoul(data + 1, NULL, 10);
        out = malloc(total ? total : 1);
        for (size_t i = 0; i < total; i++) out[i] = pattern(i);
    } else {
        total = strlen(data);
        out = (unsigned char *)strdup(data);
    }
    unsigned char *in = malloc(total ? total : 1);
    size_t sent = 0, got = 0;
    while (got < total) {
        struct pollfd p = { .fd = fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
        if (poll(&p, 1, 60000) <= 0) { fprintf(stderr, "vsock-echo: no progress for 60 s (sent %zu, got %zu)\n", sent, got); return 1; }
        if ((p.revents & POLLOUT) && sent < total) {
            ssize_t w = send(fd, out + sent, total - sent > 65536 ? 65536 : total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) die("send");
            if (w > 0) sent += w;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, in + got, total - got, MSG_DONTWAIT);
            if (r < 0 && errno != EAGAIN && errno != EINTR) die("recv");
            if (r == 0) { fprintf(stderr, "vsock-echo: peer closed after %zu of %zu bytes\n", got, total); return 1; }
            if (r > 0) got += r;
        }
    }
    if (patterned) {
        uint32_t hash = 2166136261u;
        for (size_t i = 0; i < total; i++) hash = (hash ^ in[i]) * 16777619u;
        int same = memcmp(in, out, total) == 0;
        printf("bytes=%zu fnv=%08x %s\n", total, hash, same ? "ok" : "MISMATCH");
        return same ? 0 : 1;
    }
    fwrite(in, 1, total, stdout);
    printf("\n");
    return memcmp(in, out, total) == 0 ? 0 : 1;
}

static int unix_socket(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) { errno = ENAMETOOLONG; die(path); }
    strcpy(address->sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    return fd;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "listen") == 0) {
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0) die("socket(AF_VSOCK)");
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = atoi(argv[2]) };
        if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) die("bind");
        if (listen(fd, 16) < 0) die("listen");
        fprintf(stderr, "vsock-echo: listening on port %s\n", argv[2]);
        serve(fd, argc > 3 ? atoi(argv[3]) : 1);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "connect") == 0) {
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0) die("socket(AF_VSOCK)");
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = atoi(argv[2]), .svm_port = atoi(argv[3]) };
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
        return exchange(fd, argv[4]);
    }
    if (argc == 5 && strcmp(argv[1], "unix-connect") == 0) {
        struct sockaddr_un address;
        int fd = unix_socket(argv[2], &address);
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
        char line[64];
        int n = snprintf(line, sizeof line, "CONNECT %s\n", argv[3]);
        if (write(fd, line, n) != n) die("write CONNECT");
        size_t have = 0;   /* the OK line, a byte at a time: what follows is the stream */
        while (have < sizeof line - 1) {
            ssize_t r = read(fd, line + have, 1);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { fprintf(stderr, "vsock-echo: closed before OK (guest not listening?)\n"); return 1; }
            if (line[have++] == '\n') break;
        }
        line[have] = 0;
        if (strncmp(line, "OK ", 3) != 0) { fprintf(stderr, "vsock-echo: unexpected reply: %s\n", line); return 1; }
        fprintf(stderr, "vsock-echo: %s", line);
        return exchange(fd, argv[4]);
    }
    if (argc >= 3 && strcmp(argv[1], "unix-listen") == 0) {
        struct sockaddr_un address;
        int fd = unix_socket(argv[2], &address);
        unlink(argv[2]);
        if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) die("bind");
        if (listen(fd, 16) < 0) die("listen");
        serve(fd, argc > 3 ? atoi(argv[3]) : 1);
        return 0;
    }
    fprintf(stderr, "usage: vsock-echo listen PORT [COUNT] | connect CID PORT DATA | "
                    "unix-connect PATH PORT DATA | unix-listen PATH [COUNT]\n");
    return 2;
}
