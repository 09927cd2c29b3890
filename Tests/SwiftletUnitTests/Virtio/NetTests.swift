import Testing
import SwiftletMemory
@testable import SwiftletVirtio

@Suite("virtio-net") struct NetTests {
    typealias Driver = DriverSideQueue
    typealias Feature = VirtioNet.Feature

    /// A device with a receive queue at 0x1000 and a transmit queue at 0x4000 (size 16 each) over
    /// an in-memory backend; buffers live from 0x10000 on.
    struct Rig {
        let memory: GuestMemory
        var rxDriver: Driver
        var txDriver: Driver
        var rx: SplitQueue
        var tx: SplitQueue
        var device: VirtioNet
        let backend: MemoryNetBackend

        init(carriesHeader: Bool = false, offloads: Bool = false, features: UInt64 = Feature.mergeableReceiveBuffers,
             indirect: Bool = false) throws {
            memory = try Driver.makeMemory()
            rxDriver = try Driver(memory: memory, size: 16, base: 0x1000)
            txDriver = try Driver(memory: memory, size: 16, base: 0x4000)
            rx = try rxDriver.deviceQueue(indirect: indirect)
            tx = try txDriver.deviceQueue(indirect: indirect)
            backend = MemoryNetBackend(carriesHeader: carriesHeader, supportsOffloads: offloads)
            device = VirtioNet(configuration: .init(offloads: offloads))
            device.activate(features: features | VirtioFeature.version1)
        }

        mutating func transmit() throws -> QueueProgress {
            try device.transmit(queue: &tx, memory: memory, backend: backend)
        }

        mutating func receive() throws -> QueueProgress {
            try device.receive(queue: &rx, memory: memory, backend: backend)
        }

        /// Posts one receive chain of `length` writable bytes at `address`.
        mutating func postReceive(at address: UInt64, length: UInt32) throws {
            _ = try rxDriver.addChain([(address, length, true)])
        }
    }

    static func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7 + seed + 1) }
    }

    @Test func presentsMACStatusAndTheOffloadsOnlyWhenTheBackendHasThem() {
        let plain = VirtioNet(configuration: .init(mac: [2, 0, 0, 0, 0, 9], offloads: false)).description
        #expect(plain.deviceID == 1)
        #expect(plain.queueMaximumSizes == [256, 256])
        #expect(plain.configuration == [2, 0, 0, 0, 0, 9, 1, 0])
        let base = Feature.mac | Feature.status | Feature.mergeableReceiveBuffers | VirtioFeature.version1
            | VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex
        #expect(plain.features == base)
        let offloading = VirtioNet(configuration: .init(offloads: true)).description
        #expect(offloading.features == base | Feature.offloads)
        #expect(offloading.features & (1 << 10 | 1 << 14) == 0)     // no UFO
        #expect(Array(offloading.configuration.prefix(6)) == VirtioNet.defaultMAC)
    }

    @Test func transmitsHeaderAndFrameAsTheBackendWantsThem() throws {
        for carriesHeader in [false, true] {
            var rig = try Rig(carriesHeader: carriesHeader)
            let header = [UInt8](repeating: 0xaa, count: 12), frame = Self.pattern(100)
            try rig.memory.write(header, at: GuestAddress(0x10000))
            try rig.memory.write(frame, at: GuestAddress(0x11000))
            _ = try rig.txDriver.addChain([(0x10000, 12, false), (0x11000, 60, false), (0x11000 + 60, 40, false)])
            let progress = try rig.transmit()
            #expect(progress == QueueProgress(interrupt: true, moreWaiting: false))
            #expect(rig.backend.sent == [carriesHeader ? header + frame : frame])
            #expect(try rig.txDriver.usedIndex() == 1)
            #expect(try rig.txDriver.usedElement(0).length == 0)
        }
    }

    @Test func dropsTransmitChainsThatBreakTheRules() throws {
        var rig = try Rig()
        _ = try rig.txDriver.addChain([(0x10000, 12, false)])                                  // header only
        _ = try rig.txDriver.addChain([(0x10000, 8, false)])                                   // short header
        _ = try rig.txDriver.addChain([(0x10000, 60, false), (0x20000, 10, true)])             // writable buffer
        _ = try rig.txDriver.addChain([(0x10000, VirtioNet.maximumChainLength + 1, false)])    // oversize
        _ = try rig.txDriver.addChain([(0x10000, 40_000, false), (0x30000, 40_000, false)])    // oversize in two
        _ = try rig.txDriver.addChain([(0xff_fff0, 64, false)])                                // outside RAM
        _ = try rig.txDriver.addChain([(0x10000, VirtioNet.maximumChainLength, false)])        // the longest: sent
        _ = try rig.transmit()
        #expect(rig.device.counters.transmitDropped == 6)
        #expect(rig.backend.sent.map(\.count) == [VirtioNet.maximumFrameLength])
        #expect(try rig.txDriver.usedIndex() == 7)
    }

    @Test func aBackendThatWouldBlockLeavesTheChainInTheRing() throws {
        var rig = try Rig()
        rig.backend.room = 1
        try rig.memory.write(Self.pattern(200), at: GuestAddress(0x10000))
        _ = try rig.txDriver.addChain([(0x10000, 60, false)])
        _ = try rig.txDriver.addChain([(0x10000, 80, false)])
        _ = try rig.transmit()
        #expect(rig.device.transmitBlocked)
        #expect(rig.backend.sent.count == 1)
        #expect(try rig.txDriver.usedIndex() == 1)
        #expect(rig.tx.state.nextAvailable == 1)
        rig.backend.room = nil
        _ = try rig.transmit()
        #expect(!rig.device.transmitBlocked)
        #expect(rig.backend.sent.map(\.count) == [48, 68])
        #expect(try rig.txDriver.usedIndex() == 2)
    }

    @Test func receivesAFrameIntoOneChainWithAZeroHeaderWhenTheBackendHasNone() throws {
        var rig = try Rig(features: 0)
        let frame = Self.pattern(100)
        rig.backend.incoming = [frame]
        try rig.memory.fill(0xee, count: 2048, at: GuestAddress(0x10000))
        try rig.postReceive(at: 0x10000, length: 2048)
        let progress = try rig.receive()
        #expect(progress.interrupt)
        #expect(try rig.rxDriver.usedElement(0).length == 112)
        #expect(try rig.memory.read(count: 112, at: GuestAddress(0x10000)) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0] + frame)
    }

    @Test func aMergeableFrameSpansChainsWithNumBuffersInTheFirst() throws {
        var rig = try Rig(carriesHeader: true)
        let frame = [UInt8](repeating: 0, count: 12) + Self.pattern(2488)
        rig.backend.incoming = [frame]
        for index in 0..<3 { try rig.postReceive(at: 0x10000 + 0x1000 * UInt64(index), length: 1000) }
        _ = try rig.receive()
        #expect(try rig.rxDriver.usedIndex() == 3)
        #expect(try (0..<3).map { try rig.rxDriver.usedElement($0).length } == [1000, 1000, 500])
        var got: [UInt8] = []
        for index in 0..<3 {
            got += try rig.memory.read(count: [1000, 1000, 500][index], at: GuestAddress(0x10000 + 0x1000 * UInt64(index)))
        }
        #expect(got[10] == 3 && got[11] == 0)
        #expect(Array(got[12...]) == Array(frame[12...]))
    }

    @Test func readsNothingWhileTheGuestHasNoBuffersAndResumesWhenItPostsSome() throws {
        var rig = try Rig()
        rig.backend.incoming = [Self.pattern(1500), Self.pattern(3000, seed: 5)]
        _ = try rig.receive()
        #expect(rig.device.receiveStarved)
        #expect(rig.backend.incoming.count == 2)
        // One buffer: the first frame waits in the device, half placed, and is not published.
        try rig.postReceive(at: 0x10000, length: 1024)
        _ = try rig.receive()
        #expect(rig.device.receiveStarved)
        #expect(rig.backend.incoming.count == 1)
        #expect(try rig.rxDriver.usedIndex() == 0)
        for index in 1..<6 { try rig.postReceive(at: 0x10000 + 0x1000 * UInt64(index), length: 1024) }
        _ = try rig.receive()
        #expect(!rig.device.receiveStarved)      // one buffer is left; the backend ran dry
        #expect(rig.backend.incoming.isEmpty)
        #expect(try (0..<5).map { try rig.rxDriver.usedElement($0).length } == [1024, 488, 1024, 1024, 964])
        #expect(try rig.rxDriver.usedIndex() == 5)
    }

    @Test func rejectedReceiveChainsComeBackEmptyAfterTheFrame() throws {
        var rig = try Rig()
        rig.backend.incoming = [Self.pattern(100)]
        _ = try rig.rxDriver.addChain([(0x10000, 100, false), (0x11000, 100, true)])   // device-readable
        _ = try rig.rxDriver.addChain([(0x10000, 8, true)])                            // no room for the header
        _ = try rig.rxDriver.addChain([(0xff_fff0, 100, true)])                        // outside RAM
        try rig.postReceive(at: 0x20000, length: 2048)
        _ = try rig.receive()
        #expect(rig.device.counters.receiveChainsRejected == 3)
        let used = try (0..<4).map { try rig.rxDriver.usedElement($0) }
        #expect(used.map(\.id) == [4, 0, 2, 3])
        #expect(used.map(\.length) == [112, 0, 0, 0])
    }

    @Test func withoutMergeableBuffersAFrameTooLongForTheChainIsDroppedAndTheChainKept() throws {
        var rig = try Rig(features: 0)
        rig.backend.incoming = [Self.pattern(3000), Self.pattern(50, seed: 3), [1, 2, 3]]
        try rig.postReceive(at: 0x10000, length: 2048)
        _ = try rig.receive()
        #expect(rig.device.counters.receiveDropped == 1)
        #expect(try rig.rxDriver.usedIndex() == 1)
        #expect(try rig.rxDriver.usedElement(0).length == 62)
        #expect(try rig.memory.read(count: 50, at: GuestAddress(0x10000 + 12)) == Self.pattern(50, seed: 3))
        // The runt is dropped only once a buffer is there to take it.
        #expect(rig.backend.incoming.count == 1)
    }

    @Test func aFloodFromTheBackendIsServedInBoundedRuns() throws {
        var rig = try Rig()
        rig.backend.incoming = Array(repeating: Self.pattern(60), count: 40)
        for index in 0..<16 { try rig.postReceive(at: 0x10000 + 0x1000 * UInt64(index), length: 2048) }
        let progress = try rig.receive()
        #expect(progress.moreWaiting)
        #expect(try rig.rxDriver.usedIndex() == 16)
        #expect(rig.backend.incoming.count == 24)
    }

    @Test func aResetDropsTheWaitingFrame() throws {
        var rig = try Rig()
        rig.backend.incoming = [Self.pattern(3000)]
        try rig.postReceive(at: 0x10000, length: 1024)
        _ = try rig.receive()
        #expect(rig.backend.incoming.isEmpty)
        rig.device.reset()
        #expect(rig.device.features == 0)
        #expect(!rig.device.receiveStarved)
        // A reset device (not activated again) reads nothing.
        rig.backend.incoming = [Self.pattern(60)]
        _ = try rig.receive()
        #expect(rig.backend.incoming.count == 1)
    }
}
