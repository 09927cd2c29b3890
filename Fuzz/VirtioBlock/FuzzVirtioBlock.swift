// libFuzzer target: a hostile driver submits virtio-blk requests.
//
// The input's first byte picks the device (bit 0 read-only, bit 1 indirect descriptors, bit 2
// event-idx); the rest is guest RAM from 0x1000 on, where a queue of size 8 lives (descriptor table
// at 0x1000, available ring at 0x1080, used ring at 0x1098), so descriptors, ring entries, headers,
// segments and data all come from the fuzzer. The device serves the queue once over a 16-sector
// in-memory disk. It must never trap, return more chains than the ring holds, or change a
// read-only disk. Built by scripts/fuzz with -sanitize=fuzzer; a plain build is a replay driver
// that runs the files it is given (the corpus, in CI).
import Foundation
import FuzzSupport
import SwiftletMemory
import SwiftletVirtio

/// A 16-sector disk in an array (the target runs one input at a time).
final class ArrayDisk: BlockBackend, @unchecked Sendable {
    var bytes = [UInt8](repeating: 0x5a, count: 16 * 512)
    var capacity: UInt64 { 16 }

    func read(sector: UInt64, into ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        var offset = Int(sector * 512)
        for range in ranges {
            precondition(offset + Int(range.size) <= bytes.count, "read past the disk")
            do { try memory.write(bytes[offset..<offset + Int(range.size)], at: range.start) } catch { throw .ioError("\(error)") }
            offset += Int(range.size)
        }
    }

    func write(sector: UInt64, from ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError) {
        var offset = Int(sector * 512)
        for range in ranges {
            precondition(offset + Int(range.size) <= bytes.count, "write past the disk")
            do {
                bytes.replaceSubrange(offset..<offset + Int(range.size), with: try memory.read(count: Int(range.size), at: range.start))
            } catch { throw .ioError("\(error)") }
            offset += Int(range.size)
        }
    }

    func flush() throws(BlockBackendError) {}
    func discard(sector: UInt64, count: UInt64) throws(BlockBackendError) { try writeZeroes(sector: sector, count: count) }
    func writeZeroes(sector: UInt64, count: UInt64) throws(BlockBackendError) {
        precondition(sector + count <= capacity, "zeroes past the disk")
        bytes.replaceSubrange(Int(sector * 512)..<Int((sector + count) * 512), with: [UInt8](repeating: 0, count: Int(count * 512)))
    }
}

func exercise(_ input: [UInt8]) {
    guard let flags = input.first,
          let memory = try? GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1_0000)!]) else { return }
    try? memory.write(input.dropFirst().prefix(0xf000), at: GuestAddress(0x1000))
    let state = SplitQueue.State(size: 8, descriptorTable: GuestAddress(0x1000), availableRing: GuestAddress(0x1080),
                                 usedRing: GuestAddress(0x1098), eventIndex: flags & 4 != 0,
                                 indirectDescriptors: flags & 2 != 0)
    guard var queue = try? SplitQueue(state: state, maximumSize: VirtioBlock.queueMaximumSize, memory: memory) else {
        preconditionFailure("the fixed queue layout was refused")
    }
    let readOnly = flags & 1 != 0
    var device = VirtioBlock(configuration: .init(capacity: 16, readOnly: readOnly, serial: "fuzz"))
    let disk = ArrayDisk()
    let before = disk.bytes
    _ = try? device.process(queue: &queue, memory: memory, backend: disk)
    precondition(queue.state.nextUsed <= 8, "returned more chains than the ring holds")
    if readOnly { precondition(disk.bytes == before, "a read-only disk changed") }
}

#if FUZZING
/// The input callback libFuzzer's driver calls.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzVirtioBlock_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
