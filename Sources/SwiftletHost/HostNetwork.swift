#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// Why a network backend could not be set up; each message says what to fix, in one line.
public enum NetworkBackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The TAP interface name does not fit `IFNAMSIZ`.
    case tapNameTooLong(String)
    /// `/dev/net/tun` or `TUNSETIFF` failed.
    case tapOpenFailed(name: String, Errno)
    /// `passt` is not in `PATH`.
    case passtNotInstalled
    /// The socket pair or the passt process could not be created.
    case passtStartFailed(String, Errno)

    public var description: String {
        switch self {
        case let .tapNameTooLong(name):
            return "--net tap=\(name): the interface name is longer than 15 bytes; use a shorter name"
        case let .tapOpenFailed(name, errno):
            let hint = errno == .permissionDenied || errno == .notPermitted
                ? "create it first for your user (ip tuntap add \(name) mode tap user $USER) or run with CAP_NET_ADMIN"
                : errno == .noSuchFileOrDirectory ? "load the tun module (modprobe tun)" : "check the name"
            return "cannot open TAP interface \"\(name)\": \(errno); \(hint)"
        case .passtNotInstalled:
            return "--net passt: passt is not installed (not found in PATH); install the passt package or use --net tap=NAME"
        case let .passtStartFailed(what, errno):
            return "--net passt: \(what) failed: \(errno)"
        }
    }
}

/// A TAP interface opened for a virtio-net device: frames carry the 12-byte virtio-net header,
/// the descriptor is non-blocking and closed with this object.
public final class TapDevice: @unchecked Sendable {
    /// The interface's name.
    public let name: String
    /// The descriptor (`/dev/net/tun` attached to the interface), owned by this object.
    public let fd: FileDescriptor

    /// Attaches to (or, with the privilege, creates) the TAP interface `name`.
    ///
    /// - Throws: ``NetworkBackendError/tapNameTooLong(_:)`` or ``NetworkBackendError/tapOpenFailed(name:_:)``.
    public init(name: String) throws(NetworkBackendError) {
        guard name.utf8.count < 16 else { throw .tapNameTooLong(name) }
        let result = unsafe chost_tap_open(name)
        guard result >= 0 else {
            throw result == -ENAMETOOLONG ? .tapNameTooLong(name) : .tapOpenFailed(name: name, Errno(rawValue: -result))
        }
        self.name = name
        fd = FileDescriptor(rawValue: result)
    }

    deinit { try? fd.close() }

    /// Tells the kernel which offloads the reader takes: partial checksums, and with them TSO over
    /// IPv4 and IPv6. Without any, the kernel completes checksums and segments before delivering.
    public func setOffloads(checksum: Bool, tso4: Bool, tso6: Bool) throws(HostError) {
        var flags: UInt32 = 0
        if checksum {
            flags |= UInt32(CHOST_TUN_F_CSUM)
            if tso4 { flags |= UInt32(CHOST_TUN_F_TSO4) }
            if tso6 { flags |= UInt32(CHOST_TUN_F_TSO6) }
        }
        let result = chost_tap_set_offload(fd.rawValue, flags)
        guard result == 0 else { throw HostError("TUNSETOFFLOAD on \(name)", Errno(rawValue: -result)) }
    }
}

/// A `passt` process (user-mode networking, no privileges) connected to Swiftlet over one end of
/// a Unix stream socket pair: frames go both ways as a 4-byte big-endian length and the Ethernet
/// frame (QEMU's `-netdev stream`). passt runs in the foreground, one-off, with the other end as
/// `--fd 3`: it exits when Swiftlet's end closes (also when Swiftlet dies), and this object ends
/// and reaps it when it goes.
public final class PasstProcess: @unchecked Sendable {
    /// Swiftlet's end of the socket pair (non-blocking, close-on-exec), owned by this object.
    public let socket: FileDescriptor
    private let pid: pid_t

    /// The path of `passt` in `PATH`, or `nil`.
    public static func executable(path: String? = unsafe getenv("PATH").map { unsafe String(cString: $0) }) -> String? {
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = String(directory) + "/passt"
            if unsafe access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Starts passt with `arguments` added (e.g. port forwards).
    ///
    /// - Throws: ``NetworkBackendError/passtNotInstalled`` or ``NetworkBackendError/passtStartFailed(_:_:)``.
    public init(arguments: [String] = []) throws(NetworkBackendError) {
        guard let executable = Self.executable() else { throw .passtNotInstalled }
        var pair: [Int32] = [-1, -1]
        guard unsafe socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw .passtStartFailed("socketpair", Errno(rawValue: errno))
        }
        defer { close(pair[1]) }
        var actions = unsafe posix_spawn_file_actions_t()
        unsafe posix_spawn_file_actions_init(&actions)
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on passt's copy. Its standard descriptors are /dev/null: it talks
        // even with --quiet (about dropping root, an absent syslog), and Swiftlet's stderr is the
        // user's; Swiftlet reports a passt that exits (the socket hangs up).
        unsafe posix_spawn_file_actions_adddup2(&actions, pair[1], 3)
        for fd: Int32 in [0, 1, 2] {
            unsafe posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        let argv = [executable, "--foreground", "--quiet", "--one-off", "--fd", "3"] + arguments
        var child: pid_t = 0
        let result = unsafe withCStrings(argv) { pointers in
            unsafe posix_spawn(&child, executable, &actions, nil, pointers, unsafe environ)
        }
        guard result == 0 else {
            close(pair[0])
            throw .passtStartFailed("starting \(executable)", Errno(rawValue: result))
        }
        _ = fcntl(pair[0], F_SETFL, fcntl(pair[0], F_GETFL) | O_NONBLOCK)
        socket = FileDescriptor(rawValue: pair[0])
        pid = child
    }

    deinit {
        try? socket.close()
        kill(pid, SIGTERM)
        var status: Int32 = 0
        while unsafe waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}

/// Runs `body` with a NULL-terminated C array of `strings` (for `posix_spawn`).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let copies = unsafe strings.map { unsafe strdup($0) } + [nil]
    defer { for unsafe pointer in unsafe copies { unsafe free(pointer) } }
    var array = unsafe copies
    return unsafe array.withUnsafeMutableBufferPointer { unsafe body($0.baseAddress!) }
}
