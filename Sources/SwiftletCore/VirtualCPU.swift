/// Why a vCPU stopped running guest code: the hypervisor-neutral form of a VM exit.
///
/// The exit path must not allocate: every case carries scalars only, so an exit is
/// `BitwiseCopyable` (a payload that needs the heap, such as an array, does not compile). String
/// I/O carries its element count; the elements stay in the hypervisor's data area and are reached
/// one at a time through ``VirtualCPU/value(at:)`` and ``VirtualCPU/completeRead(index:value:)``.
public enum VCPUExit: Sendable, Equatable, BitwiseCopyable {
    /// `in` of one element from `port`, completed with ``VirtualCPU/completeRead(_:)``.
    case pioIn(port: UInt16, width: AccessWidth)
    /// `out` of `value` (its low `width` bytes) to `port`.
    case pioOut(port: UInt16, width: AccessWidth, value: UInt64)
    /// String `in` (`rep ins`): `count` (more than 1) elements from `port`, element `i` stored with
    /// ``VirtualCPU/completeRead(index:value:)`` before the next ``VirtualCPU/run()``.
    case pioStringIn(port: UInt16, width: AccessWidth, count: Int)
    /// String `out` (`rep outs`): `count` (more than 1) elements to `port`, in order, element `i`
    /// fetched with ``VirtualCPU/value(at:)``.
    case pioStringOut(port: UInt16, width: AccessWidth, count: Int)
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
    public enum SystemEvent: Sendable, Equatable, BitwiseCopyable {
        case shutdown, reset, crash
    }
}

/// An exit the hypervisor backend could not decode, named in the hypervisor's own terms.
///
/// The names are static text, so that a backend reports such an exit without allocating.
public struct UnhandledExit: Sendable, Equatable, BitwiseCopyable, CustomStringConvertible {
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
/// Every requirement but ``stateSummary()`` is on the exit path and must not allocate.
public protocol VirtualCPU: AnyObject, Sendable {
    /// The vCPU's index (0 is the boot processor).
    var index: Int { get }
    /// Enters the guest and returns at the next exit.
    func run() throws(VCPUError) -> VCPUExit
    /// Supplies the value of a completed `.pioIn`, `.mmioRead` or `.mmioOddPiece` read (of which
    /// the access's length in low bytes is used) before the next ``run()``.
    func completeRead(_ value: UInt64)
    /// Stores element `index` (in `0..<count`) of a pending `.pioStringIn` before the next ``run()``.
    func completeRead(index: Int, value: UInt64)
    /// Element `index` (in `0..<count`) of a pending `.pioStringOut`, in its low `width` bytes.
    func value(at index: Int) -> UInt64
    /// Forces the vCPU out of the guest soon; the next ``run()`` returns ``VCPUExit/interrupted``.
    /// Safe to call from any thread.
    func kick()
    /// A one-line summary of the vCPU's state for error messages (instruction pointer, mode).
    func stateSummary() -> String
}
