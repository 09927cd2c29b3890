/// Little-endian field access on byte arrays for the loaders' parsers and builders.
///
/// Callers check `offset + size <= bytes.count` first; these helpers never read or write outside
/// the array (an out-of-bounds offset is a bug in the caller and traps in the array subscript).
enum LoaderBytes {
    /// Reads a little-endian integer at `offset`.
    static func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type = T.self, _ bytes: [UInt8], at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(bytes[offset + index]) << (8 * index)
        }
        return value
    }

    /// Writes a little-endian integer at `offset`.
    static func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// `value` rounded up to a multiple of `alignment` (a power of two), or `nil` on overflow.
    static func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
        let (bumped, overflow) = value.addingReportingOverflow(alignment - 1)
        return overflow ? nil : bumped & ~(alignment - 1)
    }

    /// `a + b`, or `nil` on overflow.
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64? {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : sum
    }
}
