/// An interrupt line into the guest (vm-superio's `Trigger`).
///
/// Device models raise interrupts through this protocol and never know whether it is an irqfd,
/// a `KVM_IRQ_LINE` call or a test recorder.
public protocol InterruptLine: Sendable {
    /// Signals an edge-triggered interrupt once (raise, then lower).
    func trigger()
}

/// The far end of a device's output line (a terminal, a pipe, a file, nowhere), which may be
/// slower than the guest.
///
/// A sink buffers up to a bound. A device asks for ``room`` before it reports itself ready to send
/// (a UART's THR-empty), so a slow reader holds the guest back, as a real serial line does,
/// instead of blocking the vCPU thread in a host `write`.
public protocol OutputSink: Sendable {
    /// How many more bytes the sink takes now without holding the sender back (`Int.max` if it
    /// never does). Cheap: called on every status read.
    var room: Int { get }
    /// Sends one byte. Returns `false` if the sink was full and dropped it (a sender that ignored
    /// ``room``). Never blocks and never allocates: it runs on a vCPU thread.
    func write(_ byte: UInt8) -> Bool
    /// Sends bytes from the front of `bytes` while the sink has ``room``; returns how many it took
    /// (fewer than `bytes.count` once it is full). The default sends them one by one.
    func write(contentsOf bytes: [UInt8]) -> Int
}

extension OutputSink {
    public func write(contentsOf bytes: [UInt8]) -> Int {
        var sent = 0
        for byte in bytes {
            guard room > 0, write(byte) else { break }
            sent += 1
        }
        return sent
    }
}

/// Where a device's input bytes come from (a terminal, a pipe), held until the device has room.
///
/// The device pulls: it takes what fits whenever room appears in its own buffer, so the host side
/// never waits on the guest (and a console escape typed after unread input is still seen).
public protocol InputSource: Sendable {
    /// Whether no input is waiting. Cheap: called on every device access.
    var isEmpty: Bool { get }
    /// Takes up to `limit` waiting bytes, oldest first, handing each to `body`; returns how many.
    func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int
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

/// An ``OutputSink`` that drops everything and never holds the sender back.
public struct DiscardingSink: OutputSink {
    /// Creates the sink.
    public init() {}
    public var room: Int { .max }
    public func write(_ byte: UInt8) -> Bool { true }
}

/// An ``InputSource`` that never has input.
public struct NoInput: InputSource {
    /// Creates the source.
    public init() {}
    public var isEmpty: Bool { true }
    public func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int { 0 }
}
