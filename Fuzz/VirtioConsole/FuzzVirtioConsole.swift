// libFuzzer target: a hostile driver's virtio-console queues.
//
// The input's first byte picks the device (bit 0 indirect descriptors, bit 1 event-idx), the second
// the output sink's capacity per round (0-255 bytes), the third how many input bytes wait; the rest
// is guest RAM from 0x1000 on, where receiveq0 (size 8: descriptor table at 0x1000, available ring
// at 0x1080, used ring at 0x1098) and transmitq0 (size 8, at 0x1100, 0x1180 and 0x1198) live, so
// descriptors, ring entries and the bytes sent all come from the fuzzer. The device serves the
// receive queue once and the transmit queue over four rounds, the sink emptied between rounds. It
// must never trap, return more chains than it took, take more output than the sink had room for,
// keep a chain back while the sink still has room, or take more input than was waiting.
// Built by scripts/fuzz with -sanitize=fuzzer; a plain build is a replay driver that runs the files
// it is given (the corpus, in CI).
import FuzzSupport
import SwiftletCore
import SwiftletMemory
import SwiftletVirtio

/// An output sink with a fixed room per round (the target runs one input at a time).
final class RoundSink: OutputSink, @unchecked Sendable {
    var taken: [UInt8] = []
    var capacity = 0
    var room: Int { capacity - taken.count }
    func write(_ byte: UInt8) -> Bool { write(contentsOf: [byte]) == 1 }
    func write(contentsOf bytes: [UInt8]) -> Int {
        let count = min(bytes.count, room)
        taken += bytes.prefix(count)
        return count
    }
}

/// Input bytes waiting for the guest.
final class WaitingInput: InputSource, @unchecked Sendable {
    var bytes: [UInt8]
    init(count: Int) { bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0) } }
    var isEmpty: Bool { bytes.isEmpty }
    func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
        let taken = bytes.prefix(max(0, limit))
        taken.forEach(body)
        bytes.removeFirst(taken.count)
        return taken.count
    }
}

func exercise(_ input: [UInt8]) {
    guard input.count >= 3,
          let memory = try? GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1_0000)!]) else { return }
    let flags = input[0]
    try? memory.write(input.dropFirst(3).prefix(0xf000), at: GuestAddress(0x1000))
    func queue(at base: UInt64) -> SplitQueue {
        let state = SplitQueue.State(size: 8, descriptorTable: GuestAddress(base), availableRing: GuestAddress(base + 0x80),
                                     usedRing: GuestAddress(base + 0x98), eventIndex: flags & 2 != 0,
                                     indirectDescriptors: flags & 1 != 0)
        guard let queue = try? SplitQueue(state: state, maximumSize: VirtioConsole.queueMaximumSize, memory: memory) else {
            preconditionFailure("the fixed queue layout was refused")
        }
        return queue
    }
    var receive = queue(at: 0x1000)
    var transmit = queue(at: 0x1100)
    var device = VirtioConsole()
    let source = WaitingInput(count: Int(input[2]))
    let waiting = source.bytes.count
    if (try? device.processReceive(queue: &receive, memory: memory, source: source)) != nil {
        precondition(receive.state.nextUsed == receive.state.nextAvailable, "a receive chain was kept or invented")
    }
    precondition(source.bytes.count <= waiting, "input appeared")
    let sink = RoundSink()
    for _ in 0..<4 {
        sink.taken = []
        sink.capacity = Int(input[1])
        guard (try? device.processTransmit(queue: &transmit, memory: memory, sink: sink)) != nil else { break }
        precondition(sink.taken.count <= sink.capacity, "the sink took more than its room")
        let kept: UInt16 = device.state.transmitting == nil ? 0 : 1
        precondition(transmit.state.nextUsed &+ kept == transmit.state.nextAvailable, "a transmit chain was lost or invented")
        precondition(kept == 0 || sink.room == 0, "a chain was kept back while the sink had room")
    }
}

#if FUZZING
/// The input callback libFuzzer's driver calls.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzVirtioConsole_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
