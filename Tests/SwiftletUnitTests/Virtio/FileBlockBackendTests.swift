import Foundation
import SystemPackage
import Testing
import Swiftlet
import SwiftletMemory
import SwiftletVirtio

@Suite("File block backend") struct FileBlockBackendTests {
    /// Runs `body` with the path of a fresh image holding `bytes` (sector n filled with n + 1), then removes it.
    func withImage(sectors: Int = 8, _ body: (String) throws -> Void) throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-disk-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).img").path
        let bytes = (0..<sectors).flatMap { [UInt8](repeating: UInt8($0 + 1), count: 512) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        try body(path)
    }

    func contents(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    func range(_ start: UInt64, _ size: UInt64) -> GuestRange { GuestRange(start: GuestAddress(start), size: size)! }

    @Test func readsWritesFlushesAndPunchesHoles() throws {
        try withImage { path in
            let disk = try FileBlockBackend(path: path, readOnly: false)
            #expect(disk.capacity == 8)
            let memory = try DriverSideQueue.makeMemory()
            try disk.read(sector: 2, into: [range(0x1000, 256), range(0x3000, 768)], memory: memory)
            #expect(try memory.read(count: 256, at: GuestAddress(0x1000)) == [UInt8](repeating: 3, count: 256))
            #expect(try memory.read(count: 768, at: GuestAddress(0x3000)) == [UInt8](repeating: 3, count: 256) + [UInt8](repeating: 4, count: 512))
            try memory.fill(0xee, count: 512, at: GuestAddress(0x5000))
            try disk.write(sector: 7, from: [range(0x5000, 512)], memory: memory)
            try disk.flush()
            try disk.writeZeroes(sector: 0, count: 1)
            try disk.discard(sector: 1, count: 1)
            let bytes = try contents(path)
            #expect(bytes.count == 4096)
            #expect(Array(bytes[0..<1024]) == [UInt8](repeating: 0, count: 1024))
            #expect(Array(bytes[1024..<1536]) == [UInt8](repeating: 3, count: 512))
            #expect(Array(bytes[3584...]) == [UInt8](repeating: 0xee, count: 512))
        }
    }

    @Test func aTruncatedImageGivesAnIOErrorNotATrap() throws {
        try withImage { path in
            let disk = try FileBlockBackend(path: path, readOnly: false)
            #expect(truncate(path, 1024) == 0)
            let memory = try DriverSideQueue.makeMemory()
            #expect(throws: BlockBackendError.self) { try disk.read(sector: 4, into: [range(0x1000, 512)], memory: memory) }
        }
    }

    @Test func locksSoThatTwoWritersCannotShareAnImage() throws {
        try withImage { path in
            do {
                let writer = try FileBlockBackend(path: path, readOnly: false)
                #expect(throws: DiskImageError.inUse(path: path, readOnly: false)) { try FileBlockBackend(path: path, readOnly: false) }
                #expect(throws: DiskImageError.inUse(path: path, readOnly: true)) { try FileBlockBackend(path: path, readOnly: true) }
                _ = writer
            }
            do {
                let first = try FileBlockBackend(path: path, readOnly: true)
                let second = try FileBlockBackend(path: path, readOnly: true)      // readers share
                #expect(throws: DiskImageError.inUse(path: path, readOnly: false)) { try FileBlockBackend(path: path, readOnly: false) }
                _ = (first, second)
            }
            _ = try FileBlockBackend(path: path, readOnly: false)                  // the locks went with them
        }
    }

    @Test func refusesWhatIsNotARawImageInOneLine() throws {
        let directory = FileManager.default.temporaryDirectory.path
        #expect(throws: DiskImageError.notRegularFile(path: directory, kind: .directory)) {
            try FileBlockBackend(path: directory, readOnly: false)
        }
        #expect(throws: DiskImageError.notRegularFile(path: directory, kind: .directory)) {
            try FileBlockBackend(path: directory, readOnly: true)
        }
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-disk-fifo-\(getpid())").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(throws: DiskImageError.notRegularFile(path: fifo, kind: .fifo)) { try FileBlockBackend(path: fifo, readOnly: true) }
        #expect(throws: DiskImageError.openFailed(path: "/nonexistent/disk.img", .noSuchFileOrDirectory)) {
            try FileBlockBackend(path: "/nonexistent/disk.img", readOnly: false)
        }
        try withImage(sectors: 0) { path in
            #expect(throws: DiskImageError.empty(path: path)) { try FileBlockBackend(path: path, readOnly: false) }
        }
        let messages = [DiskImageError.notRegularFile(path: "/d", kind: .directory).description,
                        DiskImageError.inUse(path: "/d", readOnly: false).description,
                        DiskImageError.openFailed(path: "/d", .permissionDenied).description]
        #expect(messages[0] == "disk image \"/d\" is a directory, not a regular file; pass a raw image file")
        #expect(messages.allSatisfy { !$0.contains("\n") })
        #expect(messages[2].contains(",ro"))
    }

    @Test func drivesTheDeviceEndToEnd() throws {
        try withImage { path in
            let disk = try FileBlockBackend(path: path, readOnly: true)
            let memory = try DriverSideQueue.makeMemory()
            var driver = try DriverSideQueue(memory: memory, size: 8)
            var queue = try driver.deviceQueue()
            var device = VirtioBlock(configuration: .init(capacity: disk.capacity, readOnly: true, serial: "vda"))
            try memory.store(UInt32(0), at: GuestAddress(0x8_0000))
            try memory.store(UInt64(5), at: GuestAddress(0x8_0008))
            _ = try driver.addChain([(0x8_0000, 16, false), (0x9_0000, 1024, true), (0x8_1000, 1, true)])
            try memory.store(UInt32(1), at: GuestAddress(0x8_2000))
            try memory.store(UInt64(0), at: GuestAddress(0x8_2008))
            _ = try driver.addChain([(0x8_2000, 16, false), (0x9_0000, 512, false), (0x8_3000, 1, true)])
            _ = try device.process(queue: &queue, memory: memory, backend: disk)
            #expect(try memory.read(count: 1024, at: GuestAddress(0x9_0000)) == [UInt8](repeating: 6, count: 512) + [UInt8](repeating: 7, count: 512))
            #expect(try memory.load(UInt8.self, at: GuestAddress(0x8_1000)) == VirtioBlock.Status.ok)
            #expect(try memory.load(UInt8.self, at: GuestAddress(0x8_3000)) == VirtioBlock.Status.ioError)
            #expect(try contents(path)[0] == 1)
        }
    }
}
