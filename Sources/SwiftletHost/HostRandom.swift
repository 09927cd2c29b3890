#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// The host's random bytes (`getrandom`, the kernel's CSPRNG), for the virtio entropy device.
public enum HostRandom {
    /// Returns `count` bytes from `getrandom` (blocking only before the host's pool is first
    /// seeded, which is long past by the time a VM runs).
    public static func bytes(count: Int) throws(HostError) -> [UInt8] {
        guard count > 0 else { return [] }
        var failure: Errno?
        // SAFETY: getrandom writes at most `count - filled` bytes at `base + filled`, inside the buffer,
        // and only the `filled` bytes it wrote are marked initialized.
        let bytes = unsafe [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var filled = 0
            while filled < count {
                let got = unsafe getrandom(buffer.baseAddress! + filled, count - filled, 0)
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = Errno(rawValue: errno)
                    break
                }
                filled += got
            }
            initialized = filled

        }
        if let failure { throw HostError("reading \(count) random bytes (getrandom)", failure) }
        return bytes
    }
}
