#define _GNU_SOURCE
#include "cswiftlethost.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/if.h>
#include <linux/if_tun.h>

int chost_kick_signal(void) { return SIGRTMIN + 1; }

int chost_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof(truncated) - 1);
    truncated[sizeof(truncated) - 1] = 0;
    return pthread_setname_np(pthread_self(), truncated);
}


/* Terminal restoration on fatal signals. */
static struct termios saved_terminal;
static volatile sig_atomic_t terminal_saved;
static struct sigaction previous_actions[_NSIG];

static int is_fault(int signo) {
    return signo == SIGSEGV || signo == SIGBUS || signo == SIGILL || signo == SIGFPE || signo == SIGTRAP;
}

static void restore_terminal_handler(int signo, siginfo_t *info, void *context) {
    (void)context;
    if (terminal_saved) tcsetattr(0, TCSANOW, &saved_terminal);
    /* Hand the signal on: to the default action, or to the handler that was there before (the
     * Swift runtime's crash reporter for faults and aborts). A fault (si_code > 0) re-faults on
     * return and reaches it with its real context; anything sent or raised is raised again. */
    sigaction(signo, &previous_actions[signo], NULL);
    if (!(is_fault(signo) && info != NULL && info->si_code > 0)) raise(signo);
}

/* Installs the handler on `signo`. `chain`: keep whatever handler is there to pass the signal on
 * to; otherwise install only over the default action (another component's handler for a signal
 * that does not end the process is left alone) and pass on to the default action. */
static int guard_signal(int signo, int chain) {
    struct sigaction current;
    if (sigaction(signo, NULL, &current) != 0) return -errno;
    int is_default = !(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL;
    if (!chain && !is_default) return 0;
    if (current.sa_sigaction == restore_terminal_handler) return 0;    /* installed already */
    previous_actions[signo] = current;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = restore_terminal_handler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;   /* a stack overflow still gets here */
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL) == 0 ? 0 : -errno;
}

int chost_restore_terminal_on_fatal_signals(const struct termios *saved) {
    static const int crashes[] = {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP};
    static const int others[] = {SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU,
                                 SIGXFSZ, SIGSTKFLT, SIGSYS};
    saved_terminal = *saved;
    terminal_saved = 1;
    int result;
    for (size_t i = 0; i < sizeof(crashes) / sizeof(crashes[0]); i++) {
        if ((result = guard_signal(crashes[i], 1)) != 0) return result;
    }
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        if ((result = guard_signal(others[i], 0)) != 0) return result;
    }
    /* SIGQUIT quits (the Swift runtime would otherwise answer it with a backtrace, interactive on
     * a terminal): the terminal is restored and the default action ends the process. */
    struct sigaction quit;
    memset(&quit, 0, sizeof(quit));
    quit.sa_handler = SIG_DFL;
    sigemptyset(&quit.sa_mask);
    if (sigaction(SIGQUIT, &quit, NULL) != 0) return -errno;
    if ((result = guard_signal(SIGQUIT, 0)) != 0) return result;
    /* Real-time signals end the process by default too (glibc keeps the first two for itself). */
    for (int signo = SIGRTMIN; signo <= SIGRTMAX; signo++) {
        if (signo == chost_kick_signal()) continue;
        if ((result = guard_signal(signo, 0)) != 0) return result;
    }
    return 0;
}

void chost_forget_terminal(void) { terminal_saved = 0; }

int chost_punch_hole(int fd, long long offset, long long length) {
    while (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
        if (errno != EINTR) return -errno;
    }
    return 0;
}

int chost_window_size(int fd, unsigned short *columns, unsigned short *rows) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) != 0) return -errno;
    *columns = size.ws_col;
    *rows = size.ws_row;
    return 0;
}

int chost_termination_signalfd(void) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    int fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int chost_signalfd_next(int fd) {
    struct signalfd_siginfo info;
    for (;;) {
        ssize_t n = read(fd, &info, sizeof info);
        if (n == (ssize_t)sizeof info) return (int)info.ssi_signo;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

int chost_readable_bytes(int fd) {
    int count = 0;
    if (ioctl(fd, FIONREAD, &count) != 0) return -errno;
    return count;
}

int chost_accept_nonblocking(int fd) {
    int client;
    do {
        client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (client < 0 && errno == EINTR);
    return client >= 0 ? client : -errno;
}

int chost_tap_open(const char *name) {
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    int header = 12;
    if (ioctl(fd, TUNSETIFF, &request) != 0 || ioctl(fd, TUNSETVNETHDRSZ, &header) != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int chost_tap_set_offload(int fd, unsigned flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) == 0 ? 0 : -errno;
}
