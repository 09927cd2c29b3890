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
