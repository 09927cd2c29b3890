// libFuzzer target: a hostile driver (and a hostile peer) drive a virtio-net device.
//
// Byte 0 picks the device: bit 0 mergeable receive buffers, bit 1 indirect descriptors, bit 2
// event-idx, bit 3 a backend that carries the virtio-net header, bit 4 offloads, bits 5-7 how many
// frames the backend takes before it would block (7: no limit). Byte 1 picks the frames waiting for
// the guest: its low nibble how many, each of a length from a fixed list (runts, MTU, over-long)
// chosen by the rest of the input. The rest is guest RAM from 0x1000 on: a receive queue of 8
// (descriptor table 0x1000, available ring 0x1080, used ring 0x1098) and a transmit queue of 8
// (0x1100, 0x1180, 0x1198), so descriptors, ring entries, headers and frames come from the
// fuzzer. The device transmits, receives, receives again (the driver's kick) and transmits again
// with no limit. It must never trap, return more chains than were published, send a frame longer
// than the limit, or send more frames than chains. Built by scripts/fuzz with -sanitize=fuzzer; a
// plain build is a replay driver that runs the files it is given (the corpus, in CI).
import Foundation
import FuzzSupport
import SwiftletMemory
import SwiftletVirtio

/// Frame lengths the backend delivers (with the header when it carries one).
let frameLengths = [0, 1, 13, 25, 26, 60, 1514, 3000, VirtioNet.maximumFrameLength, VirtioNet.maximumFrameLength + 100]

func exercise(_ input: [UInt8]) {
    guard input.count >= 2,
          let memory = try? GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1_0000)!]) else { return }
    let flags = input[0]
    try? memory.write(input.dropFirst(2).prefix(0xf000), at: GuestAddress(0x1000))
    func queue(_ base: UInt64) -> SplitQueue {
        let state = SplitQueue.State(size: 8, descriptorTable: GuestAddress(base), availableRing: GuestAddress(base + 0x80),
                                     usedRing: GuestAddress(base + 0x98), eventIndex: flags & 4 != 0,
                                     indirectDescriptors: flags & 2 != 0)
        guard let queue = try? SplitQueue(state: state, maximumSize: VirtioNet.queueMaximumSize, memory: memory) else {
            preconditionFailure("the fixed queue layout was refused")
        }
        return queue
    }
    var rx = queue(0x1000), tx = queue(0x1100)
    let backend = MemoryNetBackend(carriesHeader: flags & 8 != 0, supportsOffloads: flags & 16 != 0)
    let room = Int(flags >> 5)
    backend.room = room == 7 ? nil : room
    for index in 0..<Int(input[1] & 15) {
        let pick = Int(input[(2 + index) % input.count]) % frameLengths.count
        backend.incoming.append([UInt8](repeating: UInt8(truncatingIfNeeded: index), count: frameLengths[pick]))
    }
    var device = VirtioNet(configuration: .init(offloads: backend.supportsOffloads))
    device.activate(features: (flags & 1 != 0 ? VirtioNet.Feature.mergeableReceiveBuffers : 0) | VirtioFeature.version1)
    _ = try? device.transmit(queue: &tx, memory: memory, backend: backend)
    _ = try? device.receive(queue: &rx, memory: memory, backend: backend)
    _ = try? device.receive(queue: &rx, memory: memory, backend: backend)
    backend.room = nil
    _ = try? device.transmit(queue: &tx, memory: memory, backend: backend)
    for queue in [rx, tx] {
        precondition(queue.state.nextAvailable &- queue.state.nextUsed <= 8, "used entries without a published chain")
    }
    precondition(backend.sent.count <= Int(tx.state.nextUsed), "more frames sent than chains returned")
    precondition(backend.sent.allSatisfy { $0.count <= Int(VirtioNet.maximumChainLength) }, "a frame over the limit went out")
}

#if FUZZING
/// The input callback libFuzzer's driver calls.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzVirtioNet_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
