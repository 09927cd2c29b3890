import Testing
import SwiftletMemory
@testable import SwiftletVirtio

/// Rings a malicious guest could craft: each must end in its typed error, never a trap or a hang.
@Suite("Split virtqueue: hostile rings") struct HostileQueueTests {
    typealias Driver = DriverSideQueue

    /// Publishes the chain at `head` (descriptors already written by `setup`) and returns the
    /// device's verdict on it.
    func verdict(size: UInt16 = 8, indirect: Bool = true, maximumLength: UInt32 = .max,
                 _ setup: (Driver) throws -> Void) throws -> ChainError? {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: size)
        var queue = try driver.deviceQueue(indirect: indirect)
        try setup(driver)
        try driver.publish(head: 0)
        let head = try #require(try queue.popAvailable(in: memory))
        do { _ = try queue.chain(head: head, in: memory, maximumLength: maximumLength); return nil } catch { return error }
    }

    let next = Driver.next, write = Driver.write, indirect = Driver.indirect

    @Test func loopsAndOverlongChainsEnd() throws {
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x8_0000, length: 1, flags: next, next: 0) }
            == .tooManyDescriptors(limit: 8))
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x8_0000, length: 1, flags: next, next: 1)
            try d.writeDescriptor(1, address: 0x8_0000, length: 1, flags: next, next: 0)
        } == .tooManyDescriptors(limit: 8))
        // Every descriptor of the table chained and the last one pointing back into it.
        #expect(try verdict { d in
            for index: UInt16 in 0..<8 {
                try d.writeDescriptor(index, address: 0x8_0000, length: 1, flags: next, next: (index + 1) % 8)
            }
        } == .tooManyDescriptors(limit: 8))
        // A loop inside an indirect table of 4 entries.
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x9000, length: 64, flags: indirect)
            try d.writeDescriptor(0, in: GuestAddress(0x9000), address: 0x8_0000, length: 1, flags: next, next: 3)
            try d.writeDescriptor(3, in: GuestAddress(0x9000), address: 0x8_0000, length: 1, flags: next, next: 0)
        } == .tooManyDescriptors(limit: 4))
    }

    @Test func outOfRangeIndicesAreRefused() throws {
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x8_0000, length: 1, flags: next, next: 8) }
            == .nextOutOfRange(next: 8, tableSize: 8))
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x8_0000, length: 1, flags: next, next: 0xffff) }
            == .nextOutOfRange(next: 0xffff, tableSize: 8))
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x9000, length: 32, flags: indirect)
            try d.writeDescriptor(0, in: GuestAddress(0x9000), address: 0x8_0000, length: 1, flags: next, next: 2)
        } == .nextOutOfRange(next: 2, tableSize: 2))
        // A head past the table: the driver is broken, the entry is consumed, the next one still works.
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        try driver.publish(head: 8)
        #expect(throws: QueueError.headOutOfRange(head: 8, size: 8)) { try queue.popAvailable(in: memory) }
        let head = try driver.addChain([(0x8_0000, 4, false)])
        #expect(try queue.popAvailable(in: memory) == head)
        #expect(throws: QueueError.headOutOfRange(head: 9, size: 8)) { try queue.addUsed(head: 9, length: 0, in: memory) }
    }

    @Test func buffersOutsideRAMOrWrappingAreRefused() throws {
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x10_0000 - 8, length: 16) }
            == .bufferOutsideMemory(address: GuestAddress(0x10_0000 - 8), length: 16))
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x4000_0000, length: 1, flags: write) }
            == .bufferOutsideMemory(address: GuestAddress(0x4000_0000), length: 1))
        #expect(try verdict { try $0.writeDescriptor(0, address: UInt64.max - 4, length: 16) }
            == .bufferWraps(address: GuestAddress(UInt64.max - 4), length: 16))
        #expect(try verdict { try $0.writeDescriptor(0, address: UInt64.max, length: 1) }
            == .bufferOutsideMemory(address: GuestAddress(UInt64.max), length: 1))
        #expect(try verdict(maximumLength: 100) { d in
            try d.writeDescriptor(0, address: 0x8_0000, length: 64, flags: next, next: 1)
            try d.writeDescriptor(1, address: 0x8_0000, length: 64, flags: write)
        } == .totalLengthTooLarge(limit: 100))
    }

    @Test func directionAndIndirectRulesAreEnforced() throws {
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x8_0000, length: 1, flags: write | next, next: 1)
            try d.writeDescriptor(1, address: 0x8_0000, length: 1)
        } == .readableAfterWritable)
        #expect(try verdict { d in  // an empty writable descriptor still sets the direction
            try d.writeDescriptor(0, address: 0, length: 0, flags: write | next, next: 1)
            try d.writeDescriptor(1, address: 0x8_0000, length: 1)
        } == .readableAfterWritable)
        #expect(try verdict(indirect: false) { try $0.writeDescriptor(0, address: 0x9000, length: 16, flags: indirect) }
            == .indirectNotNegotiated)
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x9000, length: 16, flags: indirect | next, next: 1) }
            == .indirectWithNext)
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x9000, length: 32, flags: indirect)
            try d.writeDescriptor(0, in: GuestAddress(0x9000), address: 0x9100, length: 16, flags: indirect)
        } == .nestedIndirect)
        for length: UInt32 in [0, 24, 8 * 16 + 16] {
            #expect(try verdict { try $0.writeDescriptor(0, address: 0x9000, length: length, flags: indirect) }
                == .indirectTableLength(length))
        }
        #expect(try verdict { try $0.writeDescriptor(0, address: 0x10_0000 - 16, length: 32, flags: indirect) }
            == .indirectTableOutsideMemory(address: GuestAddress(0x10_0000 - 16), length: 32))
        #expect(try verdict { try $0.writeDescriptor(0, address: UInt64.max - 15, length: 32, flags: indirect) }
            == .indirectTableOutsideMemory(address: GuestAddress(UInt64.max - 15), length: 32))
        // Readable inside the table after a writable direct descriptor.
        #expect(try verdict { d in
            try d.writeDescriptor(0, address: 0x8_0000, length: 1, flags: write | next, next: 1)
            try d.writeDescriptor(1, address: 0x9000, length: 16, flags: indirect)
            try d.writeDescriptor(0, in: GuestAddress(0x9000), address: 0x8_0000, length: 1)
        } == .readableAfterWritable)
    }

    @Test func availableIndexJumpsAreReported() throws {
        let memory = try Driver.makeMemory()
        let driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        try driver.setAvailableIndex(9)
        #expect(throws: QueueError.availableIndexJumped(nextAvailable: 0, availableIndex: 9, size: 8)) {
            try queue.popAvailable(in: memory)
        }
        #expect(throws: QueueError.availableIndexJumped(nextAvailable: 0, availableIndex: 9, size: 8)) {
            try queue.enableNotification(in: memory)
        }
        try driver.setAvailableIndex(0xffff)  // moved backwards
        #expect(throws: QueueError.availableIndexJumped(nextAvailable: 0, availableIndex: 0xffff, size: 8)) {
            try queue.popAvailable(in: memory)
        }
        try driver.setAvailableIndex(8)  // exactly a full ring is fine
        #expect(try queue.popAvailable(in: memory) == 0)
    }

    @Test func memoryOtherThanTheValidatedOneIsAnErrorNotATrap() throws {
        let memory = try Driver.makeMemory()
        let driver = try Driver(memory: memory, size: 8, base: 0x8_0000)
        var queue = try driver.deviceQueue()
        let small = try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1000)!])
        #expect(throws: QueueError.self) { try queue.popAvailable(in: small) }
        #expect(throws: ChainError.self) { try queue.chain(head: 0, in: small) }
    }

    /// A deterministic generator (SplitMix64), so a failure reproduces.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
    }

    @Test(.timeLimit(.minutes(1))) func randomDescriptorTablesNeverEscapeRAMOrRunAway() throws {
        let memory = try Driver.makeMemory()
        var random = SplitMix64(state: 0x5157_1f7e)
        let end: UInt64 = 0x10_0000
        func address() -> UInt64 {
            switch random.next() % 6 {
            case 0: return random.next()                                   // anywhere
            case 1: return UInt64.max - random.next() % 64                 // near the top
            case 2: return end - random.next() % 64                        // across the end of RAM
            case 3: return 0x9000 + 16 * (random.next() % 16)              // the indirect-table area
            default: return random.next() % end                            // inside RAM
            }
        }
        func length() -> UInt32 {
            switch random.next() % 4 {
            case 0: return UInt32(truncatingIfNeeded: random.next())
            case 1: return 16 * UInt32(random.next() % 20)
            default: return UInt32(random.next() % 4096)
            }
        }
        var chains = 0, refusals = 0
        for _ in 0..<3000 {
            let size = UInt16(1) << UInt16(random.next() % 7)
            var driver = try Driver(memory: memory, size: size, startIndex: UInt16(truncatingIfNeeded: random.next()))
            var queue = try driver.deviceQueue(eventIndex: random.next() % 2 == 0, indirect: random.next() % 4 != 0)
            func descriptor(_ index: UInt16, in table: GuestAddress?) throws {
                let nextIndex = random.next() % 2 == 0 ? UInt16(random.next() % UInt64(size + 2))
                                                      : UInt16(truncatingIfNeeded: random.next())
                try driver.writeDescriptor(index, in: table, address: address(), length: length(),
                                           flags: UInt16(random.next() % 8), next: nextIndex)
            }
            for index in 0..<size { try descriptor(index, in: nil) }
            for index: UInt16 in 0..<16 { try descriptor(index, in: GuestAddress(0x9000)) }
            let published = random.next() % UInt64(size + 1)
            for _ in 0..<published { try driver.publish(head: UInt16(random.next() % UInt64(size + 1))) }
            if random.next() % 8 == 0 { try driver.setAvailableIndex(UInt16(truncatingIfNeeded: random.next())) }
            let maximumLength = random.next() % 2 == 0 ? UInt32.max : UInt32(random.next() % 0x1_0000)
            var pops = 0
            while true {
                let head: UInt16?
                do {
                    head = try queue.popAvailable(in: memory)
                } catch {
                    refusals += 1
                    if case .availableIndexJumped = error { break }
                    continue
                }
                guard let head else { break }
                pops += 1
                #expect(pops <= Int(size), "more chains than the ring holds")
                do {
                    let chain = try queue.chain(head: head, in: memory, maximumLength: maximumLength)
                    chains += 1
                    #expect(chain.buffers.count <= 2 * Int(size))
                    #expect(UInt64(chain.readableLength) + UInt64(chain.writableLength) <= UInt64(maximumLength))
                    #expect(chain.buffers.allSatisfy { memory.contains($0.range.start, count: $0.range.size) })
                    let firstWritable = chain.buffers.firstIndex { $0.isWritable } ?? chain.buffers.count
                    #expect(chain.buffers[firstWritable...].allSatisfy { $0.isWritable })
                    try queue.addUsed(head: head, length: chain.writableLength, in: memory)
                } catch {
                    refusals += 1
                    try queue.addUsed(head: head, length: 0, in: memory)
                }
            }
            _ = try queue.needsNotification(in: memory)
        }
        // The generator must exercise both outcomes.
        #expect(chains > 100 && refusals > 100)
    }
}
