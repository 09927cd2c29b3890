/* iobench: the I/O half of scripts/bench-io, run inside the guest and in the lab's L2.
 *
 *   iobench read DEV MIB             sequential reads of 1 MiB with O_DIRECT from the start of DEV
 *   iobench write DEV MIB            sequential writes of 1 MiB with O_DIRECT, then fdatasync
 *   iobench randread DEV SECONDS     4 KiB reads with O_DIRECT at random 4 KiB-aligned offsets in
 *                                    the first 256 MiB of DEV (or all of it if smaller), one at a time
 *   iobench tcp-sink PORT [MIB]      accepts one TCP connection on PORT and reads it to the end (or
 *                                    MIB MiB, then closes it: a peer need not half-close)
 *   iobench tcp-send HOST PORT MIB   connects to HOST:PORT (IPv4) and sends MIB MiB
 *   iobench vsock-sink PORT [MIB]    accepts one AF_VSOCK stream connection on PORT, reads it all (or MIB MiB)
 *   iobench vsock-send CID PORT MIB  connects to CID:PORT over AF_VSOCK and sends MIB MiB
 *   iobench unix-send PATH PORT MIB  Firecracker's hybrid vsock from the host side: connects to the
 *                                    Unix socket PATH, sends "CONNECT PORT\n", reads "OK ...\n",
 *                                    then sends MIB MiB
 *   iobench unix-sink PATH [MIB]     listens on the Unix socket PATH (a guest-initiated hybrid vsock
 *                                    connection arrives there) and reads one connection to the end
 *                                    (or MIB MiB)
 *
 * Each prints one line "IO <what> <MiB/s or IOPS> <bytes or ops> <seconds>" on stdout; a failure
 * prints "IO-FAIL <what>: <reason>" and exits 1. Timing is CLOCK_MONOTONIC around the transfer
 * (sinks: from the first byte to the end). Build: gcc -O2 -static -o iobench iobench.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static const char *what = "iobench";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *reason) {
    printf("IO-FAIL %s: %s: %s\n", what, reason, strerror(errno));
    exit(1);
}

static void *aligned(size_t size) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0) fail("posix_memalign");
    memset(p, 0x5a, size);
    return p;
}

static void report(const char *metric, double bytes, double seconds) {
    printf("IO %s %.1f %.0f %.3f\n", metric, bytes / MIB / seconds, bytes, seconds);
}

static void sequential(const char *dev, long mib, int writing) {
    int fd = open(dev, (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) fail("open");
    char *buf = aligned(MIB);
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        ssize_t n = writing ? pwrite(fd, buf, MIB, (off_t)i * MIB) : pread(fd, buf, MIB, (off_t)i * MIB);
        if (n != MIB) fail(writing ? "pwrite" : "pread");
    }
    if (writing && fdatasync(fd) != 0) fail("fdatasync");
    report(writing ? "seq_write_mibs" : "seq_read_mibs", (double)mib * MIB, now() - t0);
}

static void randread(const char *dev, double seconds) {
    int fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) fail("open");
    unsigned long long size = 0;
    if (ioctl(fd, 0x80081272 /* BLKGETSIZE64 */, &size) != 0) fail("BLKGETSIZE64");
    if (size > 256ULL * MIB) size = 256ULL * MIB;
    unsigned long blocks = size / 4096;
    if (blocks == 0) { errno = EINVAL; fail("device smaller than 4 KiB"); }
    char *buf = aligned(4096);
    unsigned long long x = 88172645463325252ULL, ops = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096) fail("pread");
        }
        ops += 64;
        t = now() - t0;
    } while (t < seconds);
    printf("IO randread_iops %.0f %llu %.3f\n", ops / t, ops, t);
}

static void send_all(int fd, long mib, const char *metric) {
    char *buf = aligned(64 * 1024);
    double t0 = now();
    long long left = (long long)mib * MIB;
    while (left > 0) {
        ssize_t n = write(fd, buf, left < 65536 ? left : 65536);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write");
        left -= n;
    }
    if (shutdown(fd, SHUT_WR) != 0) fail("shutdown");
    char c;
    while (read(fd, &c, 1) > 0) {}          /* the peer closes after it has read everything */
    report(metric, (double)mib * MIB, now() - t0);
}

static void sink(int listener, const char *metric, long mib) {
    double limit = mib > 0 ? (double)mib * MIB : 1e30;
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) fail("accept");
    char *buf = aligned(256 * 1024);
    double total = 0, t0 = 0;
    for (;;) {
        ssize_t n = read(fd, buf, 256 * 1024);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("read");
        if (n == 0) break;
        if (total == 0) t0 = now();
        total += n;
        if (total >= limit) break;
    }
    double t = now() - t0;
    close(fd);
    report(metric, total, t > 0 ? t : 1e-9);
}

static int listen_on(int domain, struct sockaddr *addr, socklen_t len) {
    int fd = socket(domain, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    int one = 1;
    if (domain == AF_INET) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, addr, len) != 0) fail("bind");
    if (listen(fd, 1) != 0) fail("listen");
    printf("IO-LISTENING\n");
    fflush(stdout);
    return fd;
}

static struct sockaddr_un unix_address(const char *path) {
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) { errno = ENAMETOOLONG; fail("socket path"); }
    strcpy(a.sun_path, path);
    return a;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) { fprintf(stderr, "usage: see the header of tools/iobench/iobench.c\n"); return 2; }
    what = argv[1];
    if (!strcmp(argv[1], "read") && argc == 4) sequential(argv[2], atol(argv[3]), 0);
    else if (!strcmp(argv[1], "write") && argc == 4) sequential(argv[2], atol(argv[3]), 1);
    else if (!strcmp(argv[1], "randread") && argc == 4) randread(argv[2], atof(argv[3]));
    else if (!strcmp(argv[1], "tcp-sink") && (argc == 3 || argc == 4)) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
        sink(listen_on(AF_INET, (struct sockaddr *)&a, sizeof a), "tcp_mibs", argc > 3 ? atol(argv[3]) : 0);
    } else if (!strcmp(argv[1], "tcp-send") && argc == 5) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) { errno = EINVAL; fail("address"); }
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) fail("connect");
        send_all(fd, atol(argv[4]), "tcp_mibs");
    } else if (!strcmp(argv[1], "vsock-sink") && (argc == 3 || argc == 4)) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = atoi(argv[2]) };
        sink(listen_on(AF_VSOCK, (struct sockaddr *)&a, sizeof a), "vsock_mibs", argc > 3 ? atol(argv[3]) : 0);
    } else if (!strcmp(argv[1], "vsock-send") && argc == 5) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = atoi(argv[2]), .svm_port = atoi(argv[3]) };
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) fail("connect");
        send_all(fd, atol(argv[4]), "vsock_mibs");
    } else if (!strcmp(argv[1], "unix-send") && argc == 5) {
        struct sockaddr_un a = unix_address(argv[2]);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) fail("connect");
        char line[64];
        int len = snprintf(line, sizeof line, "CONNECT %s\n", argv[3]);
        if (write(fd, line, len) != len) fail("write CONNECT");
        int got = 0;
        while (got < (int)sizeof line - 1) {     /* one byte at a time: the stream follows the line */
            if (read(fd, line + got, 1) != 1) fail("read OK");
            if (line[got++] == '\n') break;
        }
        line[got] = 0;
        if (strncmp(line, "OK ", 3) != 0) { errno = EPROTO; fail("no OK line"); }
        send_all(fd, atol(argv[4]), "vsock_mibs");
    } else if (!strcmp(argv[1], "unix-sink") && (argc == 3 || argc == 4)) {
        struct sockaddr_un a = unix_address(argv[2]);
        unlink(argv[2]);
        sink(listen_on(AF_UNIX, (struct sockaddr *)&a, sizeof a), "vsock_mibs", argc > 3 ? atol(argv[3]) : 0);
    } else {
        fprintf(stderr, "usage: see the header of tools/iobench/iobench.c\n");
        return 2;
    }
    return 0;
}
