#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SwiftletCore
import Synchronization
import SystemPackage

/// The guest console's output: a bounded buffer that the UART (on vCPU threads) and the virtio
/// console (on the I/O loop) fill and one writer thread drains to a file descriptor (standard
/// output, a file, a FIFO, a terminal).
///
/// A vCPU never waits on the host `write`: it only appends to the buffer. When the buffer is
/// nearly full (the reader is slow or stalled), ``room`` drops below what the UART needs and the
/// UART holds the guest back; once the writer has made room it calls the ``onRoom(_:)`` hook so
/// the UART can raise its THR-empty interrupt again (and the virtio console send again). Nothing
/// is lost to a slow reader.
///
/// If the descriptor fails (`ENOSPC` on `/dev/full`, `EIO`), the failure is reported once through
/// `onFailure` and from then on output is counted and dropped, without holding the guest back.
/// A reader that goes away (`EPIPE`) is not reported: output is dropped and counted the same way.
public final class ConsoleOutput: OutputSink, @unchecked Sendable {
    /// The bytes the buffer holds before it holds the guest back.
    public static let capacity = 64 << 10
    /// Extra bytes taken beyond ``capacity`` from a guest that writes without waiting for THRE
    /// (Linux's console write path gives up waiting after 10 ms and writes anyway).
    static let slack = 4 << 10
    /// The most bytes one `write(2)`; also the room at which a held-back sender is told to go on.
    static let chunk = 4 << 10

    private struct State {
        var ring = ByteRing(capacity: ConsoleOutput.capacity + ConsoleOutput.slack)
        var writerIdle = false
        var heldBack = false
        var failed = false
        var closing = false
        var dropped: UInt64 = 0
        var onRoom: (@Sendable () -> Void)?
    }

    private let core: Core

    /// What the writer thread shares with the producers.
    private final class Core: @unchecked Sendable {
        let state = HostLock(State())
        let wake: EventFD
        let fd: Int32
        let owned: Bool
        let name: String
        let onFailure: @Sendable (String) -> Void

        init(fd: Int32, owned: Bool, name: String, onFailure: @escaping @Sendable (String) -> Void) throws(HostError) {
            self.wake = try EventFD()
            self.fd = fd
            self.owned = owned
            self.name = name
            self.onFailure = onFailure
        }

        /// The writer thread's loop: take a chunk, write it without holding the lock, commit it.
        func drainForever() {
            var scratch = [UInt8](repeating: 0, count: ConsoleOutput.chunk)
            while true {
                let (count, exit) = state.withLock { state -> (Int, Bool) in
                    if state.ring.isEmpty {
                        if state.closing { return (0, true) }
                        state.writerIdle = true
                        return (0, false)
                    }
                    var index = 0
                    return (state.ring.peek(upTo: scratch.count) { scratch[index] = $0; index += 1 }, false)
                }
                if exit { break }
                if count == 0 {
                    wake.wait()
                    continue
                }
                let failure = writeAll(scratch, count: count)
                let (notify, report) = state.withLock { state -> ((@Sendable () -> Void)?, Bool) in
                    let firstFailure = failure != nil && !state.failed
                    if failure != nil {
                        state.failed = true
                        state.dropped += UInt64(state.ring.count)
                        state.ring.discard(state.ring.count)
                    } else {
                        state.ring.discard(count)
                    }
                    guard state.heldBack, state.failed || state.ring.room - ConsoleOutput.slack >= ConsoleOutput.chunk else {
                        return (nil, firstFailure)
                    }
                    state.heldBack = false
                    return (state.onRoom, firstFailure)
                }
                if report, let failure, failure != .brokenPipe {
                    onFailure("cannot write the guest console to \(name): \(failure); its output is dropped from now on")
                }
                notify?()
            }
            if owned { close(fd) }
        }

        /// Writes `count` bytes of `bytes`, waiting (poll) when the descriptor is non-blocking and full.
        private func writeAll(_ bytes: [UInt8], count: Int) -> Errno? {
            var done = 0
            while done < count {
                let result = unsafe bytes.withUnsafeBytes { buffer in
                    unsafe Glibc.write(fd, buffer.baseAddress! + done, count - done)
                }
                if result > 0 {
                    done += result
                } else if result < 0 && (errno == EINTR) {
                    continue
                } else if result < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = unsafe poll(&descriptor, 1, -1)
                } else {
                    return result < 0 ? Errno(rawValue: errno) : .ioError
                }
            }
            return nil
        }
    }

    /// Starts a writer thread for `fd`, which the console closes when done if `owned`.
    ///
    /// - Parameters:
    ///   - name: how messages name the destination (`"standard output"`, a quoted path).
    ///   - onFailure: called once, on the writer thread, with a one-line message if writing fails.
    public init(fd: Int32, owned: Bool, name: String, onFailure: @escaping @Sendable (String) -> Void) throws(HostError) {
        let core = try Core(fd: fd, owned: owned, name: name, onFailure: onFailure)
        self.core = core
        try OSThread.detached(name: "swiftlet-console") { core.drainForever() }
    }

    deinit { shutDown() }

    /// Registers the hook called (on the writer thread) when a held-back sender may send again.
    public func onRoom(_ hook: @escaping @Sendable () -> Void) {
        core.state.withLock { $0.onRoom = hook }
    }

    public var room: Int {
        core.state.withLock { state in state.failed ? .max : max(0, Self.capacity - state.ring.count) }
    }

    public func write(_ byte: UInt8) -> Bool {
        let (accepted, wakeWriter) = core.state.withLock { state -> (Bool, Bool) in
            if state.failed {
                state.dropped += 1
                return (false, false)
            }
            guard state.ring.append(byte) else {
                state.dropped += 1
                state.heldBack = true
                return (false, false)
            }
            if state.ring.room - Self.slack < Self.chunk { state.heldBack = true }
            let wake = state.writerIdle
            state.writerIdle = false
            return (true, wake)
        }
        if wakeWriter { core.wake.signal() }
        return accepted
    }

    /// Takes bytes from the front of `bytes` up to ``room`` under one lock (the virtio console's
    /// path; unlike ``write(_:)`` it never uses the slack kept for the UART). After a failure
    /// everything is taken and counted as dropped.
    public func write(contentsOf bytes: [UInt8]) -> Int {
        let (taken, wakeWriter) = core.state.withLock { state -> (Int, Bool) in
            if state.failed {
                state.dropped += UInt64(bytes.count)
                return (bytes.count, false)
            }
            let taken = state.ring.append(contentsOf: bytes.prefix(max(0, Self.capacity - state.ring.count)))
            if state.ring.room - Self.slack < Self.chunk { state.heldBack = true }
            let wake = taken > 0 && state.writerIdle
            if wake { state.writerIdle = false }
            return (taken, wake)
        }
        if wakeWriter { core.wake.signal() }
        return taken
    }

    /// Bytes dropped so far: written while the buffer was full, or after the destination failed.
    public var droppedBytes: UInt64 { core.state.withLock { $0.dropped } }

    /// Waits until everything buffered has been written (or dropped after a failure), polling
    /// every 2 ms. Gives up at `deadline` or as soon as `abandon` returns true; returns whether
    /// the buffer drained.
    @discardableResult
    public func drain(until deadline: ContinuousClock.Instant?, abandon: () -> Bool) -> Bool {
        while true {
            if core.state.withLock({ $0.ring.isEmpty }) { return true }
            if abandon() { return false }
            if let deadline, ContinuousClock.now >= deadline { return false }
            sleepMilliseconds(2)
        }
    }

    /// Lets the writer thread finish once the buffer is empty (it closes an owned descriptor).
    /// A writer stuck in a `write` to a stalled reader stays behind until the process exits.
    public func shutDown() {
        let wake = core.state.withLock { state -> Bool in
            state.closing = true
            state.onRoom = nil
            let idle = state.writerIdle
            state.writerIdle = false
            return idle
        }
        if wake { core.wake.signal() }
    }
}

/// Console input waiting for the guest: a bounded queue the standard-input reader fills and the
/// console device drains (``InputSource``): the UART whenever its receive FIFO has room, or the
/// virtio console whenever the driver has posted receive buffers.
///
/// The filling side never waits on the guest: an ``append(_:)`` that did not fit is answered,
/// once the guest has taken input, by a signal on ``room`` (piped input waits for it on the event
/// loop, so none is lost); a terminal's reader drops what does not fit and keeps reading, so a
/// console escape typed after unread input is still seen.
public final class ConsoleInputQueue: InputSource, @unchecked Sendable {
    /// The bytes the queue holds.
    public static let capacity = 64 << 10

    private let state = HostLock((ring: ByteRing(capacity: ConsoleInputQueue.capacity), senderWaiting: false))
    private let pending = Atomic<Int>(0)
    /// Signalled when the guest takes input after an ``append(_:)`` that did not fit (non-blocking;
    /// watch it for readability and `take()` it).
    public let room: EventFD

    /// Creates an empty queue.
    public init() throws(HostError) {
        room = try EventFD(nonBlocking: true)
    }

    public var isEmpty: Bool { pending.load(ordering: .acquiring) == 0 }

    public func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
        let (taken, wake) = state.withLock { state -> (Int, Bool) in
            let taken = state.ring.take(upTo: limit, body)
            pending.store(state.ring.count, ordering: .releasing)
            let wake = taken > 0 && state.senderWaiting
            if wake { state.senderWaiting = false }
            return (taken, wake)
        }
        if wake { room.signal() }
        return taken
    }

    /// Appends bytes from the front of `bytes` while there is room; returns how many.
    public func append(_ bytes: some Collection<UInt8>) -> Int {
        state.withLock { state in
            let appended = state.ring.append(contentsOf: bytes)
            pending.store(state.ring.count, ordering: .releasing)
            if appended < bytes.count { state.senderWaiting = true }
            return appended
        }
    }

}
