import SwiftletCore

/// A device model behind a lock, so that vCPU threads and host I/O threads can share it.
///
/// The lock is a ``HostLock`` (a `pthread_mutex`): ThreadSanitizer reported a device shared by a
/// vCPU thread and the I/O loop as racing behind `Synchronization.Mutex`, which it does not model
/// when the lock is contended.
public final class SharedDevice<Device: BusDevice>: BusHandler {
    private let device: HostLock<Device>

    /// Wraps `device`.
    public init(_ device: Device) { self.device = HostLock(device) }

    /// Runs `body` with exclusive access to the device (e.g. to feed it host input).
    public func withLock<Result: Sendable>(_ body: (inout Device) -> Result) -> Result {
        device.withLock { body(&$0) }
    }

    public func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        device.withLock { $0.read(at: offset, width: width) }
    }

    public func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        device.withLock { $0.write(at: offset, width: width, value: value) }
    }
}

