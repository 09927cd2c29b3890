import Testing
import SwiftletCore

@Suite("Byte ring") struct ByteRingTests {
    @Test func holdsUpToItsCapacityInOrderAcrossTheWrap() {
        var ring = ByteRing(capacity: 4)
        let first = ring.append(contentsOf: [1, 2, 3])
        #expect(first == 3)
        var taken: [UInt8] = []
        let took = ring.take(upTo: 2) { taken.append($0) }
        #expect(took == 2)
        let wrapped = ring.append(contentsOf: [4, 5, 6, 7])      // wraps; the 7 does not fit
        #expect(wrapped == 3)
        #expect(ring.count == 4 && ring.room == 0)
        let overflow = ring.append(8)
        #expect(!overflow)
        var peeked: [UInt8] = []
        #expect(ring.peek(upTo: 10) { peeked.append($0) } == 4)
        #expect(peeked == [3, 4, 5, 6])
        #expect(ring.count == 4)                                  // peeking removes nothing
        ring.discard(1)
        let rest = ring.take(upTo: 10) { taken.append($0) }
        #expect(rest == 3)
        #expect(taken == [1, 2, 4, 5, 6])
        #expect(ring.isEmpty && ring.room == 4)
    }

    @Test func absurdCountsAreClamped() {
        var ring = ByteRing(capacity: 0)
        #expect(ring.capacity == 1)
        let none = ring.take(upTo: -5) { _ in }
        #expect(none == 0)
        #expect(ring.peek(upTo: .max) { _ in } == 0)
        ring.discard(.max)
        ring.discard(-1)
        let appended = ring.append(9)
        #expect(appended)
        let all = ring.take(upTo: .max) { _ in }
        #expect(all == 1)
    }
}
