/* vmmbench: time one VMM run (see /work/shared/reference/lab-and-peers.md §6).
 *
 *   vmmbench TAG TIMEOUT_S -- cmd args...
 *
 * Forks the command with stdout+stderr on a pipe and stdin on a silent, open pipe, and measures
 * (CLOCK_MONOTONIC, from just before fork) the time to the first output line containing BOOT-DONE
 * and the time to the reap (wait4), plus ru_maxrss (KiB) and user+system CPU of the child. Kills the
 * child's process group at the timeout. Echoes only the child's lines that start with WL-RESULT or
 * BOOT-DONE, then prints:
 *   RESULT TAG boot_done_s X      (NA when no BOOT-DONE line came)
 *   RESULT TAG guest_uptime_s U   (the uptime= from the BOOT-DONE line, when present)
 *   RESULT TAG exit_s Y
 *   RESULT TAG maxrss_kib Z
 *   RESULT TAG cpu_s W
 *   RESULT TAG status S           (exit status, or 128+signal)
 *   RESULT TAG timed_out 0|1
 * Build: gcc -O2 -static -o vmmbench vmmbench.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static pid_t child;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_alarm(int sig) {
    (void)sig;
    timed_out = 1;
    if (child > 0) { kill(-child, SIGKILL); kill(child, SIGKILL); }
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: vmmbench TAG TIMEOUT_S -- cmd args...\n");
        return 2;
    }
    const char *tag = argv[1];
    double timeout = atof(argv[2]);
    int out[2], in[2];
    if (pipe(out) < 0 || pipe(in) < 0) { perror("vmmbench: pipe"); return 2; }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;           /* no SA_RESTART: read() and wait4() return EINTR */
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    double t0 = now();
    child = fork();
    if (child < 0) { perror("vmmbench: fork"); return 2; }
    if (child == 0) {
        setpgid(0, 0);
        dup2(in[0], 0); dup2(out[1], 1); dup2(out[1], 2);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[4], argv + 4);
        fprintf(stderr, "vmmbench: exec %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    setpgid(child, child);
    close(in[0]); close(out[1]);        /* keep in[1] open: the child's stdin never sees EOF */

    struct itimerval it = { { 0, 0 }, { (time_t)timeout, (suseconds_t)((timeout - (time_t)timeout) * 1e6) } };
    if (timeout > 0) setitimer(ITIMER_REAL, &it, NULL);

    char buf[65536], line[4096];
    size_t len = 0;
    double boot_done = -1, uptime = -1;
    for (;;) {
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;   /* the alarm killed the child: EOF follows */
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c != '\n') {
                if (c != '\r' && len < sizeof line - 1) line[len++] = c;
                continue;
            }
            line[len] = 0;
            char *m = strstr(line, "BOOT-DONE");
            if (m && boot_done < 0) {
                boot_done = now() - t0;
                char *u = strstr(m, "uptime=");
                if (u) uptime = atof(u + 7);
            }
            if (!strncmp(line, "WL-RESULT", 9) || !strncmp(line, "BOOT-DONE", 9)) {
                printf("%s\n", line);
                fflush(stdout);
            }
            len = 0;
        }
    }

    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR) { perror("vmmbench: wait4"); return 2; }
    }
    double exit_s = now() - t0;
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    kill(-child, SIGKILL);              /* stray grandchildren, if any */
    close(in[1]);

    int st = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    if (boot_done >= 0) printf("RESULT %s boot_done_s %.4f\n", tag, boot_done);
    else printf("RESULT %s boot_done_s NA\n", tag);
    if (uptime >= 0) printf("RESULT %s guest_uptime_s %.2f\n", tag, uptime);
    printf("RESULT %s exit_s %.4f\n", tag, exit_s);
    printf("RESULT %s maxrss_kib %ld\n", tag, ru.ru_maxrss);
    printf("RESULT %s cpu_s %.3f\n", tag, cpu);
    printf("RESULT %s status %d\n", tag, st);
    printf("RESULT %s timed_out %d\n", tag, timed_out ? 1 : 0);
    return 0;
}
