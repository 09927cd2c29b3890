import Testing
import SwiftletCore
import SwiftletArch
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("ACPIPowerRegisters") struct ACPIPowerRegistersTests {
        let events = RecordingEvents()

        func makeRegisters() -> ACPIPowerRegisters { ACPIPowerRegisters(events: events) }

        @Test func defaultsMatchTheLayoutConstants() {
            let registers = makeRegisters()
            #expect(registers.powerOffSleepType == X86Layout.acpiS5SleepType)
            #expect(registers.resetValue == X86Layout.acpiResetValue)
        }

        @Test func s5WithSleepEnablePowersOff() {
            var registers = makeRegisters()
            registers.writeU8(at: 0, 5 << 2 | 0x20)
            #expect(events.events == [.powerOff])
        }

        @Test func otherSleepTypesOrMissingSleepEnableAreIgnored() {
            var registers = makeRegisters()
            registers.writeU8(at: 0, 5 << 2)  // No SLP_EN.
            for type: UInt8 in [0, 1, 2, 3, 4, 6, 7] { registers.writeU8(at: 0, type << 2 | 0x20) }
            registers.write(at: 0, width: .word, value: 5 << 2 | 0x20)  // Not a byte write.
            #expect(events.events.isEmpty)
            registers.writeU8(at: 0, 0xFF & ~(2 << 2))  // SLP_TYP 5 with unrelated bits set still counts.
            #expect(events.events == [.powerOff])
        }

        @Test func resetRegisterResetsOnlyWithTheResetValue() {
            var registers = makeRegisters()
            registers.writeU8(at: 2, 0)
            registers.writeU8(at: 2, 2)
            registers.write(at: 2, width: .dword, value: 1)
            #expect(events.events.isEmpty)
            registers.writeU8(at: 2, 1)
            #expect(events.events == [.reset])
        }

        @Test func customSleepTypeAndResetValue() {
            var registers = ACPIPowerRegisters(powerOffSleepType: 7, resetValue: 0x0E, events: events)
            registers.writeU8(at: 0, 5 << 2 | 0x20)
            registers.writeU8(at: 2, 1)
            #expect(events.events.isEmpty)
            registers.writeU8(at: 0, 7 << 2 | 0x20)
            registers.writeU8(at: 2, 0x0E)
            #expect(events.events == [.powerOff, .reset])
        }

        @Test func readsAreZeroAndStatusWritesAreIgnored() {
            var registers = makeRegisters()
            registers.writeU8(at: 1, 0xFF)
            for offset: UInt64 in [0, 1, 2, 3, .max] {
                for width in AccessWidth.allCases { #expect(registers.read(at: offset, width: width) == 0) }
            }
            #expect(events.events.isEmpty)
        }

        @Test func stateRoundTrips() {
            let registers = makeRegisters()
            #expect(ACPIPowerRegisters(state: registers.state, events: events).state == registers.state)
        }

        @Test func hostileGuestNeverTrapsAndOnlyExactWritesProduceEvents() {
            var registers = makeRegisters()
            var rng = HostileRNG(seed: 0x600)
            var expected: [MachineEvent] = []
            for _ in 0..<10_000 {
                let access = HostileAccess.random(span: 4, using: &rng)
                let byte = UInt8(truncatingIfNeeded: access.value)
                if access.isWrite, access.width == .byte {
                    if access.offset == 0, byte & 0x20 != 0, (byte >> 2) & 7 == 5 { expected.append(.powerOff) }
                    if access.offset == 2, byte == 1 { expected.append(.reset) }
                }
                #expect(access.perform(on: &registers) == 0)
            }
            #expect(events.events == expected)
            #expect(!expected.isEmpty)  // The comparison above was not vacuous.
        }
    }
}
