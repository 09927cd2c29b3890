import Testing
import SwiftletCore
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("CMOSClock") struct CMOSClockTests {
        /// 2023-11-14 22:13:20 UTC, a Tuesday.
        let clock = FixedClock(1_700_000_000)

        func makeRTC(_ state: CMOSClock.State = .init()) -> CMOSClock { CMOSClock(state: state, clock: clock) }

        func readRegister(_ rtc: inout CMOSClock, _ index: UInt8) -> UInt8 {
            rtc.writeU8(at: 0, index)
            return rtc.readU8(at: 1)
        }

        func writeRegister(_ rtc: inout CMOSClock, _ index: UInt8, _ value: UInt8) {
            rtc.writeU8(at: 0, index)
            rtc.writeU8(at: 1, value)
        }

        /// Seconds, minutes, hours, weekday, day, month, year, century.
        func timeRegisters(_ rtc: inout CMOSClock) -> [UInt8] {
            [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map { readRegister(&rtc, $0) }
        }

        @Test func readsHostTimeInBCDAnd24HourByDefault() {
            var rtc = makeRTC()
            #expect(timeRegisters(&rtc) == [0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20])
        }

        /// Host times and the registers they read as (seconds … century, BCD), checked against Python's datetime.
        static let knownDates: [(Int64, [UInt8])] = [
            (0, [0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x70, 0x19]),
            (951_782_400, [0x00, 0x00, 0x00, 0x03, 0x29, 0x02, 0x00, 0x20]),
            (4_102_444_800, [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21]),
            (-1, [0x59, 0x59, 0x23, 0x04, 0x31, 0x12, 0x69, 0x19]),
            (1_234_567_890, [0x30, 0x31, 0x23, 0x06, 0x13, 0x02, 0x09, 0x20]),
            (253_402_300_799, [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x99]),
        ]

        @Test(arguments: knownDates)
        func civilDateMathMatchesKnownDates(seconds: Int64, expected: [UInt8]) {
            clock.set(seconds)
            var rtc = makeRTC()
            #expect(timeRegisters(&rtc) == expected)
        }

        @Test func civilConversionRoundTripsAndAdvancesOneDayAtATime() {
            // About ±1100 years around the epoch, day by day; one #expect per property keeps it fast.
            var roundTrips = true
            var consecutive = true
            var previous = CivilTime.civil(fromDays: -400_001)
            for days in Int64(-400_000)...400_000 {
                let date = CivilTime.civil(fromDays: days)
                roundTrips = roundTrips && CivilTime.days(fromCivil: date.year, date.month, date.day) == days
                let nextDay = previous.day + 1 <= CivilTime.daysInMonth(year: previous.year, month: previous.month)
                let expected: (Int64, Int64, Int64) = nextDay ? (previous.year, previous.month, previous.day + 1)
                    : previous.month == 12 ? (previous.year + 1, 1, 1) : (previous.year, previous.month + 1, 1)
                consecutive = consecutive && expected == date
                previous = date
            }
            #expect(roundTrips)
            #expect(consecutive)
            #expect(CivilTime.civil(fromDays: 0) == (1970, 1, 1))
            #expect(CivilTime(secondsSinceEpoch: 1_700_000_000).secondsSinceEpoch == 1_700_000_000)
        }

        @Test func honoursBinaryAnd12HourFormats() {
            var rtc = makeRTC()
            writeRegister(&rtc, 0x0B, 0x06)  // Binary, 24-hour.
            #expect(timeRegisters(&rtc) == [20, 13, 22, 3, 14, 11, 23, 20])
            writeRegister(&rtc, 0x0B, 0x04)  // Binary, 12-hour: 22h = 10 PM.
            #expect(readRegister(&rtc, 0x04) == 0x80 | 10)
            writeRegister(&rtc, 0x0B, 0x00)  // BCD, 12-hour.
            #expect(readRegister(&rtc, 0x04) == 0x90)
            clock.set(1_700_000_000 - 22 * 3600)  // Midnight is 12 AM.
            #expect(readRegister(&rtc, 0x04) == 0x12)
            clock.set(1_700_000_000 - 10 * 3600)  // Noon is 12 PM.
            #expect(readRegister(&rtc, 0x04) == 0x92)
        }

        @Test func statusRegisters() {
            var rtc = makeRTC()
            #expect(readRegister(&rtc, 0x0A) == 0x26)
            #expect(readRegister(&rtc, 0x0B) == 0x02)
            #expect(readRegister(&rtc, 0x0C) == 0x00)
            #expect(readRegister(&rtc, 0x0D) == 0x80)
            writeRegister(&rtc, 0x0A, 0xA5)
            #expect(readRegister(&rtc, 0x0A) == 0x25)  // UIP never reads as set.
            writeRegister(&rtc, 0x0C, 0xFF)
            writeRegister(&rtc, 0x0D, 0x00)
            #expect(readRegister(&rtc, 0x0C) == 0x00)
            #expect(readRegister(&rtc, 0x0D) == 0x80)
        }

        @Test func ramAndAlarmBytesAreStored() {
            var rtc = makeRTC()
            for index: UInt8 in [0x01, 0x03, 0x05, 0x0E, 0x10, 0x7F] { writeRegister(&rtc, index, index ^ 0xA5) }
            for index: UInt8 in [0x01, 0x03, 0x05, 0x0E, 0x10, 0x7F] { #expect(readRegister(&rtc, index) == index ^ 0xA5) }
            // Bit 7 of the index is NMI disable, not part of the register number.
            writeRegister(&rtc, 0x80 | 0x10, 0x42)
            #expect(rtc.state.nmiDisabled)
            #expect(readRegister(&rtc, 0x10) == 0x42)
            #expect(rtc.state.nmiDisabled == false)
            #expect(rtc.readU8(at: 0) == 0xFF)  // The index port floats.
        }

        @Test func settingTheClockUnderSETStoresAnOffsetAndKeepsTicking() {
            var rtc = makeRTC()
            // Linux's mc146818_set_time: SET, write the fields, clear SET. Set 1999-12-31 23:59:58.
            writeRegister(&rtc, 0x0B, 0x82)
            #expect(readRegister(&rtc, 0x00) == 0x20)  // Latched.
            clock.advance(by: 5)
            #expect(readRegister(&rtc, 0x00) == 0x20)  // Frozen while SET.
            for (index, value): (UInt8, UInt8) in [(0x00, 0x58), (0x02, 0x59), (0x04, 0x23), (0x07, 0x31),
                                                    (0x08, 0x12), (0x09, 0x99), (0x32, 0x19)] {
                writeRegister(&rtc, index, value)
            }
            writeRegister(&rtc, 0x0B, 0x02)
            #expect(rtc.state.clockOffset == 946_684_798 - 1_700_000_005)
            #expect(timeRegisters(&rtc) == [0x58, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19])
            clock.advance(by: 3)  // The guest's clock runs on into 2000.
            #expect(timeRegisters(&rtc) == [0x01, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20])
            #expect(clock.secondsSinceEpoch() == 1_700_000_008)  // The host's clock is untouched.
        }

        @Test func writesWithoutSETTakeEffectAtOnceAndClampInvalidFields() {
            var rtc = makeRTC()
            writeRegister(&rtc, 0x09, 0x24)  // Year 2024.
            #expect(readRegister(&rtc, 0x09) == 0x24)
            #expect(readRegister(&rtc, 0x08) == 0x11)
            writeRegister(&rtc, 0x08, 0x02)  // February: day 14 stays.
            writeRegister(&rtc, 0x07, 0x31)  // February 31 → clamped to 29 (leap year).
            #expect(timeRegisters(&rtc) == [0x20, 0x13, 0x22, 0x05, 0x29, 0x02, 0x24, 0x20])
            writeRegister(&rtc, 0x04, 0x99)  // Hour 99 → 23.
            writeRegister(&rtc, 0x00, 0xFF)  // Non-BCD seconds → 59.
            writeRegister(&rtc, 0x06, 0x01)  // Weekday writes change nothing.
            #expect(timeRegisters(&rtc) == [0x59, 0x13, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20])
        }

        @Test func twelveHourWritesDecodePM() {
            var rtc = makeRTC()
            writeRegister(&rtc, 0x0B, 0x06 & ~0x02)  // Binary, 12-hour.
            writeRegister(&rtc, 0x04, 0x80 | 12)  // 12 PM = noon.
            writeRegister(&rtc, 0x0B, 0x06)
            #expect(readRegister(&rtc, 0x04) == 12)
            writeRegister(&rtc, 0x0B, 0x04)
            writeRegister(&rtc, 0x04, 12)  // 12 AM = midnight.
            writeRegister(&rtc, 0x0B, 0x06)
            #expect(readRegister(&rtc, 0x04) == 0)
        }

        @Test func otherOffsetsAndWidthsAreInert() {
            var rtc = makeRTC()
            let before = rtc.state
            for width in [AccessWidth.word, .dword, .qword] {
                #expect(rtc.read(at: 1, width: width) == 0)
                rtc.write(at: 0, width: width, value: 0x0B)
                rtc.write(at: 1, width: width, value: 0x86)
            }
            #expect(rtc.read(at: 2, width: .byte) == 0)
            rtc.write(at: 2, width: .byte, value: 1)
            rtc.write(at: .max, width: .byte, value: 1)
            #expect(rtc.state == before)
        }

        @Test func stateRoundTripsAndRestoresSanitized() {
            var rtc = makeRTC()
            writeRegister(&rtc, 0x09, 0x30)
            writeRegister(&rtc, 0x20, 0x77)
            writeRegister(&rtc, 0x8B, 0x06)
            #expect(CMOSClock(state: rtc.state, clock: clock).state == rtc.state)
            let short = makeRTC(CMOSClock.State(ram: [1, 2, 3], index: 0xFF))
            #expect(short.state.ram.count == 128)
            #expect(short.state.ram.prefix(4) == [1, 2, 3, 0])
            #expect(short.state.index == 0x7F)
            let long = makeRTC(CMOSClock.State(ram: [UInt8](repeating: 9, count: 1000)))
            #expect(long.state.ram.count == 128)
        }

        @Test(arguments: [Int64.min, .max, .min + 1, -86_400 * 400 * 365] as [Int64])
        func extremeClocksAndOffsetsNeverTrap(seconds: Int64) {
            clock.set(seconds)
            var rtc = makeRTC(CMOSClock.State(clockOffset: .max))
            let registers = timeRegisters(&rtc)
            #expect(registers.allSatisfy { $0 >> 4 <= 9 && $0 & 0x0F <= 9 })  // Still valid BCD.
            writeRegister(&rtc, 0x09, 0x50)
            writeRegister(&rtc, 0x0B, 0x82)
            writeRegister(&rtc, 0x0B, 0x02)
            #expect(readRegister(&rtc, 0x09) == 0x50)
        }

        @Test func hostileGuestNeverTrapsAndKeepsInvariants() {
            var rtc = makeRTC()
            var rng = HostileRNG(seed: 0x70)
            for step in 0..<10_000 {
                HostileAccess.random(span: 3, using: &rng).perform(on: &rtc)
                if step % 100 == 0 { clock.set(Int64(bitPattern: rng.next())) }
                #expect(rtc.state.ram.count == 128)
                #expect(rtc.state.index < 128)
                #expect(rtc.read(at: 0, width: .byte) == 0xFF)
            }
            // Still a working clock afterwards: the guest can set it.
            clock.set(1_700_000_000)
            writeRegister(&rtc, 0x0B, 0x02)
            writeRegister(&rtc, 0x0B, 0x82)
            writeRegister(&rtc, 0x09, 0x42)
            writeRegister(&rtc, 0x0B, 0x02)
            #expect(readRegister(&rtc, 0x09) == 0x42)
        }
    }
}
