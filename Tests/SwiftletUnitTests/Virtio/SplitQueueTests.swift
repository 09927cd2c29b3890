import Foundation
import Testing
import SwiftletMemory
@testable import SwiftletVirtio

@Suite("Split virtqueue") struct SplitQueueTests {
    typealias Driver = DriverSideQueue

    func range(_ start: UInt64, _ size: UInt64) -> GuestRange { GuestRange(start: GuestAddress(start), size: size)! }

    @Test func popsWalksAndReturnsANormalChain() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        #expect(try queue.popAvailable(in: memory) == nil)
        let head = try driver.addChain([(0x8_0000, 16, false), (0x8_0100, 32, false), (0x8_0200, 64, true)])
        #expect(try queue.popAvailable(in: memory) == head)
        #expect(try queue.popAvailable(in: memory) == nil)
        let chain = try queue.chain(head: head, in: memory)
        #expect(chain.head == head)
        #expect(chain.buffers == [.init(range: range(0x8_0000, 16), isWritable: false),
                                  .init(range: range(0x8_0100, 32), isWritable: false),
                                  .init(range: range(0x8_0200, 64), isWritable: true)])
        #expect(chain.readableLength == 48 && chain.writableLength == 64)
        try queue.addUsed(head: head, length: 64, in: memory)
        #expect(try driver.usedIndex() == 1)
        #expect(try driver.usedElement(0) == (UInt32(head), 64))
        #expect(queue.state.nextAvailable == 1 && queue.state.nextUsed == 1)
    }

    @Test func splitsReadableFromWritableAndSkipsEmptyBuffers() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        let readOnly = try driver.addChain([(0x8_0000, 100, false)])
        let writeOnly = try driver.addChain([(0x8_1000, 0, true), (0x8_2000, 200, true), (0x8_3000, 300, true)])
        let mixed = try driver.addChain([(0x8_4000, 0, false), (0x8_5000, 1, false), (0x8_6000, 2, true)])
        for (expected, readable, writable) in [(readOnly, 100, 0), (writeOnly, 0, 500), (mixed, 1, 2)] {
            let head = try #require(try queue.popAvailable(in: memory))
            #expect(head == expected)
            let chain = try queue.chain(head: head, in: memory)
            #expect(chain.readableLength == UInt32(readable) && chain.writableLength == UInt32(writable))
            #expect(chain.buffers.allSatisfy { $0.range.size > 0 })
        }
    }

    @Test func followsIndirectTables() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue(indirect: true)
        let table = GuestAddress(0x9000)
        // The walk starts at the table's entry 0 and follows `next` inside the table.
        try driver.writeDescriptor(0, in: table, address: 0x8_0000, length: 10, flags: Driver.next, next: 2)
        try driver.writeDescriptor(2, in: table, address: 0x8_1000, length: 20, flags: Driver.write | Driver.next, next: 1)
        try driver.writeDescriptor(1, in: table, address: 0x8_2000, length: 30, flags: Driver.write)
        // A direct readable descriptor, then the indirect one (WRITE on it is ignored).
        try driver.writeDescriptor(5, address: 0x7_0000, length: 5, flags: Driver.next, next: 3)
        try driver.writeDescriptor(3, address: table.rawValue, length: 48, flags: Driver.indirect | Driver.write)
        try driver.publish(head: 5)
        let head = try #require(try queue.popAvailable(in: memory))
        let chain = try queue.chain(head: head, in: memory)
        #expect(chain.head == 5)
        #expect(chain.buffers == [.init(range: range(0x7_0000, 5), isWritable: false),
                                  .init(range: range(0x8_0000, 10), isWritable: false),
                                  .init(range: range(0x8_1000, 20), isWritable: true),
                                  .init(range: range(0x8_2000, 30), isWritable: true)])
        #expect(chain.readableLength == 15 && chain.writableLength == 50)
    }

    @Test func eventIndexDecidesNotifications() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue(eventIndex: true)
        #expect(try queue.needsNotification(in: memory) == false)  // nothing added
        for _ in 0..<3 { _ = try driver.addChain([(0x8_0000, 8, true)]) }
        try driver.setUsedEvent(1)  // "interrupt me once used.idx passes 1"
        var heads: [UInt16] = []
        while let head = try queue.popAvailable(in: memory) { heads.append(head) }
        try queue.addUsed(head: heads[0], length: 8, in: memory)
        #expect(try queue.needsNotification(in: memory) == false)  // used.idx 0 → 1: not past 1
        try queue.addUsed(head: heads[1], length: 8, in: memory)
        try queue.addUsed(head: heads[2], length: 8, in: memory)
        #expect(try queue.needsNotification(in: memory) == true)   // 1 → 3 passes 1
        try driver.setUsedEvent(10)
        try queue.addUsed(head: heads[0], length: 8, in: memory)
        #expect(try queue.needsNotification(in: memory) == false)
        // avail_event: the device asks to hear about the next chain, and sees one published meanwhile.
        #expect(try queue.enableNotification(in: memory) == false)
        #expect(try driver.availableEvent() == 3)
        _ = try driver.addChain([(0x8_0000, 8, true)])
        #expect(try queue.enableNotification(in: memory) == true)
        // The flag is ignored with event-idx.
        try driver.setAvailableFlags(1)
        try driver.setUsedEvent(4)
        try queue.addUsed(head: heads[0], length: 8, in: memory)
        #expect(try queue.needsNotification(in: memory) == true)
    }

    @Test func withoutEventIndexHonoursNoInterrupt() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 4)
        var queue = try driver.deviceQueue()
        let head = try driver.addChain([(0x8_0000, 8, true)])
        _ = try queue.popAvailable(in: memory)
        try queue.addUsed(head: head, length: 1, in: memory)
        try driver.setAvailableFlags(1)
        #expect(try queue.needsNotification(in: memory) == false)
        try queue.addUsed(head: head, length: 1, in: memory)
        try driver.setAvailableFlags(0)
        #expect(try queue.needsNotification(in: memory) == true)
        #expect(try queue.needsNotification(in: memory) == false)
        #expect(try queue.enableNotification(in: memory) == false)
        #expect(try driver.availableEvent() == 0)  // not written without event-idx
    }

    @Test func vringNeedEventWrapsAt16Bits() {
        #expect(SplitQueue.needsEvent(event: 0xffff, new: 1, old: 0xfffe))
        #expect(SplitQueue.needsEvent(event: 0, new: 1, old: 0xffff))
        #expect(!SplitQueue.needsEvent(event: 1, new: 1, old: 0xffff))
        #expect(!SplitQueue.needsEvent(event: 0xfffd, new: 1, old: 0xfffe))
    }

    @Test func indicesWrapAround() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 4, startIndex: 0xfffe)
        var queue = try driver.deviceQueue(eventIndex: true)
        var published: [UInt16] = []
        for index in 0..<4 { published.append(try driver.addChain([(0x8_0000 + UInt64(index) * 0x100, 8, true)])) }
        #expect(driver.availableIndex == 2)
        var popped: [UInt16] = []
        while let head = try queue.popAvailable(in: memory) {
            #expect(try queue.chain(head: head, in: memory).buffers.count == 1)
            popped.append(head)
        }
        #expect(popped == published)
        try driver.setUsedEvent(0xffff)
        for head in popped { try queue.addUsed(head: head, length: 8, in: memory) }
        #expect(try driver.usedIndex() == 2 && queue.state.nextUsed == 2 && queue.state.nextAvailable == 2)
        #expect(try driver.usedElement(0xfffe % 4).id == UInt32(popped[0]))
        #expect(try driver.usedElement(1).id == UInt32(popped[3]))
        #expect(try queue.needsNotification(in: memory) == true)  // 0xfffe → 2 passes 0xffff
    }

    @Test func validatesTheConfiguration() throws {
        let memory = try Driver.makeMemory()
        let driver = try Driver(memory: memory, size: 8)
        let good = driver.state()
        func refusal(_ change: (inout SplitQueue.State) -> Void, maximum: UInt16 = 256) -> QueueValidationError? {
            var state = good
            change(&state)
            do { _ = try SplitQueue(state: state, maximumSize: maximum, memory: memory); return nil } catch { return error }
        }
        #expect(refusal { _ in } == nil)
        #expect(refusal { $0.size = 0 } == .sizeZero)
        #expect(refusal { $0.size = 6 } == .sizeNotPowerOfTwo(6))
        #expect(refusal { $0.size = 32768 } == .sizeAboveMaximum(size: 32768, maximum: 256))
        #expect(refusal({ $0.size = 16 }, maximum: 8) == .sizeAboveMaximum(size: 16, maximum: 8))
        #expect(refusal { $0.descriptorTable = GuestAddress(0x1008) } ==
            .misaligned(.descriptorTable, address: GuestAddress(0x1008), alignment: 16))
        #expect(refusal { $0.availableRing = GuestAddress(0x2001) } ==
            .misaligned(.availableRing, address: GuestAddress(0x2001), alignment: 2))
        #expect(refusal { $0.usedRing = GuestAddress(0x2002) } ==
            .misaligned(.usedRing, address: GuestAddress(0x2002), alignment: 4))
        #expect(refusal { $0.descriptorTable = GuestAddress(0x10_0000 - 0x70) } ==
            .outsideMemory(.descriptorTable, address: GuestAddress(0x10_0000 - 0x70), size: 128))
        #expect(refusal { $0.availableRing = GuestAddress(0x20_0000) } ==
            .outsideMemory(.availableRing, address: GuestAddress(0x20_0000), size: 22))
        #expect(refusal { $0.usedRing = GuestAddress(UInt64.max - 3) } ==
            .outsideMemory(.usedRing, address: GuestAddress(UInt64.max - 3), size: 70))
        #expect(refusal { $0.size = 32768; $0.descriptorTable = GuestAddress(0x8_0000) } ==
            .sizeAboveMaximum(size: 32768, maximum: 256))
        #expect(refusal({ $0.size = 32768; $0.descriptorTable = GuestAddress(0x8_0010) }, maximum: 32768) ==
            .outsideMemory(.descriptorTable, address: GuestAddress(0x8_0010), size: 0x8_0000))
    }

    @Test func stateRoundTripsThroughCodableAndValidation() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue(eventIndex: true, indirect: true)
        let head = try driver.addChain([(0x8_0000, 8, true)])
        _ = try queue.popAvailable(in: memory)
        try queue.addUsed(head: head, length: 8, in: memory)
        let decoded = try JSONDecoder().decode(SplitQueue.State.self, from: JSONEncoder().encode(queue.state))
        #expect(decoded == queue.state)
        let restored = try SplitQueue(state: decoded, maximumSize: 8, memory: memory)
        #expect(restored.state == queue.state)
    }
}
