import Synchronization
import Testing
import SwiftletCore
import SwiftletMemory
@testable import SwiftletVirtio

/// The console's in-memory output: keeps what it takes, up to a capacity the test sets and drains.
final class MemoryConsoleSink: OutputSink {
    private let state: Mutex<(bytes: [UInt8], capacity: Int)>

    init(capacity: Int = .max) { state = Mutex(([], capacity)) }

    /// Everything taken so far.
    var bytes: [UInt8] { state.withLock { $0.bytes } }
    /// Empties the sink (a reader took the bytes) and sets its capacity.
    func drain(capacity: Int) { state.withLock { $0 = ([], capacity) } }

    var room: Int { state.withLock { $0.capacity == .max ? .max : max(0, $0.capacity - $0.bytes.count) } }

    func write(_ byte: UInt8) -> Bool { write(contentsOf: [byte]) == 1 }

    func write(contentsOf bytes: [UInt8]) -> Int {
        state.withLock { state in
            let taken = state.capacity == .max ? bytes.count : min(bytes.count, max(0, state.capacity - state.bytes.count))
            state.bytes += bytes.prefix(taken)
            return taken
        }
    }
}

/// The console's in-memory input: bytes the test queues.
final class MemoryConsoleSource: InputSource {
    private let queue: Mutex<[UInt8]>

    init(_ bytes: [UInt8] = []) { queue = Mutex(bytes) }

    /// Queues more input.
    func add(_ bytes: [UInt8]) { queue.withLock { $0 += bytes } }
    /// The bytes not taken yet.
    var waiting: [UInt8] { queue.withLock { $0 } }

    var isEmpty: Bool { queue.withLock { $0.isEmpty } }

    func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
        let taken = queue.withLock { queue -> [UInt8] in
            let taken = Array(queue.prefix(max(0, limit)))
            queue.removeFirst(taken.count)
            return taken
        }
        taken.forEach(body)
        return taken.count
    }
}

@Suite("virtio-console") struct ConsoleTests {
    typealias Driver = DriverSideQueue

    /// Receive queue at 0x1000, transmit queue at 0x4000, both of size 8.
    struct Rings {
        let memory: GuestMemory
        var receive: Driver
        var transmit: Driver
        var receiveQueue: SplitQueue
        var transmitQueue: SplitQueue

        init(eventIndex: Bool = false, indirect: Bool = false) throws {
            memory = try Driver.makeMemory()
            receive = try Driver(memory: memory, size: 8, base: 0x1000)
            transmit = try Driver(memory: memory, size: 8, base: 0x4000)
            receiveQueue = try receive.deviceQueue(eventIndex: eventIndex, indirect: indirect)
            transmitQueue = try transmit.deviceQueue(eventIndex: eventIndex, indirect: indirect)
        }

        /// Writes `text` at `address` and returns its (address, length, readable) buffer.
        func text(_ text: String, at address: UInt64) throws -> (UInt64, UInt32, Bool) {
            try memory.write(Array(text.utf8), at: GuestAddress(address))
            return (address, UInt32(text.utf8.count), false)
        }
    }

    @Test func describesAConsoleWithTwoQueuesAndTheSizeWhenKnown() {
        let plain = VirtioConsole().description
        #expect(plain.deviceID == 3)
        #expect(plain.queueMaximumSizes == [256, 256])
        #expect(plain.features == VirtioFeature.version1 | VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex)
        #expect(plain.configuration == [UInt8](repeating: 0, count: 12))
        let sized = VirtioConsole(windowSize: .init(columns: 0x0150, rows: 50)).description
        #expect(sized.features & VirtioConsole.Feature.size != 0)
        #expect(sized.features & (1 << 1) == 0)          // no MULTIPORT
        #expect(Array(sized.configuration.prefix(4)) == [0x50, 0x01, 50, 0])
    }

    @Test func sendsTransmitChainsInOrder() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let sink = MemoryConsoleSink()
        let first = try rings.transmit.addChain([try rings.text("hello, ", at: 0x8_0000)])
        let second = try rings.transmit.addChain([try rings.text("wor", at: 0x8_1000), try rings.text("ld\n", at: 0x8_2000)])
        let progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(progress == QueueProgress(interrupt: true, moreWaiting: false))
        #expect(sink.bytes == Array("hello, world\n".utf8))
        #expect(try rings.transmit.usedIndex() == 2)
        #expect(try rings.transmit.usedElement(0) == (UInt32(first), 0))
        #expect(try rings.transmit.usedElement(1) == (UInt32(second), 0))
        #expect(device.state.transmitting == nil)
    }

    @Test func aFullSinkHoldsTheGuestBackAndResumesWhereItStopped() throws {
        var rings = try Rings(eventIndex: true)
        var device = VirtioConsole()
        let sink = MemoryConsoleSink(capacity: 5)
        let first = try rings.transmit.addChain([try rings.text("abc", at: 0x8_0000), try rings.text("defgh", at: 0x8_1000)])
        let second = try rings.transmit.addChain([try rings.text("ij", at: 0x8_2000)])
        // Room for 5 of the first chain's 8 bytes: it stays with the device, nothing is returned,
        // and the second chain is not taken.
        var progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(progress == QueueProgress(interrupt: false, moreWaiting: false))
        #expect(sink.bytes == Array("abcde".utf8))
        #expect(try rings.transmit.usedIndex() == 0)
        #expect(device.state.transmitting == VirtioConsole.PendingChain(head: first, sent: 5))
        #expect(rings.transmitQueue.state.nextAvailable == 1)
        // Still full: a notification changes nothing.
        progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(progress == QueueProgress(interrupt: false, moreWaiting: false))
        #expect(rings.transmitQueue.state.nextAvailable == 1)
        // Room for 4: the first chain completes, the second waits after one byte.
        sink.drain(capacity: 4)
        progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(sink.bytes == Array("fghi".utf8))
        #expect(try rings.transmit.usedIndex() == 1)
        #expect(try rings.transmit.usedElement(0) == (UInt32(first), 0))
        #expect(device.state.transmitting == VirtioConsole.PendingChain(head: second, sent: 1))
        sink.drain(capacity: .max)
        progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(sink.bytes == Array("j".utf8))
        #expect(try rings.transmit.usedIndex() == 2)
        #expect(device.state.transmitting == nil)
        #expect(try rings.transmit.availableEvent() == 2)      // notifications re-armed once idle
    }

    @Test func resetForgetsTheChainBeingSent() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        _ = try rings.transmit.addChain([try rings.text("abc", at: 0x8_0000)])
        _ = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: MemoryConsoleSink(capacity: 1))
        #expect(device.state.transmitting != nil)
        device.reset()
        #expect(device.state == VirtioConsole.State())
    }

    @Test func outputIsBoundedPerRun() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let sink = MemoryConsoleSink()
        // Eight chains of 64 KiB each: 512 KiB, under the run's 1 MiB budget but a full ring.
        for index in 0..<8 {
            _ = try rings.transmit.addChain([(0x1_0000 + UInt64(index) * 0x1000, VirtioConsole.maximumChainLength, false)])
        }
        let progress = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(progress.moreWaiting)
        #expect(sink.bytes.count == 8 * Int(VirtioConsole.maximumChainLength))
    }

    @Test func fillsReceiveBuffersWithWaitingInput() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let source = MemoryConsoleSource(Array("ls -l\n".utf8))
        let first = try rings.receive.addChain([(0x8_0000, 4, true)])
        let second = try rings.receive.addChain([(0x8_1000, 1, true), (0x8_2000, 16, true)])
        let third = try rings.receive.addChain([(0x8_3000, 16, true)])
        let progress = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(progress == QueueProgress(interrupt: true, moreWaiting: false))
        #expect(try rings.receive.usedIndex() == 2)
        #expect(try rings.receive.usedElement(0) == (UInt32(first), 4))
        #expect(try rings.receive.usedElement(1) == (UInt32(second), 2))
        #expect(try rings.memory.read(count: 4, at: GuestAddress(0x8_0000)) == Array("ls -".utf8))
        #expect(try rings.memory.read(count: 1, at: GuestAddress(0x8_1000)) == Array("l".utf8))
        #expect(try rings.memory.read(count: 2, at: GuestAddress(0x8_2000)) == Array("\n\0".utf8))
        // The third buffer stays posted for the next input.
        source.add(Array("x".utf8))
        _ = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(try rings.receive.usedElement(2) == (UInt32(third), 1))
        #expect(source.isEmpty)
    }

    @Test func inputWaitsInTheSourceUntilTheDriverPostsBuffers() throws {
        var rings = try Rings(eventIndex: true)
        var device = VirtioConsole()
        let source = MemoryConsoleSource(Array("typed early".utf8))
        let progress = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(progress == QueueProgress(interrupt: false, moreWaiting: false))
        #expect(source.waiting == Array("typed early".utf8))
        #expect(try rings.receive.availableEvent() == 0)     // "notify me when you post one"
        _ = try rings.receive.addChain([(0x8_0000, 64, true)])
        _ = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(try rings.memory.read(count: 11, at: GuestAddress(0x8_0000)) == Array("typed early".utf8))
        #expect(source.isEmpty)
    }

    @Test func nothingToReceiveLeavesPostedBuffersAlone() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        _ = try rings.receive.addChain([(0x8_0000, 64, true)])
        let progress = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: MemoryConsoleSource())
        #expect(progress == QueueProgress(interrupt: false, moreWaiting: false))
        #expect(rings.receiveQueue.state.nextAvailable == 0)
    }

    // MARK: Malicious rings

    @Test func transmitChainsWithWritableBuffersAreReturnedUnsent() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let sink = MemoryConsoleSink()
        let writable = try rings.transmit.addChain([try rings.text("secret", at: 0x8_0000), (0x8_1000, 16, true)])
        let good = try rings.transmit.addChain([try rings.text("ok", at: 0x8_2000)])
        _ = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(sink.bytes == Array("ok".utf8))
        #expect(try rings.transmit.usedElement(0) == (UInt32(writable), 0))
        #expect(try rings.transmit.usedElement(1) == (UInt32(good), 0))
        #expect(try rings.memory.read(count: 4, at: GuestAddress(0x8_1000)) == [0, 0, 0, 0])
    }

    @Test func receiveChainsWithReadableBuffersTakeNoInput() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let source = MemoryConsoleSource(Array("abc".utf8))
        let readable = try rings.receive.addChain([(0x8_0000, 16, false), (0x8_1000, 16, true)])
        let good = try rings.receive.addChain([(0x8_2000, 16, true)])
        _ = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(try rings.receive.usedElement(0) == (UInt32(readable), 0))
        #expect(try rings.receive.usedElement(1) == (UInt32(good), 3))
        #expect(try rings.memory.read(count: 3, at: GuestAddress(0x8_2000)) == Array("abc".utf8))
        #expect(try rings.memory.read(count: 1, at: GuestAddress(0x8_1000)) == [0])
    }

    @Test func oversizeAndOutOfRAMChainsAreRefusedOnBothQueues() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let sink = MemoryConsoleSink()
        let source = MemoryConsoleSource(Array("input".utf8))
        let tooLong = VirtioConsole.maximumChainLength + 1
        let hugeOut = try rings.transmit.addChain([(0x1_0000, tooLong, false)])
        let outside = try rings.transmit.addChain([(0xFFFF_0000, 16, false)])
        let wraps = try rings.transmit.addChain([(UInt64.max - 7, 16, false)])
        _ = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(sink.bytes.isEmpty)
        #expect(try rings.transmit.usedIndex() == 3)
        for (slot, head) in [hugeOut, outside, wraps].enumerated() {
            #expect(try rings.transmit.usedElement(UInt16(slot)) == (UInt32(head), 0))
        }
        let hugeIn = try rings.receive.addChain([(0x1_0000, tooLong, true)])
        let good = try rings.receive.addChain([(0x8_0000, 16, true)])
        _ = try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: source)
        #expect(try rings.receive.usedElement(0) == (UInt32(hugeIn), 0))
        #expect(try rings.receive.usedElement(1) == (UInt32(good), 5))
    }

    @Test func aChainChangedWhileKeptIsCheckedAgain() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        let sink = MemoryConsoleSink(capacity: 2)
        let head = try rings.transmit.addChain([try rings.text("abcdef", at: 0x8_0000)])
        _ = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(device.state.transmitting == VirtioConsole.PendingChain(head: head, sent: 2))
        // The guest points the chain it gave away outside RAM: it is returned, unsent.
        try rings.transmit.writeDescriptor(head, address: 0xFFFF_0000, length: 6)
        sink.drain(capacity: .max)
        _ = try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: sink)
        #expect(sink.bytes.isEmpty)
        #expect(try rings.transmit.usedElement(0) == (UInt32(head), 0))
        #expect(device.state.transmitting == nil)
    }

    @Test func brokenRingsAreThrown() throws {
        var rings = try Rings()
        var device = VirtioConsole()
        try rings.transmit.setAvailableIndex(100)
        #expect(throws: QueueError.self) {
            try device.processTransmit(queue: &rings.transmitQueue, memory: rings.memory, sink: MemoryConsoleSink())
        }
        try rings.receive.setAvailableIndex(1)
        try rings.memory.store(UInt16(9), at: GuestAddress(rings.receive.availableRing.rawValue + 4))   // head 9 of 8
        #expect(throws: QueueError.headOutOfRange(head: 9, size: 8)) {
            try device.processReceive(queue: &rings.receiveQueue, memory: rings.memory, source: MemoryConsoleSource([1]))
        }
    }
}
