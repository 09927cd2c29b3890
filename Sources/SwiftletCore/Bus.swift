/// The width of one port-I/O or MMIO access.
public enum AccessWidth: Int, Sendable, CaseIterable, BitwiseCopyable {
    case byte = 1, word = 2, dword = 4, qword = 8

    /// The width for an access of `bytes` bytes, or `nil` if no x86 access has that size.
    public init?(bytes: Int) { self.init(rawValue: bytes) }

    /// The number of bytes in the access.
    public var bytes: Int { rawValue }

    /// All ones in this width: what a read from nowhere returns.
    public var allOnes: UInt64 { rawValue == 8 ? .max : (1 << (UInt64(rawValue) * 8)) - 1 }
}

/// The length of an MMIO piece that is no x86 access width: 3, 5, 6 or 7 bytes.
///
/// No instruction makes such an access, but the hypervisor reports one when it splits an access
/// that crosses a page boundary (for example a dword at the last 3 bytes of a device's page, or
/// one that starts in RAM and ends where no RAM is) and hands each MMIO part over on its own.
public enum OddAccessLength: Int, Sendable, CaseIterable, BitwiseCopyable {
    case three = 3, five = 5, six = 6, seven = 7

    /// The length for a piece of `bytes` bytes, or `nil` for 0, 1, 2, 4, 8 or more than 8.
    public init?(bytes: Int) { self.init(rawValue: bytes) }

    /// The number of bytes in the piece.
    public var bytes: Int { rawValue }

    /// All ones in this length: what a read from nowhere returns.
    public var allOnes: UInt64 { (1 << (UInt64(rawValue) * 8)) - 1 }
}

/// A device model on the port-I/O or MMIO bus.
///
/// A device sees offsets from its own base, never bus addresses ("the device does not care where
/// it exists in address space", as Firecracker puts it). It is a plain state machine: it owns no
/// file descriptor, thread or lock; side effects reach the outside through injected protocols
/// (``InterruptLine``, ``OutputSink``, ``MachineEventSink``).
public protocol BusDevice: Sendable {
    /// Emulates a guest read of `width` bytes at `offset` and returns the value (low bytes used).
    mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64
    /// Emulates a guest write of `width` bytes at `offset`.
    mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64)
}

/// Something the bus can hand an access to: usually a device model behind a lock (SwiftletHost's
/// `SharedDevice`).
public protocol BusHandler: AnyObject, Sendable {
    /// Handles a read at `offset` from the handler's base.
    func read(at offset: UInt64, width: AccessWidth) -> UInt64
    /// Handles a write at `offset` from the handler's base.
    func write(at offset: UInt64, width: AccessWidth, value: UInt64)
}

/// A range of bus addresses `[base, base + size)`.
public struct BusRange: Hashable, Sendable, CustomStringConvertible {
    /// The first address.
    public let base: UInt64
    /// The number of addresses; never zero.
    public let size: UInt64

    /// Creates a range; `nil` when `size` is zero or the range passes the top of the address space.
    public init?(base: UInt64, size: UInt64) {
        guard size > 0, !base.addingReportingOverflow(size - 1).overflow else { return nil }
        self.base = base
        self.size = size
    }

    /// The last address in the range.
    public var last: UInt64 { base + (size - 1) }

    /// Whether `address` is inside the range.
    public func contains(_ address: UInt64) -> Bool { address >= base && address <= last }

    /// Whether the ranges share an address.
    public func overlaps(_ other: BusRange) -> Bool { base <= other.last && other.base <= last }

    public var description: String {
        "0x" + String(base, radix: 16) + "–0x" + String(last, radix: 16)
    }
}

/// Why a device could not be put on a bus.
public enum BusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The new range overlaps one that is already taken.
    case overlap(bus: String, new: BusRange, newOwner: String, existing: BusRange, existingOwner: String)
    /// The range is empty or wraps around.
    case invalidRange(bus: String, base: UInt64, size: UInt64)

    public var description: String {
        switch self {
        case let .overlap(bus, new, newOwner, existing, existingOwner):
            return "\(bus) bus: \(newOwner) at \(new) overlaps \(existingOwner) at \(existing); pick another address"
        case let .invalidRange(bus, base, size):
            return "\(bus) bus: invalid range base 0x\(String(base, radix: 16)) size \(size)"
        }
    }
}

/// An address space (port I/O or MMIO) that routes each access to the device owning the address.
///
/// Built before the vCPUs start, then read-only: lookups need no lock. Overlapping registrations
/// are refused.
public struct Bus: Sendable {
    /// One registration.
    public struct Entry: Sendable {
        /// The addresses the device owns.
        public let range: BusRange
        /// A name for messages (`"serial0"`).
        public let name: String
        /// The device.
        public let handler: any BusHandler
    }

    /// A name for messages (`"PIO"` or `"MMIO"`).
    public let name: String
    /// The registrations, sorted by base address.
    public private(set) var entries: [Entry] = []

    /// Creates an empty bus.
    public init(name: String) { self.name = name }

    /// Registers `handler` for `size` addresses from `base`.
    ///
    /// - Throws: ``BusError`` if the range is invalid or overlaps an existing registration.
    public mutating func insert(_ handler: any BusHandler, named name: String, at base: UInt64, size: UInt64) throws(BusError) {
        guard let range = BusRange(base: base, size: size) else {
            throw .invalidRange(bus: self.name, base: base, size: size)
        }
        if let clash = entries.first(where: { $0.range.overlaps(range) }) {
            throw .overlap(bus: self.name, new: range, newOwner: name, existing: clash.range, existingOwner: clash.name)
        }
        let index = entries.firstIndex { $0.range.base > base } ?? entries.endIndex
        entries.insert(Entry(range: range, name: name, handler: handler), at: index)
    }

    /// The registration that owns `address`, with the address's offset from its base.
    public func lookup(_ address: UInt64) -> (entry: Entry, offset: UInt64)? {
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].range.last < address {
                low = mid + 1
            } else {
                high = mid
            }
        }
        guard low < entries.count, entries[low].range.contains(address) else { return nil }
        return (entries[low], address - entries[low].range.base)
    }
}
