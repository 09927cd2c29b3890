// libFuzzer target: a hostile driver lays out a split virtqueue, its descriptor tables and its
// indirect tables in guest RAM, and the device validates the queue and walks every chain.
//
// Input: a 17-byte header, then guest RAM.
//
// | bytes | meaning                                                                                 |
// |-------|-----------------------------------------------------------------------------------------|
// | 0–1   | queue size: bit 7 of byte 0 clear, `1 << (byte0 & 15)`; set, `(byte0 & 0x7f) << 8 | byte1` (any value, 0 too) |
// | 2     | the device's maximum size, `1 << (byte2 & 15)`                                          |
// | 3     | bit 0 indirect descriptors, bit 1 event-idx, bits 2–3 length limit (max, 0, 100, 4096), bits 4–5 / 6–7 address mode of the descriptor table / available ring |
// | 4     | bits 0–1 address mode of the used ring                                                  |
// | 5–6   | `nextAvailable` (little-endian); 7–8 `nextUsed`                                         |
// | 9–14  | the 16-bit offsets of the descriptor table, the available ring and the used ring        |
// | 15–16 | one extra head returned with `addUsed` (in range or not)                                |
//
// An address mode turns an offset into a guest address: 0 the offset into RAM counted without
// the hole (both regions), 1 the raw offset (can fall in the hole), 2 the end of RAM minus the
// offset (areas straddling the end), 3 `UInt64.max` minus the offset (areas wrapping 2^64).
// Guest RAM is 64 KiB in two 32 KiB regions with a 32 KiB hole: [0, 0x8000) and
// [0x10000, 0x18000). The rest of the input, repeated as often as it takes, fills it (region
// after region), so rings, descriptors and indirect tables anywhere in RAM are the fuzzer's.
//
// A run validates the queue; if it validates, it pops every available head (continuing past
// refused heads, as a lenient device would), walks each chain, returns them all with `addUsed`,
// asks `needsNotification` and `enableNotification`, and does a second round if the latter says
// work came (the used ring may overlap the available ring). Invariants: no trap; every buffer is
// non-empty and inside one RAM region; readable buffers come first; the lengths add up and respect
// the limit; at most 2 × size buffers; at most size pops per round; the indices move by one per
// pop and per used entry; a chain walks the same way twice. Built by scripts/fuzz with
// -sanitize=fuzzer; a plain build is a replay driver that runs the files it is given.
import Foundation
import FuzzSupport
import SwiftletMemory
import SwiftletVirtio

/// The two RAM regions (an independent oracle for "inside guest RAM").
let regions: [(start: UInt64, size: UInt64)] = [(0, 0x8000), (0x1_0000, 0x8000)]
let memory = try! GuestMemory(ranges: regions.map { GuestRange(start: GuestAddress($0.start), size: $0.size)! })
let headerSize = 17

func insideRAM(_ start: UInt64, _ size: UInt64) -> Bool {
    regions.contains { size > 0 && start >= $0.start && size <= $0.size && start - $0.start <= $0.size - size }
}

func address(mode: UInt8, offset: UInt16) -> GuestAddress {
    let offset = UInt64(offset)
    switch mode & 3 {
    case 0: return GuestAddress(offset < 0x8000 ? offset : offset - 0x8000 + 0x1_0000)
    case 1: return GuestAddress(offset)
    case 2: return GuestAddress(0x1_8000 &- offset)
    default: return GuestAddress(UInt64.max - offset)
    }
}

func check(_ chain: DescriptorChain, head: UInt16, size: UInt16, limit: UInt32) {
    precondition(chain.head == head, "chain head \(chain.head) for head \(head)")
    precondition(chain.buffers.count <= 2 * Int(size), "\(chain.buffers.count) buffers in a queue of \(size)")
    var readable: UInt64 = 0, writable: UInt64 = 0, sawWritable = false
    for buffer in chain.buffers {
        precondition(insideRAM(buffer.range.start.rawValue, buffer.range.size), "buffer \(buffer.range) outside RAM")
        precondition(memory.contains(buffer.range.start, count: buffer.range.size), "buffer \(buffer.range) not in one region")
        if buffer.isWritable {
            sawWritable = true
            writable += buffer.range.size
        } else {
            precondition(!sawWritable, "a readable buffer after a writable one")
            readable += buffer.range.size
        }
    }
    precondition(readable == UInt64(chain.readableLength) && writable == UInt64(chain.writableLength),
                 "lengths \(chain.readableLength)/\(chain.writableLength), buffers add up to \(readable)/\(writable)")
    precondition(readable + writable <= UInt64(limit), "total \(readable + writable) above the limit \(limit)")
}

func exercise(_ bytes: [UInt8]) {
    guard bytes.count >= headerSize else { return }
    func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
    let size = bytes[0] & 0x80 == 0 ? UInt16(1) << UInt16(bytes[0] & 15) : UInt16(bytes[0] & 0x7f) << 8 | UInt16(bytes[1])
    let maximumSize = UInt16(1) << UInt16(bytes[2] & 15)
    let flags = bytes[3]
    let limit: UInt32 = [.max, 0, 100, 4096][Int(flags >> 2) & 3]
    let state = SplitQueue.State(size: size,
                                 descriptorTable: address(mode: flags >> 4, offset: u16(9)),
                                 availableRing: address(mode: flags >> 6, offset: u16(11)),
                                 usedRing: address(mode: bytes[4], offset: u16(13)),
                                 nextAvailable: u16(5), nextUsed: u16(7),
                                 eventIndex: flags & 2 != 0, indirectDescriptors: flags & 1 != 0)
    let extraHead = u16(15)

    // Guest RAM: the body, repeated (straight copies into the regions: this is most of a run's time).
    let body = bytes[headerSize...]
    for region in regions {
        if body.isEmpty {
            try! memory.fill(0, count: region.size, at: GuestAddress(region.start))
            continue
        }
        // The body continues from one region into the next, as if RAM had no hole.
        var at: UInt64 = 0
        var phase = Int((region.start == 0 ? 0 : regions[0].size) % UInt64(body.count))
        while at < region.size {
            let count = min(body.count - phase, Int(region.size - at))
            let from = body.startIndex + phase
            try! memory.write(body[from..<from + count], at: GuestAddress(region.start + at))
            at += UInt64(count)
            phase = 0
        }
    }

    guard var queue = try? SplitQueue(state: state, maximumSize: maximumSize, memory: memory) else { return }
    precondition(size > 0 && size & (size - 1) == 0 && size <= maximumSize, "validated a queue of size \(size)")
    precondition(insideRAM(state.descriptorTable.rawValue, 16 * UInt64(size))
                 && insideRAM(state.availableRing.rawValue, 6 + 2 * UInt64(size))
                 && insideRAM(state.usedRing.rawValue, 6 + 8 * UInt64(size)), "validated areas outside RAM")
    for _ in 0..<2 {
        var used: [(head: UInt16, length: UInt32)] = []
        var pops = 0
        while true {
            let before = queue.state.nextAvailable
            let popped: UInt16?
            do {
                popped = try queue.popAvailable(in: memory)
            } catch .headOutOfRange(let head, _) {
                precondition(head >= size, "refused head \(head) in a queue of \(size)")
                pops += 1
                precondition(pops <= Int(size), "\(pops) pops in one round of a queue of \(size)")
                precondition(queue.state.nextAvailable == before &+ 1, "a refused head was not consumed")
                continue
            } catch {
                break
            }
            guard let head = popped else {
                precondition(queue.state.nextAvailable == before, "an empty pop moved nextAvailable")
                break
            }
            pops += 1
            precondition(pops <= Int(size), "\(pops) pops in one round of a queue of \(size)")
            precondition(head < size, "popped head \(head) in a queue of \(size)")
            precondition(queue.state.nextAvailable == before &+ 1, "a pop moved nextAvailable by \(queue.state.nextAvailable &- before)")
            do {
                let chain = try queue.chain(head: head, in: memory, maximumLength: limit)
                check(chain, head: head, size: size, limit: limit)
                precondition((try? queue.chain(head: head, in: memory, maximumLength: limit)) == chain,
                             "the same chain walked differently")
                used.append((head, chain.writableLength))
            } catch {
                used.append((head, 0))
            }
        }
        for (head, length) in used {
            let before = queue.state.nextUsed
            do {
                try queue.addUsed(head: head, length: length, in: memory)
                precondition(queue.state.nextUsed == before &+ 1, "addUsed moved nextUsed by \(queue.state.nextUsed &- before)")
            } catch {
                preconditionFailure("addUsed refused a popped head \(head): \(error)")
            }
        }
        do {
            try queue.addUsed(head: extraHead, length: 0, in: memory)
            precondition(extraHead < size, "addUsed took head \(extraHead) in a queue of \(size)")
        } catch {
            precondition(extraHead >= size, "addUsed refused head \(extraHead): \(error)")
        }
        _ = try? queue.needsNotification(in: memory)
        precondition((try? queue.needsNotification(in: memory)) == false, "a notification with nothing added")
        guard (try? queue.enableNotification(in: memory)) == true else { break }
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
@_cdecl("FuzzSplitQueue_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
