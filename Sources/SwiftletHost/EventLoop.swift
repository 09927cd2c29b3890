#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// The VMM's I/O thread: one `epoll` loop that waits on every host descriptor the devices use
/// (ioeventfds, backend sockets and files, the console, a signalfd) and runs their handlers, one
/// at a time, on its own thread (Firecracker's event manager; design review §3.0).
///
/// Threading rules:
/// - ``run()`` runs the loop on the calling thread until ``stop()``.
/// - Sources are added and removed only on the loop thread (from a handler or from work passed
///   to ``execute(_:)``) or before ``run()`` starts; handlers run only on the loop thread, so the
///   state they share needs no lock against each other.
/// - Any other thread reaches the loop only through ``execute(_:)`` and ``stop()``, which wake it
///   through an eventfd (NIO's `Selector` rule: only the wake-up is thread-safe).
/// - A handler must not block: descriptors are watched for readiness, and work that would wait
///   belongs on another source.
public final class EventLoop: @unchecked Sendable {
    /// What a source is ready for.
    public struct Readiness: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Data to read (or a peer that closed: the read returns 0).
        public static let readable = Readiness(rawValue: UInt32(EPOLLIN.rawValue))
        /// Room to write.
        public static let writable = Readiness(rawValue: UInt32(EPOLLOUT.rawValue))
        /// An error or a hang-up on the descriptor (always reported). Two bits: test a readiness
        /// with ``isClosed``, not `contains(.closed)`, which wants both.
        public static let closed = Readiness(rawValue: UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue))

        /// Whether the descriptor hung up or failed (`EPOLLHUP` or `EPOLLERR`, either).
        public var isClosed: Bool { !isDisjoint(with: .closed) }
    }

    /// A registered source, to change or remove it.
    public struct Token: Hashable, Sendable {
        fileprivate let value: UInt64
    }

    /// What a handler wants next.
    public enum Next: Sendable {
        /// Keep watching the source.
        case keep
        /// Stop watching it (the handler's owner closes the descriptor).
        case remove
    }

    private struct Source {
        let fd: Int32
        var handler: (Readiness) -> Next
    }

    private let epoll: Int32
    private let wake: EventFD
    private let wakeToken = Token(value: 0)
    private var sources: [Token: Source] = [:]
    private var nextToken: UInt64 = 1
    private let mailbox = HostLock<(work: [@Sendable () -> Void], stopping: Bool)>(([], false))
    private let loopThread = HostLock<pthread_t?>(nil)

    /// Creates a loop with no sources.
    public init() throws(HostError) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw HostError("creating the event loop's epoll", Errno(rawValue: errno)) }
        do {
            wake = try EventFD(nonBlocking: true)
        } catch {
            close(epoll)
            throw error
        }
        try control(EPOLL_CTL_ADD, fd: wake.fd, readiness: .readable, token: wakeToken)
    }

    deinit { close(epoll) }

    /// Watches `fd` for `readiness` and calls `handler` on the loop thread with what it is ready
    /// for. Call on the loop thread, or before ``run()``.
    @discardableResult
    public func watch(_ fd: Int32, for readiness: Readiness,
                      _ handler: @escaping (Readiness) -> Next) throws(HostError) -> Token {
        assertOnLoopOrIdle()
        let token = Token(value: nextToken)
        nextToken += 1
        try control(EPOLL_CTL_ADD, fd: fd, readiness: readiness, token: token)
        sources[token] = Source(fd: fd, handler: handler)
        return token
    }

    /// Changes what `token`'s source is watched for (e.g. add ``Readiness/writable`` while output
    /// waits). Call on the loop thread, or before ``run()``.
    public func change(_ token: Token, to readiness: Readiness) throws(HostError) {
        assertOnLoopOrIdle()
        guard let source = sources[token] else { return }
        try control(EPOLL_CTL_MOD, fd: source.fd, readiness: readiness, token: token)
    }

    /// Stops watching `token`'s source. Call on the loop thread, or before ``run()``.
    public func remove(_ token: Token) {
        assertOnLoopOrIdle()
        guard let source = sources.removeValue(forKey: token) else { return }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, source.fd, nil)
    }

    /// Runs `work` on the loop thread soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        mailbox.withLock { $0.work.append(work) }
        wake.signal()
    }

    /// Makes ``run()`` return after the handler it is running, if any. Safe from any thread.
    public func stop() {
        mailbox.withLock { $0.stopping = true }
        wake.signal()
    }

    /// Runs the loop on the calling thread until ``stop()``.
    public func run() {
        loopThread.withLock { $0 = pthread_self() }
        defer { loopThread.withLock { $0 = nil } }
        // SAFETY: epoll_event is a plain C struct (a packed union inside); the kernel fills at most
        // `count` of them and only those are read.
        var ready = unsafe [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let count = unsafe ready.withUnsafeMutableBufferPointer { unsafe epoll_wait(epoll, $0.baseAddress, Int32($0.count), -1) }
            if count < 0 {
                if errno == EINTR { continue }
                return                      // the epoll descriptor itself failed: nothing left to wait on
            }
            for unsafe event in unsafe ready.prefix(Int(count)) {
                let token = Token(value: unsafe event.data.u64)
                if token == wakeToken {
                    _ = wake.take()
                    continue
                }
                // A source removed by an earlier handler in this batch is skipped.
                guard let source = sources[token] else { continue }
                if source.handler(Readiness(rawValue: unsafe event.events)) == .remove { remove(token) }
            }
            let (work, stopping) = mailbox.withLock { box -> ([@Sendable () -> Void], Bool) in
                let work = box.work
                box.work.removeAll()
                return (work, box.stopping)
            }
            for item in work { item() }
            if stopping { return }
        }
    }

    /// Whether the calling thread is the one running the loop.
    public var isLoopThread: Bool {
        loopThread.withLock { thread in thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    private func assertOnLoopOrIdle() {
        precondition(isLoopThread || loopThread.withLock({ $0 == nil }),
                     "event-loop sources change only on the loop thread (use execute(_:))")
    }

    private func control(_ operation: Int32, fd: Int32, readiness: Readiness, token: Token) throws(HostError) {
        var event = unsafe epoll_event()
        unsafe event.events = readiness.rawValue
        unsafe event.data.u64 = token.value
        guard unsafe epoll_ctl(epoll, operation, fd, &event) == 0 else {
            throw HostError("watching descriptor \(fd) in the event loop", Errno(rawValue: errno))
        }
    }
}

/// An ``EventLoop`` running on its own OS thread (Swiftlet's `swiftlet-io`), from ``start()`` until
/// ``stop()``. Add the sources it needs from the start (the signalfd) before ``start()``; after
/// that only through the loop (``EventLoop/execute(_:)``).
public final class EventLoopThread: Sendable {
    /// The loop.
    public let loop: EventLoop
    private let name: String
    private let thread = HostLock<(OSThread?, stopped: Bool)>((nil, false))

    /// A loop that does not run yet; its thread will be named `name`.
    public init(name: String = "swiftlet-io") throws(HostError) {
        loop = try EventLoop()
        self.name = name
    }

    /// Starts the loop's thread (once; later calls, and calls after ``stop()``, do nothing).
    /// Call from the thread that owns this object.
    public func start() throws(HostError) {
        guard thread.withLock({ $0.0 == nil && !$0.stopped }) else { return }
        let loop = self.loop
        let started = try OSThread(name: name) { loop.run() }
        thread.withLock { $0.0 = started }
    }

    /// Stops the loop after the handler it is running and waits for its thread (once).
    public func stop() {
        let running = thread.withLock { state -> OSThread? in
            defer { state = (nil, true) }
            return state.0
        }
        loop.stop()
        running?.join()
    }
}
