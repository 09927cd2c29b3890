#if canImport(Glibc)
import Glibc
#endif
import SwiftletHost
import SwiftletMemory
import SwiftletVirtio
import SystemPackage

/// Why a disk image cannot be used; each message says what to fix, in one line.
public enum DiskImageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The image cannot be opened (missing, unreadable, or not writable without `ro`).
    case openFailed(path: String, Errno)
    /// The path is not a regular file (a directory, a FIFO, a device…).
    case notRegularFile(path: String, kind: FileKind)
    /// Another process (another Swiftlet) holds a conflicting lock on the image.
    case inUse(path: String, readOnly: Bool)
    /// The image is smaller than one 512-byte sector.
    case empty(path: String)

    public var description: String {
        switch self {
        case let .openFailed(path, errno):
            let hint = errno == .permissionDenied || errno == .readOnlyFileSystem
                ? "check its permissions, or attach it read-only with ,ro" : "check the path and its permissions"
            return "cannot open disk image \"\(path)\": \(errno); \(hint)"
        case let .notRegularFile(path, kind):
            return "disk image \"\(path)\" is \(kind.described), not a regular file; pass a raw image file"
        case let .inUse(path, readOnly):
            return "disk image \"\(path)\" is locked by another process (another Swiftlet is "
                + (readOnly ? "writing it" : "using it") + "); stop it or pass another image"
        case let .empty(path):
            return "disk image \"\(path)\" is smaller than one 512-byte sector; pass a raw disk image"
        }
    }
}

/// A raw disk image file as a ``BlockBackend``: sectors move between the file and guest RAM with
/// `preadv`/`pwritev` straight into guest memory.
///
/// - Opened `O_RDWR` (`O_RDONLY` when read-only) and locked with `flock`: exclusive for a writable
///   disk, shared for a read-only one, never waiting, so two Swiftlets cannot both write an image
///   (nor one read an image another writes).
/// - The capacity is the file's size in whole sectors, fixed when it is opened.
/// - `FLUSH` is `fdatasync`, which returns before the device writes the request's status.
/// - `DISCARD` and `WRITE_ZEROES` punch holes (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the sectors
///   read as zeroes and use no space; a file system that cannot punch holes answers `UNSUPP`.
public final class FileBlockBackend: BlockBackend {
    /// The image's path, for messages.
    public let path: String
    /// Whether the image was opened read-only.
    public let readOnly: Bool
    public let capacity: UInt64
    private let file: FileDescriptor

    /// Opens and locks the image at `path`.
    ///
    /// - Throws: ``DiskImageError`` for a missing or unopenable path, something that is not a regular
    ///   file, an image locked by another process, or one smaller than a sector.
    public init(path: String, readOnly: Bool) throws(DiskImageError) {
        self.path = path
        self.readOnly = readOnly
        let file: FileDescriptor
        do {
            // Non-blocking, so a FIFO cannot hold the open; the flag means nothing for a regular file.
            file = try FileDescriptor.open(FilePath(path), readOnly ? .readOnly : .readWrite,
                                           options: [.closeOnExec, .nonBlocking])
        } catch let error as Errno {
            throw error == .isDirectory ? .notRegularFile(path: path, kind: .directory) : .openFailed(path: path, error)
        } catch {
            throw .openFailed(path: path, .ioError)
        }
        do {
            let (kind, size) = try file.kindAndSize()
            guard kind == .regular else { throw DiskImageError.notRegularFile(path: path, kind: kind) }
            guard size >= VirtioBlock.sectorSize else { throw DiskImageError.empty(path: path) }
            guard flock(file.rawValue, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
                let error = Errno(rawValue: errno)
                throw error == .wouldBlock ? DiskImageError.inUse(path: path, readOnly: readOnly)
                                           : DiskImageError.openFailed(path: path, error)
            }
            capacity = size / VirtioBlock.sectorSize
        } catch {
            try? file.close()
            if let error = error as? DiskImageError { throw error }
            throw .openFailed(path: path, (error as? Errno) ?? .ioError)
        }
        self.file = file
    }

    deinit { try? file.close() }

    public func read(sector: UInt64, into ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        let expected = ranges.reduce(0) { $0 + $1.size }
        let done: Int
        do { done = try memory.read(from: file, at: sector * VirtioBlock.sectorSize, into: ranges) } catch {
            throw .ioError("reading \"\(path)\": \(error)")
        }
        guard UInt64(done) == expected else { throw .ioError("reading \"\(path)\": the image ended early (truncated?)") }
    }

    public func write(sector: UInt64, from ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        let expected = ranges.reduce(0) { $0 + $1.size }
        let done: Int
        do { done = try memory.write(to: file, at: sector * VirtioBlock.sectorSize, from: ranges) } catch {
            throw .ioError("writing \"\(path)\": \(error)")
        }
        guard UInt64(done) == expected else { throw .ioError("writing \"\(path)\": short write (host disk full?)") }
    }

    public func flush() throws(BlockBackendError) {
        while fdatasync(file.rawValue) != 0 {
            guard errno == EINTR else { throw .ioError("fdatasync \"\(path)\": \(Errno(rawValue: errno))") }
        }
    }

    public func discard(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        try punch(sector: sector, count: count)
    }

    public func writeZeroes(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        try punch(sector: sector, count: count)
    }

    /// Punches a hole over the sectors (the device has checked they lie inside the image).
    private func punch(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        let offset = Int64(sector * VirtioBlock.sectorSize), length = Int64(count * VirtioBlock.sectorSize)
        do {
            try HostDisk.punchHole(file.rawValue, offset: offset, length: length)
        } catch {
            let message = "punching a hole in \"\(path)\": \(error)"
            throw error == .notSupported || error == .notSupportedOnSocket ? .unsupported(message) : .ioError(message)
        }
    }
}
