#if canImport(Glibc)
import Glibc
#endif

/// Facts about the host.
public enum HostInfo {
    /// The host's physical memory in bytes.
    public static var physicalMemory: UInt64 {
        UInt64(max(sysconf(Int32(_SC_PHYS_PAGES)), 0)) * UInt64(max(sysconf(Int32(_SC_PAGESIZE)), 0))
    }
}

extension HostInfo {
    /// The host's wall-clock time in whole seconds since the Unix epoch (UTC).
    public static var wallClockSeconds: Int64 {
        var now = timespec()
        _ = unsafe clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec)
    }
}

extension HostInfo {
    /// The value of environment variable `name`, if set.
    public static func environment(_ name: String) -> String? {
        guard let value = unsafe getenv(name) else { return nil }
        return unsafe String(cString: value)
    }

    /// Whether a regular file (or a link to one) exists at `path` and can be read.
    public static func isReadableFile(_ path: String) -> Bool {
        var info = stat()
        guard unsafe stat(path, &info) == 0 else { return false }
        let readable = unsafe access(path, R_OK) == 0
        return (info.st_mode & S_IFMT) == S_IFREG && readable
    }
}
