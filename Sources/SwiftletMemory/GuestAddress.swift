/// A guest-physical address.
///
/// A plain wrapper around `UInt64` whose arithmetic never traps: every offset goes through
/// ``checkedAdd(_:)``, which returns `nil` on overflow, so a hostile guest value cannot crash the host.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    /// The address as a number.
    public var rawValue: UInt64

    /// Wraps a guest-physical address.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Wraps a guest-physical address.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The address `offset` bytes further on, or `nil` if that overflows 64 bits.
    public func checkedAdd(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// The address rounded up to a multiple of `alignment` (a power of two), or `nil` on overflow.
    public func alignedUp(to alignment: UInt64) -> GuestAddress? {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        guard let bumped = checkedAdd(alignment - 1) else { return nil }
        return GuestAddress(bumped.rawValue & ~(alignment - 1))
    }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The address in hexadecimal, as `0x1000`.
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A half-open range of guest-physical addresses `[start, start + size)`.
public struct GuestRange: Hashable, Sendable, CustomStringConvertible {
    /// The first address in the range.
    public let start: GuestAddress
    /// The number of bytes in the range; never zero.
    public let size: UInt64

    /// Creates a range, or returns `nil` if `size` is zero or the range would pass the end of the address space.
    public init?(start: GuestAddress, size: UInt64) {
        guard size > 0, start.rawValue.addingReportingOverflow(size - 1).overflow == false else { return nil }
        self.start = start
        self.size = size
    }

    /// The last address in the range (inclusive), which cannot overflow.
    public var last: GuestAddress { GuestAddress(start.rawValue + (size - 1)) }

    /// The first address after the range, or `nil` when the range ends at the top of the address space.
    public var end: GuestAddress? { start.checkedAdd(size) }

    /// Whether `address` lies inside the range.
    public func contains(_ address: GuestAddress) -> Bool { address >= start && address <= last }

    /// Whether `count` bytes at `address` lie entirely inside the range.
    public func contains(_ address: GuestAddress, count: UInt64) -> Bool {
        guard count > 0 else { return contains(address) }
        guard contains(address) else { return false }
        return count - 1 <= last.rawValue - address.rawValue
    }

    /// Whether the two ranges share at least one address.
    public func overlaps(_ other: GuestRange) -> Bool { start <= other.last && other.start <= last }

    /// The range as `[0x1000, 0x1fff]` with its size.
    public var description: String { "[\(start), \(last)] (\(formatByteCount(size)))" }
}

/// Formats a byte count with binary units: `512 B`, `64 KiB`, `1.5 GiB`.
public func formatByteCount(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = bytes
    var unit = 0
    while value >= 1024, value % 1024 == 0, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if value >= 1024 {
        var scaled = Double(value)
        while scaled >= 1024, unit < units.count - 1 {
            scaled /= 1024
            unit += 1
        }
        let tenths = Int((scaled * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
    return "\(value) \(units[unit])"
}
