/// Why a vCPU stopped running guest code: the hypervisor-neutral form of a VM exit.
public enum VCPUExit: Sendable, Equatable {
    /// `in` from `port`; `count` > 1 for string I/O (`rep ins`).
    case pioIn(port: UInt16, width: AccessWidth, count: Int)
    /// `out` to `port`; several values for string I/O (`rep outs`).
    case pioOut(port: UInt16, width: AccessWidth, values: [UInt64])
    /// A read from guest-physical `address` that no RAM backs.
    case mmioRead(address: UInt64, width: AccessWidth)
    /// A write to guest-physical `address` that no RAM backs.
    case mmioWrite(address: UInt64, width: AccessWidth, value: UInt64)
    /// `hlt` (only without an in-kernel local APIC).
    case halt
    /// The guest triple-faulted.
    case shutdown
    /// The hypervisor reports a guest-initiated system event.
    case systemEvent(SystemEvent)
    /// The run was interrupted by a kick; nothing happened in the guest.
    case interrupted
    /// The hardware refused to enter the guest.
    case failedEntry(hardwareReason: UInt64)
    /// The hypervisor could not emulate something (e.g. an unsupported instruction).
    case internalError(suberror: UInt32)
    /// An exit reason this VMM does not know.
    case unknown(reason: UInt32)

    /// A guest-initiated event reported by the hypervisor itself.
    public enum SystemEvent: Sendable, Equatable {
        case shutdown, reset, crash, other(UInt32)
    }
}

/// A `run()` failure that is the host's, not the guest's.
public struct VCPUError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed, with the reason.
    public let message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The hypervisor seam: what the dispatcher needs from one virtual CPU.
///
/// Implemented by the KVM backend and by scripted test doubles; the dispatcher never imports KVM.
public protocol VirtualCPU: AnyObject, Sendable {
    /// The vCPU's index (0 is the boot processor).
    var index: Int { get }
    /// Enters the guest and returns at the next exit.
    func run() throws(VCPUError) -> VCPUExit
    /// Supplies the values of a completed `.pioIn` (one per count) or `.mmioRead` (one value)
    /// before the next ``run()``.
    func completeRead(_ values: [UInt64])
    /// Forces the vCPU out of the guest soon; the next ``run()`` returns ``VCPUExit/interrupted``.
    /// Safe to call from any thread.
    func kick()
    /// A one-line summary of the vCPU's state for error messages (instruction pointer, mode).
    func stateSummary() -> String
}
