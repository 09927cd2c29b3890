import SwiftletMemory

/// Byte-offset access to a chain's buffers, for devices whose headers, data and status may share or
/// straddle descriptors (block, vsock): they work on offsets within the concatenated ranges, never
/// on descriptor boundaries.
enum ChainBytes {
    /// The sub-ranges covering `count` bytes from byte `from` of the concatenation of `ranges`
    /// (fewer bytes if the ranges end first).
    static func slice(_ ranges: [GuestRange], from: UInt64, count: UInt64) -> [GuestRange] {
        var result: [GuestRange] = []
        var skip = from
        var remaining = count
        for range in ranges where remaining > 0 {
            if skip >= range.size {
                skip -= range.size
                continue
            }
            let take = min(range.size - skip, remaining)
            // `skip < range.size`, so the start stays inside the range.
            if let piece = GuestRange(start: GuestAddress(range.start.rawValue + skip), size: take) { result.append(piece) }
            remaining -= take
            skip = 0
        }
        return result
    }

    /// Reads the first `count` bytes of the concatenation of `ranges` (all of them must be there).
    static func gather(_ ranges: [GuestRange], count: Int, memory: GuestMemory) throws(GuestMemoryError) -> [UInt8] {
        var bytes: [UInt8] = []
        for range in slice(ranges, from: 0, count: UInt64(count)) {
            bytes += try memory.read(count: Int(range.size), at: range.start)
        }
        guard bytes.count == count else { throw .shortRead(expected: UInt64(count), got: UInt64(bytes.count)) }
        return bytes
    }

    /// The little-endian bytes of a `T` at `offset` of `bytes` (which holds them).
    static func integer<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + index]) << (8 * index) }
        return value
    }

    /// Writes `bytes` over the first `bytes.count` bytes of the concatenation of `ranges` (all of
    /// them must be there).
    static func scatter(_ bytes: [UInt8], into ranges: [GuestRange], memory: GuestMemory) throws(GuestMemoryError) {
        var offset = 0
        for range in slice(ranges, from: 0, count: UInt64(bytes.count)) {
            try memory.write(bytes[offset..<offset + Int(range.size)], at: range.start)
            offset += Int(range.size)
        }
        guard offset == bytes.count else { throw .outOfRange(address: ranges.first?.start ?? GuestAddress(0), count: UInt64(bytes.count)) }
    }
}
