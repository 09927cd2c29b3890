#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import Synchronization
import SystemPackage

/// The terminal settings to restore at exit, if raw mode was entered.
nonisolated(unsafe) private var savedTerminal: termios?
private let terminalLock = Mutex<Bool>(false)

/// Puts an interactive standard input into raw mode for the guest console, and restores it.
///
/// Restoration is registered with `atexit` as well, so every exit path (normal return, `exit()`
/// after an error, a stop on SIGINT/SIGTERM handled by ``TerminationSignals``) gives the user back a
/// working terminal; and every other signal that ends the process by default (SIGQUIT, SIGUSR1,
/// SIGALRM, faults, ...) restores it first, from a handler in the C shim.
public enum Terminal {
    /// Whether standard input is a terminal.
    public static var standardInputIsTerminal: Bool { isatty(0) == 1 }

    /// Enters raw mode on standard input if it is a terminal. Returns whether it did.
    @discardableResult
    public static func enterRawMode() -> Bool {
        terminalLock.withLock { entered -> Bool in
            guard !entered, isatty(0) == 1 else { return entered }
            var original = termios()
            guard unsafe tcgetattr(0, &original) == 0 else { return false }
            var raw = original
            unsafe cfmakeraw(&raw)
            raw.c_oflag |= tcflag_t(OPOST | ONLCR)        // keep newline translation for our own messages
            _ = unsafe chost_restore_terminal_on_fatal_signals(&original)
            guard unsafe tcsetattr(0, TCSANOW, &raw) == 0 else {
                chost_forget_terminal()
                return false
            }
            unsafe savedTerminal = original
            entered = true
            atexit { Terminal.restore() }
            return true
        }
    }

    /// The size of the terminal standard output is, as (columns, rows); `nil` when it is not a
    /// terminal or reports no size (0 × 0).
    public static var outputWindowSize: (columns: UInt16, rows: UInt16)? {
        var columns: UInt16 = 0
        var rows: UInt16 = 0
        guard unsafe chost_window_size(1, &columns, &rows) == 0, columns > 0, rows > 0 else { return nil }
        return (columns, rows)
    }

    /// Restores the terminal settings saved by ``enterRawMode()`` (idempotent).
    public static func restore() {
        terminalLock.withLock { entered in
            guard entered, var original = unsafe savedTerminal else { return }
            _ = unsafe tcsetattr(0, TCSANOW, &original)
            chost_forget_terminal()
            entered = false
        }
    }
}

/// Termination signals (SIGINT, SIGTERM, SIGHUP), blocked in every thread and read from a
/// signalfd on the I/O event loop, so no async-signal-unsafe code runs in a handler and no thread
/// waits for them alone.
public enum TerminationSignals {
    private static func set() -> sigset_t {
        var signals = sigset_t()
        unsafe sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { unsafe sigaddset(&signals, signal) }
        return signals
    }

    /// Blocks the termination signals in the calling thread and every thread it starts later.
    /// Call first thing in `main`, then ``watch(on:_:)`` before the loop runs, so that a signal is
    /// answered at every stage (one that comes in between waits, pending, for the loop). Also
    /// ignores SIGPIPE (a closed output is handled as an error).
    public static func block() {
        var signals = set()
        _ = unsafe pthread_sigmask(SIG_BLOCK, &signals, nil)
        _ = signal(SIGPIPE, SIG_IGN)
    }

    /// Calls `handler` on `loop`'s thread with each termination signal received. Call before the
    /// loop runs (sources are added on its thread or before it starts).
    public static func watch(on loop: EventLoop, _ handler: @escaping @Sendable (Int32) -> Void) throws(HostError) {
        let fd = chost_termination_signalfd()
        guard fd >= 0 else { throw HostError("creating the signalfd for SIGINT, SIGTERM and SIGHUP", Errno(rawValue: -fd)) }
        do {
            try loop.watch(fd, for: .readable) { _ in
                while true {
                    let signal = chost_signalfd_next(fd)
                    guard signal > 0 else { break }
                    handler(signal)
                }
                return .keep
            }
        } catch {
            close(fd)
            throw error
        }
    }

    /// Ends the process at once with status 128 + `signal`, the terminal restored: for a signal
    /// that arrives before there is a machine to stop (while one is being built).
    public static func exitNow(after signal: Int32) -> Never {
        Terminal.restore()
        _exit(128 + signal)
    }
}
