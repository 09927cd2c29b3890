import CSwiftletHost
import SystemPackage

/// Host calls for disk images that Glibc's module leaves out.
public enum HostDisk {
    /// Deallocates `length` bytes at `offset` of the open file `fd`, keeping its size: the range
    /// then reads as zeroes (`fallocate(PUNCH_HOLE | KEEP_SIZE)`, `EINTR` retried).
    ///
    /// - Throws: the host's `Errno` (`EOPNOTSUPP` on a file system without holes).
    public static func punchHole(_ fd: Int32, offset: Int64, length: Int64) throws(Errno) {
        let result = chost_punch_hole(fd, offset, length)
        guard result == 0 else { throw Errno(rawValue: -result) }
    }
}
