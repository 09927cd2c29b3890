import Testing
import SwiftletMemory
@testable import SwiftletVirtio

/// Host streams in memory: what the host side wrote for the guest (`incoming`, ended by
/// `hostClosed`), what the device wrote to the host (`outgoing`, at most `room` more bytes), and
/// what the device asked to watch.
final class MemoryVsockBackend: VsockBackend {
    struct Stream {
        var incoming: [UInt8] = []
        var hostClosed = false
        var outgoing: [UInt8] = []
        var room = Int.max
        var failing = false
        var interest: VsockEvents = []
        var closed = false
        let port: UInt32?
    }

    var streams: [Int: Stream] = [:]
    var services: Set<UInt32> = []
    private var next = 1

    func add(port: UInt32? = nil) -> Int {
        let id = next
        next += 1
        streams[id] = Stream(port: port)
        return id
    }

    func connect(port: UInt32) -> Int? { services.contains(port) ? add(port: port) : nil }

    private func take(_ stream: Int, upTo count: Int) -> (bytes: [UInt8], result: VsockIO) {
        guard var entry = streams[stream], !entry.closed, !entry.failing else { return ([], .failed) }
        guard !entry.incoming.isEmpty else { return ([], entry.hostClosed ? .moved(0) : .wouldBlock) }
        let bytes = Array(entry.incoming.prefix(count))
        entry.incoming.removeFirst(bytes.count)
        streams[stream] = entry
        return (bytes, .moved(bytes.count))
    }

    func read(_ stream: Int, into ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        let total = ranges.reduce(0) { $0 + Int($1.size) }
        let (bytes, result) = take(stream, upTo: total)
        var offset = 0
        for range in ranges where offset < bytes.count {
            let count = min(Int(range.size), bytes.count - offset)
            try! memory.write(bytes[offset..<offset + count], at: range.start)
            offset += count
        }
        return result
    }

    func read(_ stream: Int, appendingTo bytes: inout [UInt8], count: Int) -> VsockIO {
        let (taken, result) = take(stream, upTo: count)
        bytes += taken
        return result
    }

    private func put(_ stream: Int, _ bytes: [UInt8]) -> VsockIO {
        guard var entry = streams[stream], !entry.closed, !entry.failing else { return .failed }
        guard entry.room > 0 else { return .wouldBlock }
        let count = min(entry.room, bytes.count)
        entry.outgoing += bytes.prefix(count)
        if entry.room != Int.max { entry.room -= count }
        streams[stream] = entry
        return .moved(count)
    }

    func write(_ stream: Int, from ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        var bytes: [UInt8] = []
        for range in ranges { bytes += try! memory.read(count: Int(range.size), at: range.start) }
        return put(stream, bytes)
    }

    func write(_ stream: Int, bytes: ArraySlice<UInt8>) -> VsockIO { put(stream, Array(bytes)) }

    func setInterest(_ stream: Int, _ events: VsockEvents) { streams[stream]?.interest = events }

    func close(_ stream: Int) {
        precondition(streams[stream]?.closed == false, "stream \(stream) closed twice or never opened")
        streams[stream]?.closed = true
    }
}

@Suite("virtio-vsock") struct VsockTests {
    typealias Op = VsockOperation
    static let cid: UInt64 = 3
    static let rxBase: UInt64 = 0x1_0000, rxSize: UInt32 = 4096 + 44, txBuffer: UInt64 = 0x8_0000

    struct Packet: Equatable {
        var header: VsockHeader
        var payload: [UInt8]
    }

    struct Rig {
        let memory: GuestMemory
        var rx: DriverSideQueue
        var tx: DriverSideQueue
        var queues: [SplitQueue?]
        var device = VirtioVsock(state: .init(guestCID: VsockTests.cid))
        let backend = MemoryVsockBackend()
        var seen: UInt16 = 0
        var interrupts = 0

        init(rxBuffers: Int = 32) throws {
            memory = try DriverSideQueue.makeMemory()
            rx = try DriverSideQueue(memory: memory, size: 64, base: 0x1000)
            tx = try DriverSideQueue(memory: memory, size: 64, base: 0x3000)
            queues = [try rx.deviceQueue(), try tx.deviceQueue(), nil]
            try refill(rxBuffers)
        }

        /// Publishes `count` receive buffers of `size` bytes.
        mutating func refill(_ count: Int, size: UInt32 = VsockTests.rxSize) throws {
            for _ in 0..<count {
                let head = rx.availableIndex % rx.size
                _ = try rx.addChain([(VsockTests.rxBase + UInt64(head) * 0x1100, size, true)])
            }
        }

        func header(_ op: UInt16, source: UInt32 = 1000, destination: UInt32 = 6000, length: UInt32 = 0,
                    flags: UInt32 = 0, bufferAllocation: UInt32 = 1 << 20, forwardCount: UInt32 = 0,
                    type: UInt16 = VsockType.stream, sourceCID: UInt64 = VsockTests.cid) -> VsockHeader {
            VsockHeader(sourceCID: sourceCID, destinationCID: VirtioVsock.hostCID, sourcePort: source, destinationPort: destination,
                        length: length, type: type, operation: op, flags: flags, bufferAllocation: bufferAllocation,
                        forwardCount: forwardCount)
        }

        /// The guest sends raw bytes as one packet and the device serves the transmit queue.
        mutating func sendRaw(_ bytes: [UInt8], chainLength: UInt32? = nil) throws {
            try memory.write(bytes, at: GuestAddress(VsockTests.txBuffer))
            _ = try tx.addChain([(VsockTests.txBuffer, chainLength ?? UInt32(bytes.count), false)])
            let progress = try device.process(queue: VirtioVsock.transmitQueue, queues: &queues, memory: memory, backend: backend)
            if progress.interrupt { interrupts += 1 }
        }

        mutating func send(_ header: VsockHeader, payload: [UInt8] = []) throws {
            try sendRaw(header.bytes + payload)
        }

        /// The host stream `stream` became ready.
        mutating func ready(_ stream: Int, _ events: VsockEvents = .readable) throws {
            _ = try device.streamReady(stream, events: events, queues: &queues, memory: memory, backend: backend)
        }

        /// The packets the device put in the receive queue since the last call.
        mutating func received() throws -> [Packet] {
            var packets: [Packet] = []
            while seen != (try rx.usedIndex()) {
                let (id, length) = try rx.usedElement(seen)
                seen &+= 1
                guard length >= 44 else {
                    packets.append(Packet(header: VsockHeader(sourceCID: 0, destinationCID: 0, sourcePort: 0, destinationPort: 0,
                                                              operation: 0), payload: []))
                    continue
                }
                let base = GuestAddress(VsockTests.rxBase + UInt64(id) * 0x1100)
                let bytes = try memory.read(count: Int(length), at: base)
                packets.append(Packet(header: VsockHeader(bytes: bytes), payload: Array(bytes[44...])))
            }
            return packets
        }

        /// Opens a guest-initiated connection from guest port 1000 to host port 6000.
        mutating func openGuestConnection(bufferAllocation: UInt32 = 1 << 20) throws -> Int {
            backend.services.insert(6000)
            try send(header(Op.request, bufferAllocation: bufferAllocation))
            let packets = try received()
            #expect(packets.map(\.header.operation) == [Op.response])
            return backend.streams.keys.max()!
        }
    }

    @Test func presentsDeviceNineteenWithThreeQueuesAndTheGuestCID() {
        let description = VirtioVsock(state: .init(guestCID: 0x1_0000_0003)).description
        #expect(description.deviceID == 19)
        #expect(description.queueMaximumSizes == [256, 256, 256])
        #expect(description.configuration == [3, 0, 0, 0, 1, 0, 0, 0])
    }

    @Test func headerRoundTripsIn44LittleEndianBytes() {
        let header = VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 0x0102_0304, destinationPort: 5, length: 6,
                                 operation: Op.readWrite, flags: 7, bufferAllocation: 8, forwardCount: 9)
        #expect(header.bytes.count == 44)
        #expect(Array(header.bytes[16..<20]) == [4, 3, 2, 1])
        #expect(VsockHeader(bytes: header.bytes) == header)
    }

    @Test func guestInitiatedConnectionCarriesDataBothWaysAndEndsWithTheGuestsReset() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        #expect(rig.backend.streams[stream]?.port == 6000)
        #expect(rig.backend.streams[stream]?.interest == .readable)
        try rig.send(rig.header(Op.readWrite, length: 5), payload: Array("hello".utf8))
        #expect(rig.backend.streams[stream]?.outgoing == Array("hello".utf8))

        rig.backend.streams[stream]?.incoming = Array("world".utf8)
        try rig.ready(stream)
        let packets = try rig.received()
        #expect(packets.count == 1)
        #expect(packets[0].header.operation == Op.readWrite)
        #expect(packets[0].header.sourcePort == 6000 && packets[0].header.destinationPort == 1000)
        #expect(packets[0].header.destinationCID == Self.cid && packets[0].header.sourceCID == 2)
        #expect(packets[0].header.bufferAllocation == VirtioVsock.bufferSize)
        #expect(packets[0].header.forwardCount == 5)
        #expect(packets[0].payload == Array("world".utf8))

        try rig.send(rig.header(Op.reset))
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(rig.device.connectionCount == 0)
        #expect(try rig.received().isEmpty)
    }

    @Test func guestConnectionToAPortNobodyServesIsReset() throws {
        var rig = try Rig()
        try rig.send(rig.header(Op.request, destination: 7000))
        let packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.reset])
        #expect(packets[0].header.sourcePort == 7000 && packets[0].header.destinationPort == 1000)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func hostConnectReadsTheLineRequestsTheGuestAndAnswersOKWithTheLocalPort() throws {
        var rig = try Rig()
        let stream = rig.backend.add()
        rig.device.acceptHostConnection(stream, backend: rig.backend)
        #expect(rig.backend.streams[stream]?.interest == .readable)
        rig.backend.streams[stream]?.incoming = Array("CONN".utf8)
        try rig.ready(stream)
        #expect(try rig.received().isEmpty)            // half a line: waits for the rest
        rig.backend.streams[stream]?.incoming = Array("ECT 5000\nearly".utf8)
        try rig.ready(stream)
        let request = try rig.received()
        #expect(request.map(\.header.operation) == [Op.request])
        #expect(request[0].header.sourcePort == VirtioVsock.firstLocalPort && request[0].header.destinationPort == 5000)
        #expect(rig.backend.streams[stream]?.incoming == Array("early".utf8))     // not read past the line

        try rig.send(rig.header(Op.response, source: 5000, destination: VirtioVsock.firstLocalPort))
        #expect(rig.backend.streams[stream]?.outgoing == Array("OK 1073741824\n".utf8))
        try rig.ready(stream)
        let data = try rig.received()
        #expect(data.map(\.header.operation) == [Op.readWrite])
        #expect(data[0].payload == Array("early".utf8))

        // The next client gets the next port.
        let second = rig.backend.add()
        rig.device.acceptHostConnection(second, backend: rig.backend)
        rig.backend.streams[second]?.incoming = Array("connect 5000\n".utf8)
        try rig.ready(second)
        #expect(try rig.received().map(\.header.sourcePort) == [VirtioVsock.firstLocalPort + 1])
    }

    @Test(arguments: ["HELLO 5000\n", "CONNECT\n", "CONNECT x\n", "CONNECT 99999999999\n", "CONNECT 1 2\n",
                      String(repeating: "C", count: 40)])
    func aBadConnectLineClosesTheClient(line: String) throws {
        var rig = try Rig()
        let stream = rig.backend.add()
        rig.device.acceptHostConnection(stream, backend: rig.backend)
        rig.backend.streams[stream]?.incoming = Array(line.utf8)
        try rig.ready(stream)
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(try rig.received().isEmpty)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func theGuestRefusingAHostConnectionClosesTheClient() throws {
        var rig = try Rig()
        let stream = rig.backend.add()
        rig.device.acceptHostConnection(stream, backend: rig.backend)
        rig.backend.streams[stream]?.incoming = Array("CONNECT 5000\n".utf8)
        try rig.ready(stream)
        _ = try rig.received()
        try rig.send(rig.header(Op.reset, source: 5000, destination: VirtioVsock.firstLocalPort))
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(rig.backend.streams[stream]?.outgoing.isEmpty == true)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func hostDataWaitsForTheGuestsCreditAndAsksForIt() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection(bufferAllocation: 10)
        rig.backend.streams[stream]?.incoming = Array(repeating: 7, count: 25)
        try rig.ready(stream)
        var packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.readWrite, Op.creditRequest])
        #expect(packets[0].payload.count == 10)
        #expect(rig.backend.streams[stream]?.interest == [])          // not read while there is no credit
        // The guest consumed 10 bytes.
        try rig.send(rig.header(Op.creditUpdate, bufferAllocation: 10, forwardCount: 10))
        packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.readWrite, Op.creditRequest])
        #expect(packets[0].payload.count == 10)
        try rig.send(rig.header(Op.creditUpdate, bufferAllocation: 10, forwardCount: 20))
        packets = try rig.received()
        #expect(packets.map(\.payload.count) == [5])
        #expect(rig.backend.streams[stream]?.interest == .readable)
    }

    @Test func aSlowHostReaderIsBufferedUpToTheCreditAndAGuestBeyondItIsReset() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        rig.backend.streams[stream]?.room = 0
        let chunk = [UInt8](repeating: 1, count: Int(VirtioVsock.maximumPayload))
        for _ in 0..<Int(VirtioVsock.bufferSize / VirtioVsock.maximumPayload) {       // the whole credit
            try rig.send(rig.header(Op.readWrite, length: UInt32(chunk.count)), payload: chunk)
        }
        #expect(rig.backend.streams[stream]?.closed == false)
        #expect(rig.backend.streams[stream]?.interest.contains(.writable) == true)
        // The host takes some; the guest has not been told, so its credit is still used up.
        rig.backend.streams[stream]?.room = 1000
        try rig.ready(stream, .writable)
        #expect(rig.backend.streams[stream]?.outgoing.count == 1000)
        try rig.send(rig.header(Op.readWrite, length: 1), payload: [2])
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        #expect(rig.device.connectionCount == 0)
    }

    @Test func forwardingTheThresholdSendsACreditUpdate() throws {
        var rig = try Rig()
        _ = try rig.openGuestConnection()
        let chunk = [UInt8](repeating: 1, count: Int(VirtioVsock.maximumPayload))
        let chunks = Int(VirtioVsock.creditUpdateThreshold / VirtioVsock.maximumPayload)
        for _ in 1..<chunks {
            try rig.send(rig.header(Op.readWrite, length: UInt32(chunk.count)), payload: chunk)
            #expect(try rig.received().isEmpty, "a credit update before the threshold")
        }
        try rig.send(rig.header(Op.readWrite, length: UInt32(chunk.count)), payload: chunk)
        let packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.creditUpdate])
        #expect(packets[0].header.forwardCount == VirtioVsock.creditUpdateThreshold)
        try rig.send(rig.header(Op.creditRequest))
        #expect(try rig.received().map(\.header.operation) == [Op.creditUpdate])
    }

    @Test func theHostClosingSendsShutdownAndTheGuestsResetEndsIt() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        rig.backend.streams[stream]?.hostClosed = true
        try rig.ready(stream)
        let packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.shutdown])
        #expect(packets[0].header.flags == VsockShutdown.receive | VsockShutdown.send)
        #expect(rig.device.connectionCount == 1)
        try rig.send(rig.header(Op.reset))
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func theGuestShuttingDownIsResetOnceItsBytesReachedTheHost() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        rig.backend.streams[stream]?.room = 2
        try rig.send(rig.header(Op.readWrite, length: 4), payload: [1, 2, 3, 4])
        try rig.send(rig.header(Op.shutdown, flags: VsockShutdown.receive | VsockShutdown.send))
        #expect(try rig.received().isEmpty)
        rig.backend.streams[stream]?.room = 10
        try rig.ready(stream, .writable)
        #expect(rig.backend.streams[stream]?.outgoing == [1, 2, 3, 4])
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        #expect(rig.device.connectionCount == 0)
    }

    @Test func aFailingHostStreamResetsTheConnection() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        rig.backend.streams[stream]?.failing = true
        try rig.send(rig.header(Op.readWrite, length: 1), payload: [1])
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        #expect(rig.backend.streams[stream]?.closed == true)
    }

    // MARK: Hostile guests

    @Test func packetsNotFromTheGuestOrNotForTheHostAreDropped() throws {
        var rig = try Rig()
        rig.backend.services.insert(6000)
        try rig.send(rig.header(Op.request, sourceCID: 7))
        var wrongDestination = rig.header(Op.request)
        wrongDestination.destinationCID = 5
        try rig.send(wrongDestination)
        #expect(try rig.received().isEmpty)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func shortHeadersAndOversizeChainsAreConsumedWithoutAnswer() throws {
        var rig = try Rig()
        rig.backend.services.insert(6000)
        try rig.sendRaw(Array(rig.header(Op.request).bytes.prefix(43)))
        try rig.sendRaw(rig.header(Op.request).bytes, chainLength: 44 + VirtioVsock.maximumPayload + 1)
        #expect(try rig.tx.usedIndex() == 2)
        #expect(try rig.received().isEmpty)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func seqpacketIsRefused() throws {
        var rig = try Rig()
        rig.backend.services.insert(6000)
        try rig.send(rig.header(Op.request, type: VsockType.sequencedPacket))
        let packets = try rig.received()
        #expect(packets.map(\.header.operation) == [Op.reset])
        #expect(packets[0].header.type == VsockType.sequencedPacket)
        #expect(rig.device.connectionCount == 0)
    }

    @Test(arguments: [Op.readWrite, Op.shutdown, Op.creditUpdate, Op.creditRequest, Op.response, 0, 99])
    func packetsForNoConnectionAreReset(op: UInt16) throws {
        var rig = try Rig()
        try rig.send(rig.header(op))
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        try rig.send(rig.header(Op.reset))
        #expect(try rig.received().isEmpty)            // a reset is never answered
    }

    @Test(arguments: [UInt16(0), 99, Op.request, Op.response])
    func anUnknownOrOutOfTurnOperationResetsTheConnection(op: UInt16) throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        try rig.send(rig.header(op))
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(rig.device.connectionCount == 0)
    }

    @Test(arguments: [UInt32(6), 0xffff_ffff, VirtioVsock.maximumPayload + 1])
    func aLengthBeyondThePayloadResetsTheConnection(length: UInt32) throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        try rig.send(rig.header(Op.readWrite, length: length), payload: [1, 2, 3, 4, 5])
        #expect(try rig.received().map(\.header.operation) == [Op.reset])
        #expect(rig.backend.streams[stream]?.outgoing.isEmpty == true)
        #expect(rig.backend.streams[stream]?.closed == true)
    }

    @Test func connectionsBeyondTheCapAreRefused() throws {
        var rig = try Rig(rxBuffers: 0)
        rig.backend.services.insert(6000)
        for port in 0..<UInt32(VirtioVsock.maximumConnections + 1) {
            try rig.send(rig.header(Op.request, source: 10_000 + port))
            try rig.refill(1)
            _ = try rig.received()
        }
        #expect(rig.device.connectionCount == VirtioVsock.maximumConnections)
        #expect(rig.backend.streams.count == VirtioVsock.maximumConnections)
        // A host client is refused too.
        let client = rig.backend.add()
        rig.device.acceptHostConnection(client, backend: rig.backend)
        #expect(rig.backend.streams[client]?.closed == true)
    }

    @Test func answersWaitingForReceiveBuffersHoldTheTransmitQueueBack() throws {
        var rig = try Rig(rxBuffers: 0)
        for port in 0..<UInt32(100) {
            try rig.memory.write(rig.header(Op.readWrite, source: port).bytes, at: GuestAddress(Self.txBuffer + UInt64(port) * 64))
        }
        // 63 chains at once (the ring holds 64), all for no connection.
        for port in 0..<UInt64(63) { _ = try rig.tx.addChain([(Self.txBuffer + port * 64, 44, false)]) }
        _ = try rig.device.process(queue: VirtioVsock.transmitQueue, queues: &rig.queues, memory: rig.memory, backend: rig.backend)
        #expect(try rig.tx.usedIndex() == 63)
        for port in 63..<UInt64(100) { _ = try rig.tx.addChain([(Self.txBuffer + port * 64, 44, false)]) }
        _ = try rig.device.process(queue: VirtioVsock.transmitQueue, queues: &rig.queues, memory: rig.memory, backend: rig.backend)
        #expect(try rig.tx.usedIndex() == UInt16(VirtioVsock.maximumStrayResets))
        // Receive buffers come: the answers go out and the transmit queue resumes.
        try rig.refill(64)
        let progress = try rig.device.process(queue: VirtioVsock.receiveQueue, queues: &rig.queues, memory: rig.memory,
                                              backend: rig.backend)
        #expect(progress.moreWaiting)
        _ = try rig.device.process(queue: VirtioVsock.receiveQueue, queues: &rig.queues, memory: rig.memory, backend: rig.backend)
        #expect(try rig.tx.usedIndex() == 100)
        #expect(try rig.received().count == 64)
    }

    @Test func tinyReceiveBuffersAreReturnedEmpty() throws {
        var rig = try Rig(rxBuffers: 0)
        try rig.refill(2, size: 43)
        try rig.send(rig.header(Op.readWrite))
        let packets = try rig.received()
        #expect(packets.count == 2 && packets.allSatisfy { $0.header.operation == 0 })
    }

    @Test func resetClosesEveryHostStream() throws {
        var rig = try Rig()
        let stream = try rig.openGuestConnection()
        let pending = rig.backend.add()
        rig.device.acceptHostConnection(pending, backend: rig.backend)
        rig.device.reset(backend: rig.backend)
        #expect(rig.backend.streams[stream]?.closed == true)
        #expect(rig.backend.streams[pending]?.closed == true)
        #expect(rig.device.connectionCount == 0)
    }
}
