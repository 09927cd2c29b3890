#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// An eventfd: a counter that one thread (or KVM) signals and another waits on; no signal is lost.
///
/// Used between host threads (the console's writer and input queue), and handed to KVM as an
/// irqfd (a signal raises an interrupt edge without an ioctl) or an ioeventfd (a guest write
/// signals it without a VM exit).
public final class EventFD: @unchecked Sendable {
    /// The descriptor, for registering with KVM or an event loop; owned by this object.
    public let fd: Int32

    /// Creates an eventfd with a zero counter; reads never block if `nonBlocking`.
    public init(nonBlocking: Bool = false) throws(HostError) {
        fd = eventfd(0, Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0))
        guard fd >= 0 else { throw HostError("creating an eventfd", Errno(rawValue: errno)) }
    }

    deinit { close(fd) }

    /// Adds one to the counter, waking a waiter.
    public func signal() {
        var one: UInt64 = 1
        _ = unsafe Glibc.write(fd, &one, MemoryLayout<UInt64>.size)
    }

    /// Waits until the counter is non-zero, then resets it.
    public func wait() {
        var value: UInt64 = 0
        while unsafe Glibc.read(fd, &value, MemoryLayout<UInt64>.size) < 0 && errno == EINTR {}
    }

    /// Takes the counter's value and resets it; 0 if it was 0 (a non-blocking eventfd) .
    public func take() -> UInt64 {
        var value: UInt64 = 0
        while true {
            if unsafe Glibc.read(fd, &value, MemoryLayout<UInt64>.size) == MemoryLayout<UInt64>.size { return value }
            if errno != EINTR { return 0 }
        }
    }
}
