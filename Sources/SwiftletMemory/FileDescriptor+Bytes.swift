#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

extension FileDescriptor {
    /// Reads up to `count` bytes at `offset` into a new array (shorter at end of file), retrying
    /// `EINTR`. A safe wrapper for loaders that parse image headers without touching pointers.
    ///
    /// - Throws: the `Errno` of a failed read, or `EOVERFLOW` if `offset` does not fit a file offset.
    public func readBytes(at offset: UInt64, count: Int) throws(Errno) -> [UInt8] {
        guard count > 0 else { return [] }
        guard offset <= UInt64(Int64.max) else { throw Errno(rawValue: EOVERFLOW) }
        var result = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let (position, overflow) = Int64(offset).addingReportingOverflow(Int64(done))
            guard !overflow else { throw Errno(rawValue: EOVERFLOW) }
            let got: Int
            do {
                got = try unsafe result.withUnsafeMutableBytes { buffer in
                    // SAFETY: the slice [done, count) lies inside `result`'s buffer.
                    try unsafe read(fromAbsoluteOffset: position,
                                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
                }
            } catch let error as Errno {
                throw error
            } catch {
                throw Errno.ioError
            }
            if got == 0 { break }
            done += got
        }
        return Array(result[0..<done])
    }
}

/// What kind of file a descriptor refers to.
public enum FileKind: Sendable, Equatable {
    case regular, directory, fifo, characterDevice, blockDevice, socket, symbolicLink, unknown

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFSOCK: self = .socket
        case S_IFLNK: self = .symbolicLink
        default: self = .unknown
        }
    }

    /// The kind with an article, for messages: "a FIFO", "a directory".
    public var described: String {
        switch self {
        case .regular: return "a regular file"
        case .directory: return "a directory"
        case .fifo: return "a FIFO"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .socket: return "a socket"
        case .symbolicLink: return "a symbolic link"
        case .unknown: return "not a regular file"
        }
    }
}

extension FileDescriptor {
    /// The kind and size of the open file (`fstat`).
    public func kindAndSize() throws(Errno) -> (kind: FileKind, size: UInt64) {
        var info = Glibc.stat()
        guard unsafe fstat(rawValue, &info) == 0 else { throw Errno(rawValue: errno) }
        return (FileKind(mode: info.st_mode), UInt64(max(info.st_size, 0)))
    }
}
