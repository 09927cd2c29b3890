import SwiftletMemory

/// The device side of a split virtqueue (virtio 1.x §2.7), validated once and then driven by the device.
///
/// Layout in guest memory for a queue of size N (a power of two), each area in one RAM region:
///
/// | Area             | Align | Bytes   | Contents                                                      |
/// |------------------|-------|---------|---------------------------------------------------------------|
/// | descriptor table | 16    | 16·N    | `{addr u64, len u32, flags u16, next u16}` per descriptor     |
/// | available ring   | 2     | 6 + 2·N | `flags u16, idx u16, ring[N] u16, used_event u16` (driver)    |
/// | used ring        | 4     | 6 + 8·N | `flags u16, idx u16, ring[N] {id u32, len u32}, avail_event u16` (device) |
///
/// Use:
/// 1. ``init(state:maximumSize:memory:)`` validates the driver's configuration when it enables the
///    queue (or a snapshot's state on restore): a queue that exists is a valid one.
/// 2. ``popAvailable(in:)`` takes the next chain head the driver published; ``chain(head:in:maximumLength:)``
///    walks and checks its descriptors into a ``DescriptorChain``.
/// 3. ``addUsed(head:length:in:)`` returns a chain to the driver and publishes `used.idx`.
/// 4. ``needsNotification(in:)`` says whether to interrupt the driver; ``enableNotification(in:)``
///    asks the driver for a notification before the device goes idle, and says if work came meanwhile.
///
/// Ordering (virtio 1.x §2.7.13–2.7.14): `avail.idx` is read with acquire semantics before the
/// entries it covers; used elements are written before `used.idx`, which is stored with release
/// semantics; a full fence separates the device's index stores from its reads of the driver's
/// `used_event`, flags and `avail.idx` that decide whether to notify or to sleep.
///
/// Threat model:
/// - Input: everything in the three areas, descriptors and indirect tables is written by the guest
///   at any time, in any order, including while the device reads it; the configuration (size and
///   addresses) comes from the driver or from a snapshot.
/// - Threat: a guest that makes the host trap (overflowing arithmetic, out-of-range indices), hang
///   (descriptor loops), grow memory without bound (endless chains), or touch host memory outside
///   guest RAM (buffers, rings or tables outside it or wrapping 2^64); a guest that changes a
///   descriptor between its check and its use.
/// - Mitigation: the configuration is checked once (power-of-two size within the device's maximum,
///   alignments, every area inside one RAM region), after which ring offsets cannot overflow; every
///   index read from the guest is reduced modulo the size or checked against its table; each
///   descriptor is read once as one 16-byte value and checked before it is kept; a chain visits at
///   most N direct descriptors plus one indirect table of at most N entries, so work and the buffer
///   list are bounded by 2·N; every buffer is checked to lie inside one RAM region and the total
///   against the device's limit; index arithmetic wraps at 16 bits as the spec says. Every refusal
///   is a typed error (``QueueValidationError``, ``QueueError``, ``ChainError``), never a trap.
public struct SplitQueue: Sendable {
    /// The largest queue size a split queue may have (virtio 1.x §2.7).
    public static let maximumSize: UInt16 = 32768

    /// The queue's guest-visible configuration and indices, for activation and snapshots.
    public struct State: Codable, Equatable, Sendable {
        /// The number of descriptors (a power of two).
        public var size: UInt16
        /// The guest address of the descriptor table.
        public var descriptorTable: GuestAddress
        /// The guest address of the available (driver) ring.
        public var availableRing: GuestAddress
        /// The guest address of the used (device) ring.
        public var usedRing: GuestAddress
        /// The free-running index of the next available entry the device will consume.
        public var nextAvailable: UInt16
        /// The free-running index of the next used entry the device will write (what `used.idx` holds).
        public var nextUsed: UInt16
        /// Whether `VIRTIO_RING_F_EVENT_IDX` was negotiated (`used_event` / `avail_event`).
        public var eventIndex: Bool
        /// Whether `VIRTIO_RING_F_INDIRECT_DESC` was negotiated (indirect descriptor tables).
        public var indirectDescriptors: Bool

        /// Creates a state; the defaults are a freshly enabled queue without the ring features.
        public init(size: UInt16, descriptorTable: GuestAddress, availableRing: GuestAddress, usedRing: GuestAddress,
                    nextAvailable: UInt16 = 0, nextUsed: UInt16 = 0, eventIndex: Bool = false,
                    indirectDescriptors: Bool = false) {
            self.size = size
            self.descriptorTable = descriptorTable
            self.availableRing = availableRing
            self.usedRing = usedRing
            self.nextAvailable = nextAvailable
            self.nextUsed = nextUsed
            self.eventIndex = eventIndex
            self.indirectDescriptors = indirectDescriptors
        }
    }

    /// `VRING_AVAIL_F_NO_INTERRUPT` in `avail.flags`: the driver asks not to be interrupted
    /// (honoured only without event-idx).
    static let availableNoInterrupt: UInt16 = 1

    /// The queue's state (configuration and indices), for snapshots.
    public private(set) var state: State
    /// Used entries added since the last ``needsNotification(in:)``: with `nextUsed` they give the
    /// old and new `used.idx` that `vring_need_event` compares `used_event` against.
    private var addedSinceNotification: UInt16 = 0

    /// Validates `state` against the device's maximum size and guest RAM, and creates the queue.
    ///
    /// - Parameter maximumSize: the device's `QueueNumMax`, in 1...``maximumSize`` (a host constant).
    /// - Throws: ``QueueValidationError`` for a size that is 0, not a power of two or above the
    ///   maximum, an area that is misaligned, or an area not inside one region of `memory`.
    public init(state: State, maximumSize: UInt16, memory: GuestMemory) throws(QueueValidationError) {
        precondition((1...Self.maximumSize).contains(maximumSize), "a device's maximum queue size is 1...32768")
        let size = state.size
        guard size > 0 else { throw .sizeZero }
        guard size & (size - 1) == 0 else { throw .sizeNotPowerOfTwo(size) }
        guard size <= maximumSize else { throw .sizeAboveMaximum(size: size, maximum: maximumSize) }
        let areas: [(QueueArea, GuestAddress, alignment: UInt64, bytes: UInt64)] = [
            (.descriptorTable, state.descriptorTable, 16, Descriptor.size * UInt64(size)),
            (.availableRing, state.availableRing, 2, 6 + 2 * UInt64(size)),
            (.usedRing, state.usedRing, 4, 6 + 8 * UInt64(size)),
        ]
        for (area, address, alignment, bytes) in areas {
            guard address.rawValue % alignment == 0 else {
                throw .misaligned(area, address: address, alignment: alignment)
            }
            guard memory.contains(address, count: bytes) else {
                throw .outsideMemory(area, address: address, size: bytes)
            }
        }
        self.state = state
    }

    // Offsets inside validated areas: `base + offset` stays inside RAM, so it cannot overflow.
    private func available(_ offset: UInt64) -> GuestAddress { GuestAddress(state.availableRing.rawValue + offset) }
    private func used(_ offset: UInt64) -> GuestAddress { GuestAddress(state.usedRing.rawValue + offset) }
    private var usedEventAddress: GuestAddress { available(4 + 2 * UInt64(state.size)) }
    private var availableEventAddress: GuestAddress { used(4 + 8 * UInt64(state.size)) }

    /// The number of chains the driver has published and the device not yet consumed.
    ///
    /// - Throws: ``QueueError/availableIndexJumped(nextAvailable:availableIndex:size:)`` when
    ///   `avail.idx` is more than the size ahead (the driver is broken: set `DEVICE_NEEDS_RESET`).
    private func pendingCount(in memory: GuestMemory) throws(QueueError) -> UInt16 {
        let availableIndex: UInt16
        do { availableIndex = try memory.loadAcquire(at: available(2)) } catch { throw .memory(error) }
        let pending = availableIndex &- state.nextAvailable
        guard pending <= state.size else {
            throw .availableIndexJumped(nextAvailable: state.nextAvailable, availableIndex: availableIndex,
                                        size: state.size)
        }
        return pending
    }

    /// Consumes the next available entry and returns its chain head, or `nil` when the ring is empty.
    ///
    /// The entry is consumed even when its head is refused, so one bad entry cannot stall the queue.
    /// - Throws: ``QueueError/availableIndexJumped(nextAvailable:availableIndex:size:)`` or
    ///   ``QueueError/headOutOfRange(head:size:)``: the driver is broken, the device should set
    ///   `DEVICE_NEEDS_RESET`.
    public mutating func popAvailable(in memory: GuestMemory) throws(QueueError) -> UInt16? {
        guard try pendingCount(in: memory) > 0 else { return nil }
        let slot = UInt64(state.nextAvailable & (state.size - 1))
        let head: UInt16
        do { head = try memory.load(at: available(4 + 2 * slot)) } catch { throw .memory(error) }
        state.nextAvailable &+= 1
        guard head < state.size else { throw .headOutOfRange(head: head, size: state.size) }
        return head
    }

    /// Whether the driver has published a chain the device has not consumed yet.
    ///
    /// - Throws: ``QueueError/availableIndexJumped(nextAvailable:availableIndex:size:)``.
    public func hasAvailable(in memory: GuestMemory) throws(QueueError) -> Bool {
        try pendingCount(in: memory) > 0
    }

    /// Gives back the chain the last ``popAvailable(in:)`` returned, unused: the next pop returns
    /// it again (a device whose backend cannot take it now). Call only right after that pop, with
    /// no ``addUsed(head:length:in:)`` between.
    public mutating func undoPop() {
        state.nextAvailable &-= 1
    }

    /// Walks and checks the descriptor chain that starts at `head`.
    ///
    /// A chain follows `next` through the descriptor table; one descriptor may instead point at an
    /// indirect table (with `VIRTIO_RING_F_INDIRECT_DESC`), which then holds the rest of the chain.
    /// - Parameter maximumLength: the most bytes the device accepts in one request.
    /// - Throws: a ``ChainError`` for the first rule the chain breaks; the device then fails the
    ///   request (and returns `head` in the used ring with length 0).
    public func chain(head: UInt16, in memory: GuestMemory,
                      maximumLength: UInt32 = .max) throws(ChainError) -> DescriptorChain {
        var builder = ChainBuilder(maximumLength: maximumLength)
        var table = state.descriptorTable
        var tableSize = UInt32(state.size)
        var remaining = tableSize
        var inIndirectTable = false
        var index = head
        while true {
            guard UInt32(index) < tableSize else { throw .nextOutOfRange(next: index, tableSize: tableSize) }
            guard remaining > 0 else { throw .tooManyDescriptors(limit: tableSize) }
            remaining -= 1
            let descriptor: Descriptor
            do {
                // `index < tableSize` and the table lies inside RAM: no overflow.
                descriptor = Descriptor(try memory.load(UInt128.self,
                                                        at: GuestAddress(table.rawValue + Descriptor.size * UInt64(index))))
            } catch { throw .memory(error) }
            if descriptor.isIndirect {
                guard state.indirectDescriptors else { throw .indirectNotNegotiated }
                guard !inIndirectTable else { throw .nestedIndirect }
                guard !descriptor.hasNext else { throw .indirectWithNext }
                let length = descriptor.length
                guard length > 0, UInt64(length) % Descriptor.size == 0,
                      UInt64(length) / Descriptor.size <= UInt64(state.size) else { throw .indirectTableLength(length) }
                guard memory.contains(descriptor.address, count: UInt64(length)) else {
                    throw .indirectTableOutsideMemory(address: descriptor.address, length: length)
                }
                table = descriptor.address
                tableSize = length / UInt32(Descriptor.size)
                remaining = tableSize
                inIndirectTable = true
                index = 0
                continue
            }
            try builder.append(descriptor, in: memory)
            guard descriptor.hasNext else { return builder.chain(head: head) }
            index = descriptor.next
        }
    }

    /// Returns the chain `head` to the driver with `length` bytes written, and publishes `used.idx`
    /// (release ordering: the element is visible first).
    ///
    /// - Throws: ``QueueError/headOutOfRange(head:size:)`` for a head that is not a descriptor index.
    public mutating func addUsed(head: UInt16, length: UInt32, in memory: GuestMemory) throws(QueueError) {
        guard head < state.size else { throw .headOutOfRange(head: head, size: state.size) }
        let slot = UInt64(state.nextUsed & (state.size - 1))
        let next = state.nextUsed &+ 1
        do {
            try memory.store(UInt64(head) | UInt64(length) << 32, at: used(4 + 8 * slot))
            try memory.storeRelease(next, at: used(2))
        } catch { throw .memory(error) }
        state.nextUsed = next
        addedSinceNotification &+= 1
    }

    /// Whether the device should interrupt the driver for the used entries added since the last call.
    ///
    /// With event-idx, `vring_need_event` (virtio 1.x §2.7.10): only when `used.idx` moved past the
    /// driver's `used_event`. Without it, unless the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
    /// Nothing added means no interrupt.
    public mutating func needsNotification(in memory: GuestMemory) throws(QueueError) -> Bool {
        let added = addedSinceNotification
        addedSinceNotification = 0
        guard added > 0 else { return false }
        GuestMemory.fence()
        do {
            if state.eventIndex {
                let usedEvent: UInt16 = try memory.load(at: usedEventAddress)
                return Self.needsEvent(event: usedEvent, new: state.nextUsed, old: state.nextUsed &- added)
            }
            let flags: UInt16 = try memory.load(at: available(0))
            return flags & Self.availableNoInterrupt == 0
        } catch { throw .memory(error) }
    }

    /// `vring_need_event`: whether moving an index from `old` to `new` passed `event` (all mod 2^16).
    static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- event &- 1 < new &- old
    }

    /// Asks the driver to notify the device when it publishes more chains, before the device goes
    /// idle, and returns whether chains are already waiting (then the device pops again instead).
    ///
    /// With event-idx this writes `avail_event = nextAvailable`; without it the driver notifies
    /// anyway (this device never sets `VRING_USED_F_NO_NOTIFY`). Either way `avail.idx` is read
    /// again after a full fence, so a chain published meanwhile is never missed.
    /// - Throws: ``QueueError/availableIndexJumped(nextAvailable:availableIndex:size:)``.
    public func enableNotification(in memory: GuestMemory) throws(QueueError) -> Bool {
        if state.eventIndex {
            do { try memory.storeRelease(state.nextAvailable, at: availableEventAddress) } catch { throw .memory(error) }
        }
        GuestMemory.fence()
        return try pendingCount(in: memory) > 0
    }
}
