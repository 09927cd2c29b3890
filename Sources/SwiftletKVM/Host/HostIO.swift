#if canImport(Glibc)
import Glibc
#endif
import SwiftletCore
import SystemPackage

/// An ``OutputSink`` that writes to a file descriptor, retrying short writes and `EINTR`.
///
/// If the reader goes away (`EPIPE`) or the file fails, output is dropped rather than stopping
/// the guest.
public final class FileDescriptorSink: OutputSink, @unchecked Sendable {
    private let fd: Int32
    private let owned: Bool

    /// Writes to standard output.
    public static let standardOutput = FileDescriptorSink(fd: 1, owned: false)
    /// Writes to standard error.
    public static let standardError = FileDescriptorSink(fd: 2, owned: false)

    private init(fd: Int32, owned: Bool) {
        self.fd = fd
        self.owned = owned
    }

    /// Creates (or truncates) the file at `path` and writes to it.
    public convenience init(creatingFileAt path: String) throws(Errno) {
        let fd = unsafe open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        self.init(fd: fd, owned: true)
    }

    deinit { if owned { close(fd) } }

    public func write(_ bytes: [UInt8]) {
        unsafe bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let result = unsafe Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
                if result > 0 {
                    done += result
                } else if result < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}

/// Reads standard input on its own thread and hands each chunk to `deliver`, which may block
/// to apply back-pressure. Stops at end of file or on an error (it never spins).
public enum StandardInputPump {
    /// Starts the pump.
    public static func start(deliver: @escaping @Sendable ([UInt8]) -> Void) throws(KVMError) {
        _ = try OSThread(name: "swiftlet-stdin") {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let count = unsafe buffer.withUnsafeMutableBytes { unsafe read(0, $0.baseAddress!, $0.count) }
                if count > 0 {
                    deliver(Array(buffer[0..<count]))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}

/// Sleeps the calling thread (for back-pressure loops on host I/O threads).
public func sleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    _ = unsafe nanosleep(&request, nil)
}
