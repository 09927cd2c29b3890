#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SwiftletCore
import SystemPackage

/// Writes Swiftlet's own messages to standard error (whole, retrying short writes and `EINTR`).
public enum StandardError {
    /// Writes `text`; a failure is ignored (there is nowhere left to report it).
    public static func write(_ text: String) {
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let result = unsafe bytes.withUnsafeBytes { unsafe Glibc.write(2, $0.baseAddress! + done, bytes.count - done) }
            if result > 0 {
                done += result
            } else if !(result < 0 && errno == EINTR) {
                return
            }
        }
    }
}

/// Which file a path names: its device and inode, so that two paths can be found to be one file.
public struct FileIdentity: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// The identity of the file at `path` (following links), or `nil` if it cannot be examined.
    public init?(path: String) {
        var info = stat()
        guard unsafe stat(path, &info) == 0 else { return nil }
        self.init(info)
    }

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// Why the console file could not be opened.
public enum ConsoleFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path names one of the machine's input files, which writing the console would destroy.
    case isInputFile(path: String, role: String)
    /// Another process (another Swiftlet) holds the file's lock.
    case inUse(path: String)
    /// The path names a directory.
    case isDirectory(path: String)
    /// `open` failed.
    case openFailed(path: String, Errno)
    /// The regular file could not be emptied.
    case truncateFailed(path: String, Errno)

    public var description: String {
        switch self {
        case let .isInputFile(path, role):
            return "console file \"\(path)\" is the \(role) file; writing the console there would destroy it, choose another path"
        case let .inUse(path):
            return "console file \"\(path)\" is in use by another Swiftlet (it holds the file's lock); choose another path"
        case let .isDirectory(path):
            return "console file \"\(path)\" is a directory; name a file in it"
        case let .openFailed(path, errno):
            return "cannot open console file \"\(path)\": \(errno); check the path and its permissions"
        case let .truncateFailed(path, errno):
            return "cannot empty console file \"\(path)\": \(errno); choose another path"
        }
    }
}

/// Opens the file the guest console is written to.
public enum ConsoleFile {
    /// Opens `path` for the console without ever blocking and returns the descriptor.
    ///
    /// - A regular file is created if needed, locked (`flock`, so a second Swiftlet on the same
    ///   file is refused instead of both overwriting it) and only then emptied.
    /// - A FIFO is opened non-blocking; without a reader yet it is opened read-write, as
    ///   Firecracker opens its FIFOs, so output waits in the pipe (and then in the console buffer,
    ///   holding the guest back) until a reader comes.
    /// - A terminal or another character device (`/dev/null`) is used as it is.
    /// - `inputs` are the machine's input files with their roles (`"kernel"`, `"initrd"`): the
    ///   console may not be one of them.
    public static func open(_ path: String, inputs: [(FileIdentity, String)]) throws(ConsoleFileError) -> Int32 {
        let flags = O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK
        var fd = unsafe Glibc.open(path, O_WRONLY | flags, 0o644)
        if fd < 0 && errno == ENXIO {
            fd = unsafe Glibc.open(path, O_RDWR | flags, 0o644)      // a FIFO nobody reads yet
        }
        guard fd >= 0 else {
            let error = Errno(rawValue: errno)
            throw error == .isDirectory ? .isDirectory(path: path) : .openFailed(path: path, error)
        }
        var info = stat()
        guard unsafe fstat(fd, &info) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw .openFailed(path: path, error)
        }
        if let (_, role) = inputs.first(where: { $0.0 == FileIdentity(info) }) {
            close(fd)
            throw .isInputFile(path: path, role: role)
        }
        guard info.st_mode & S_IFMT == S_IFREG else { return fd }
        // A regular file: never block on it (O_NONBLOCK means nothing there), lock, then empty it.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw error == .wouldBlock ? .inUse(path: path) : .openFailed(path: path, error)
        }
        guard ftruncate(fd, 0) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw .truncateFailed(path: path, error)
        }
        return fd
    }
}

/// Standard input read on the I/O event loop and handed to the guest console.
///
/// - A pipe, a socket or a terminal is watched for readiness; a regular file or a device epoll
///   cannot watch (`/dev/null`) is read in turns with the loop's other work. Each read takes at
///   most what `FIONREAD` says is waiting (and at most 4 KiB), so the loop never blocks even on a
///   descriptor shared with another reader.
/// - `deliver` returns how many of the bytes the consumer took. What it did not take is kept, and
///   standard input is not read again until `room` is signalled (the consumer took input): piped
///   input is never lost and never buffered beyond the consumer's own bound. A consumer that
///   drops instead (a terminal's, so that the console escape is always seen) returns the full count.
/// - End of file or a read error ends the reading; the guest keeps running.
/// Every method after ``start(on:room:deliver:)`` runs on the loop thread.
public final class StandardInputReader: @unchecked Sendable {
    private static let chunk = 4096
    private let loop: EventLoop
    private let room: EventFD
    private let deliver: ([UInt8]) -> Int
    private var pending: [UInt8] = []
    private var inputToken: EventLoop.Token?
    private var roomToken: EventLoop.Token?
    private var pollable = true
    private var ended = false

    private init(loop: EventLoop, room: EventFD, deliver: @escaping ([UInt8]) -> Int) {
        self.loop = loop
        self.room = room
        self.deliver = deliver
    }

    /// Starts reading standard input on `loop` (a running loop: the reader registers itself there).
    public static func start(on loop: EventLoop, room: EventFD, deliver: @escaping @Sendable ([UInt8]) -> Int) {
        let reader = StandardInputReader(loop: loop, room: room, deliver: deliver)
        loop.execute { reader.resume() }
    }

    /// Hands over what is pending, then reads again (or waits for room).
    private func resume() {
        guard !ended else { return }
        if !pending.isEmpty {
            pending.removeFirst(min(pending.count, deliver(pending)))
            guard pending.isEmpty else { return waitForRoom() }
        }
        if let roomToken {
            loop.remove(roomToken)
            self.roomToken = nil
        }
        guard pollable else { return loop.execute { self.readOnce() } }
        guard inputToken == nil else { return }
        do {
            inputToken = try loop.watch(0, for: .readable) { [self] readiness in
                readOnce(closed: readiness.isClosed)
                return .keep
            }
        } catch {
            pollable = false             // EPERM: a regular file or /dev/null, always "ready"
            loop.execute { self.readOnce() }
        }
    }

    /// One read of what is waiting, delivered. `closed`: the loop reported a hang-up or an error.
    private func readOnce(closed: Bool = false) {
        guard !ended, pending.isEmpty else { return }
        let waiting = chost_readable_bytes(0)
        if waiting == 0 {
            // Nothing to read: the end of a file, a pipe whose writers are gone or a terminal's
            // hang-up; otherwise another reader took the bytes first and a read would block.
            if closed || !pollable { end() }
            return
        }
        // A descriptor FIONREAD does not know (/dev/null) is read a chunk at a time.
        var buffer = [UInt8](repeating: 0, count: waiting > 0 ? min(Int(waiting), Self.chunk) : Self.chunk)
        let count = unsafe buffer.withUnsafeMutableBytes { unsafe read(0, $0.baseAddress!, $0.count) }
        if count < 0 && (errno == EINTR || errno == EAGAIN) { return }
        guard count > 0 else { return end() }
        buffer.removeLast(buffer.count - count)
        let taken = deliver(buffer)
        if taken < buffer.count {
            pending = Array(buffer[taken...])
            if let inputToken {
                loop.remove(inputToken)
                self.inputToken = nil
            }
            waitForRoom()
        } else if !pollable {
            loop.execute { self.readOnce() }
        }
    }

    /// Waits for the consumer to take input before reading more.
    private func waitForRoom() {
        guard roomToken == nil else { return }
        do {
            roomToken = try loop.watch(room.fd, for: .readable) { [self] _ in
                _ = room.take()
                resume()
                return .keep
            }
        } catch {
            end()
        }
    }

    private func end() {
        ended = true
        if let inputToken { loop.remove(inputToken) }
        if let roomToken { loop.remove(roomToken) }
        inputToken = nil
        roomToken = nil
    }
}

/// Sleeps the calling thread (for back-pressure loops on host I/O threads).
public func sleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    _ = unsafe nanosleep(&request, nil)
}

/// Non-blocking reads and writes of host buffers on sockets and devices.
public enum NonBlockingIO {
    /// Reads into `buffer[range]` once: the count (0 at end of file), or `nil` when nothing is
    /// waiting (`EAGAIN`). `EINTR` is retried.
    public static func read(_ fd: FileDescriptor, into buffer: inout [UInt8], _ range: Range<Int>) throws(Errno) -> Int? {
        precondition(range.lowerBound >= 0 && range.upperBound <= buffer.count, "the range lies inside the buffer")
        while true {
            let count = unsafe buffer.withUnsafeMutableBytes { bytes in
                unsafe Glibc.read(fd.rawValue, bytes.baseAddress! + range.lowerBound, range.count)
            }
            if count >= 0 { return count }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw Errno(rawValue: errno)
        }
    }

    /// Sends `bytes` on the socket once, without `SIGPIPE`: the count sent, or `nil` when there is
    /// no room (`EAGAIN`). `EINTR` is retried.
    public static func send(_ fd: FileDescriptor, _ bytes: ArraySlice<UInt8>) throws(Errno) -> Int? {
        guard !bytes.isEmpty else { return 0 }
        while true {
            let count = unsafe bytes.withUnsafeBytes { unsafe Glibc.send(fd.rawValue, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if count >= 0 { return count }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw Errno(rawValue: errno)
        }
    }
}
