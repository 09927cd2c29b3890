import SwiftletCore
import SwiftletMemory

/// What a ``VsockBackend`` stream operation did.
public enum VsockIO: Equatable, Sendable {
    /// This many bytes moved; 0 from a read is the end of the stream.
    case moved(Int)
    /// Nothing can move now (the non-blocking stream is empty, or full).
    case wouldBlock
    /// The stream failed (reset, broken pipe): the connection is reset.
    case failed
}

/// Readiness of a host stream, and what the device wants to hear about.
public struct VsockEvents: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Data (or the end of the stream) to read.
    public static let readable = VsockEvents(rawValue: 1)
    /// Room to write.
    public static let writable = VsockEvents(rawValue: 2)
    /// An error or hang-up (reported, never asked for).
    public static let closed = VsockEvents(rawValue: 4)
}

/// The host side of a ``VirtioVsock`` device: host streams named by small integers, all
/// non-blocking. Production: Unix sockets on the event loop (Firecracker's hybrid model); tests:
/// in-memory pipes.
///
/// The device tells the backend which events it wants per stream (``setInterest(_:_:)``); with no
/// interest the backend stops watching the stream entirely, so a hung-up stream the device is not
/// reading cannot make the loop spin. The backend reports events through
/// ``VirtioVsock/streamReady(_:events:queues:memory:backend:)`` and new host-initiated streams through
/// ``VirtioVsock/acceptHostConnection(_:backend:)``.
public protocol VsockBackend: AnyObject {
    /// Opens a stream to the host service for a guest connection to host port `port`
    /// (`<path>_<port>`, connected without blocking), or `nil` if none answers now.
    func connect(port: UInt32) -> Int?
    /// Reads from `stream` straight into the guest `ranges`.
    func read(_ stream: Int, into ranges: [GuestRange], memory: GuestMemory) -> VsockIO
    /// Reads at most `count` bytes from `stream`, appending them to `bytes`.
    func read(_ stream: Int, appendingTo bytes: inout [UInt8], count: Int) -> VsockIO
    /// Writes the guest `ranges` to `stream` (possibly only a prefix).
    func write(_ stream: Int, from ranges: [GuestRange], memory: GuestMemory) -> VsockIO
    /// Writes `bytes` to `stream` (possibly only a prefix).
    func write(_ stream: Int, bytes: ArraySlice<UInt8>) -> VsockIO
    /// Watches `stream` for `events` only (none: not at all).
    func setInterest(_ stream: Int, _ events: VsockEvents)
    /// Stops watching and closes `stream`; the device never names it again.
    func close(_ stream: Int)
}

/// The virtio socket device (virtio 1.x §5.10, device ID 19) in Firecracker's hybrid model: the
/// guest's `AF_VSOCK` stream sockets reach host streams through the muxer here, which runs every
/// connection's state machine and credit-based flow control.
///
/// Queues: receive (0, device→guest packets), transmit (1, guest→device packets), event (2: the
/// device never uses it; `TRANSPORT_RESET` matters only to a guest whose device state was replaced
/// behind its back, a snapshot restore, while a device reset is the driver's own doing and it drops
/// its connections itself). Configuration space: `guest_cid` (u64). No feature bits beyond the ring
/// ones: stream sockets only (`SEQPACKET` is not offered, and such packets get `RST`).
///
/// Behaviour:
/// - Host-initiated (Firecracker's protocol): a host client connected to the Unix socket writes
///   `CONNECT <port>\n` (at most ``connectLineLimit`` bytes, read without blocking; anything else
///   closes it). The device picks a local port (``firstLocalPort`` on, as Firecracker numbers them),
///   sends `REQUEST` to the guest's port, and on `RESPONSE` writes `OK <local port>\n` to the client,
///   then the stream; on `RST` it closes the client.
/// - Guest-initiated: a `REQUEST` to host port P connects to the host service for P
///   (``VsockBackend/connect(port:)``); `RESPONSE` if it answered, `RST` if not.
/// - Established: `RW` payloads go to the host stream, host bytes come back as `RW` within the
///   guest's credit (`buf_alloc - (sent - fwd_cnt)`); without credit the device asks for it
///   (`CREDIT_REQUEST`) once and stops reading the host stream. It tells the guest its own credit
///   (`buf_alloc` = ``bufferSize``, `fwd_cnt` = bytes the host took) on every packet, and by
///   `CREDIT_UPDATE` when asked or when ``creditUpdateThreshold`` bytes have been forwarded since it last did.
/// - Closing (as Firecracker): the host stream's end sends `SHUTDOWN` (both directions) and waits
///   for the guest's `RST`; a guest `SHUTDOWN` of both directions is answered with `RST` once its
///   buffered bytes reached the host; a guest `RST` closes the host stream.
///
/// Threat model:
/// - Input: the three rings and every packet header and payload, written by the guest at any time;
///   host clients (anything that can reach the Unix socket) and host services.
/// - Threat: a guest or host client that makes the host allocate without bound (unread data,
///   endless connections, unanswered packets), block or spin the event loop, or trap on lengths.
/// - Mitigation: host streams are non-blocking and watched only while the device can use them; a
///   connection buffers at most ``bufferSize`` bytes for a slow host reader, exactly the credit it
///   advertised, and a guest that sends beyond its credit gets `RST`; at most
///   ``maximumConnections`` connections (more are refused: `RST` to the guest, closed to a host
///   client), ``maximumPendingConnects`` host clients still writing their `CONNECT` line and
///   ``maximumStrayResets`` queued answers to packets for no connection (the transmit queue waits
///   while they are full); headers are read once into a value and every length is checked against
///   the chain; one run serves at most one ring's worth of chains per queue.
public struct VirtioVsock: Sendable {
    /// The virtio device ID of a socket device.
    public static let deviceID: UInt32 = 19
    /// The host's CID.
    public static let hostCID: UInt64 = 2
    /// The queues.
    public static let receiveQueue = 0, transmitQueue = 1, eventQueue = 2
    /// Every queue's largest size.
    public static let queueMaximumSize: UInt16 = 256
    /// Each connection's buffer for bytes the host has not taken yet, advertised as `buf_alloc`
    /// (Firecracker's `CONN_TX_BUF_SIZE`).
    public static let bufferSize: UInt32 = 256 << 10
    /// The bytes forwarded to the host since the last credit the guest heard of after which the
    /// device sends a `CREDIT_UPDATE` unasked (Firecracker's: the buffer less 64 KiB). Fewer updates
    /// mean fewer receive packets and interrupts while the guest streams to the host; the guest
    /// still has at least 64 KiB of credit when one goes out.
    public static let creditUpdateThreshold: UInt32 = bufferSize - (64 << 10)
    /// The largest payload in one packet either way (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
    public static let maximumPayload: UInt32 = 64 << 10
    /// The most connections at once.
    public static let maximumConnections = 256
    /// The most host clients that have not finished their `CONNECT` line.
    public static let maximumPendingConnects = 32
    /// The most answers (`RST`) queued for packets that belong to no connection.
    public static let maximumStrayResets = 64
    /// The longest `CONNECT <port>\n` line accepted.
    public static let connectLineLimit = 32
    /// The first local port of a host-initiated connection (Firecracker's numbering: 2^30 up, wrapping within [2^30, 2^31)).
    public static let firstLocalPort: UInt32 = 1 << 30
    /// The payload bytes after which one transmit run yields.
    public static let maximumBytesPerRun = 1 << 20

    /// The device's own guest-visible state: its connections live in host streams and are not
    /// part of it (a snapshot would reset them, as Firecracker does).
    public struct State: Codable, Equatable, Sendable {
        /// The guest's CID (`guest_cid`).
        public var guestCID: UInt64
        /// A device for the guest CID `guestCID`.
        public init(guestCID: UInt64) { self.guestCID = guestCID }
    }

    /// Identifies a connection: the host side's port and the guest's port.
    struct Key: Hashable, Sendable {
        let local: UInt32
        let peer: UInt32
    }

    /// Packets a connection owes the guest (besides data and `RST`).
    struct Owed: OptionSet, Sendable {
        let rawValue: UInt8
        static let request = Owed(rawValue: 1)
        static let response = Owed(rawValue: 2)
        static let creditUpdate = Owed(rawValue: 4)
    }

    /// One connection's state machine.
    struct Connection: Sendable {
        enum Phase: Equatable, Sendable {
            /// Host-initiated: `REQUEST` sent or owed, waiting for the guest's `RESPONSE`.
            case connecting
            case established
            /// The guest shut down receiving and/or sending.
            case peerClosed(receive: Bool, send: Bool)
            /// The host stream ended; `SHUTDOWN` sent, waiting for the guest's `RST`.
            case localClosed
            /// The host stream is closed; `RST` owed to the guest, then the connection goes.
            case resetting
            /// The guest reset it: the host stream is closed and the connection goes now.
            case gone
        }

        let stream: Int
        var phase: Phase
        var owed: Owed
        /// The host stream reported data (or its end) that the device has not read yet.
        var hostDataReady = false
        /// What the backend watches the stream for.
        var interest: VsockEvents = []
        /// Whether the connection is in the delivery order.
        var queued = false
        var peerBufferAllocation: UInt32 = 0
        var peerForwardCount: UInt32 = 0
        /// Payload bytes sent to the guest (`rx_cnt`).
        var sentCount: UInt32 = 0
        /// Payload bytes received from the guest.
        var receivedCount: UInt32 = 0
        /// Of those, bytes the host stream took (`fwd_cnt`).
        var forwardCount: UInt32 = 0
        /// `fwd_cnt` as last told to the guest.
        var advertisedForwardCount: UInt32 = 0
        /// A `CREDIT_REQUEST` went out and the guest has not spoken since.
        var creditRequested = false
        /// `OK <port>\n`, still to be written before any data (host-initiated).
        var greeting: ArraySlice<UInt8> = []
        /// Guest bytes the host stream has not taken yet (allocated when first needed).
        var output: ByteRing?

        init(stream: Int, phase: Phase, owed: Owed) {
            self.stream = stream
            self.phase = phase
            self.owed = owed
        }

        /// The guest may send data.
        var guestMaySend: Bool {
            switch phase {
            case .established, .peerClosed(_, send: false): return true
            default: return false
            }
        }

        /// The device reads the host stream for the guest.
        var hostMaySend: Bool {
            switch phase {
            case .established, .peerClosed(receive: false, _): return true
            default: return false
            }
        }

        /// Bytes the guest can take now.
        var peerCredit: UInt32 {
            let inFlight = sentCount &- peerForwardCount
            return inFlight > peerBufferAllocation ? 0 : peerBufferAllocation - inFlight
        }

        var hasOutput: Bool { !greeting.isEmpty || !(output?.isEmpty ?? true) }

        /// Whether the connection has a packet for the guest.
        var wantsDelivery: Bool {
            phase == .resetting || !owed.isEmpty
                || (hostDataReady && hostMaySend && (peerCredit > 0 || !creditRequested))
        }
    }

    /// The device's state, for snapshots.
    public private(set) var state: State
    private var connections: [Key: Connection] = [:]
    private var streams: [Int: Key] = [:]
    /// Host clients still writing their `CONNECT` line, with what they wrote so far.
    private var pendingConnects: [Int: [UInt8]] = [:]
    /// Connections with a packet for the guest, in order.
    private var deliveryOrder: [Key] = []
    /// `RST` answers to packets that belong to no connection.
    private var strayResets: [VsockHeader] = []
    private var lastLocalPort = firstLocalPort - 1
    /// The transmit queue stopped because ``strayResets`` was full.
    private var transmitWaiting = false

    /// Creates the device.
    public init(state: State) { self.state = state }

    /// What the transport presents: the ring features and `guest_cid`.
    public var description: VirtioDeviceDescription {
        var space: [UInt8] = []
        for index in 0..<8 { space.append(UInt8(truncatingIfNeeded: state.guestCID >> (8 * index))) }
        return VirtioDeviceDescription(deviceID: Self.deviceID, features: VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex,
                                       queueMaximumSizes: [Self.queueMaximumSize, Self.queueMaximumSize, Self.queueMaximumSize],
                                       configuration: space)
    }

    /// The number of connections (including those owing a final `RST`).
    public var connectionCount: Int { connections.count }

    // MARK: Queues

    /// Serves the driver's notification of queue `index`: the transmit queue's packets (also when
    /// an earlier run left it waiting), then whatever the guest is owed on the receive queue.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET`.
    public mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory,
                                 backend: some VsockBackend) throws(QueueError) -> QueueProgress {
        var progress = QueueProgress(interrupt: false, moreWaiting: false)
        if index == Self.transmitQueue || transmitWaiting, Self.transmitQueue < queues.count, var queue = queues[Self.transmitQueue] {
            defer { queues[Self.transmitQueue] = queue }
            progress = try transmit(queue: &queue, memory: memory, backend: backend)
        }
        let delivered = try deliver(queues: &queues, memory: memory, backend: backend)
        return QueueProgress(interrupt: progress.interrupt || delivered.interrupt,
                             moreWaiting: progress.moreWaiting || delivered.moreWaiting)
    }

    /// Takes the guest's packets from the transmit queue.
    private mutating func transmit(queue: inout SplitQueue, memory: GuestMemory,
                                   backend: some VsockBackend) throws(QueueError) -> QueueProgress {
        var chains = 0
        var bytes = 0
        while true {
            while strayResets.count < Self.maximumStrayResets, let head = try queue.popAvailable(in: memory) {
                bytes += receive(head: head, queue: queue, memory: memory, backend: backend)
                try queue.addUsed(head: head, length: 0, in: memory)
                chains += 1
                if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
                }
            }
            if strayResets.count >= Self.maximumStrayResets {
                // Resumed once the receive queue has taken some of them.
                transmitWaiting = true
                return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
            }
            guard try queue.enableNotification(in: memory) else { break }
        }
        transmitWaiting = false
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Handles one guest packet; returns its payload bytes (for the run's budget).
    private mutating func receive(head: UInt16, queue: SplitQueue, memory: GuestMemory, backend: some VsockBackend) -> Int {
        let limit = UInt32(VsockHeader.size) + Self.maximumPayload
        guard let chain = try? queue.chain(head: head, in: memory, maximumLength: limit),
              chain.readableLength >= UInt32(VsockHeader.size) else { return 0 }
        let readable = chain.buffers.filter { !$0.isWritable }.map(\.range)
        guard let raw = try? ChainBytes.gather(readable, count: VsockHeader.size, memory: memory) else { return 0 }
        let header = VsockHeader(bytes: raw)
        // Not from this guest, or not for the host: dropped (never answered, so never amplified).
        guard header.sourceCID == state.guestCID, header.destinationCID == Self.hostCID else { return 0 }
        guard header.type == VsockType.stream else {
            if header.operation != VsockOperation.reset { refuse(header) }
            return 0
        }
        let key = Key(local: header.destinationPort, peer: header.sourcePort)
        guard var connection = connections[key] else {
            open(key, header: header, backend: backend)
            return 0
        }
        let payload = ChainBytes.slice(readable, from: UInt64(VsockHeader.size),
                                       count: UInt64(chain.readableLength) - UInt64(VsockHeader.size))
        let available = UInt64(chain.readableLength) - UInt64(VsockHeader.size)
        handle(header, payload: payload, available: available, key: key, connection: &connection, memory: memory, backend: backend)
        settle(key, connection, backend: backend)
        return header.operation == VsockOperation.readWrite ? Int(min(UInt64(header.length), available)) : 0
    }

    /// A packet for no connection: a `REQUEST` opens one; anything but `RST` is answered with `RST`.
    private mutating func open(_ key: Key, header: VsockHeader, backend: some VsockBackend) {
        switch header.operation {
        case VsockOperation.request:
            guard connections.count < Self.maximumConnections, let stream = backend.connect(port: key.local) else {
                refuse(header)
                return
            }
            var connection = Connection(stream: stream, phase: .established, owed: .response)
            connection.peerBufferAllocation = header.bufferAllocation
            connection.peerForwardCount = header.forwardCount
            streams[stream] = key
            settle(key, connection, backend: backend)
        case VsockOperation.reset:
            break
        default:
            refuse(header)
        }
    }

    /// Queues an `RST` answering `header` (the caller made sure there is room).
    private mutating func refuse(_ header: VsockHeader) {
        guard strayResets.count < Self.maximumStrayResets else { return }
        strayResets.append(VsockHeader(sourceCID: Self.hostCID, destinationCID: state.guestCID,
                                       sourcePort: header.destinationPort, destinationPort: header.sourcePort,
                                       type: header.type, operation: VsockOperation.reset))
    }

    /// Fills the receive queue with what the guest is owed: answers to stray packets first, then one
    /// packet per connection in turn.
    private mutating func deliver(queues: inout [SplitQueue?], memory: GuestMemory,
                                  backend: some VsockBackend) throws(QueueError) -> QueueProgress {
        guard Self.receiveQueue < queues.count, var queue = queues[Self.receiveQueue] else {
            return QueueProgress(interrupt: false, moreWaiting: false)
        }
        defer { queues[Self.receiveQueue] = queue }
        var chains = 0
        while !strayResets.isEmpty || nextDelivery() != nil {
            guard chains < Int(queue.state.size) else {
                return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
            }
            guard let head = try queue.popAvailable(in: memory) else {
                // No buffer: the driver notifies the receive queue when it adds some.
                guard try queue.enableNotification(in: memory) else { break }
                continue
            }
            chains += 1
            let length = fill(head: head, queue: queue, memory: memory, backend: backend)
            try queue.addUsed(head: head, length: length, in: memory)
        }
        let resume = transmitWaiting && strayResets.count < Self.maximumStrayResets
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: resume)
    }

    /// The first connection in the delivery order that has a packet for the guest, dropping from
    /// the order those that no longer have one.
    private mutating func nextDelivery() -> Key? {
        while let key = deliveryOrder.first {
            if let connection = connections[key], connection.wantsDelivery { return key }
            deliveryOrder.removeFirst()
            connections[key]?.queued = false
        }
        return nil
    }

    /// Writes the next packet into receive chain `head`; returns the used length (0 for a chain
    /// that is refused or too small for a header, which carries nothing).
    private mutating func fill(head: UInt16, queue: SplitQueue, memory: GuestMemory, backend: some VsockBackend) -> UInt32 {
        let headerSize = UInt64(VsockHeader.size)
        guard let chain = try? queue.chain(head: head, in: memory), chain.readableLength == 0,
              UInt64(chain.writableLength) >= headerSize else { return 0 }
        let ranges = chain.buffers.map(\.range)
        if !strayResets.isEmpty {
            let reset = strayResets.removeFirst()
            return (try? ChainBytes.scatter(reset.bytes, into: ranges, memory: memory)) != nil ? UInt32(headerSize) : 0
        }
        guard let key = nextDelivery(), var connection = connections[key] else { return 0 }
        deliveryOrder.removeFirst()
        connection.queued = false
        var header = VsockHeader(sourceCID: Self.hostCID, destinationCID: state.guestCID, sourcePort: key.local,
                                 destinationPort: key.peer, operation: VsockOperation.creditUpdate)
        if connection.phase == .resetting {
            header.operation = VsockOperation.reset
            connection.phase = .gone
        } else if connection.owed.contains(.request) {
            header.operation = VsockOperation.request
            connection.owed.remove(.request)
        } else if connection.owed.contains(.response) {
            header.operation = VsockOperation.response
            connection.owed.remove(.response)
        } else if connection.hostDataReady && connection.hostMaySend && connection.peerCredit > 0 {
            let room = min(UInt64(chain.writableLength) - headerSize, UInt64(connection.peerCredit), UInt64(Self.maximumPayload))
            if room > 0 {
                switch backend.read(connection.stream, into: ChainBytes.slice(ranges, from: headerSize, count: room), memory: memory) {
                case .moved(0):
                    header.operation = VsockOperation.shutdown
                    header.flags = VsockShutdown.receive | VsockShutdown.send
                    connection.phase = .localClosed
                    connection.hostDataReady = false
                case let .moved(count):
                    let count = UInt32(min(UInt64(count), room))
                    header.operation = VsockOperation.readWrite
                    header.length = count
                    connection.sentCount &+= count
                    if UInt64(count) < room { connection.hostDataReady = false }
                case .wouldBlock:
                    connection.hostDataReady = false          // a spurious wake-up: this chain carries a credit update
                case .failed:
                    kill(&connection, backend: backend)
                    header.operation = VsockOperation.reset
                    connection.phase = .gone
                }
            }
        } else if connection.hostDataReady && connection.hostMaySend {
            header.operation = VsockOperation.creditRequest     // data waits and the guest has no room
            connection.creditRequested = true
        }
        // Every packet tells the guest our credit, so an owed update is paid here at the latest.
        header.bufferAllocation = Self.bufferSize
        header.forwardCount = connection.forwardCount
        connection.advertisedForwardCount = connection.forwardCount
        connection.owed.remove(.creditUpdate)
        settle(key, connection, backend: backend)
        guard (try? ChainBytes.scatter(header.bytes, into: ranges, memory: memory)) != nil else { return 0 }
        return UInt32(headerSize) + header.length
    }

    // MARK: Host streams

    /// A host client connected to the device's socket as `stream`: it is to write its `CONNECT` line.
    /// Closed at once when too many are already connected or waiting.
    public mutating func acceptHostConnection(_ stream: Int, backend: some VsockBackend) {
        guard pendingConnects.count < Self.maximumPendingConnects, connections.count < Self.maximumConnections else {
            backend.close(stream)
            return
        }
        pendingConnects[stream] = []
        backend.setInterest(stream, .readable)
    }

    /// Host stream `stream` is ready for `events`: reads a client's `CONNECT` line, notes data for
    /// the guest, writes buffered bytes, and fills the receive queue.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET`.
    public mutating func streamReady(_ stream: Int, events: VsockEvents, queues: inout [SplitQueue?], memory: GuestMemory,
                                     backend: some VsockBackend) throws(QueueError) -> QueueProgress {
        if pendingConnects[stream] != nil {
            readConnectLine(stream, backend: backend)
        } else if let key = streams[stream], var connection = connections[key] {
            if !events.isDisjoint(with: [.readable, .closed]) && connection.hostMaySend { connection.hostDataReady = true }
            if !events.isDisjoint(with: [.writable, .closed]) && connection.hasOutput { flush(&connection, backend: backend) }
            settle(key, connection, backend: backend)
        }
        return try process(queue: Self.receiveQueue, queues: &queues, memory: memory, backend: backend)
    }

    /// Reads a pending client's line a byte at a time (never past it: what follows is the stream).
    private mutating func readConnectLine(_ stream: Int, backend: some VsockBackend) {
        guard var line = pendingConnects.removeValue(forKey: stream) else { return }
        while true {
            switch backend.read(stream, appendingTo: &line, count: 1) {
            case .moved(let count) where count > 0:
                if line.last == UInt8(ascii: "\n") {
                    connectToGuest(stream, port: Self.parseConnect(line), backend: backend)
                    return
                }
                guard line.count < Self.connectLineLimit else {
                    backend.close(stream)
                    return
                }
            case .wouldBlock:
                pendingConnects[stream] = line
                return
            default:
                backend.close(stream)
                return
            }
        }
    }

    /// The guest port of a `CONNECT <port>\n` line (the word case-insensitive, as Firecracker), or `nil`.
    static func parseConnect(_ line: [UInt8]) -> UInt32? {
        guard let text = String(validating: line, as: UTF8.self) else { return nil }
        let words = text.split(whereSeparator: \.isWhitespace)
        guard words.count == 2, words[0].lowercased() == "connect" else { return nil }
        return UInt32(words[1])
    }

    /// Starts a host-initiated connection from `stream` to the guest's `port`: `REQUEST` next.
    private mutating func connectToGuest(_ stream: Int, port: UInt32?, backend: some VsockBackend) {
        guard let port, connections.count < Self.maximumConnections else {
            backend.close(stream)
            return
        }
        var key: Key
        repeat {
            lastLocalPort = ((lastLocalPort &+ 1) & ~(1 << 31)) | Self.firstLocalPort
            key = Key(local: lastLocalPort, peer: port)
        } while connections[key] != nil
        var connection = Connection(stream: stream, phase: .connecting, owed: .request)
        connection.interest = .readable         // as the CONNECT line left it
        streams[stream] = key
        settle(key, connection, backend: backend)
    }

    /// The driver reset the device: every host stream closes and every connection is forgotten.
    public mutating func reset(backend: some VsockBackend) {
        for connection in connections.values where connection.phase != .resetting && connection.phase != .gone {
            backend.close(connection.stream)
        }
        for stream in pendingConnects.keys { backend.close(stream) }
        self = VirtioVsock(state: state)
    }

    /// Runs `connection`'s state machine on one guest packet.
    private mutating func handle(_ header: VsockHeader, payload: [GuestRange], available: UInt64, key: Key,
                                 connection: inout Connection, memory: GuestMemory, backend: some VsockBackend) {
        guard connection.phase != .resetting else {
            // Our RST is on its way; the guest's own RST makes it unnecessary.
            if header.operation == VsockOperation.reset { connection.phase = .gone }
            return
        }
        connection.peerBufferAllocation = header.bufferAllocation
        connection.peerForwardCount = header.forwardCount
        connection.creditRequested = false
        switch header.operation {
        case VsockOperation.reset:
            kill(&connection, backend: backend)
            connection.phase = .gone
        case VsockOperation.response where connection.phase == .connecting:
            connection.phase = .established
            connection.greeting = ArraySlice("OK \(key.local)\n".utf8)
            flush(&connection, backend: backend)
        case VsockOperation.readWrite where connection.guestMaySend:
            let length = header.length
            // Bad length or beyond the credit advertised: the stream cannot be trusted any more.
            let outstanding = UInt64(connection.receivedCount &- connection.advertisedForwardCount)
            guard UInt64(length) <= available, length <= Self.maximumPayload,
                  outstanding + UInt64(length) <= UInt64(Self.bufferSize) else {
                kill(&connection, backend: backend)
                return
            }
            guard length > 0 else { return }
            connection.receivedCount &+= length
            forward(ChainBytes.slice(payload, from: 0, count: UInt64(length)), length: length, connection: &connection,
                    memory: memory, backend: backend)
        case VsockOperation.readWrite where connection.phase != .connecting:
            break        // sent before the guest saw our SHUTDOWN, or after its own: dropped, as Firecracker
        case VsockOperation.shutdown where connection.phase == .localClosed:
            kill(&connection, backend: backend)          // both sides are done
        case VsockOperation.shutdown where connection.phase != .connecting:
            var receive = header.flags & VsockShutdown.receive != 0
            var send = header.flags & VsockShutdown.send != 0
            if case let .peerClosed(oldReceive, oldSend) = connection.phase {
                receive = receive || oldReceive
                send = send || oldSend
            }
            connection.phase = .peerClosed(receive: receive, send: send)
            if receive && send && !connection.hasOutput { kill(&connection, backend: backend) }
        case VsockOperation.creditUpdate where connection.phase != .connecting:
            break        // the credit was taken from the header above
        case VsockOperation.creditRequest where connection.phase != .connecting:
            connection.owed.insert(.creditUpdate)
        default:
            // REQUEST on a live connection, RESPONSE out of turn, an unknown operation.
            kill(&connection, backend: backend)
        }
    }

    /// Sends guest bytes to the host stream, keeping what it does not take.
    private mutating func forward(_ data: [GuestRange], length: UInt32, connection: inout Connection,
                                  memory: GuestMemory, backend: some VsockBackend) {
        var rest = data
        if !connection.hasOutput {
            switch backend.write(connection.stream, from: data, memory: memory) {
            case let .moved(count):
                connection.forwardCount &+= UInt32(count)
                rest = ChainBytes.slice(data, from: UInt64(count), count: UInt64(length) - UInt64(count))
            case .wouldBlock:
                break
            case .failed:
                kill(&connection, backend: backend)
                return
            }
        }
        if !rest.isEmpty {
            var buffer = connection.output ?? ByteRing(capacity: Int(Self.bufferSize))
            for range in rest {
                // The credit check keeps this within the buffer; a failure here is a broken invariant.
                guard let bytes = try? memory.read(count: Int(range.size), at: range.start),
                      buffer.append(contentsOf: bytes) == bytes.count else {
                    kill(&connection, backend: backend)
                    return
                }
            }
            connection.output = buffer
        }
        noteForwarded(&connection)
    }

    /// Owes the guest a credit update once ``creditUpdateThreshold`` bytes have been forwarded
    /// since the last one.
    private func noteForwarded(_ connection: inout Connection) {
        if connection.forwardCount &- connection.advertisedForwardCount >= Self.creditUpdateThreshold {
            connection.owed.insert(.creditUpdate)
        }
    }

    /// Writes what the connection holds for the host stream, as far as the stream takes it.
    private mutating func flush(_ connection: inout Connection, backend: some VsockBackend) {
        while !connection.greeting.isEmpty {
            switch backend.write(connection.stream, bytes: connection.greeting) {
            case let .moved(count) where count > 0:
                connection.greeting = connection.greeting.dropFirst(count)
            case .failed:
                kill(&connection, backend: backend)
                return
            default:
                return
            }
        }
        while var buffer = connection.output, !buffer.isEmpty {
            var chunk: [UInt8] = []
            chunk.reserveCapacity(buffer.count)
            _ = buffer.peek(upTo: buffer.count) { chunk.append($0) }
            switch backend.write(connection.stream, bytes: chunk[...]) {
            case let .moved(count) where count > 0:
                buffer.discard(count)
                connection.output = buffer
                connection.forwardCount &+= UInt32(count)
                noteForwarded(&connection)
            case .failed:
                kill(&connection, backend: backend)
                return
            default:
                return
            }
        }
        if connection.phase == .peerClosed(receive: true, send: true) { kill(&connection, backend: backend) }
    }

    /// Resets the connection: the host stream closes now, the guest gets `RST` next.
    private mutating func kill(_ connection: inout Connection, backend: some VsockBackend) {
        guard connection.phase != .resetting else { return }
        backend.close(connection.stream)
        streams[connection.stream] = nil
        connection.phase = .resetting
        connection.owed = []
        connection.output = nil
        connection.greeting = []
        connection.hostDataReady = false
    }

    /// Stores `connection` back, with the backend watching what it needs and in the delivery order
    /// if it owes the guest a packet; a connection the guest reset goes.
    private mutating func settle(_ key: Key, _ connection: Connection, backend: some VsockBackend) {
        var connection = connection
        if connection.phase == .gone {
            connections[key] = nil
            if connection.queued { deliveryOrder.removeAll { $0 == key } }
            return
        }
        if connection.phase != .resetting {
            var wanted: VsockEvents = []
            if connection.hostMaySend && !connection.hostDataReady { wanted.insert(.readable) }
            if connection.hasOutput { wanted.insert(.writable) }
            if wanted != connection.interest {
                backend.setInterest(connection.stream, wanted)
                connection.interest = wanted
            }
        }
        if connection.wantsDelivery && !connection.queued {
            deliveryOrder.append(key)
            connection.queued = true
        }
        connections[key] = connection
    }
}
