import Synchronization
import Testing
import SwiftletMemory
@testable import SwiftletVirtio

/// A deterministic entropy source: byte n of its stream is `n % 251 + 1` (never 0), and it counts
/// what it handed out.
final class CountingSource: EntropySource {
    private let served = Mutex<Int>(0)
    /// Fail every request after this many bytes (never by default).
    let failAfter: Int

    init(failAfter: Int = .max) { self.failAfter = failAfter }

    var bytesServed: Int { served.withLock { $0 } }

    func randomBytes(count: Int) throws(EntropyError) -> [UInt8] {
        try served.withLock { served throws(EntropyError) -> [UInt8] in
            guard served + count <= failAfter else { throw EntropyError("getrandom failed: EIO") }
            defer { served += count }
            return (served..<served + count).map { UInt8($0 % 251 + 1) }
        }
    }
}

@Suite("virtio-rng") struct EntropyTests {
    typealias Driver = DriverSideQueue

    /// The stream `CountingSource` produces from byte `start` on.
    func stream(_ start: Int, _ count: Int) -> [UInt8] { (start..<start + count).map { UInt8($0 % 251 + 1) } }

    @Test func describesAnEntropyDeviceWithOneQueue() {
        let description = VirtioEntropy.description
        #expect(description.deviceID == 4)
        #expect(description.queueMaximumSizes == [256])
        #expect(description.configuration.isEmpty)
        #expect(description.features == VirtioFeature.version1 | VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex)
    }

    @Test func fillsEveryWritableBufferAndReportsTheCount() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        let source = CountingSource()
        let first = try driver.addChain([(0x8_0000, 16, true)])
        let second = try driver.addChain([(0x8_1000, 3, true), (0x8_2000, 5, true)])
        let progress = try device.process(queue: &queue, memory: memory, source: source)
        #expect(progress == QueueProgress(interrupt: true, moreWaiting: false))
        #expect(try driver.usedIndex() == 2)
        #expect(try driver.usedElement(0) == (UInt32(first), 16))
        #expect(try driver.usedElement(1) == (UInt32(second), 8))
        #expect(try memory.read(count: 16, at: GuestAddress(0x8_0000)) == stream(0, 16))
        #expect(try memory.read(count: 3, at: GuestAddress(0x8_1000)) == stream(16, 3))
        #expect(try memory.read(count: 5, at: GuestAddress(0x8_2000)) == stream(19, 5))
        #expect(try memory.read(count: 1, at: GuestAddress(0x8_1003)) == [0])  // nothing past a buffer
        // Nothing new: no used entries, no interrupt.
        #expect(try device.process(queue: &queue, memory: memory, source: source) == QueueProgress(interrupt: false, moreWaiting: false))
    }

    @Test func honoursTheDriversInterruptSuppression() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue(eventIndex: true)
        var device = VirtioEntropy()
        try driver.setUsedEvent(5)            // "interrupt me once used.idx passes 5"
        _ = try driver.addChain([(0x8_0000, 4, true)])
        #expect(try device.process(queue: &queue, memory: memory, source: CountingSource()).interrupt == false)
        #expect(try driver.availableEvent() == 1)   // notifications re-armed past what was consumed
    }

    @Test func readableBuffersAndRefusedChainsAreReturnedEmpty() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        let source = CountingSource()
        let readable = try driver.addChain([(0x8_0000, 16, false), (0x8_1000, 16, true)])
        let outside = try driver.addChain([(0xFFFF_0000, 16, true)])                   // outside RAM
        let wraps = try driver.addChain([(UInt64.max - 7, 16, true)])                  // wraps 2^64
        try driver.writeDescriptor(7, address: 0x8_2000, length: 16, flags: Driver.write | Driver.next, next: 7)
        try driver.publish(head: 7)                                                    // a loop
        let good = try driver.addChain([(0x8_3000, 8, true)])
        _ = try device.process(queue: &queue, memory: memory, source: source)
        #expect(try driver.usedIndex() == 5)
        #expect(try (0..<5).map { try driver.usedElement($0).length } == [0, 0, 0, 0, 8])
        #expect(try (0..<5).map { try driver.usedElement($0).id } == [readable, outside, wraps, 7, good].map(UInt32.init))
        #expect(try memory.read(count: 16, at: GuestAddress(0x8_1000)) == [UInt8](repeating: 0, count: 16))
        #expect(source.bytesServed == 8)
    }

    @Test func aChainGetsAtMost64KiB() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        let source = CountingSource()
        _ = try driver.addChain([(0x1_0000, 0x8000, true), (0x2_0000, 0x8000, true), (0x3_0000, 0x4_0000, true)])
        _ = try device.process(queue: &queue, memory: memory, source: source)
        #expect(try driver.usedElement(0).length == 64 << 10)
        #expect(source.bytesServed == 64 << 10)
        #expect(try memory.read(count: 1, at: GuestAddress(0x3_0000)) == [0])
    }

    @Test func aRunIsBoundedAndSaysWhenMoreIsWaiting() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 32)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        let source = CountingSource()
        // 20 chains of 64 KiB: a run stops at 1 MiB (16 chains), the next run takes the rest.
        for _ in 0..<20 { _ = try driver.addChain([(0x1_0000, 64 << 10, true)]) }
        #expect(try device.process(queue: &queue, memory: memory, source: source) == QueueProgress(interrupt: true, moreWaiting: true))
        #expect(try driver.usedIndex() == 16)
        #expect(try device.process(queue: &queue, memory: memory, source: source) == QueueProgress(interrupt: true, moreWaiting: false))
        #expect(try driver.usedIndex() == 20)
        // At most one ring's worth of chains per run, however fast the driver refills it.
        for _ in 0..<32 { _ = try driver.addChain([(0x1_0000, 1, true)]) }
        #expect(try device.process(queue: &queue, memory: memory, source: source).moreWaiting)
        #expect(try driver.usedIndex() == 52)
    }

    @Test func aFailingSourceReturnsWhatItHad() throws {
        let memory = try Driver.makeMemory()
        var driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        _ = try driver.addChain([(0x8_0000, 4, true), (0x8_1000, 4, true)])
        _ = try driver.addChain([(0x8_2000, 4, true)])
        _ = try device.process(queue: &queue, memory: memory, source: CountingSource(failAfter: 6))
        #expect(try driver.usedElement(0).length == 4)
        #expect(try driver.usedElement(1).length == 0)
    }

    @Test func aBrokenRingIsThrownForTheCallerToReset() throws {
        let memory = try Driver.makeMemory()
        let driver = try Driver(memory: memory, size: 8)
        var queue = try driver.deviceQueue()
        var device = VirtioEntropy()
        try driver.setAvailableIndex(100)
        #expect(throws: QueueError.availableIndexJumped(nextAvailable: 0, availableIndex: 100, size: 8)) {
            try device.process(queue: &queue, memory: memory, source: CountingSource())
        }
        var other = try Driver(memory: memory, size: 8, base: 0x2_0000)
        var second = try other.deviceQueue()
        try other.publish(head: 9)
        #expect(throws: QueueError.headOutOfRange(head: 9, size: 8)) {
            try device.process(queue: &second, memory: memory, source: CountingSource())
        }
    }

    @Test func randomRingsNeverTrap() throws {
        // Random descriptors and heads over a 1 MiB guest: nothing traps, and no more chains are
        // returned than were published.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let memory = try Driver.makeMemory()
            var driver = try Driver(memory: memory, size: 8)
            var queue = try driver.deviceQueue(indirect: Bool.random(using: &generator))
            var device = VirtioEntropy()
            for index: UInt16 in 0..<8 {
                try driver.writeDescriptor(index, address: UInt64.random(in: 0x2000...0x10_0100, using: &generator),
                                           length: UInt32.random(in: 0...0x100, using: &generator),
                                           flags: UInt16.random(in: 0...7, using: &generator),
                                           next: UInt16.random(in: 0...9, using: &generator))
            }
            for _ in 0..<UInt16.random(in: 0...8, using: &generator) {
                try driver.publish(head: UInt16.random(in: 0...8, using: &generator))
            }
            _ = try? device.process(queue: &queue, memory: memory, source: CountingSource())
            #expect(try driver.usedIndex() <= 8)
        }
    }
}
