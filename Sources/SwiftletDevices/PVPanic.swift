import SwiftletCore

/// QEMU's pvpanic device on one I/O port (`QEMU0001` in the DSDT), through which the guest
/// kernel reports a panic before it reboots or halts.
///
/// - Read: the events the device supports, `PANICKED` (bit 0) and `CRASH_LOADED` (bit 1).
/// - Write: bit 0 (`PANICKED`) reports ``MachineEvent/panic``; bit 1 (`CRASH_LOADED`, a kdump kernel
///   is taking over) is accepted and ignored, since the guest keeps running.
///
/// Threat model: input is one guest-written byte; the threat is a guest flooding panic events;
/// mitigation: the device keeps no state and reports each event to the sink, which acts only on
/// the first stop.
public struct PVPanic: BusDevice {
    /// The number of I/O ports the device decodes.
    public static let windowSize: UInt64 = 1

    /// The device has no guest-visible state.
    public struct State: Codable, Equatable, Sendable {
        /// Creates the (empty) state.
        public init() {}
    }

    /// `PVPANIC_PANICKED`.
    public static let panicked: UInt64 = 1 << 0
    /// `PVPANIC_CRASH_LOADED`.
    public static let crashLoaded: UInt64 = 1 << 1

    private let events: any MachineEventSink

    /// The device's state (always empty).
    public var state: State { State() }

    /// Creates the device, reporting panics to `events`.
    public init(state: State = State(), events: any MachineEventSink) {
        self.events = events
    }

    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        offset == 0 ? Self.panicked | Self.crashLoaded : 0
    }

    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        if offset == 0, value & Self.panicked != 0 { events.handle(.panic) }
    }
}
