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
    /// An MMIO read (`isWrite` false) or write of a length that is no access width, at
    /// guest-physical `address`: one piece of an access the hypervisor split at a page boundary.
    /// A read is completed with one value, whose low `length` bytes are used.
    case mmioOddPiece(address: UInt64, length: OddAccessLength, isWrite: Bool)
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
    /// An exit the backend cannot turn into one of the cases above: an exit reason (or system
    /// event) this VMM does not handle, or one whose data is malformed.
    case unhandled(UnhandledExit)

    /// A guest-initiated event reported by the hypervisor itself (other kinds are ``unhandled(_:)``).
    public enum SystemEvent: Sendable, Equatable {
        case shutdown, reset, crash
    }
}

/// An exit the hypervisor backend could not decode, named in the hypervisor's own terms.
///
/// The names are static text, so that a backend reports such an exit without allocating.
public struct UnhandledExit: Sendable, Equatable, CustomStringConvertible {
    /// The hypervisor's number for the exit reason.
    public let reason: UInt32
    /// The hypervisor's name for the exit reason, e.g. `KVM_EXIT_IRQ_WINDOW_OPEN`.
    public let name: StaticString
    /// What is wrong with the exit (e.g. "malformed, the port I/O size is not 1, 2 or 4 bytes") or
    /// which kind it is (e.g. a system event's name); empty when the name says it all.
    public let detail: StaticString

    /// Describes exit `reason`, called `name` by the hypervisor, with an optional `detail`.
    public init(reason: UInt32, name: StaticString, detail: StaticString = "") {
        self.reason = reason
        self.name = name
        self.detail = detail
    }

    /// The name with the detail, e.g. `KVM_EXIT_IO: malformed, ...`.
    public var description: String {
        detail.utf8CodeUnitCount == 0 ? name.description : "\(name): \(detail)"
    }

    public static func == (lhs: UnhandledExit, rhs: UnhandledExit) -> Bool {
        lhs.reason == rhs.reason && lhs.name.description == rhs.name.description
            && lhs.detail.description == rhs.detail.description
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
    /// Supplies the values of a completed `.pioIn` (one per count), `.mmioRead` or `.mmioOddPiece`
    /// read (one value, of which the access's length in low bytes is used) before the next ``run()``.
    func completeRead(_ values: [UInt64])
    /// Forces the vCPU out of the guest soon; the next ``run()`` returns ``VCPUExit/interrupted``.
    /// Safe to call from any thread.
    func kick()
    /// A one-line summary of the vCPU's state for error messages (instruction pointer, mode).
    func stateSummary() -> String
}
