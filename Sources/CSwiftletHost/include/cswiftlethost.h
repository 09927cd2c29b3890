/* CSwiftletHost: the thin C layer under SwiftletHost.
 *
 * What Swift cannot reach or must not run inside a signal handler: <sys/epoll.h>, <sys/eventfd.h>,
 * <sys/random.h> (getrandom, which Glibc's module leaves out), fallocate (a GNU extension), the
 * terminal's window size and the bytes waiting on a descriptor (ioctls), signalfd, thread
 * naming, the TAP ioctls (<linux/if_tun.h>), the number of the signal that kicks a vCPU out of KVM_RUN (owned here so that the
 * terminal guard below and the KVM shim agree on it), and the handler that restores the terminal
 * when a signal ends the process. Nothing else lives here. */
#pragma once
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <termios.h>

/* The real-time signal that kicks a vCPU thread (SIGRTMIN + 1; glibc keeps the first two). */
int chost_kick_signal(void);

/* Names the calling thread (truncated to the 15 bytes Linux keeps). */
int chost_set_thread_name(const char *_Nonnull name);

/* Restores `saved` on standard input before any signal that ends the process takes effect: an
 * async-signal-safe handler calls tcsetattr, then passes the signal on to what was there before
 * (the default action, or the Swift runtime's crash reporter for faults and aborts). Covers
 * SIGQUIT (which then quits, without the runtime's backtrace), SIGUSR1/2, SIGALRM, the other
 * signals whose default ends the process, real-time signals, faults and aborts. SIGINT, SIGTERM
 * and SIGHUP are left alone (Swiftlet blocks and handles them); so is the vCPU kick.
 * Returns 0 or -errno. Call again to replace the saved settings. */
int chost_restore_terminal_on_fatal_signals(const struct termios *_Nonnull saved);
/* Forgets the saved settings (the terminal was restored normally); the handlers then do nothing
 * but pass the signal on. */
void chost_forget_terminal(void);

/* Punches a hole of `length` bytes at `offset` in `fd`, keeping the file's size
 * (fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)), retrying EINTR. Returns 0 or -errno. */
int chost_punch_hole(int fd, long long offset, long long length);

/* The window size of the terminal `fd` is (TIOCGWINSZ) into `columns` and `rows`. Returns 0 or
 * -errno (-ENOTTY for a descriptor that is not a terminal). */
int chost_window_size(int fd, unsigned short *_Nonnull columns, unsigned short *_Nonnull rows);

/* A signalfd (non-blocking, close-on-exec) for SIGINT, SIGTERM and SIGHUP, which the caller keeps
 * blocked in every thread. Returns the descriptor or -errno. */
int chost_termination_signalfd(void);
/* The next signal queued on a signalfd: its number, 0 when none is waiting, or -errno. */
int chost_signalfd_next(int fd);

/* How many bytes can be read from `fd` now without waiting (FIONREAD: a pipe, a socket, a
 * terminal, a regular file's remainder). Returns the count or -errno. */
int chost_readable_bytes(int fd);

/* Accepts one connection on the listening socket `fd` as a non-blocking, close-on-exec stream
 * (accept4, a GNU extension), retrying EINTR. Returns the descriptor or -errno. */
int chost_accept_nonblocking(int fd);

/* Opens /dev/net/tun non-blocking and close-on-exec, attached to the TAP interface `name` (created
 * if the caller may, e.g. with CAP_NET_ADMIN), with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a
 * 12-byte virtio-net header (TUNSETVNETHDRSZ). Returns the descriptor or -errno (-ENAMETOOLONG for a
 * name of IFNAMSIZ bytes or more). */
int chost_tap_open(const char *_Nonnull name);

/* TUNSETOFFLOAD's flags: partial checksums, TSO over IPv4 and IPv6. */
enum { CHOST_TUN_F_CSUM = 0x01, CHOST_TUN_F_TSO4 = 0x02, CHOST_TUN_F_TSO6 = 0x04 };

/* Tells the TAP which offloads the reader takes (TUNSETOFFLOAD with CHOST_TUN_F_* flags). Returns 0 or -errno. */
int chost_tap_set_offload(int fd, unsigned flags);
