import Foundation
import SystemPackage
import Testing
import SwiftletMemory

@Suite("Vectored file I/O into guest memory") struct VectoredIOTests {
    /// Two adjacent regions, [0, 0x2000) and [0x2000, 0x3000), so a range can straddle them.
    func memory() throws -> GuestMemory {
        try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x2000)!,
                                 GuestRange(start: GuestAddress(0x2000), size: 0x1000)!])
    }

    /// Runs `body` on a fresh temporary file holding `bytes`, opened read-write, then removes it.
    func withFile(_ bytes: [UInt8], _ body: (FileDescriptor) throws -> Void) throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-vectored-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let file = try FileDescriptor.open(FilePath(path), .readWrite)
        defer { try? file.close() }
        try body(file)
    }

    func range(_ start: UInt64, _ size: UInt64) -> GuestRange { GuestRange(start: GuestAddress(start), size: size)! }

    @Test func readsScatteredRangesInOrder() throws {
        let pattern = (0..<64).map { UInt8($0) }
        let memory = try memory()
        try withFile(pattern) { file throws in
            #expect(try memory.read(from: file, at: 8, into: [range(0x100, 4), range(0x2ff0, 8)]) == 12)
            #expect(try memory.read(count: 4, at: GuestAddress(0x100)) == [8, 9, 10, 11])
            #expect(try memory.read(count: 8, at: GuestAddress(0x2ff0)) == Array(12..<20))
            #expect(try memory.read(count: 1, at: GuestAddress(0x104)) == [0])
        }
    }

    @Test func aShortReadAtEndOfFileReturnsItsCount() throws {
        let memory = try memory()
        try withFile([1, 2, 3, 4, 5]) { file throws in
            #expect(try memory.read(from: file, at: 2, into: [range(0, 2), range(0x10, 16)]) == 3)
            #expect(try memory.read(count: 3, at: GuestAddress(0x10)) == [5, 0, 0])
            #expect(try memory.read(from: file, at: 100, into: [range(0, 16)]) == 0)
        }
    }

    @Test func writesScatteredRangesAndReadsThemBack() throws {
        let memory = try memory()
        try memory.write([0xaa, 0xbb], at: GuestAddress(0x1ffe))
        try memory.write([0xcc, 0xdd, 0xee], at: GuestAddress(0x2000))
        try withFile([UInt8](repeating: 0, count: 8)) { file throws in
            #expect(try memory.write(to: file, at: 4, from: [range(0x1ffe, 2), range(0x2000, 3)]) == 5)
            #expect(try file.readBytes(at: 0, count: 16) == [0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        }
    }

    @Test func refusesRangesOutsideOrAcrossRegionsBeforeAnyIO() throws {
        let memory = try memory()
        try withFile([UInt8](repeating: 7, count: 16)) { file throws in
            #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x1ff0), count: 0x20)) {
                try memory.read(from: file, at: 0, into: [range(0, 4), range(0x1ff0, 0x20)])
            }
            #expect(try memory.read(count: 4, at: GuestAddress(0)) == [0, 0, 0, 0])     // nothing read
            #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x3000), count: 1)) {
                try memory.write(to: file, at: 0, from: [range(0x3000, 1)])
            }
            #expect(try file.readBytes(at: 0, count: 1) == [7])
        }
    }

    @Test func refusesOffsetsPastTheLargestFileOffsetAndReportsHostErrors() throws {
        let memory = try memory()
        try withFile([1]) { file throws in
            #expect(throws: GuestMemoryError.readFailed(Errno(rawValue: EOVERFLOW))) {
                try memory.read(from: file, at: UInt64(Int64.max) - 1, into: [range(0, 4)])
            }
            #expect(throws: GuestMemoryError.writeFailed(Errno(rawValue: EOVERFLOW))) {
                try memory.write(to: file, at: .max, from: [range(0, 1)])
            }
        }
        #expect(throws: GuestMemoryError.readFailed(.badFileDescriptor)) {
            try memory.read(from: FileDescriptor(rawValue: -1), at: 0, into: [range(0, 1)])
        }
    }

    @Test func moreRangesThanOneSystemCallTakes() throws {
        let memory = try memory()
        let pattern = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try withFile(pattern) { file throws in
            let ranges = (0..<1500).map { range(UInt64($0) * 2, 2) }
            #expect(try memory.read(from: file, at: 0, into: ranges) == 3000)
            #expect(try memory.read(count: 3000, at: GuestAddress(0)) == pattern)
        }
    }

    @Test func anEmptyListMovesNothing() throws {
        let memory = try memory()
        try withFile([1]) { file throws in
            #expect(try memory.read(from: file, at: 0, into: []) == 0)
            #expect(try memory.write(to: file, at: 0, from: []) == 0)
        }
    }
}
