// libFuzzer target: a hostile driver talks to the vsock device.
//
// The input's first byte picks the rings' features (bit 0 indirect descriptors, bit 1 event-idx);
// the rest is guest RAM from 0x1000 on, where the receive queue (size 8: descriptor table 0x1000,
// available ring 0x1080, used ring 0x1098) and the transmit queue (size 8: 0x1100, 0x1180, 0x1198)
// live, so descriptors, ring entries, packet headers and payloads all come from the fuzzer. Before
// the guest's packets, a host client has connected and written "CONNECT 1024\n" and a line of data,
// and host services listen on ports 6000 to 6003. The device then serves the transmit queue, the
// host streams turn readable and writable, and the receive queue is filled, twice. It must never
// trap, use a stream it closed or close one twice, hold more connections than its cap, or return
// more chains than a ring holds.
import Foundation
import FuzzSupport
import SwiftletMemory
import SwiftletVirtio

/// Host streams in memory that check the device's use of them.
final class CheckedStreams: VsockBackend {
    struct Stream {
        var incoming: [UInt8]
        var written = 0
        var closed = false
    }

    var streams: [Int: Stream] = [:]
    private var next = 1

    func add(_ incoming: [UInt8]) -> Int {
        streams[next] = Stream(incoming: incoming)
        next += 1
        return next - 1
    }

    private func live(_ stream: Int) -> Stream {
        guard let entry = streams[stream], !entry.closed else { preconditionFailure("stream \(stream) used after close") }
        return entry
    }

    func connect(port: UInt32) -> Int? { (6000..<6004).contains(port) ? add(Array("service \(port)\n".utf8)) : nil }

    func read(_ stream: Int, into ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        var entry = live(stream)
        guard !entry.incoming.isEmpty else { return .moved(0) }
        var moved = 0
        for range in ranges where moved < entry.incoming.count {
            let count = min(Int(range.size), entry.incoming.count - moved)
            try? memory.write(entry.incoming[moved..<moved + count], at: range.start)
            moved += count
        }
        entry.incoming.removeFirst(moved)
        streams[stream] = entry
        return .moved(moved)
    }

    func read(_ stream: Int, appendingTo bytes: inout [UInt8], count: Int) -> VsockIO {
        var entry = live(stream)
        guard !entry.incoming.isEmpty else { return .wouldBlock }
        let taken = entry.incoming.prefix(count)
        bytes += taken
        entry.incoming.removeFirst(taken.count)
        streams[stream] = entry
        return .moved(taken.count)
    }

    /// Takes at most 100 bytes per call, so the device's buffering is exercised.
    private func take(_ stream: Int, _ count: Int) -> VsockIO {
        var entry = live(stream)
        let moved = min(count, 100)
        entry.written += moved
        streams[stream] = entry
        return moved > 0 ? .moved(moved) : .wouldBlock
    }

    func write(_ stream: Int, from ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        for range in ranges { precondition(memory.contains(range.start, count: range.size), "a range outside guest RAM") }
        return take(stream, ranges.reduce(0) { $0 + Int($1.size) })
    }

    func write(_ stream: Int, bytes: ArraySlice<UInt8>) -> VsockIO { take(stream, bytes.count) }

    func setInterest(_ stream: Int, _ events: VsockEvents) { _ = live(stream) }

    func close(_ stream: Int) {
        var entry = live(stream)
        entry.closed = true
        streams[stream] = entry
    }
}

func exercise(_ input: [UInt8]) {
    guard let flags = input.first,
          let memory = try? GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x1_0000)!]) else { return }
    try? memory.write(input.dropFirst().prefix(0xf000), at: GuestAddress(0x1000))
    func queue(_ base: UInt64) -> SplitQueue? {
        let state = SplitQueue.State(size: 8, descriptorTable: GuestAddress(base), availableRing: GuestAddress(base + 0x80),
                                     usedRing: GuestAddress(base + 0x98), eventIndex: flags & 2 != 0,
                                     indirectDescriptors: flags & 1 != 0)
        guard let queue = try? SplitQueue(state: state, maximumSize: VirtioVsock.queueMaximumSize, memory: memory) else {
            preconditionFailure("the fixed queue layout was refused")
        }
        return queue
    }
    var queues: [SplitQueue?] = [queue(0x1000), queue(0x1100), nil]
    var device = VirtioVsock(state: .init(guestCID: 3))
    let backend = CheckedStreams()
    let client = backend.add(Array("CONNECT 1024\nhello from the host\n".utf8))
    device.acceptHostConnection(client, backend: backend)
    do {
        _ = try device.streamReady(client, events: .readable, queues: &queues, memory: memory, backend: backend)
        for _ in 0..<2 {
            _ = try device.process(queue: VirtioVsock.transmitQueue, queues: &queues, memory: memory, backend: backend)
            for (stream, entry) in backend.streams where !entry.closed {
                _ = try device.streamReady(stream, events: [.readable, .writable], queues: &queues, memory: memory, backend: backend)
            }
            _ = try device.process(queue: VirtioVsock.receiveQueue, queues: &queues, memory: memory, backend: backend)
        }
    } catch {
        // A broken ring: the device would need a reset.
    }
    precondition(device.connectionCount <= VirtioVsock.maximumConnections, "more connections than the cap")
    for queue in queues.compactMap({ $0 }) {
        precondition(queue.state.nextUsed <= 8, "returned more chains than the ring held")
    }
    device.reset(backend: backend)
    precondition(backend.streams.values.allSatisfy(\.closed), "a stream left open after reset")
}

#if FUZZING
/// The input callback libFuzzer's driver calls.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzVirtioVsock_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
