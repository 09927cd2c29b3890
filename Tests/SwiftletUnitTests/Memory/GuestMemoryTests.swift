import Testing
@testable import SwiftletMemory

@Suite("Guest memory") struct GuestMemoryTests {
    func twoRegions() throws -> GuestMemory {
        try GuestMemory(ranges: [GuestRange(start: GuestAddress(0x10_0000), size: 0x1000)!,
                                 GuestRange(start: GuestAddress(0), size: 0x2000)!])
    }

    @Test func readsBackWhatWasWrittenInEachRegion() throws {
        let memory = try twoRegions()
        #expect(memory.regions.map(\.range.start) == [GuestAddress(0), GuestAddress(0x10_0000)])
        try memory.write([1, 2, 3], at: GuestAddress(0x1ffd))
        #expect(try memory.read(count: 3, at: GuestAddress(0x1ffd)) == [1, 2, 3])
        try memory.store(UInt32(0xdead_beef), at: GuestAddress(0x10_0ffc))
        #expect(try memory.load(UInt32.self, at: GuestAddress(0x10_0ffc)) == 0xdead_beef)
        #expect(try memory.read(count: 2, at: GuestAddress(0x10_0ffc)) == [0xef, 0xbe])
        try memory.fill(0xaa, count: 16, at: GuestAddress(0x10))
        #expect(try memory.read(count: 16, at: GuestAddress(0x10)) == [UInt8](repeating: 0xaa, count: 16))
        #expect(memory.size == 0x3000)
    }

    @Test func refusesAccessesOutsideOrAcrossRegions() throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x1fff), count: 2)) {
            try memory.write([1, 2], at: GuestAddress(0x1fff))
        }
        #expect(throws: GuestMemoryError.self) { try memory.load(UInt64.self, at: GuestAddress(0x10_0ffc)) }
        #expect(throws: GuestMemoryError.self) { try memory.read(count: 1, at: GuestAddress(0x5000)) }
        #expect(throws: GuestMemoryError.self) { try memory.store(UInt8(1), at: GuestAddress(UInt64.max)) }
        #expect(throws: GuestMemoryError.self) { try memory.fill(0, count: .max, at: GuestAddress(0)) }
        #expect(!memory.contains(GuestAddress(0xffff_ffff_ffff_fff0), count: 0x20))
    }

    @Test func orderedIndexAccessesAreLittleEndianAlignedAndBoundsChecked() throws {
        let memory = try twoRegions()
        try memory.storeRelease(0xbeef, at: GuestAddress(0x10_0ffe))
        #expect(try memory.read(count: 2, at: GuestAddress(0x10_0ffe)) == [0xef, 0xbe])
        #expect(try memory.loadAcquire(UInt16.self, at: GuestAddress(0x10_0ffe)) == 0xbeef)
        GuestMemory.fence()
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x11), alignment: 2)) {
            try memory.loadAcquire(at: GuestAddress(0x11))
        }
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x11), alignment: 2)) {
            try memory.storeRelease(1, at: GuestAddress(0x11))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x2000), count: 2)) {
            try memory.loadAcquire(at: GuestAddress(0x2000))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max - 1), count: 2)) {
            try memory.storeRelease(1, at: GuestAddress(UInt64.max - 1))
        }
    }

    @Test func refusesBadLayouts() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: []) }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(ranges: [GuestRange(start: GuestAddress(0x800), size: 0x1000)!])
        }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x2000)!,
                                     GuestRange(start: GuestAddress(0x1000), size: 0x2000)!])
        }
    }

    @Test func addressArithmeticNeverTraps() {
        #expect(GuestAddress(.max).checkedAdd(1) == nil)
        #expect(GuestAddress(0x1001).alignedUp(to: 0x1000) == GuestAddress(0x2000))
        #expect(GuestAddress(.max).alignedUp(to: 0x1000) == nil)
        #expect(GuestRange(start: GuestAddress(.max), size: 2) == nil)
        #expect(GuestRange(start: GuestAddress(.max), size: 1)?.end == nil)
        #expect(formatByteCount(256 << 20) == "256 MiB")
        #expect(formatByteCount(1536 << 20) == "1.5 GiB")
        #expect(formatByteCount(3 << 30) == "3 GiB")
    }
}

import Foundation
import SystemPackage

@Suite("File reads") struct FileReadTests {
    @Test func readBytesStopsAtEndOfFileAndRefusesHugeOffsets() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-readbytes-\(getpid())").path
        try Data([1, 2, 3, 4, 5]).write(to: URL(fileURLWithPath: path))
        let file = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? file.close() }
        #expect(try file.readBytes(at: 1, count: 3) == [2, 3, 4])
        #expect(try file.readBytes(at: 3, count: 10) == [4, 5])
        #expect(try file.readBytes(at: 100, count: 10) == [])
        #expect(throws: Errno.self) { try file.readBytes(at: .max, count: 1) }
        let memory = try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1000)!])
        #expect(throws: GuestMemoryError.self) {
            try memory.read(from: file, fileOffset: .max - 1, count: 4, into: GuestAddress(0))
        }
        #expect(throws: GuestMemoryError.shortRead(expected: 10, got: 5)) {
            try memory.read(from: file, fileOffset: 0, count: 10, into: GuestAddress(0))
        }
    }
}

@Suite("Guest memory zeroing") struct GuestMemoryZeroingTests {
    @Test(arguments: [(UInt64(0x10), UInt64(0x3000)), (0x1000, 0x2000), (0xff0, 0x20), (0, 0x4000), (0x123, 0x1)])
    func zeroFillClearsExactlyTheRange(start: UInt64, count: UInt64) throws {
        let memory = try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x4000)!])
        try memory.fill(0xee, count: 0x4000, at: GuestAddress(0))
        try memory.fill(0, count: count, at: GuestAddress(start))
        let bytes = try memory.read(count: 0x4000, at: GuestAddress(0))
        for (index, byte) in bytes.enumerated() {
            let inside = UInt64(index) >= start && UInt64(index) < start + count
            if byte != (inside ? 0 : 0xee) {
                Issue.record("byte \(index) is \(byte)")
                break
            }
        }
    }
}
