import Synchronization
import Testing
import SwiftletCore
@testable import SwiftletVirtio

@Suite("virtio-mmio transport") struct MMIOTransportTests {
    typealias R = VirtioMMIOTransport.Register
    typealias S = VirtioMMIOTransport.Status

    /// Records what the transport reports.
    final class Recorder: VirtioTransportEvents {
        enum Event: Equatable { case activate(UInt64, [VirtioQueueRegisters]), reset, notify(Int) }
        private let storage = Mutex<[Event]>([])
        var events: [Event] { storage.withLock { $0 } }
        func activate(features: UInt64, queues: [VirtioQueueRegisters]) { storage.withLock { $0.append(.activate(features, queues)) } }
        func reset() { storage.withLock { $0.append(.reset) } }
        func notify(queue index: Int) { storage.withLock { $0.append(.notify(index)) } }
    }

    final class Edges: InterruptLine {
        private let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
        func trigger() { count.withLock { $0 += 1 } }
    }

    let recorder = Recorder()
    let edges = Edges()
    let blockFeatures: UInt64 = 1 << 5 | VirtioFeature.eventIndex    // RO and EVENT_IDX, say

    func makeTransport() -> VirtioMMIOTransport {
        VirtioMMIOTransport(device: VirtioDeviceDescription(deviceID: 2, features: blockFeatures, queueMaximumSizes: [256, 64],
                                                            configuration: [0x00, 0x10, 0, 0, 0, 0, 0, 0]),
                            irq: edges, events: recorder)
    }

    func read(_ t: inout VirtioMMIOTransport, _ register: R) -> UInt32 {
        UInt32(truncatingIfNeeded: t.read(at: register.rawValue, width: .dword))
    }

    func write(_ t: inout VirtioMMIOTransport, _ register: R, _ value: UInt32) {
        t.write(at: register.rawValue, width: .dword, value: UInt64(value))
    }

    /// Linux's virtio_mmio probe and virtio core set-up up to FEATURES_OK, accepting `features`.
    func negotiate(_ t: inout VirtioMMIOTransport, accepting features: UInt64) {
        write(&t, .status, 0)
        write(&t, .status, S.acknowledge)
        write(&t, .status, S.acknowledge | S.driver)
        write(&t, .driverFeaturesSelect, 0)
        write(&t, .driverFeatures, UInt32(truncatingIfNeeded: features))
        write(&t, .driverFeaturesSelect, 1)
        write(&t, .driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        write(&t, .status, S.acknowledge | S.driver | S.featuresOK)
    }

    func program(_ t: inout VirtioMMIOTransport, queue: UInt32, size: UInt32, base: UInt64) {
        write(&t, .queueSelect, queue)
        write(&t, .queueSize, size)
        for (low, high, address) in [(R.queueDescriptorLow, R.queueDescriptorHigh, base),
                                     (.queueDriverLow, .queueDriverHigh, base + 0x1000),
                                     (.queueDeviceLow, .queueDeviceHigh, base + 0x2000)] {
            write(&t, low, UInt32(truncatingIfNeeded: address))
            write(&t, high, UInt32(truncatingIfNeeded: address >> 32))
        }
        write(&t, .queueReady, 1)
    }

    @Test func identifiesItselfAsAVersion2Device() {
        var t = makeTransport()
        #expect(read(&t, .magic) == 0x7472_6976)
        #expect(read(&t, .version) == 2)
        #expect(read(&t, .deviceID) == 2)
        write(&t, .deviceFeaturesSelect, 0)
        #expect(UInt64(read(&t, .deviceFeatures)) == blockFeatures & 0xFFFF_FFFF)
        write(&t, .deviceFeaturesSelect, 1)
        #expect(read(&t, .deviceFeatures) == 1)                   // VERSION_1 (bit 32) is always offered
        write(&t, .deviceFeaturesSelect, 7)
        #expect(read(&t, .deviceFeatures) == 0)
    }

    @Test func theLinuxSetUpSequenceActivatesTheDeviceWithItsQueues() {
        var t = makeTransport()
        let accepted = VirtioFeature.version1 | VirtioFeature.eventIndex
        negotiate(&t, accepting: accepted)
        #expect(read(&t, .status) & S.featuresOK != 0)
        write(&t, .queueSelect, 0)
        #expect(read(&t, .queueSizeMaximum) == 256)
        write(&t, .queueSelect, 1)
        #expect(read(&t, .queueSizeMaximum) == 64)
        program(&t, queue: 0, size: 128, base: 0x10_0000)
        #expect(read(&t, .queueReady) == 1)
        write(&t, .status, S.acknowledge | S.driver | S.featuresOK | S.driverOK)
        var queue = VirtioQueueRegisters()
        queue.size = 128
        queue.ready = true
        queue.descriptorTable = 0x10_0000
        queue.availableRing = 0x10_1000
        queue.usedRing = 0x10_2000
        #expect(recorder.events == [.activate(accepted, [queue, VirtioQueueRegisters()])])
        // A running queue is frozen: moving it or resizing it does nothing.
        program(&t, queue: 0, size: 4, base: 0xdead_0000)
        #expect(t.state.queues[0] == queue)
        write(&t, .queueNotify, 0)
        write(&t, .queueNotify, 9)                                // no such queue: dropped
        #expect(recorder.events.last == .notify(0))
    }

    @Test func featuresOKDoesNotStickForFeaturesTheDeviceNeverOffered() {
        var t = makeTransport()
        negotiate(&t, accepting: VirtioFeature.version1 | 1 << 40)
        #expect(read(&t, .status) & S.featuresOK == 0)
        negotiate(&t, accepting: blockFeatures)                    // a legacy driver without VERSION_1
        #expect(read(&t, .status) & S.featuresOK == 0)
        write(&t, .status, S.acknowledge | S.driver | S.driverOK)  // DRIVER_OK without FEATURES_OK
        #expect(read(&t, .status) & S.needsReset != 0)
        #expect(read(&t, .status) & S.driverOK == 0)
        #expect(recorder.events.isEmpty)
    }

    @Test func resetReturnsEveryQueueAndFeatureToItsInitialState() {
        var t = makeTransport()
        negotiate(&t, accepting: VirtioFeature.version1)
        program(&t, queue: 1, size: 32, base: 0x20_0000)
        write(&t, .status, S.acknowledge | S.driver | S.featuresOK | S.driverOK)
        t.raiseInterrupt(VirtioMMIOTransport.Interrupt.usedBuffer)
        t.markNeedsReset()
        #expect(read(&t, .status) & S.needsReset != 0)
        write(&t, .status, 0)
        #expect(t.state == VirtioMMIOTransport.State(queueCount: 2))
        #expect(recorder.events.last == .reset)
        // Features can be negotiated again after a reset.
        negotiate(&t, accepting: VirtioFeature.version1)
        #expect(read(&t, .status) & S.featuresOK != 0)
    }

    @Test func interruptsAreRaisedAsEdgesAndAcknowledgedByBit() {
        var t = makeTransport()
        t.raiseInterrupt(VirtioMMIOTransport.Interrupt.usedBuffer)
        t.raiseInterrupt(VirtioMMIOTransport.Interrupt.configurationChange | 0xF0)
        #expect(edges.value == 2)
        #expect(read(&t, .interruptStatus) == 3)
        write(&t, .interruptAcknowledge, 1)
        #expect(read(&t, .interruptStatus) == 2)
        t.markNeedsReset()                                         // not live: nothing to reset
        #expect(edges.value == 2)
    }

    @Test func configurationSpaceReadsAtAnyWidthAndZeroPastItsEnd() {
        var t = makeTransport()
        #expect(t.read(at: 0x100, width: .qword) == 0x1000)
        #expect(t.read(at: 0x101, width: .byte) == 0x10)
        #expect(t.read(at: 0x107, width: .dword) == 0)
        #expect(t.read(at: 0xfff, width: .qword) == 0)
        t.write(at: 0x100, width: .dword, value: 0xffff_ffff)     // read-only
        #expect(t.read(at: 0x100, width: .dword) == 0x1000)
    }

    @Test func hostileDriversNeverTrapAndOnlyReachQueuesThatExist() {
        var t = makeTransport()
        var rng = DevicesTests.HostileRNG(seed: 0x7472_6976)
        for _ in 0..<20_000 {
            let offset = rng.next() % 0x1010
            let width = [AccessWidth.byte, .word, .dword, .qword][Int(rng.next() % 4)]
            if rng.next() % 2 == 0 {
                t.write(at: offset, width: width, value: rng.next())
            } else {
                _ = t.read(at: offset, width: width)
            }
            #expect(t.state.queues.count == 2)
            #expect(t.state.driverFeatures & ~(blockFeatures | VirtioFeature.version1) == 0
                    || t.state.status & S.featuresOK == 0)
        }
        for case let .notify(index) in recorder.events { #expect(index < 2) }
        for case let .activate(features, _) in recorder.events {
            #expect(features & VirtioFeature.version1 != 0 && features & ~(blockFeatures | VirtioFeature.version1) == 0)
        }
    }
}
