import SwiftletCore

/// The sleep control, sleep status and reset registers of a hardware-reduced ACPI machine,
/// modelled as a pure state machine.
///
/// Swiftlet registers them at port 0x600 with 3 ports, and the FADT points the guest at them:
/// - Offset 0, sleep control: a byte write with SLP_EN (bit 5) set and SLP_TYP (bits 2–4) equal
///   to the power-off sleep type reports ``MachineEvent/powerOff``. Other sleep types (S1–S4) are
///   not supported and ignored, as are writes without SLP_EN. Reads return 0 (its bits are
///   write-only here).
/// - Offset 1, sleep status: reads 0 (the machine never wakes, so WAK_STS is never set); writes
///   (write 1 to clear) are ignored.
/// - Offset 2, reset: a byte write of the reset value reports ``MachineEvent/reset``; other
///   values are ignored. Reads return 0.
///
/// The power-off sleep type and the reset value must match what the ACPI tables advertise
/// (`X86Layout.acpiS5SleepType` = 5 and `X86Layout.acpiResetValue` = 1, the defaults here; this
/// module cannot import SwiftletArch). The registers are one byte wide: accesses of other widths,
/// and accesses past offset 2, read 0 and are otherwise ignored.
///
/// Threat model:
/// - Input: guest reads and writes at any offset, width and value.
/// - Threat: a guest that tries to trap the VMM, or to power off or reset the machine by accident
///   or repeatedly.
/// - Mitigation: there is no state to corrupt; only exact, documented writes produce an event, and
///   events only reach the ``MachineEventSink``, which decides what to do with them.
public struct ACPIPowerRegisters: BusDevice {
    /// The number of consecutive I/O ports the registers occupy (sleep control, sleep status, reset).
    public static let windowSize: UInt64 = 3

    /// The registers' guest-visible state: there is none (every register is write-only or reads 0).
    public struct State: Codable, Equatable, Sendable {
        /// Creates the (empty) state.
        public init() {}
    }

    /// The SLP_TYP value that means "power off" (S5).
    public let powerOffSleepType: UInt8
    /// The value that, written to the reset register, resets the machine.
    public let resetValue: UInt8

    private let events: any MachineEventSink

    private static let sleepEnable: UInt8 = 0x20

    /// Creates the registers, reporting power-off and reset to `events`.
    ///
    /// - Parameters:
    ///   - powerOffSleepType: the `\_S5` SLP_TYP the ACPI tables advertise (only the low 3 bits
    ///     count); 5, as `X86Layout.acpiS5SleepType`, by default.
    ///   - resetValue: the FADT's RESET_VALUE; 1, as `X86Layout.acpiResetValue`, by default.
    public init(state: State = State(), powerOffSleepType: UInt8 = 5, resetValue: UInt8 = 1,
                events: any MachineEventSink) {
        self.powerOffSleepType = powerOffSleepType & 0x07
        self.resetValue = resetValue
        self.events = events
    }

    /// The guest-visible state, for snapshots (always empty).
    public var state: State { State() }

    /// Emulates a guest read: every register reads 0.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 { 0 }

    /// Emulates a guest write: a power-off request at offset 0 or a reset request at offset 2.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0:
            if byte & Self.sleepEnable != 0, (byte >> 2) & 0x07 == powerOffSleepType {
                events.handle(.powerOff)
            }
        case 2:
            if byte == resetValue { events.handle(.reset) }
        default:
            break
        }
    }
}
