import SwiftletMemory

/// One of the three areas of guest memory a split virtqueue lives in.
public enum QueueArea: String, Sendable, Equatable {
    case descriptorTable = "descriptor table"
    case availableRing = "available ring"
    case usedRing = "used ring"
}

/// Why a queue configuration (from the driver at activation, or from a snapshot) was refused.
public enum QueueValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The queue size is zero.
    case sizeZero
    /// The queue size is not a power of two (split queues require one).
    case sizeNotPowerOfTwo(UInt16)
    /// The queue size is larger than the device's maximum.
    case sizeAboveMaximum(size: UInt16, maximum: UInt16)
    /// An area does not start at a multiple of its required alignment.
    case misaligned(QueueArea, address: GuestAddress, alignment: UInt64)
    /// An area does not lie entirely inside one region of guest RAM.
    case outsideMemory(QueueArea, address: GuestAddress, size: UInt64)

    public var description: String {
        switch self {
        case .sizeZero:
            return "virtqueue size is 0"
        case let .sizeNotPowerOfTwo(size):
            return "virtqueue size \(size) is not a power of two"
        case let .sizeAboveMaximum(size, maximum):
            return "virtqueue size \(size) is above the device's maximum \(maximum)"
        case let .misaligned(area, address, alignment):
            return "virtqueue \(area.rawValue) at \(address) is not \(alignment)-byte aligned"
        case let .outsideMemory(area, address, size):
            return "virtqueue \(area.rawValue) of \(size) bytes at \(address) is outside guest RAM"
        }
    }
}

/// A broken available or used ring: the driver no longer follows the protocol, and the device
/// should set `DEVICE_NEEDS_RESET` rather than guess (virtio 1.x §2.1.2).
public enum QueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `avail.idx` moved more than the queue size past the next entry to consume (or backwards).
    case availableIndexJumped(nextAvailable: UInt16, availableIndex: UInt16, size: UInt16)
    /// An available ring entry (or a used element the device adds) names a descriptor past the table.
    case headOutOfRange(head: UInt16, size: UInt16)
    /// A ring access failed: the memory given is not the memory the queue was validated against.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .availableIndexJumped(nextAvailable, availableIndex, size):
            return "driver moved avail.idx to \(availableIndex), more than the queue size \(size) past \(nextAvailable)"
        case let .headOutOfRange(head, size):
            return "descriptor chain head \(head) is outside a queue of size \(size)"
        case let .memory(error):
            return "virtqueue ring access failed: \(error)"
        }
    }
}

/// Why a descriptor chain was refused. The request fails; the queue itself stays usable (the
/// device returns the head with a used length of 0, or answers with its own error status).
public enum ChainError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A `next` field names a descriptor past the end of its table.
    case nextOutOfRange(next: UInt16, tableSize: UInt32)
    /// The chain has more descriptors than its table holds: a loop, or an over-long chain.
    case tooManyDescriptors(limit: UInt32)
    /// A buffer passes the end of the 64-bit address space.
    case bufferWraps(address: GuestAddress, length: UInt32)
    /// A buffer does not lie entirely inside one region of guest RAM.
    case bufferOutsideMemory(address: GuestAddress, length: UInt32)
    /// The buffers add up to more bytes than the device accepts.
    case totalLengthTooLarge(limit: UInt32)
    /// A device-readable descriptor follows a device-writable one (virtio 1.x §2.7.4.2).
    case readableAfterWritable
    /// An indirect descriptor, though `VIRTIO_RING_F_INDIRECT_DESC` was not negotiated.
    case indirectNotNegotiated
    /// An indirect descriptor that also has `VIRTQ_DESC_F_NEXT` (virtio 1.x §2.7.5.3.1).
    case indirectWithNext
    /// An indirect descriptor inside an indirect table (virtio 1.x §2.7.5.3.1).
    case nestedIndirect
    /// An indirect table whose length is 0, not a multiple of 16, or more entries than the queue size.
    case indirectTableLength(UInt32)
    /// An indirect table that does not lie entirely inside one region of guest RAM.
    case indirectTableOutsideMemory(address: GuestAddress, length: UInt32)
    /// A descriptor read failed: the memory given is not the memory the queue was validated against.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .nextOutOfRange(next, tableSize):
            return "descriptor next index \(next) is outside a table of \(tableSize) descriptors"
        case let .tooManyDescriptors(limit):
            return "descriptor chain is longer than \(limit) descriptors (a loop or an over-long chain)"
        case let .bufferWraps(address, length):
            return "descriptor buffer of \(length) bytes at \(address) wraps the address space"
        case let .bufferOutsideMemory(address, length):
            return "descriptor buffer of \(length) bytes at \(address) is outside guest RAM"
        case let .totalLengthTooLarge(limit):
            return "descriptor chain carries more than \(limit) bytes"
        case .readableAfterWritable:
            return "device-readable descriptor after a device-writable one"
        case .indirectNotNegotiated:
            return "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC"
        case .indirectWithNext:
            return "indirect descriptor with VIRTQ_DESC_F_NEXT"
        case .nestedIndirect:
            return "indirect descriptor inside an indirect table"
        case let .indirectTableLength(length):
            return "indirect table length \(length) is 0, not a multiple of 16 or longer than the queue"
        case let .indirectTableOutsideMemory(address, length):
            return "indirect table of \(length) bytes at \(address) is outside guest RAM"
        case let .memory(error):
            return "descriptor read failed: \(error)"
        }
    }
}
