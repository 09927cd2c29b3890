#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// Why a Unix socket could not be made to listen at a path; each message says what to fix.
public enum UnixListenerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path does not fit `sockaddr_un` (107 bytes).
    case pathTooLong(path: String)
    /// A live listener (another Swiftlet?) answers at the path.
    case inUse(path: String)
    /// The path names something that is not a socket (never removed).
    case notASocket(path: String)
    /// The path's directory does not exist.
    case noDirectory(path: String)
    /// Another call failed.
    case failed(path: String, call: String, Errno)

    public var description: String {
        switch self {
        case let .pathTooLong(path):
            return "socket path \"\(path)\" is longer than 107 bytes; choose a shorter path"
        case let .inUse(path):
            return "socket path \"\(path)\" is in use (something is listening on it); stop it or choose another path"
        case let .notASocket(path):
            return "socket path \"\(path)\" exists and is not a socket; remove it or choose another path"
        case let .noDirectory(path):
            return "socket path \"\(path)\": its directory does not exist; create it or choose another path"
        case let .failed(path, call, errno):
            return "socket path \"\(path)\": \(call) failed: \(errno); check the path and its permissions"
        }
    }
}

/// A listening Unix stream socket at a path, non-blocking, as Firecracker's vsock `uds_path`: a
/// stale socket file (nothing listening) is replaced; a live one, or anything else at the path,
/// is refused. The socket file is removed by ``removeSocketFile()`` (and on deinit) if it is
/// still this listener's.
public final class UnixListener: @unchecked Sendable {
    /// The listening descriptor (for the event loop).
    public let fd: Int32
    /// The socket's path.
    public let path: String
    private let identity: FileIdentity?

    /// Binds and listens at `path`.
    public init(path: String) throws(UnixListenerError) {
        guard path.utf8.count <= 107, !path.isEmpty else { throw .pathTooLong(path: path) }
        var info = stat()
        if unsafe lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path: path) }
            if let probe = try? UnixStream.connect(path: path) {
                UnixStream.close(probe)
                throw .inUse(path: path)
            } else if errno == ECONNREFUSED {
                _ = unsafe unlink(path)         // stale: nobody listens
            } else if errno == EAGAIN {
                throw .inUse(path: path)        // a listener with a full backlog
            }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .failed(path: path, call: "socket", Errno(rawValue: errno)) }
        var address = UnixStream.address(path)
        let bound = unsafe withUnsafePointer(to: &address) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                unsafe bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            let error = Errno(rawValue: errno)
            Glibc.close(fd)
            switch error {
            case .noSuchFileOrDirectory, .notDirectory: throw .noDirectory(path: path)
            case .addressInUse: throw .inUse(path: path)
            default: throw .failed(path: path, call: "bind", error)
            }
        }
        guard listen(fd, 128) == 0 else {
            let error = Errno(rawValue: errno)
            Glibc.close(fd)
            _ = unsafe unlink(path)
            throw .failed(path: path, call: "listen", error)
        }
        self.fd = fd
        self.path = path
        identity = FileIdentity(path: path)
    }

    deinit {
        removeSocketFile()
        Glibc.close(fd)
    }

    /// Accepts one waiting client as a non-blocking stream, or `nil` if none waits (or it failed).
    public func accept() -> Int32? {
        let client = chost_accept_nonblocking(fd)
        return client >= 0 ? client : nil
    }

    /// Removes the socket file if the path still names this listener's socket.
    public func removeSocketFile() {
        if let identity, FileIdentity(path: path) == identity { _ = unsafe unlink(path) }
    }
}

/// Non-blocking Unix stream sockets by descriptor: connecting and closing (host-buffer reads and
/// writes go through ``NonBlockingIO``, guest-memory transfers through
/// `GuestMemory.read(fromStream:into:)` / `write(toStream:from:)`).
public enum UnixStream {
    /// `sockaddr_un` for `path` (which fits: at most 107 bytes).
    static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8.prefix(107))
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { unsafe buffer[index] = byte }
        }
        return address
    }

    /// Connects a new non-blocking stream to the listener at `path`.
    ///
    /// A Unix-socket connect does not wait for the peer to accept: it succeeds, or fails at once
    /// (`ECONNREFUSED`, `ENOENT`, `EAGAIN` when the listener's backlog is full).
    /// - Throws: the `Errno` (`ENAMETOOLONG` for a path beyond 107 bytes).
    public static func connect(path: String) throws(Errno) -> Int32 {
        guard path.utf8.count <= 107 else { throw .fileNameTooLong }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        var address = address(path)
        var result: Int32
        repeat {
            result = unsafe withUnsafePointer(to: &address) {
                unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    unsafe Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        } while result != 0 && errno == EINTR
        guard result == 0 else {
            let error = errno
            Glibc.close(fd)
            errno = error
            throw Errno(rawValue: error)
        }
        return fd
    }

    /// Closes `fd`.
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }
}
