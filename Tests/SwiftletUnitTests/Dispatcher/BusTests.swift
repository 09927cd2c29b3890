import Testing
import SwiftletHost
@testable import SwiftletCore

/// A device that remembers the last write and answers reads with its offset.
private struct EchoDevice: BusDevice {
    var lastWrite: (offset: UInt64, value: UInt64)?
    mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 { offset }
    mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) { lastWrite = (offset, value) }
}

@Suite("Bus") struct BusTests {
    @Test func routesByRangeAndHandsOutOffsets() throws {
        var bus = Bus(name: "PIO")
        let a = SharedDevice(EchoDevice())
        let b = SharedDevice(EchoDevice())
        try bus.insert(a, named: "a", at: 0x3f8, size: 8)
        try bus.insert(b, named: "b", at: 0x60, size: 1)
        let hit = try #require(bus.lookup(0x3fd))
        #expect(hit.entry.name == "a")
        #expect(hit.offset == 5)
        #expect(bus.lookup(0x60)?.entry.name == "b")
        #expect(bus.lookup(0x61) == nil)
        #expect(bus.lookup(0x3f7) == nil)
        #expect(bus.lookup(0x400) == nil)
        hit.entry.handler.write(at: hit.offset, width: .byte, value: 0x41)
        #expect(a.withLock { $0.lastWrite?.value } == 0x41)
    }

    @Test func refusesOverlaps() throws {
        var bus = Bus(name: "MMIO")
        try bus.insert(SharedDevice(EchoDevice()), named: "first", at: 0x1000, size: 0x1000)
        #expect(throws: BusError.self) { try bus.insert(SharedDevice(EchoDevice()), named: "second", at: 0x1fff, size: 2) }
        #expect(throws: BusError.self) { try bus.insert(SharedDevice(EchoDevice()), named: "third", at: 0x0, size: 0x1001) }
        try bus.insert(SharedDevice(EchoDevice()), named: "fourth", at: 0x2000, size: 1)
        #expect(bus.entries.map(\.name) == ["first", "fourth"])
    }

    @Test func refusesEmptyAndWrappingRanges() {
        var bus = Bus(name: "MMIO")
        #expect(throws: BusError.self) { try bus.insert(SharedDevice(EchoDevice()), named: "empty", at: 0x10, size: 0) }
        #expect(throws: BusError.self) { try bus.insert(SharedDevice(EchoDevice()), named: "wrap", at: .max, size: 2) }
    }

    @Test(arguments: AccessWidth.allCases) func allOnesMatchesWidth(width: AccessWidth) {
        #expect(width.allOnes == (width == .qword ? UInt64.max : (UInt64(1) << (8 * UInt64(width.bytes))) - 1))
    }
}

@Suite("Byte coding") struct ByteCodingTests {
    @Test func littleEndianRoundTrips() {
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes.storeLittleEndian(UInt32(0x1122_3344), at: 1)
        #expect(Array(bytes[0...5]) == [0, 0x44, 0x33, 0x22, 0x11, 0])
        #expect(bytes.loadLittleEndian(UInt32.self, at: 1) == 0x1122_3344)
        bytes.storeLittleEndian(UInt64(0x8899_aabb_ccdd_eeff), at: 4)
        #expect(bytes.loadLittleEndian(UInt32.self, at: 1) == 0xff22_3344)   // byte 4 now belongs to the UInt64
        #expect(bytes.loadLittleEndian(UInt64.self, at: 4) == 0x8899_aabb_ccdd_eeff)
        #expect([UInt8](littleEndian: UInt16(0x1234), count: 2) == [0x34, 0x12])
        #expect([UInt8](littleEndian: 0x0102_0304, count: 3) == [4, 3, 2])
        #expect([UInt8](littleEndian: UInt8(7), count: 10) == [7, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }
}
