import Synchronization
import SwiftletCore
import Testing

/// The device models' tests, grouped so that `swift test --filter Devices` selects them, with
/// their test doubles (nested here so their names cannot clash with other suites').
@Suite("Devices") enum DevicesTests {}

extension DevicesTests {
    /// Counts interrupt edges.
    final class RecordingInterruptLine: InterruptLine {
        private let triggers = Mutex(0)
        /// How many times ``trigger()`` was called.
        var count: Int { triggers.withLock { $0 } }
        func trigger() { triggers.withLock { $0 += 1 } }
    }

    /// Collects every byte written, with as much room as a test gives it (unbounded by default).
    final class RecordingSink: OutputSink {
        private let storage = Mutex<(bytes: [UInt8], room: Int, calls: Int)>(([], .max, 0))
        /// All bytes written so far.
        var bytes: [UInt8] { storage.withLock { $0.bytes } }
        /// How many `write` calls there were, refused ones included.
        var writeCount: Int { storage.withLock { $0.calls } }
        /// Sets the room the sink reports (it shrinks by one per byte written).
        func setRoom(_ room: Int) { storage.withLock { $0.room = room } }
        var room: Int { storage.withLock { $0.room } }
        func write(_ byte: UInt8) -> Bool {
            storage.withLock { storage in
                storage.calls += 1
                guard storage.room > 0 else { return false }
                storage.bytes.append(byte)
                if storage.room != .max { storage.room -= 1 }
                return true
            }
        }
    }

    /// Host input waiting for a device, fed by the test.
    final class QueuedInput: InputSource {
        private let queue = Mutex<[UInt8]>([])
        /// Queues `bytes` behind what is waiting.
        func push(_ bytes: [UInt8]) { queue.withLock { $0 += bytes } }
        /// How many bytes are still waiting.
        var count: Int { queue.withLock { $0.count } }
        var isEmpty: Bool { count == 0 }
        func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
            queue.withLock { queue in
                let taken = min(limit, queue.count)
                for byte in queue.prefix(taken) { body(byte) }
                queue.removeFirst(taken)
                return taken
            }
        }
    }

    /// A wall clock that stands still until told otherwise.
    final class FixedClock: WallClock {
        private let now: Mutex<Int64>
        init(_ seconds: Int64) { now = Mutex(seconds) }
        func set(_ seconds: Int64) { now.withLock { $0 = seconds } }
        func advance(by seconds: Int64) { now.withLock { $0 += seconds } }
        func secondsSinceEpoch() -> Int64 { now.withLock { $0 } }
    }

    /// Collects machine events.
    final class RecordingEvents: MachineEventSink {
        private let storage = Mutex<[MachineEvent]>([])
        /// All events so far, oldest first.
        var events: [MachineEvent] { storage.withLock { $0 } }
        func handle(_ event: MachineEvent) { storage.withLock { $0.append(event) } }
    }

    /// SplitMix64, a small deterministic generator for hostile-guest tests.
    struct HostileRNG: RandomNumberGenerator {
        private var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// One random guest access.
    struct HostileAccess {
        var isWrite: Bool
        var offset: UInt64
        var width: AccessWidth
        var value: UInt64

        /// A random access, mostly inside `[0, span)` but sometimes anywhere in the address space.
        static func random(span: UInt64, using rng: inout HostileRNG) -> HostileAccess {
            let offset = rng.next() % 8 == 0 ? rng.next() : rng.next() % span
            let width = AccessWidth.allCases[Int(rng.next() % 4)]
            let value = rng.next() % 2 == 0 ? rng.next() : rng.next() % 256
            return HostileAccess(isWrite: rng.next() % 2 == 0, offset: offset, width: width, value: value)
        }

        /// Performs the access on `device`, returning the value read (0 for writes).
        @discardableResult
        func perform<Device: BusDevice>(on device: inout Device) -> UInt64 {
            if isWrite {
                device.write(at: offset, width: width, value: value)
                return 0
            }
            return device.read(at: offset, width: width)
        }
    }
}

extension BusDevice {
    /// A byte read.
    mutating func readU8(at offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: read(at: offset, width: .byte)) }
    /// A byte write.
    mutating func writeU8(at offset: UInt64, _ value: UInt8) { write(at: offset, width: .byte, value: UInt64(value)) }
}
