import Testing
import SwiftletCore
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("PVPanic") struct PVPanicTests {
        @Test func advertisesItsEventsAndReportsAPanic() {
            let events = RecordingEvents()
            var device = PVPanic(events: events)
            #expect(device.read(at: 0, width: .byte) == 3)
            device.write(at: 0, width: .byte, value: PVPanic.crashLoaded)
            #expect(events.events.isEmpty)
            device.write(at: 0, width: .byte, value: PVPanic.panicked)
            #expect(events.events == [.panic])
            #expect(PVPanic(state: device.state, events: events).state == device.state)
        }

        @Test func otherOffsetsAreInert() {
            let events = RecordingEvents()
            var device = PVPanic(events: events)
            device.write(at: 1, width: .byte, value: 1)
            #expect(device.read(at: 1, width: .byte) == 0)
            #expect(events.events.isEmpty)
        }
    }
}
