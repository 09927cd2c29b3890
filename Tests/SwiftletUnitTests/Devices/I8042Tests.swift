import Testing
import SwiftletCore
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("I8042") struct I8042Tests {
        let events = RecordingEvents()

        func makeController(_ state: I8042.State = .init()) -> I8042 { I8042(state: state, events: events) }

        /// Sends a command and returns the response byte, or nil if the output buffer stayed empty.
        func command(_ controller: inout I8042, _ byte: UInt8) -> UInt8? {
            controller.writeU8(at: 4, byte)
            guard controller.readU8(at: 4) & 0x01 != 0 else { return nil }
            return controller.readU8(at: 0)
        }

        @Test func statusShowsSystemFlagAndOutputBufferFull() {
            var kbc = makeController()
            #expect(kbc.readU8(at: 4) == 0x14)
            kbc.writeU8(at: 4, 0xAA)
            #expect(kbc.readU8(at: 4) == 0x15)
            #expect(kbc.readU8(at: 0) == 0x55)
            #expect(kbc.readU8(at: 4) == 0x14)
            #expect(kbc.readU8(at: 0) == 0)  // Empty output buffer reads 0.
        }

        @Test func selfAndInterfaceTestsPass() {
            var kbc = makeController()
            #expect(command(&kbc, 0xAA) == 0x55)
            #expect(command(&kbc, 0xAB) == 0x00)
            #expect(command(&kbc, 0xA9) == 0x00)
        }

        @Test func configurationByteReadsAndWrites() {
            var kbc = makeController()
            #expect(command(&kbc, 0x20) == 0x05)
            kbc.writeU8(at: 4, 0x60)
            kbc.writeU8(at: 0, 0x47)
            #expect(kbc.readU8(at: 4) & 0x01 == 0)  // Setting the byte answers nothing.
            #expect(command(&kbc, 0x20) == 0x47)
            #expect(kbc.state.configuration == 0x47)
        }

        @Test func enableAndDisableCommandsToggleConfigurationBits() {
            var kbc = makeController()
            #expect(command(&kbc, 0xA7) == nil)
            #expect(command(&kbc, 0x20)! & 0x20 == 0x20)
            #expect(command(&kbc, 0xA8) == nil)
            #expect(command(&kbc, 0x20)! & 0x20 == 0)
            #expect(command(&kbc, 0xAD) == nil)
            #expect(command(&kbc, 0x20)! & 0x10 == 0x10)
            #expect(command(&kbc, 0xAE) == nil)
            #expect(command(&kbc, 0x20)! & 0x10 == 0)
        }

        @Test func bytesForTheAuxDeviceAreAnsweredWithResendFromAux() {
            var kbc = makeController()
            kbc.writeU8(at: 4, 0xD4)
            kbc.writeU8(at: 0, 0xFF)
            #expect(kbc.readU8(at: 4) == 0x35)  // OBF | SYS | not inhibited | AUX
            #expect(kbc.readU8(at: 0) == 0xFE)
            #expect(kbc.readU8(at: 4) == 0x14)
            #expect(kbc.state.configuration == 0x05)
        }

        @Test func bytesForTheKeyboardAreAnsweredWithResend() {
            var kbc = makeController()
            kbc.writeU8(at: 0, 0xF2)  // Get ID.
            #expect(kbc.readU8(at: 4) == 0x15)
            #expect(kbc.readU8(at: 0) == 0xFE)
        }

        @Test func pulseResetLineReportsReset() {
            var kbc = makeController()
            kbc.writeU8(at: 4, 0xFE)
            #expect(events.events == [.reset])
            kbc.writeU8(at: 4, 0xFC)  // Other pulse commands are ignored.
            #expect(events.events == [.reset])
        }

        @Test func unknownCommandsAreIgnoredAndCancelAPendingCommand() {
            var kbc = makeController()
            kbc.writeU8(at: 4, 0x60)
            kbc.writeU8(at: 4, 0xC0)  // Unknown.
            #expect(kbc.state.pendingCommand == nil)
            kbc.writeU8(at: 0, 0x00)  // Goes to the (absent) keyboard, not the configuration.
            #expect(kbc.state.configuration == 0x05)
            #expect(events.events.isEmpty)
        }

        @Test func otherPortsAndWidthsAreInert() {
            var kbc = makeController()
            kbc.writeU8(at: 4, 0xAA)
            let before = kbc.state
            for offset: UInt64 in [1, 2, 3, 5, .max] {
                #expect(kbc.read(at: offset, width: .byte) == 0)
                kbc.write(at: offset, width: .byte, value: 0xFE)
            }
            for width in [AccessWidth.word, .dword, .qword] {
                #expect(kbc.read(at: 0, width: width) == 0)
                kbc.write(at: 4, width: width, value: 0xFE)
            }
            #expect(kbc.state == before)
            #expect(events.events.isEmpty)
        }

        @Test func stateRoundTrips() {
            var kbc = makeController()
            kbc.writeU8(at: 4, 0xD4)
            kbc.writeU8(at: 0, 1)
            kbc.writeU8(at: 4, 0x60)
            #expect(kbc.state == I8042.State(configuration: 0x05, pendingCommand: 0x60, output: 0xFE, outputFromAux: true))
            #expect(I8042(state: kbc.state, events: events).state == kbc.state)
            let bogus = I8042.State(pendingCommand: 0x20, output: nil, outputFromAux: true)
            let restored = makeController(bogus)
            #expect(restored.state.pendingCommand == nil)
            #expect(restored.state.outputFromAux == false)
        }

        @Test func hostileGuestNeverTraps() {
            var kbc = makeController()
            var rng = HostileRNG(seed: 0x60)
            var resets = 0
            for _ in 0..<10_000 {
                let access = HostileAccess.random(span: 6, using: &rng)
                if access.isWrite, access.offset == 4, access.width == .byte, access.value & 0xFF == 0xFE { resets += 1 }
                access.perform(on: &kbc)
                let status = kbc.readU8(at: 4)
                #expect(status & 0x14 == 0x14)
                #expect((status & 0x01 != 0) == (kbc.state.output != nil))
                #expect(kbc.state.pendingCommand == nil || [0x60, 0xD4].contains(kbc.state.pendingCommand!))
            }
            #expect(events.events.count == resets)
            #expect(events.events.allSatisfy { $0 == .reset })
        }
    }
}
