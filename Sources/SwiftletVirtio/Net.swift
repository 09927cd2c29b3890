import SwiftletMemory

/// Why a ``NetBackend`` failed (the message names the host call and its error). The device drops
/// the frame and counts it; the queue goes on.
public struct NetBackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed, in one line.
    public let message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// Where a ``VirtioNet`` device's frames go and come from: a TAP device or a passt stream in
/// production, arrays in tests. Every method is called on the device's thread and must not block.
public protocol NetBackend: AnyObject, Sendable {
    /// Whether frames on the backend carry the 12-byte `virtio_net_hdr_v1` (a TAP with
    /// `IFF_VNET_HDR`): then the guest's header goes out with each frame and the backend's header
    /// comes in with each one. Otherwise the device strips the guest's header and gives the guest a
    /// zeroed one (no offloads).
    var carriesHeader: Bool { get }
    /// Whether the backend takes frames with partial checksums and TSO segments, and may deliver
    /// them (only meaningful with ``carriesHeader``): the device then offers the checksum and TSO
    /// features.
    var supportsOffloads: Bool { get }
    /// Tells the backend which receive offloads the driver accepted (the guest-side feature bits,
    /// ``VirtioNet/Feature``), before any frame moves.
    func enableOffloads(guestFeatures: UInt64) throws(NetBackendError)
    /// Sends one frame made of the guest `ranges` in order (with the header first when
    /// ``carriesHeader``), whole or not at all. Returns `false` when the backend has no room now:
    /// nothing was sent, and the device tries again when the backend can take more.
    func send(_ ranges: [GuestRange], memory: GuestMemory) throws(NetBackendError) -> Bool
    /// Reads the next frame (with its header when ``carriesHeader``) into `buffer` from index
    /// `offset` on and returns its length, or `nil` when no frame is waiting. A frame longer than
    /// the room left is cut to it.
    func receive(into buffer: inout [UInt8], at offset: Int) throws(NetBackendError) -> Int?
}

/// What a ``VirtioNet`` device dropped, for logs and tests (not guest-visible).
public struct NetCounters: Equatable, Sendable {
    /// Transmit chains dropped: no header, device-writable buffers, longer than
    /// ``VirtioNet/maximumChainLength``, refused by the queue, or failed by the backend.
    public var transmitDropped = 0
    /// Received frames dropped: shorter than a header, too long for a non-mergeable buffer, or a
    /// backend error.
    public var receiveDropped = 0
    /// Receive chains returned unused (device-readable buffers, no room for the header, refused).
    public var receiveChainsRejected = 0
}

/// The virtio network device (virtio 1.x §5.1, device ID 1), as a plain state machine over a
/// receive queue (0), a transmit queue (1) and a ``NetBackend``.
///
/// Every frame on either queue is preceded by the 12-byte `virtio_net_hdr_v1`
/// `{flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset u16, num_buffers u16}`.
///
/// Behaviour:
/// - Features: ``VirtioFeature/version1``, `MAC`, `STATUS` (link always up), `MRG_RXBUF`, indirect
///   descriptors and event-idx; with a backend that ``NetBackend/supportsOffloads``, also `CSUM`,
///   `GUEST_CSUM`, `HOST_TSO4/6` and `GUEST_TSO4/6` (no UFO, no ECN). Configuration space:
///   `mac[6]`, `status u16`.
/// - Transmit: each chain is one header and one frame, device-readable only, at most
///   ``maximumChainLength`` bytes; the backend gets the guest's ranges as they are (no copy in the
///   device). A chain that breaks these rules, or that the backend fails, is dropped and counted
///   (returned with length 0). When the backend would block, the chain stays in the ring
///   (``SplitQueue/undoPop()``) and ``transmitBlocked`` says to wait until the backend can take
///   more.
/// - Receive: only while the driver has posted buffers. A frame is read into the device's own
///   buffer (one host copy: its length is only known once it is read, and with mergeable buffers
///   that length decides how many chains it takes; a TAP drops a frame read into too small a
///   buffer), then written into as many chains as it needs (`num_buffers` in the first header; one
///   chain without `MRG_RXBUF`, where a frame that does not fit is dropped). The chains are published
///   together, after the whole frame is in. When the ring runs out, the frame waits (one at most)
///   and ``receiveStarved`` says to stop reading the backend until the driver posts buffers.
/// - A chain the queue refuses (``ChainError``) is returned with length 0; a broken ring
///   (``QueueError``) is thrown: the caller sets `DEVICE_NEEDS_RESET`.
///
/// Threat model:
/// - Input: the rings, descriptors and headers written by the guest at any time; frames from the
///   backend (the outside world).
/// - Threat: a guest or a peer that makes the host trap, touch memory outside guest RAM, grow host
///   memory without bound (huge chains, frames while the guest posts no buffers), or loop
///   (a ring refilled as fast as it is drained, a backend that never runs dry).
/// - Mitigation: buffers come from checked ``DescriptorChain``s limited to ``maximumChainLength``;
///   the receive buffer is one frame of ``maximumFrameLength`` allocated once; nothing is read from
///   the backend while the ring has no buffer for it; one run moves at most one ring's worth of
///   chains and ``maximumBytesPerRun`` bytes, then reports ``QueueProgress/moreWaiting``.
public struct VirtioNet: Sendable {
    /// The virtio device ID of a network card.
    public static let deviceID: UInt32 = 1
    /// The receive and transmit queues' largest size.
    public static let queueMaximumSize: UInt16 = 256
    /// The receive queue's index.
    public static let receiveQueue = 0
    /// The transmit queue's index.
    public static let transmitQueue = 1
    /// The length of `virtio_net_hdr_v1` (with `num_buffers`, as `VIRTIO_F_VERSION_1` requires).
    public static let headerLength = 12
    /// The longest frame: 64 KiB of TSO payload plus an Ethernet and a VLAN header.
    public static let maximumFrameLength = 65536 + 14 + 4
    /// The longest transmit chain: a header and the longest frame.
    public static let maximumChainLength = UInt32(headerLength + maximumFrameLength)
    /// The bytes after which one run yields.
    public static let maximumBytesPerRun = 1 << 20
    /// The default MAC address: locally administered, unicast.
    public static let defaultMAC: [UInt8] = [0x06, 0x00, 0xac, 0x10, 0x00, 0x02]

    /// Network feature bits (virtio 1.x §5.1.3).
    public enum Feature {
        /// `VIRTIO_NET_F_CSUM`: the device takes frames with a partial checksum.
        public static let checksum: UInt64 = 1 << 0
        /// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes frames with a partial checksum.
        public static let guestChecksum: UInt64 = 1 << 1
        /// `VIRTIO_NET_F_MAC`: `mac` is valid.
        public static let mac: UInt64 = 1 << 5
        /// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCPv4 segments up to 64 KiB.
        public static let guestTSO4: UInt64 = 1 << 7
        /// `VIRTIO_NET_F_GUEST_TSO6`: the driver takes TCPv6 segments up to 64 KiB.
        public static let guestTSO6: UInt64 = 1 << 8
        /// `VIRTIO_NET_F_HOST_TSO4`: the device takes TCPv4 segments up to 64 KiB.
        public static let hostTSO4: UInt64 = 1 << 11
        /// `VIRTIO_NET_F_HOST_TSO6`: the device takes TCPv6 segments up to 64 KiB.
        public static let hostTSO6: UInt64 = 1 << 12
        /// `VIRTIO_NET_F_MRG_RXBUF`: a received frame may span several chains.
        public static let mergeableReceiveBuffers: UInt64 = 1 << 15
        /// `VIRTIO_NET_F_STATUS`: `status` is valid.
        public static let status: UInt64 = 1 << 16
        /// The checksum and TSO features, offered only when the backend supports them.
        public static let offloads = checksum | guestChecksum | guestTSO4 | guestTSO6 | hostTSO4 | hostTSO6
    }

    /// `VIRTIO_NET_S_LINK_UP` in `status`.
    public static let linkUp: UInt16 = 1

    /// What the device presents, fixed when it is attached.
    public struct Configuration: Codable, Equatable, Sendable {
        /// The MAC address (6 bytes).
        public var mac: [UInt8]
        /// Whether the checksum and TSO features are offered (the backend supports them).
        public var offloads: Bool

        /// Creates a configuration.
        public init(mac: [UInt8] = VirtioNet.defaultMAC, offloads: Bool) {
            precondition(mac.count == 6, "a MAC address has 6 bytes")
            self.mac = mac
            self.offloads = offloads
        }
    }

    /// The device's own guest-visible state: none beyond its queues' (the frame being received and
    /// the chains it holds are dropped on reset); kept for the snapshot shape every device shares.
    public struct State: Codable, Equatable, Sendable {
        /// The state of a fresh device.
        public init() {}
    }

    /// A frame read from the backend and the chains it is being written into.
    private struct Reception {
        /// The frame, header first (``headerLength`` + its length), in a buffer allocated once.
        var buffer: [UInt8] = []
        /// The frame's length with its header; 0 when none is waiting.
        var length = 0
        /// The bytes already written into `chains`.
        var placed = 0
        /// The chains holding the frame so far: head and bytes written.
        var chains: [(head: UInt16, length: UInt32)] = []
        /// The first chain's writable ranges, where `num_buffers` goes.
        var firstRanges: [GuestRange] = []
        /// Chains refused while the frame was placed, returned with length 0 after it.
        var rejected: [UInt16] = []
    }

    /// What the device presents.
    public let configuration: Configuration
    /// The device's state, for snapshots.
    public private(set) var state: State
    /// What the device dropped.
    public private(set) var counters = NetCounters()
    /// The features the driver accepted (0 until ``activate(features:)``).
    public private(set) var features: UInt64 = 0
    /// Whether the receive ring ran out of buffers: stop reading the backend until the driver
    /// notifies the receive queue.
    public private(set) var receiveStarved = false
    /// Whether a transmit chain waits for the backend to take more: watch it for room.
    public private(set) var transmitBlocked = false
    private var reception = Reception()

    /// Creates the device.
    public init(configuration: Configuration, state: State = State()) {
        self.configuration = configuration
        self.state = state
    }

    /// What the transport presents: the features and `struct virtio_net_config`'s `mac` (0–5)
    /// and `status` (6–7), little-endian.
    public var description: VirtioDeviceDescription {
        var features = VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex | Feature.mac | Feature.status
            | Feature.mergeableReceiveBuffers
        if configuration.offloads { features |= Feature.offloads }
        return VirtioDeviceDescription(deviceID: Self.deviceID, features: features,
                                       queueMaximumSizes: [Self.queueMaximumSize, Self.queueMaximumSize],
                                       configuration: configuration.mac + [UInt8(Self.linkUp), 0])
    }

    /// The driver set DRIVER_OK with `features`: starts a fresh activation (nothing held, the
    /// backend is read as soon as the driver posts buffers).
    public mutating func activate(features: UInt64) {
        self.features = features
        reception = Reception()
        reception.buffer = [UInt8](repeating: 0, count: Self.headerLength + Self.maximumFrameLength)
        receiveStarved = false
        transmitBlocked = false
    }

    /// The driver reset the device: drops the frame being received and what it holds.
    public mutating func reset() {
        features = 0
        reception = Reception()
        receiveStarved = false
        transmitBlocked = false
    }

    private var mergeable: Bool { features & Feature.mergeableReceiveBuffers != 0 }

    // MARK: Transmit

    /// Sends the frames the driver published on the transmit `queue` through `backend`.
    ///
    /// Stops when the backend would block (the chain stays in the ring, ``transmitBlocked`` is set),
    /// after one ring's worth of chains or ``maximumBytesPerRun`` bytes (``QueueProgress/moreWaiting``);
    /// otherwise re-arms the driver's notifications before returning.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET`.
    public mutating func transmit(queue: inout SplitQueue, memory: GuestMemory,
                                  backend: some NetBackend) throws(QueueError) -> QueueProgress {
        transmitBlocked = false
        var chains = 0
        var bytes = 0
        while true {
            while let head = try queue.popAvailable(in: memory) {
                guard let sent = send(head: head, queue: queue, memory: memory, backend: backend) else {
                    queue.undoPop()
                    transmitBlocked = true
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
                }
                try queue.addUsed(head: head, length: 0, in: memory)
                chains += 1
                bytes += sent
                if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
                }
            }
            guard try queue.enableNotification(in: memory) else { break }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Sends chain `head`: the bytes it carried (0 when it was dropped), or `nil` when the backend
    /// would block.
    private mutating func send(head: UInt16, queue: SplitQueue, memory: GuestMemory, backend: some NetBackend) -> Int? {
        guard let chain = try? queue.chain(head: head, in: memory, maximumLength: Self.maximumChainLength),
              chain.writableLength == 0, chain.readableLength > UInt32(Self.headerLength) else {
            counters.transmitDropped += 1
            return 0
        }
        let ranges = chain.buffers.map(\.range)
        let frame = backend.carriesHeader ? ranges
            : ChainBytes.slice(ranges, from: UInt64(Self.headerLength), count: UInt64(chain.readableLength))
        do {
            guard try backend.send(frame, memory: memory) else { return nil }
        } catch {
            counters.transmitDropped += 1
        }
        return Int(chain.readableLength)
    }

    // MARK: Receive

    /// Moves frames from `backend` into the buffers the driver posted on the receive `queue`.
    ///
    /// Reads the backend only while the ring has a buffer; when the ring runs out (a frame may be
    /// left waiting) it re-arms the driver's notifications and sets ``receiveStarved``. Stops when
    /// the backend has nothing more, or after one ring's worth of frames or ``maximumBytesPerRun``
    /// bytes (``QueueProgress/moreWaiting``).
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET`.
    public mutating func receive(queue: inout SplitQueue, memory: GuestMemory,
                                 backend: some NetBackend) throws(QueueError) -> QueueProgress {
        guard !reception.buffer.isEmpty else { return QueueProgress(interrupt: false, moreWaiting: false) }
        receiveStarved = false
        var frames = 0
        var bytes = 0
        while frames < Int(queue.state.size) && bytes < Self.maximumBytesPerRun {
            if reception.length == 0 {
                // Read only when the ring has a buffer for the frame.
                guard try queue.hasAvailable(in: memory) else {
                    if try queue.enableNotification(in: memory) { continue }
                    receiveStarved = true
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
                }
                frames += 1
                switch readFrame(backend: backend) {
                case .none:
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
                case .dropped:
                    continue
                case .frame:
                    break
                }
            }
            switch try place(queue: &queue, memory: memory) {
            case .starved:
                if try queue.enableNotification(in: memory) { continue }
                receiveStarved = true
                return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
            case .dropped:
                bytes += reception.length
                reception.length = 0
            case .placed:
                bytes += reception.length
                try publish(queue: &queue, memory: memory)
            }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
    }

    /// What reading the backend gave.
    private enum ReadResult { case frame, dropped, none }

    /// Reads the next frame into the reception buffer. A frame without a whole header and Ethernet
    /// header, or a backend error, is dropped and counted.
    private mutating func readFrame(backend: some NetBackend) -> ReadResult {
        let offset = backend.carriesHeader ? 0 : Self.headerLength
        let got: Int?
        do { got = try backend.receive(into: &reception.buffer, at: offset) } catch {
            counters.receiveDropped += 1
            return .dropped
        }
        guard let got else { return .none }
        let length = offset + got
        guard length >= Self.headerLength + 14, length <= reception.buffer.count else {
            counters.receiveDropped += 1
            return .dropped
        }
        if !backend.carriesHeader {
            for index in 0..<Self.headerLength { reception.buffer[index] = 0 }
        }
        reception.length = length
        reception.placed = 0
        return .frame
    }

    /// What placing the waiting frame gave.
    private enum PlaceResult { case placed, dropped, starved }

    /// Writes the waiting frame into chains popped from `queue` until it is all placed, or the ring
    /// runs out (the frame and the chains holding it wait). Without mergeable buffers a frame longer
    /// than the chain is dropped and the chain given back for the next one.
    private mutating func place(queue: inout SplitQueue, memory: GuestMemory) throws(QueueError) -> PlaceResult {
        while reception.placed < reception.length {
            guard let head = try queue.popAvailable(in: memory) else { return .starved }
            guard let chain = try? queue.chain(head: head, in: memory), chain.readableLength == 0,
                  reception.placed > 0 || chain.writableLength >= UInt32(Self.headerLength) else {
                counters.receiveChainsRejected += 1
                reception.rejected.append(head)
                continue
            }
            if !mergeable && Int(chain.writableLength) < reception.length {
                queue.undoPop()
                counters.receiveDropped += 1
                return .dropped
            }
            let ranges = chain.buffers.map(\.range)
            let count = min(Int(chain.writableLength), reception.length - reception.placed)
            var offset = reception.placed
            for range in ChainBytes.slice(ranges, from: 0, count: UInt64(count)) {
                // The chain was checked against this memory: a failure cannot happen.
                try? memory.write(reception.buffer[offset..<offset + Int(range.size)], at: range.start)
                offset += Int(range.size)
            }
            if reception.chains.isEmpty { reception.firstRanges = ranges }
            reception.chains.append((head, UInt32(count)))
            reception.placed += count
        }
        return .placed
    }

    /// Returns the chains of the placed frame to the driver, `num_buffers` first, then the chains
    /// refused meanwhile with length 0, and gets ready for the next frame.
    private mutating func publish(queue: inout SplitQueue, memory: GuestMemory) throws(QueueError) {
        let count = UInt16(reception.chains.count)
        let field = ChainBytes.slice(reception.firstRanges, from: UInt64(Self.headerLength - 2), count: 2)
        var bytes = [UInt8(truncatingIfNeeded: count), UInt8(truncatingIfNeeded: count >> 8)][...]
        for range in field {
            try? memory.write(bytes.prefix(Int(range.size)), at: range.start)
            bytes = bytes.dropFirst(Int(range.size))
        }
        for (head, length) in reception.chains { try queue.addUsed(head: head, length: length, in: memory) }
        for head in reception.rejected { try queue.addUsed(head: head, length: 0, in: memory) }
        reception.chains.removeAll(keepingCapacity: true)
        reception.rejected.removeAll(keepingCapacity: true)
        reception.firstRanges = []
        reception.length = 0
        reception.placed = 0
    }
}
