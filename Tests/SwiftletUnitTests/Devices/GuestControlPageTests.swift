import Testing
import SwiftletCore
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("GuestControlPage") struct GuestControlPageTests {
        let events = RecordingEvents()

        func makePage() -> GuestControlPage { GuestControlPage(events: events) }

        @Test func bootCompleteNeedsA32BitWriteOf123() {
            var page = makePage()
            page.write(at: 0, width: .dword, value: 122)
            page.write(at: 0, width: .byte, value: 123)
            page.write(at: 0, width: .qword, value: 123)
            page.write(at: 1, width: .dword, value: 123)
            #expect(events.events.isEmpty)
            page.write(at: 0, width: .dword, value: 123)
            #expect(events.events == [.bootComplete])
        }

        @Test func exitStatusTakesTheLowByteOfAnyWidth() {
            var page = makePage()
            page.write(at: 4, width: .dword, value: 0)
            page.write(at: 4, width: .byte, value: 42)
            page.write(at: 4, width: .qword, value: 0x1234_5601)
            page.write(at: 4, width: .word, value: 0xFFFF)
            #expect(events.events == [.exitStatus(0), .exitStatus(42), .exitStatus(1), .exitStatus(255)])
        }

        @Test func identificationMagicReadsAsSWLT() {
            var page = makePage()
            let magic = page.read(at: 8, width: .dword)
            #expect(magic == 0x544C_5753)
            let bytes = (0..<4).map { UInt8(truncatingIfNeeded: magic >> (8 * $0)) }
            #expect(bytes == Array("SWLT".utf8))
            #expect(page.read(at: 8, width: .qword) == 0x544C_5753)
            #expect(page.read(at: 9, width: .byte) == 0x57)
            #expect(page.read(at: 6, width: .dword) == 0x5753_0000)  // Straddles into the magic.
            #expect(page.read(at: 4, width: .qword) == 0x544C_5753_0000_0000)
        }

        @Test func everythingElseReadsZeroAndIgnoresWrites() {
            var page = makePage()
            for offset: UInt64 in [0, 4, 0xC, 0x10, 0xFFC, 0xFFF, 0x1000, .max - 3, .max] {
                for width in AccessWidth.allCases where offset != 4 || width != .qword {  // 4 + 8 reaches the magic.
                    #expect(page.read(at: offset, width: width) == 0)
                }
                if offset != 0, offset != 4 { page.write(at: offset, width: .dword, value: 123) }
            }
            page.write(at: 8, width: .dword, value: 0)
            #expect(page.read(at: 8, width: .dword) == 0x544C_5753)
            #expect(events.events.isEmpty)
        }

        @Test func stateRoundTrips() {
            let page = makePage()
            #expect(GuestControlPage(state: page.state, events: events).state == page.state)
        }

        @Test func hostileGuestNeverTrapsAndOnlyDocumentedWritesProduceEvents() {
            var page = makePage()
            var rng = HostileRNG(seed: 0xC000_0000)
            var expected: [MachineEvent] = []
            for _ in 0..<10_000 {
                let access = HostileAccess.random(span: 0x20, using: &rng)
                if access.isWrite {
                    if access.offset == 0, access.width == .dword, access.value == 123 { expected.append(.bootComplete) }
                    if access.offset == 4 { expected.append(.exitStatus(UInt8(truncatingIfNeeded: access.value))) }
                }
                let value = access.perform(on: &page)
                if !access.isWrite, access.offset > 0xB, access.offset < 0x1000 { #expect(value == 0) }
            }
            #expect(events.events == expected)
            #expect(!expected.isEmpty)  // The comparison above was not vacuous.
        }
    }
}
