import SwiftletMemory
import SwiftletVirtio

/// The guest driver's side of a split queue, for tests: lays the rings out in guest memory the way
/// a driver does (descriptor table, then the available ring, then the 4-byte-aligned used ring),
/// writes descriptors and publishes chains. Plain stores: tests run the driver and device in turn.
struct DriverSideQueue {
    /// `VIRTQ_DESC_F_NEXT`, `VIRTQ_DESC_F_WRITE`, `VIRTQ_DESC_F_INDIRECT`.
    static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4

    /// Guest RAM used by the tests: 1 MiB at 0.
    static func makeMemory() throws -> GuestMemory {
        try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x10_0000)!])
    }

    let memory: GuestMemory
    let size: UInt16
    let descriptorTable: GuestAddress
    let availableRing: GuestAddress
    let usedRing: GuestAddress
    /// The driver's free-running `avail.idx`.
    private(set) var availableIndex: UInt16
    /// The next unused descriptor index for ``addChain(_:)``.
    private var nextFree: UInt16 = 0

    /// Lays out a queue of `size` at `base`, zeroed, with both indices at `startIndex`.
    init(memory: GuestMemory, size: UInt16, base: UInt64 = 0x1000, startIndex: UInt16 = 0) throws {
        self.memory = memory
        self.size = size
        descriptorTable = GuestAddress(base)
        availableRing = GuestAddress(base + 16 * UInt64(size))
        usedRing = GuestAddress((availableRing.rawValue + 6 + 2 * UInt64(size) + 3) & ~3)
        availableIndex = startIndex
        try memory.fill(0, count: usedRing.rawValue + 6 + 8 * UInt64(size) - base, at: descriptorTable)
        try memory.store(startIndex, at: GuestAddress(availableRing.rawValue + 2))
        try memory.store(startIndex, at: GuestAddress(usedRing.rawValue + 2))
    }

    /// The device-side state a transport would build for this layout.
    func state(eventIndex: Bool = false, indirect: Bool = false) -> SplitQueue.State {
        SplitQueue.State(size: size, descriptorTable: descriptorTable, availableRing: availableRing, usedRing: usedRing,
                         nextAvailable: availableIndex, nextUsed: availableIndex, eventIndex: eventIndex,
                         indirectDescriptors: indirect)
    }

    /// The validated device-side queue for this layout.
    func deviceQueue(eventIndex: Bool = false, indirect: Bool = false, maximumSize: UInt16 = 256) throws -> SplitQueue {
        try SplitQueue(state: state(eventIndex: eventIndex, indirect: indirect), maximumSize: maximumSize, memory: memory)
    }

    /// Writes descriptor `index` of the queue's table, or of the table at `table`.
    func writeDescriptor(_ index: UInt16, in table: GuestAddress? = nil, address: UInt64, length: UInt32,
                         flags: UInt16 = 0, next: UInt16 = 0) throws {
        let at = (table ?? descriptorTable).rawValue + 16 * UInt64(index)
        try memory.store(address, at: GuestAddress(at))
        try memory.store(length, at: GuestAddress(at + 8))
        try memory.store(flags, at: GuestAddress(at + 12))
        try memory.store(next, at: GuestAddress(at + 14))
    }

    /// Puts `head` in the next available slot and moves `avail.idx` past it.
    mutating func publish(head: UInt16) throws {
        let slot = UInt64(availableIndex % size)
        try memory.store(head, at: GuestAddress(availableRing.rawValue + 4 + 2 * slot))
        availableIndex &+= 1
        try memory.store(availableIndex, at: GuestAddress(availableRing.rawValue + 2))
    }

    /// Writes `avail.idx` without publishing anything (a broken driver).
    func setAvailableIndex(_ value: UInt16) throws {
        try memory.store(value, at: GuestAddress(availableRing.rawValue + 2))
    }

    /// Chains `buffers` (address, length, writable) through fresh descriptors, publishes the chain
    /// and returns its head.
    mutating func addChain(_ buffers: [(UInt64, UInt32, Bool)]) throws -> UInt16 {
        let head = nextFree
        for (offset, buffer) in buffers.enumerated() {
            let index = (head &+ UInt16(offset)) % size
            let last = offset == buffers.count - 1
            try writeDescriptor(index, address: buffer.0, length: buffer.1,
                                flags: (buffer.2 ? Self.write : 0) | (last ? 0 : Self.next), next: (index + 1) % size)
        }
        nextFree = (head &+ UInt16(buffers.count)) % size
        try publish(head: head)
        return head
    }

    /// `avail.flags`.
    func setAvailableFlags(_ flags: UInt16) throws { try memory.store(flags, at: availableRing) }
    /// `used_event`, at the end of the available ring.
    func setUsedEvent(_ value: UInt16) throws {
        try memory.store(value, at: GuestAddress(availableRing.rawValue + 4 + 2 * UInt64(size)))
    }
    /// `avail_event`, at the end of the used ring.
    func availableEvent() throws -> UInt16 {
        try memory.load(at: GuestAddress(usedRing.rawValue + 4 + 8 * UInt64(size)))
    }
    /// `used.idx`.
    func usedIndex() throws -> UInt16 { try memory.load(at: GuestAddress(usedRing.rawValue + 2)) }
    /// The used element in ring slot `slot`: (id, len).
    func usedElement(_ slot: UInt16) throws -> (id: UInt32, length: UInt32) {
        let at = usedRing.rawValue + 4 + 8 * UInt64(slot % size)
        return (try memory.load(at: GuestAddress(at)), try memory.load(at: GuestAddress(at + 4)))
    }
}
