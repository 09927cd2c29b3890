import SwiftletCore

/// An i8042 keyboard controller with no keyboard or mouse attached, modelled as a pure state machine.
///
/// Guests use it to probe for a keyboard and to reset the machine (command 0xFE). Swiftlet
/// registers it at port 0x60 with 5 ports: offset 0 is the data port (0x60), offset 4 the
/// status (read) / command (write) port (0x64). Offsets 1–3 (ports 0x61–0x63) are not the
/// controller's: they read 0 and ignore writes.
///
/// Status (offset 4, read): bit 0 OBF when an output byte is pending, bit 2 the system flag
/// (always set: self-test passed), bit 4 set (keyboard not inhibited, so Linux does not warn
/// about a key lock), bit 5 when the pending byte came from the aux (mouse) port. The input
/// buffer is never full (bit 1 is 0): commands are processed at once.
///
/// Commands (offset 4, write):
/// - 0x20: read the controller configuration byte (into the output buffer).
/// - 0x60: the next data write sets the configuration byte.
/// - 0xA7 / 0xA8: disable / enable the aux port (sets / clears configuration bit 5).
/// - 0xAD / 0xAE: disable / enable the keyboard port (sets / clears configuration bit 4).
/// - 0xA9 / 0xAB: aux / keyboard interface test → 0x00 (passed).
/// - 0xAA: controller self-test → 0x55 (passed).
/// - 0xD4: the next data write goes to the aux device.
/// - 0xFE: pulse the reset line → ``MachineEvent/reset``. (Other 0xF0–0xFF pulse commands are
///   ignored.)
/// - Anything else is ignored (and cancels a pending 0x60 or 0xD4).
///
/// No device is attached to either port: a data byte sent to the keyboard (a data write with no
/// pending command) or to the aux device (after 0xD4) is answered with 0xFE ("resend"), so a
/// guest's PS/2 probe fails fast. The controller raises no interrupts (it has no
/// ``InterruptLine``), so guests should not rely on IRQ 1 or 12.
///
/// The output buffer holds one byte: a new response replaces an unread one. Reading the data
/// port returns and clears it, or returns 0 when it is empty. Registers are one byte wide:
/// accesses of other widths read 0 and writes are ignored.
///
/// Threat model:
/// - Input: guest reads and writes at any offset, width and value, in any order.
/// - Threat: a guest that tries to trap the VMM or grow its memory with unexpected commands or
///   endless data, or that resets the machine repeatedly.
/// - Mitigation: all state is a few fixed-size bytes, unknown commands and widths are ignored,
///   and a reset request is only reported to the ``MachineEventSink``, which decides what to do.
public struct I8042: BusDevice {
    /// The number of consecutive I/O ports the controller spans from its base (data at +0, command and status at +4).
    public static let windowSize: UInt64 = 5

    /// The controller's guest-visible state, for snapshots.
    public struct State: Codable, Equatable, Sendable {
        /// The controller configuration byte ("command byte").
        public var configuration: UInt8
        /// A command waiting for its data byte (0x60 or 0xD4), if any.
        public var pendingCommand: UInt8?
        /// The byte waiting in the output buffer, if any.
        public var output: UInt8?
        /// Whether the pending output byte came from the aux port (status bit 5).
        public var outputFromAux: Bool

        /// Creates a state; the default configuration 0x05 means keyboard interrupt enabled and
        /// system flag set, both ports enabled, no translation.
        public init(configuration: UInt8 = 0x05, pendingCommand: UInt8? = nil, output: UInt8? = nil,
                    outputFromAux: Bool = false) {
            self.configuration = configuration
            self.pendingCommand = pendingCommand
            self.output = output
            self.outputFromAux = outputFromAux
        }
    }

    private static let dataOffset: UInt64 = 0
    private static let commandOffset: UInt64 = 4

    private static let statusOutputFull: UInt8 = 0x01
    private static let statusSystemFlag: UInt8 = 0x04
    private static let statusNotInhibited: UInt8 = 0x10
    private static let statusAuxData: UInt8 = 0x20

    private static let configKeyboardDisabled: UInt8 = 0x10
    private static let configAuxDisabled: UInt8 = 0x20

    private static let resend: UInt8 = 0xFE

    private var current: State
    private let events: any MachineEventSink

    /// Creates a controller in `state` (power-on state by default) that reports resets to `events`.
    ///
    /// A restored pending command other than 0x60 or 0xD4 is dropped.
    public init(state: State = State(), events: any MachineEventSink) {
        var state = state
        if let command = state.pendingCommand, command != 0x60, command != 0xD4 {
            state.pendingCommand = nil
        }
        if state.output == nil { state.outputFromAux = false }
        self.current = state
        self.events = events
    }

    /// The guest-visible state, for snapshots.
    public var state: State { current }

    /// Emulates a guest read: the data port pops the output byte, the command port reads status.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0 }
        switch offset {
        case Self.dataOffset:
            let byte = current.output ?? 0
            current.output = nil
            current.outputFromAux = false
            return UInt64(byte)
        case Self.commandOffset:
            var status = Self.statusSystemFlag | Self.statusNotInhibited
            if current.output != nil { status |= Self.statusOutputFull }
            if current.outputFromAux { status |= Self.statusAuxData }
            return UInt64(status)
        default:
            return 0
        }
    }

    /// Emulates a guest write: a data byte or a controller command.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case Self.dataOffset:
            writeData(byte)
        case Self.commandOffset:
            writeCommand(byte)
        default:
            break
        }
    }

    private mutating func respond(_ byte: UInt8, fromAux: Bool = false) {
        current.output = byte
        current.outputFromAux = fromAux
    }

    private mutating func writeData(_ byte: UInt8) {
        let command = current.pendingCommand
        current.pendingCommand = nil
        switch command {
        case 0x60:
            current.configuration = byte
        case 0xD4:
            respond(Self.resend, fromAux: true)  // No mouse.
        default:
            respond(Self.resend)  // No keyboard.
        }
    }

    private mutating func writeCommand(_ command: UInt8) {
        current.pendingCommand = nil
        switch command {
        case 0x20:
            respond(current.configuration)
        case 0x60, 0xD4:
            current.pendingCommand = command
        case 0xA7:
            current.configuration |= Self.configAuxDisabled
        case 0xA8:
            current.configuration &= ~Self.configAuxDisabled
        case 0xAD:
            current.configuration |= Self.configKeyboardDisabled
        case 0xAE:
            current.configuration &= ~Self.configKeyboardDisabled
        case 0xA9, 0xAB:
            respond(0x00)
        case 0xAA:
            respond(0x55)
        case 0xFE:
            events.handle(.reset)
        default:
            break
        }
    }
}
