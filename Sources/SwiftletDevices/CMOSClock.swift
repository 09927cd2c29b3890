import SwiftletCore

/// An MC146818 real-time clock with 128 bytes of CMOS RAM, modelled as a pure state machine.
///
/// Swiftlet registers it at port 0x70 with 2 ports: offset 0 is the index register (write only:
/// bit 7 disables NMIs, bits 0–6 select a register; reads float and return 0xFF), offset 1 the
/// data port for the selected register. The NMI-disable bit is stored but has no effect.
///
/// Registers:
/// - 0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week (1 = Sunday), 0x07 day of month,
///   0x08 month, 0x09 year (two digits), 0x32 century: computed at read time from the injected
///   ``WallClock`` (UTC) plus the guest's clock offset (below), in the format Status B selects:
///   BCD unless B.DM (bit 2) is set; 12-hour with bit 7 = PM unless B.24/12 (bit 1) is set.
/// - 0x0A Status A: bit 7 (UIP) always reads 0, so a guest never waits for an update; bits 0–6
///   as last written (default 0x26).
/// - 0x0B Status B: as last written (default 0x02: 24-hour, BCD). The daylight-saving bit
///   (bit 0) and the interrupt enables (bits 4–6) are stored without effect.
/// - 0x0C Status C: reads 0 (no interrupt flags: periodic, alarm and update-ended interrupts are
///   not implemented). Writes are ignored.
/// - 0x0D Status D: reads 0x80 (RAM and time valid). Writes are ignored.
/// - 0x01, 0x03, 0x05 (alarm seconds, minutes, hours): stored as plain bytes; alarms never fire.
/// - Every other index: a plain byte of CMOS RAM.
///
/// Setting the clock: the guest never changes the host's clock. Guest writes to the time
/// registers change a signed offset in seconds that is added to the host's time. While
/// Status B.SET (bit 7) is set, the clock is frozen as on the real chip: setting SET latches the
/// current time into the time registers, reads and writes then see those latched bytes, and
/// clearing SET converts them back into a time and stores its offset from the host's clock.
/// A write without SET (some guests do that) takes effect at once, keeping the other fields.
/// Out-of-range fields (a month of 13, February 30, non-BCD digits) are clamped to the nearest
/// valid value; the day of week is always derived from the date, and writes to it only matter
/// while SET is held. The year is the century register × 100 plus the year register.
///
/// Registers are one byte wide: accesses of other widths read 0 and writes are ignored, as are
/// accesses at offsets past 1.
///
/// Threat model:
/// - Input: guest reads and writes at any offset, width and value, in any order; the host's
///   clock value (any `Int64`).
/// - Threat: a guest that tries to trap the VMM with an out-of-range index or time value, or to
///   change the host's clock.
/// - Mitigation: the index is masked to 7 bits into a 128-byte array, time fields are clamped,
///   all clock arithmetic wraps instead of trapping, and the guest only ever moves its own offset.
public struct CMOSClock: BusDevice {
    /// The number of consecutive I/O ports the RTC decodes (index, data).
    public static let windowSize: UInt64 = 2

    /// The clock's guest-visible state, for snapshots.
    public struct State: Codable, Equatable, Sendable {
        /// The 128 bytes of CMOS RAM, including Status A and B and the alarm registers. The time
        /// registers' bytes only matter while Status B.SET freezes the clock.
        public var ram: [UInt8]
        /// The selected register (0–127).
        public var index: UInt8
        /// The NMI-disable bit last written to the index register (no effect).
        public var nmiDisabled: Bool
        /// Seconds added to the host's clock to get the guest's time; changed by guest writes.
        public var clockOffset: Int64

        /// Creates a state; the defaults are zeroed RAM with Status A = 0x26 and Status B = 0x02,
        /// register 0 selected, and no clock offset.
        public init(ram: [UInt8]? = nil, index: UInt8 = 0, nmiDisabled: Bool = false, clockOffset: Int64 = 0) {
            if let ram {
                self.ram = ram
            } else {
                var ram = [UInt8](repeating: 0, count: 128)
                ram[0x0A] = 0x26
                ram[0x0B] = 0x02
                self.ram = ram
            }
            self.index = index
            self.nmiDisabled = nmiDisabled
            self.clockOffset = clockOffset
        }
    }

    private static let ramSize = 128
    private static let statusA = 0x0A
    private static let statusB = 0x0B
    private static let statusC = 0x0C
    private static let statusD = 0x0D
    private static let setBit: UInt8 = 0x80
    private static let binaryBit: UInt8 = 0x04
    private static let twentyFourHourBit: UInt8 = 0x02

    private enum TimeRegister: Int {
        case seconds = 0x00, minutes = 0x02, hours = 0x04, weekday = 0x06, day = 0x07, month = 0x08
        case year = 0x09, century = 0x32
    }

    private var current: State
    private let clock: any WallClock

    /// Creates a clock in `state` (power-on state by default) that reads the time from `clock`.
    ///
    /// Restored RAM is padded with zeros or cut to 128 bytes, and the index is masked to 7 bits.
    public init(state: State = State(), clock: any WallClock) {
        var state = state
        if state.ram.count < Self.ramSize {
            state.ram += [UInt8](repeating: 0, count: Self.ramSize - state.ram.count)
        } else if state.ram.count > Self.ramSize {
            state.ram = Array(state.ram.prefix(Self.ramSize))
        }
        state.index &= 0x7F
        self.current = state
        self.clock = clock
    }

    /// The guest-visible state, for snapshots.
    public var state: State { current }

    /// Emulates a guest read: offset 0 floats (0xFF), offset 1 reads the selected register.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0 }
        switch offset {
        case 0: return 0xFF
        case 1: return UInt64(readRegister(Int(current.index & 0x7F)))
        default: return 0
        }
    }

    /// Emulates a guest write: offset 0 selects a register, offset 1 writes it.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0:
            current.index = byte & 0x7F
            current.nmiDisabled = byte & 0x80 != 0
        case 1:
            writeRegister(Int(current.index & 0x7F), byte)
        default:
            break
        }
    }

    // MARK: - Registers

    private var statusBValue: UInt8 { current.ram[Self.statusB] }
    private var isFrozen: Bool { statusBValue & Self.setBit != 0 }

    private func readRegister(_ index: Int) -> UInt8 {
        switch index {
        case Self.statusA:
            return current.ram[index] & 0x7F
        case Self.statusC:
            return 0
        case Self.statusD:
            return 0x80
        default:
            if let register = TimeRegister(rawValue: index), !isFrozen {
                return Self.encode(register, of: guestTime, statusB: statusBValue)
            }
            return current.ram[index]
        }
    }

    private mutating func writeRegister(_ index: Int, _ value: UInt8) {
        switch index {
        case Self.statusA:
            current.ram[index] = value & 0x7F
        case Self.statusB:
            let old = statusBValue
            if old & Self.setBit == 0, value & Self.setBit != 0 {
                // Freeze: latch the current time in the new format.
                current.ram = Self.latch(guestTime, into: current.ram, statusB: value)
            } else if old & Self.setBit != 0, value & Self.setBit == 0 {
                // Resume from the latched registers, written in the format in force while frozen.
                setGuestTime(Self.decode(current.ram, statusB: old))
            }
            current.ram[index] = value
        case Self.statusC, Self.statusD:
            break
        default:
            if TimeRegister(rawValue: index) != nil, !isFrozen {
                // Read the host clock once, so that the other fields stay exactly as they were.
                let host = clock.secondsSinceEpoch()
                let now = CivilTime(secondsSinceEpoch: host &+ current.clockOffset)
                var registers = Self.latch(now, into: current.ram, statusB: statusBValue)
                registers[index] = value
                current.clockOffset = Self.decode(registers, statusB: statusBValue).secondsSinceEpoch &- host
            } else {
                current.ram[index] = value
            }
        }
    }

    // MARK: - Time

    /// The guest's time: the host's plus the offset.
    private var guestTime: CivilTime { CivilTime(secondsSinceEpoch: clock.secondsSinceEpoch() &+ current.clockOffset) }

    private mutating func setGuestTime(_ time: CivilTime) {
        current.clockOffset = time.secondsSinceEpoch &- clock.secondsSinceEpoch()
    }

    /// `ram` with the time registers set to `time` in the format `statusB` selects.
    private static func latch(_ time: CivilTime, into ram: [UInt8], statusB: UInt8) -> [UInt8] {
        var ram = ram
        for register in [TimeRegister.seconds, .minutes, .hours, .weekday, .day, .month, .year, .century] {
            ram[register.rawValue] = encode(register, of: time, statusB: statusB)
        }
        return ram
    }

    private static func encode(_ register: TimeRegister, of time: CivilTime, statusB: UInt8) -> UInt8 {
        let binary = statusB & binaryBit != 0
        func format(_ value: Int64) -> UInt8 {
            let value = UInt8(truncatingIfNeeded: ((value % 100) + 100) % 100)
            return binary ? value : (value / 10) << 4 | value % 10
        }
        switch register {
        case .seconds: return format(time.second)
        case .minutes: return format(time.minute)
        case .hours:
            if statusB & twentyFourHourBit != 0 { return format(time.hour) }
            let hour12 = time.hour % 12 == 0 ? 12 : time.hour % 12
            return format(hour12) | (time.hour >= 12 ? 0x80 : 0)
        case .weekday: return format(time.weekday)
        case .day: return format(time.day)
        case .month: return format(time.month)
        case .year: return format(time.year)
        case .century: return format(CivilTime.floorDivide(time.year, 100))
        }
    }

    /// The time the registers in `ram` hold, clamping each field into its valid range.
    private static func decode(_ ram: [UInt8], statusB: UInt8) -> CivilTime {
        let binary = statusB & binaryBit != 0
        func value(_ register: TimeRegister, mask: UInt8 = 0xFF) -> Int64 {
            let byte = ram[register.rawValue] & mask
            return binary ? Int64(byte) : Int64(byte >> 4) * 10 + Int64(byte & 0x0F)
        }
        var hour: Int64
        if statusB & twentyFourHourBit != 0 {
            hour = clamp(value(.hours), 0, 23)
        } else {
            hour = clamp(value(.hours, mask: 0x7F), 1, 12) % 12
            if ram[TimeRegister.hours.rawValue] & 0x80 != 0 { hour += 12 }
        }
        let year = clamp(value(.century), 0, 99) * 100 + clamp(value(.year), 0, 99)
        let month = clamp(value(.month), 1, 12)
        let day = clamp(value(.day), 1, CivilTime.daysInMonth(year: year, month: month))
        return CivilTime(year: year, month: month, day: day, hour: hour,
                         minute: clamp(value(.minutes), 0, 59), second: clamp(value(.seconds), 0, 59))
    }

    private static func clamp(_ value: Int64, _ low: Int64, _ high: Int64) -> Int64 {
        min(max(value, low), high)
    }
}

/// A UTC date and time in the proleptic Gregorian calendar, converted to and from seconds since
/// the Unix epoch with Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms.
///
/// All arithmetic wraps rather than traps, so any `Int64` is accepted (absurd inputs give
/// absurd but harmless dates).
struct CivilTime: Equatable {
    var year: Int64
    var month: Int64  // 1...12
    var day: Int64  // 1...31
    var hour: Int64
    var minute: Int64
    var second: Int64

    init(year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
    }

    init(secondsSinceEpoch seconds: Int64) {
        let days = Self.floorDivide(seconds, 86_400)
        let secondOfDay = seconds &- days &* 86_400
        (year, month, day) = Self.civil(fromDays: days)
        hour = secondOfDay / 3600
        minute = secondOfDay % 3600 / 60
        second = secondOfDay % 60
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    var secondsSinceEpoch: Int64 {
        Self.days(fromCivil: year, month, day) &* 86_400 &+ hour &* 3600 &+ minute &* 60 &+ second
    }

    /// The day of the week, 1 = Sunday … 7 = Saturday.
    var weekday: Int64 {
        // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
        let days = Self.days(fromCivil: year, month, day)
        return (days % 7 &+ 7 &+ 4) % 7 + 1
    }

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let quotient = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? quotient &- 1 : quotient
    }

    static func isLeap(_ year: Int64) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    static func daysInMonth(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of the given date (month 1...12).
    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year &- 1 : year
        let era = floorDivide(y, 400)
        let yearOfEra = y &- era &* 400  // 0...399
        let shiftedMonth = month > 2 ? month &- 3 : month &+ 9  // March = 0
        let dayOfYear = (153 &* shiftedMonth &+ 2) / 5 &+ day &- 1
        let dayOfEra = yearOfEra &* 365 &+ yearOfEra / 4 &- yearOfEra / 100 &+ dayOfYear
        return era &* 146_097 &+ dayOfEra &- 719_468
    }

    /// The date of the day `days` days after 1970-01-01.
    static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days &+ 719_468
        let era = floorDivide(z, 146_097)
        let dayOfEra = z &- era &* 146_097  // 0...146096
        let yearOfEra = (dayOfEra &- dayOfEra / 1460 &+ dayOfEra / 36524 &- dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra &- (365 &* yearOfEra &+ yearOfEra / 4 &- yearOfEra / 100)
        let shiftedMonth = (5 &* dayOfYear &+ 2) / 153
        let day = dayOfYear &- (153 &* shiftedMonth &+ 2) / 5 &+ 1
        let month = shiftedMonth < 10 ? shiftedMonth &+ 3 : shiftedMonth &- 9
        let year = yearOfEra &+ era &* 400
        return (month <= 2 ? year &+ 1 : year, month, day)
    }
}
