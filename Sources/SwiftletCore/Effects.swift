/// An interrupt line into the guest (vm-superio's `Trigger`).
///
/// Device models raise interrupts through this protocol and never know whether it is an irqfd,
/// a `KVM_IRQ_LINE` call or a test recorder.
public protocol InterruptLine: Sendable {
    /// Signals an edge-triggered interrupt once (raise, then lower).
    func trigger()
}

/// Where a device's output bytes go (a terminal, a file, nowhere).
public protocol OutputSink: Sendable {
    /// Writes `bytes`. Must not block for long: it runs on a vCPU thread.
    func write(_ bytes: [UInt8])
}

/// The host's wall clock, as seen by clock devices.
public protocol WallClock: Sendable {
    /// Seconds since the Unix epoch (UTC).
    func secondsSinceEpoch() -> Int64
}

/// Something a guest asked of the machine through a device.
public enum MachineEvent: Sendable, Equatable {
    /// The guest powered off (ACPI S5).
    case powerOff
    /// The guest reset the machine (i8042 pulse, ACPI reset register).
    case reset
    /// The guest kernel panicked (pvpanic).
    case panic
    /// The guest signalled that it finished booting.
    case bootComplete
    /// The guest reported the exit status of the command it ran.
    case exitStatus(UInt8)
}

/// Receives ``MachineEvent``s from device models.
public protocol MachineEventSink: Sendable {
    /// Called on the vCPU thread that performed the access.
    func handle(_ event: MachineEvent)
}

/// An ``OutputSink`` that drops everything.
public struct DiscardingSink: OutputSink {
    /// Creates the sink.
    public init() {}
    public func write(_ bytes: [UInt8]) {}
}
