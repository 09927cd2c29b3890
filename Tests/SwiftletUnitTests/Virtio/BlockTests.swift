import Synchronization
import Testing
import SwiftletMemory
@testable import SwiftletVirtio

/// A disk in an array: sector n's byte k starts as `(n + k) % 251 + 1`; it counts flushes and
/// records what was discarded or zeroed. `failing` makes every call fail with that error.
final class MemoryDisk: BlockBackend {
    let capacity: UInt64
    let bytes: Mutex<[UInt8]>
    private let flushes = Mutex(0)
    let failing: BlockBackendError?

    init(sectors: UInt64, failing: BlockBackendError? = nil) {
        capacity = sectors
        self.failing = failing
        var initial = [UInt8](repeating: 0, count: Int(sectors * 512))
        for index in initial.indices {
            let value: Int = (index / 512 + index % 512) % 251 + 1
            initial[index] = UInt8(value)
        }
        bytes = Mutex(initial)
    }

    var flushCount: Int { flushes.withLock { $0 } }
    func sectorBytes(_ sector: UInt64, count: Int = 512) -> [UInt8] {
        bytes.withLock { Array($0[Int(sector * 512)..<Int(sector * 512) + count]) }
    }

    func read(sector: UInt64, into ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        if let failing { throw failing }
        var offset = Int(sector * 512)
        for range in ranges {
            let chunk = bytes.withLock { Array($0[offset..<offset + Int(range.size)]) }
            do { try memory.write(chunk, at: range.start) } catch { throw .ioError("\(error)") }
            offset += Int(range.size)
        }
    }

    func write(sector: UInt64, from ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        if let failing { throw failing }
        var offset = Int(sector * 512)
        for range in ranges {
            let chunk: [UInt8]
            do { chunk = try memory.read(count: Int(range.size), at: range.start) } catch { throw .ioError("\(error)") }
            bytes.withLock { $0.replaceSubrange(offset..<offset + chunk.count, with: chunk) }
            offset += chunk.count
        }
    }

    func flush() throws(BlockBackendError) {
        if let failing { throw failing }
        flushes.withLock { $0 += 1 }
    }

    func discard(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        try writeZeroes(sector: sector, count: count)
    }

    func writeZeroes(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        if let failing { throw failing }
        bytes.withLock { $0.replaceSubrange(Int(sector * 512)..<Int((sector + count) * 512),
                                            with: [UInt8](repeating: 0, count: Int(count * 512))) }
    }
}

@Suite("virtio-blk") struct BlockTests {
    typealias Driver = DriverSideQueue
    typealias Status = VirtioBlock.Status

    /// Guest addresses used by the requests: headers, data and statuses.
    static let header: UInt64 = 0x8_0000, data: UInt64 = 0x9_0000, status: UInt64 = 0x8_1000

    struct Rig {
        let memory: GuestMemory
        var driver: Driver
        var queue: SplitQueue
        var device: VirtioBlock
        let disk: MemoryDisk

        init(sectors: UInt64 = 16, readOnly: Bool = false, serial: String = "disk-0", failing: BlockBackendError? = nil,
             indirect: Bool = false) throws {
            memory = try Driver.makeMemory()
            driver = try Driver(memory: memory, size: 16)
            queue = try driver.deviceQueue(indirect: indirect)
            device = VirtioBlock(configuration: .init(capacity: sectors, readOnly: readOnly, serial: serial))
            disk = MemoryDisk(sectors: sectors, failing: failing)
        }

        /// Writes a request header at `at`.
        func header(type: UInt32, sector: UInt64, at: UInt64 = BlockTests.header) throws {
            try memory.store(type, at: GuestAddress(at))
            try memory.store(UInt32(0), at: GuestAddress(at + 4))
            try memory.store(sector, at: GuestAddress(at + 8))
        }

        /// Publishes `buffers`, runs the device, and returns the used length and the status byte.
        mutating func submit(_ buffers: [(UInt64, UInt32, Bool)],
                             statusAt: UInt64 = BlockTests.status) throws -> (length: UInt32, status: UInt8) {
            try memory.store(UInt8(0xff), at: GuestAddress(statusAt))
            _ = try driver.addChain(buffers)
            _ = try device.process(queue: &queue, memory: memory, backend: disk)
            let used = try driver.usedElement(driver.availableIndex &- 1)
            return (used.length, try memory.load(at: GuestAddress(statusAt)))
        }

        /// A standard request: header, `data` buffers, status.
        mutating func request(type: UInt32, sector: UInt64, data: [(UInt64, UInt32, Bool)]) throws -> (length: UInt32, status: UInt8) {
            try header(type: type, sector: sector)
            return try submit([(BlockTests.header, 16, false)] + data + [(BlockTests.status, 1, true)])
        }
    }

    @Test func describesTheDiskInItsConfigurationSpace() {
        let device = VirtioBlock(configuration: .init(capacity: 0x1_0000_0001, readOnly: false, serial: "x"))
        let description = device.description
        #expect(description.deviceID == 2)
        #expect(description.queueMaximumSizes == [256])
        #expect(Array(description.configuration[0..<8]) == [1, 0, 0, 0, 1, 0, 0, 0])
        #expect(Array(description.configuration[12..<16]) == [254, 0, 0, 0])      // seg_max
        #expect(Array(description.configuration[20..<24]) == [0, 2, 0, 0])        // blk_size 512
        #expect(description.configuration[56] == 1)                               // write_zeroes_may_unmap
        let f = VirtioBlock.Feature.self
        #expect(description.features & (f.flush | f.discard | f.writeZeroes) == f.flush | f.discard | f.writeZeroes)
        #expect(description.features & f.readOnly == 0)
        let readOnly = VirtioBlock(configuration: .init(capacity: 8, readOnly: true, serial: "x")).description
        #expect(readOnly.features & f.readOnly != 0)
        #expect(readOnly.features & (f.discard | f.writeZeroes) == 0)
    }

    @Test func readsSectorsIntoScatteredBuffers() throws {
        var rig = try Rig()
        let result = try rig.request(type: 0, sector: 3, data: [(Self.data, 512, true), (Self.data + 0x1000, 512, true)])
        #expect(result == (1025, Status.ok))
        #expect(try rig.memory.read(count: 512, at: GuestAddress(Self.data)) == rig.disk.sectorBytes(3))
        #expect(try rig.memory.read(count: 512, at: GuestAddress(Self.data + 0x1000)) == rig.disk.sectorBytes(4))
    }

    @Test func writesSectorsAndHeaderMayShareABufferWithData() throws {
        var rig = try Rig()
        try rig.memory.fill(0xab, count: 1024, at: GuestAddress(Self.data))
        #expect(try rig.request(type: 1, sector: 15, data: [(Self.data, 512, false)]) == (1, Status.ok))
        #expect(rig.disk.sectorBytes(15) == [UInt8](repeating: 0xab, count: 512))
        // Header and data in one readable buffer, data and status in one writable buffer (a read).
        try rig.header(type: 0, sector: 2, at: Self.data - 16)
        let result = try rig.submit([(Self.data - 16, 16, false), (Self.data + 0x2000, 513, true)], statusAt: Self.data + 0x2000 + 512)
        #expect(result == (513, Status.ok))
        #expect(try rig.memory.read(count: 512, at: GuestAddress(Self.data + 0x2000)) == rig.disk.sectorBytes(2))
    }

    @Test func flushReachesTheBackendBeforeTheStatus() throws {
        var rig = try Rig()
        #expect(try rig.request(type: 4, sector: 0, data: []) == (1, Status.ok))
        #expect(rig.disk.flushCount == 1)
    }

    @Test func getIDReturnsTheSerialPadded() throws {
        var rig = try Rig(serial: "data-disk")
        #expect(try rig.request(type: 8, sector: 0, data: [(Self.data, 20, true)]) == (21, Status.ok))
        #expect(try rig.memory.read(count: 20, at: GuestAddress(Self.data)) == Array("data-disk".utf8) + [UInt8](repeating: 0, count: 11))
        var long = try Rig(serial: String(repeating: "s", count: 40))
        #expect(try long.request(type: 8, sector: 0, data: [(Self.data, 64, true)]) == (21, Status.ok))
        #expect(try long.memory.read(count: 21, at: GuestAddress(Self.data)) == [UInt8](repeating: 0x73, count: 20) + [0])
    }

    /// Writes a discard / write-zeroes segment at `data`.
    func segment(_ rig: Rig, sector: UInt64, count: UInt32, flags: UInt32 = 0) throws {
        try rig.memory.store(sector, at: GuestAddress(Self.data))
        try rig.memory.store(count, at: GuestAddress(Self.data + 8))
        try rig.memory.store(flags, at: GuestAddress(Self.data + 12))
    }

    @Test func discardAndWriteZeroesZeroTheirSectors() throws {
        var rig = try Rig()
        try segment(rig, sector: 2, count: 2)
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 16, false)]) == (1, Status.ok))
        #expect(rig.disk.sectorBytes(2, count: 1024) == [UInt8](repeating: 0, count: 1024))
        #expect(rig.disk.sectorBytes(4, count: 1) != [0])
        try segment(rig, sector: 4, count: 1, flags: 1)   // unmap allowed for write-zeroes
        #expect(try rig.request(type: 13, sector: 0, data: [(Self.data, 16, false)]) == (1, Status.ok))
        #expect(rig.disk.sectorBytes(4) == [UInt8](repeating: 0, count: 512))
        try segment(rig, sector: 6, count: 1, flags: 1)   // but not for discard
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 16, false)]).status == Status.unsupported)
        try segment(rig, sector: 6, count: 1, flags: 4)
        #expect(try rig.request(type: 13, sector: 0, data: [(Self.data, 16, false)]).status == Status.unsupported)
        #expect(rig.disk.sectorBytes(6, count: 1) != [0])
    }

    @Test func unknownTypesAreUnsupported() throws {
        var rig = try Rig()
        #expect(try rig.request(type: 99, sector: 0, data: []) == (1, Status.unsupported))
        #expect(try rig.request(type: 7, sector: 0, data: []) == (1, Status.unsupported))
    }

    @Test func aReadOnlyDiskRefusesEveryChangeButReads() throws {
        var rig = try Rig(readOnly: true)
        let before = rig.disk.sectorBytes(0, count: 16 * 512)
        try rig.memory.fill(0xcd, count: 512, at: GuestAddress(Self.data))
        #expect(try rig.request(type: 1, sector: 0, data: [(Self.data, 512, false)]).status == Status.ioError)
        try segment(rig, sector: 0, count: 4)
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 16, false)]).status == Status.ioError)
        #expect(try rig.request(type: 13, sector: 0, data: [(Self.data, 16, false)]).status == Status.ioError)
        #expect(rig.disk.sectorBytes(0, count: 16 * 512) == before)
        #expect(try rig.request(type: 0, sector: 0, data: [(Self.data, 512, true)]).status == Status.ok)
        #expect(try rig.request(type: 4, sector: 0, data: []).status == Status.ok)
    }

    @Test func requestsPastTheEndOrOverflowingFailWithIOError() throws {
        var rig = try Rig(sectors: 16)
        let before = rig.disk.sectorBytes(0, count: 16 * 512)
        #expect(try rig.request(type: 0, sector: 16, data: [(Self.data, 512, true)]) == (1, Status.ioError))
        #expect(try rig.request(type: 0, sector: 15, data: [(Self.data, 1024, true)]).status == Status.ioError)
        #expect(try rig.request(type: 0, sector: .max, data: [(Self.data, 1024, true)]).status == Status.ioError)
        #expect(try rig.request(type: 1, sector: .max - 1, data: [(Self.data, 1024, false)]).status == Status.ioError)
        try segment(rig, sector: .max, count: 2)
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 16, false)]).status == Status.ioError)
        try segment(rig, sector: 8, count: .max)
        #expect(try rig.request(type: 13, sector: 0, data: [(Self.data, 16, false)]).status == Status.ioError)
        #expect(rig.disk.sectorBytes(0, count: 16 * 512) == before)
        #expect(try rig.memory.read(count: 4, at: GuestAddress(Self.data + 16)) == [0, 0, 0, 0])   // nothing read in
    }

    @Test func malformedRequestsFailWithoutTouchingTheDisk() throws {
        var rig = try Rig()
        let before = rig.disk.sectorBytes(0, count: 16 * 512)
        try rig.header(type: 1, sector: 0)
        // A short header.
        #expect(try rig.submit([(Self.header, 8, false), (Self.status, 1, true)]) == (1, Status.ioError))
        // Partial sectors.
        #expect(try rig.request(type: 1, sector: 0, data: [(Self.data, 100, false)]).status == Status.ioError)
        #expect(try rig.request(type: 0, sector: 0, data: [(Self.data, 100, true)]).status == Status.ioError)
        // Data in the wrong direction for the type.
        #expect(try rig.request(type: 1, sector: 0, data: [(Self.data, 512, true)]).status == Status.ioError)
        #expect(try rig.request(type: 0, sector: 0, data: [(Self.data, 512, false)]).status == Status.ioError)
        #expect(try rig.request(type: 4, sector: 0, data: [(Self.data, 512, false)]).status == Status.ioError)
        #expect(try rig.request(type: 8, sector: 0, data: []).status == Status.ioError)
        // A discard with a short or doubled segment list.
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 8, false)]).status == Status.ioError)
        #expect(try rig.request(type: 11, sector: 0, data: [(Self.data, 32, false)]).status == Status.ioError)
        #expect(rig.disk.sectorBytes(0, count: 16 * 512) == before)
        #expect(rig.disk.flushCount == 0)
    }

    @Test func chainsWithoutAWritableStatusAreReturnedEmpty() throws {
        var rig = try Rig()
        try rig.header(type: 4, sector: 0)
        // No status at all, and a readable "status".
        #expect(try rig.submit([(Self.header, 16, false)]).length == 0)
        #expect(try rig.submit([(Self.header, 16, false), (Self.status, 1, false)]) == (0, 0xff))
        // A refused chain (a buffer outside guest RAM).
        #expect(try rig.submit([(Self.header, 16, false), (0xF000_0000, 512, true), (Self.status, 1, true)]) == (0, 0xff))
        #expect(rig.disk.flushCount == 0)
    }

    @Test func backendFailuresBecomeStatuses() throws {
        var rig = try Rig(failing: .ioError("pread failed: EIO"))
        #expect(try rig.request(type: 0, sector: 0, data: [(Self.data, 512, true)]).status == Status.ioError)
        #expect(try rig.request(type: 4, sector: 0, data: []).status == Status.ioError)
        var unsupported = try Rig(failing: .unsupported("fallocate: EOPNOTSUPP"))
        try segment(unsupported, sector: 0, count: 1)
        #expect(try unsupported.request(type: 11, sector: 0, data: [(Self.data, 16, false)]).status == Status.unsupported)
    }

    @Test func aRunIsBoundedAndABrokenRingIsThrown() throws {
        var rig = try Rig(sectors: 64)
        try rig.header(type: 0, sector: 0)
        // 16 reads of 32 KiB... and a 16 MiB budget is not reached, but one ring's worth is.
        for _ in 0..<16 { _ = try rig.driver.addChain([(Self.header, 16, false), (Self.data, 0x8000, true), (Self.status, 1, true)]) }
        #expect(try rig.device.process(queue: &rig.queue, memory: rig.memory, backend: rig.disk).moreWaiting)
        #expect(try rig.driver.usedIndex() == 16)
        try rig.driver.setAvailableIndex(1000)
        #expect(throws: QueueError.self) { try rig.device.process(queue: &rig.queue, memory: rig.memory, backend: rig.disk) }
    }

    @Test func randomRequestsNeverTrapNorEscapeTheDisk() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var rig = try Rig(sectors: 8, readOnly: Bool.random(using: &generator), indirect: Bool.random(using: &generator))
            for index: UInt16 in 0..<16 {
                let address = index % 3 == 0 ? Self.header : UInt64.random(in: 0x2000...0x10_0100, using: &generator)
                let lengths: [UInt32] = [0, 1, 8, 16, 17, 512, 513, 4096, .max]
                try rig.driver.writeDescriptor(index, address: address, length: lengths.randomElement(using: &generator)!,
                                               flags: UInt16.random(in: 0...7, using: &generator),
                                               next: UInt16.random(in: 0...17, using: &generator))
            }
            let type: UInt32 = [0, 1, 4, 8, 11, 13, 2].randomElement(using: &generator)!
            try rig.memory.store(type, at: GuestAddress(Self.header))
            let high: UInt64 = Bool.random(using: &generator) ? 0 : UInt64.random(in: 0...UInt64.max, using: &generator)
            let sector: UInt64 = UInt64.random(in: 0...10, using: &generator) | high
            try rig.memory.store(sector, at: GuestAddress(Self.header + 8))
            for _ in 0..<UInt16.random(in: 0...16, using: &generator) {
                try rig.driver.publish(head: UInt16.random(in: 0...16, using: &generator))
            }
            _ = try? rig.device.process(queue: &rig.queue, memory: rig.memory, backend: rig.disk)
            #expect(try rig.driver.usedIndex() <= 16)
        }
    }
}
