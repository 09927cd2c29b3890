import SwiftletMemory

/// The guest buffers of one request, as the device may use them: a checked list of guest ranges.
///
/// Built only by ``SplitQueue/chain(head:in:maximumLength:)``, which walks the descriptors (direct
/// and indirect) and checks every one, so each range lies inside one region of guest RAM, the
/// device-readable buffers come first, and the lengths add up to at most the device's limit.
/// Zero-length descriptors carry no bytes and are left out. It holds no pointers: the device reads
/// and writes the ranges through ``GuestMemory``.
public struct DescriptorChain: Equatable, Sendable {
    /// One buffer of the chain.
    public struct Buffer: Equatable, Sendable {
        /// The guest bytes of the buffer (never empty, inside guest RAM).
        public let range: GuestRange
        /// Whether the device writes the buffer (`VIRTQ_DESC_F_WRITE`); otherwise it reads it.
        public let isWritable: Bool
    }

    /// The index of the chain's first descriptor: the id the device returns in the used ring.
    public let head: UInt16
    /// The buffers in chain order: every device-readable one before every device-writable one.
    public let buffers: [Buffer]
    /// The total length of the device-readable buffers.
    public let readableLength: UInt32
    /// The total length of the device-writable buffers.
    public let writableLength: UInt32
}

/// A split-queue descriptor as laid out in guest memory (virtio 1.x §2.7.5): 16 bytes, little-endian.
struct Descriptor {
    /// The size of one descriptor in a table.
    static let size: UInt64 = 16
    /// `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
    static let flagNext: UInt16 = 1
    /// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable.
    static let flagWrite: UInt16 = 2
    /// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of descriptors.
    static let flagIndirect: UInt16 = 4

    let address: GuestAddress
    let length: UInt32
    let flags: UInt16
    let next: UInt16

    /// Decodes the 16 bytes read at once (so a guest changing them meanwhile cannot split the checks
    /// from the use): `addr` in bytes 0–7, `len` 8–11, `flags` 12–13, `next` 14–15.
    init(_ raw: UInt128) {
        address = GuestAddress(UInt64(truncatingIfNeeded: raw))
        length = UInt32(truncatingIfNeeded: raw >> 64)
        flags = UInt16(truncatingIfNeeded: raw >> 96)
        next = UInt16(truncatingIfNeeded: raw >> 112)
    }

    var hasNext: Bool { flags & Self.flagNext != 0 }
    var isWritable: Bool { flags & Self.flagWrite != 0 }
    var isIndirect: Bool { flags & Self.flagIndirect != 0 }
}

/// Accumulates a chain's buffers and enforces the per-buffer rules.
struct ChainBuilder {
    let maximumLength: UInt32
    private(set) var buffers: [DescriptorChain.Buffer] = []
    private var readable: UInt64 = 0
    private var writable: UInt64 = 0
    /// Whether a device-writable descriptor (even an empty one) was seen.
    private var sawWritable = false

    init(maximumLength: UInt32) { self.maximumLength = maximumLength }

    /// Checks direction order, the address space, guest RAM and the total length, then keeps the buffer.
    mutating func append(_ descriptor: Descriptor, in memory: GuestMemory) throws(ChainError) {
        if descriptor.isWritable { sawWritable = true } else if sawWritable { throw .readableAfterWritable }
        guard descriptor.length > 0 else { return }
        guard let range = GuestRange(start: descriptor.address, size: UInt64(descriptor.length)) else {
            throw .bufferWraps(address: descriptor.address, length: descriptor.length)
        }
        guard memory.contains(range.start, count: range.size) else {
            throw .bufferOutsideMemory(address: descriptor.address, length: descriptor.length)
        }
        if descriptor.isWritable { writable += range.size } else { readable += range.size }
        guard readable + writable <= UInt64(maximumLength) else { throw .totalLengthTooLarge(limit: maximumLength) }
        buffers.append(.init(range: range, isWritable: descriptor.isWritable))
    }

    func chain(head: UInt16) -> DescriptorChain {
        DescriptorChain(head: head, buffers: buffers, readableLength: UInt32(readable), writableLength: UInt32(writable))
    }
}
