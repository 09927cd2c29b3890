/// Little-endian integer coding on byte arrays: the one helper the table builders, loaders and
/// boot-state builders share.
///
/// Offsets are the caller's to check (an out-of-range offset traps in the array subscript); values
/// from guest memory or image files are bounds-checked before they get here.
extension Array where Element == UInt8 {
    /// The low `count` bytes of `value`, least significant first.
    public init<T: BinaryInteger>(littleEndian value: T, count: Int) {
        let bits = UInt64(truncatingIfNeeded: value)
        self = (0..<count).map { UInt8(truncatingIfNeeded: $0 < 8 ? bits >> (8 * UInt64($0)) : 0) }
    }

    /// The little-endian integer of type `T` at `offset`.
    public func loadLittleEndian<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type = T.self, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(self[offset + index]) << (8 * index)
        }
        return value
    }

    /// Writes `value` little-endian at `offset`.
    public mutating func storeLittleEndian<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }
}
