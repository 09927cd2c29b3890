import SwiftletCore

/// Swiftlet's own MMIO control page, through which a guest reports its progress.
///
/// Swiftlet maps it at 0xc000_0000 with size 0x1000; the default guest's init writes to it with
/// busybox `devmem`:
/// - Offset 0x0, boot complete: a 32-bit write of 123 reports ``MachineEvent/bootComplete``
///   (123 is Firecracker's boot-timer magic). Other values and widths are ignored. Every such
///   write reports the event again; the sink decides whether repeats matter.
/// - Offset 0x4, exit status: a write of any width reports
///   ``MachineEvent/exitStatus(_:)`` with the value's low byte.
/// - Offset 0x8, identification: reads as the 32-bit magic 0x544C5753 ("SWLT" in little-endian
///   byte order), so a guest can tell it runs under Swiftlet.
///
/// Reads see the page as little-endian bytes that are all 0 except the magic at 0x8–0xB, so a
/// read of any width at any offset returns those bytes (e.g. a byte read at 0x9 returns 0x57,
/// "W"); reads past the page return 0. Writes anywhere else are ignored.
///
/// Threat model:
/// - Input: guest reads and writes at any offset, width and value.
/// - Threat: a guest that tries to trap the VMM, or reports bogus or repeated events.
/// - Mitigation: the page is stateless and reads are computed byte by byte without indexing;
///   events carry at most one byte of guest data and are only reported, never acted on here.
public struct GuestControlPage: BusDevice {
    /// The size of the page in bytes.
    public static let windowSize: UInt64 = 0x1000

    /// The page's guest-visible state: there is none (it is stateless).
    public struct State: Codable, Equatable, Sendable {
        /// Creates the (empty) state.
        public init() {}
    }

    /// The value that, written as 32 bits at offset 0, reports that the guest finished booting.
    public static let bootCompleteMagic: UInt64 = 123
    /// The value read at offset 8: "SWLT" in little-endian byte order.
    public static let identificationMagic: UInt32 = 0x544C_5753
    /// The offset of the boot-complete register.
    public static let bootCompleteOffset: UInt64 = 0x0
    /// The offset of the exit-status register.
    public static let exitStatusOffset: UInt64 = 0x4
    /// The offset of the identification register.
    public static let identificationOffset: UInt64 = 0x8

    private let events: any MachineEventSink

    /// Creates the page, reporting the guest's signals to `events`.
    public init(state: State = State(), events: any MachineEventSink) {
        self.events = events
    }

    /// The guest-visible state, for snapshots (always empty).
    public var state: State { State() }

    /// Emulates a guest read: the identification magic's bytes where they overlap the access, 0 elsewhere.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        var value: UInt64 = 0
        for byteIndex in 0..<UInt64(width.bytes) {
            let (address, overflow) = offset.addingReportingOverflow(byteIndex)
            guard !overflow, address >= Self.identificationOffset, address < Self.identificationOffset + 4 else {
                continue
            }
            let magicByte = UInt64(Self.identificationMagic >> ((address - Self.identificationOffset) * 8)) & 0xFF
            value |= magicByte << (byteIndex * 8)
        }
        return value
    }

    /// Emulates a guest write: boot complete at offset 0, exit status at offset 4.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        switch offset {
        case Self.bootCompleteOffset:
            if width == .dword, value & 0xFFFF_FFFF == Self.bootCompleteMagic {
                events.handle(.bootComplete)
            }
        case Self.exitStatusOffset:
            events.handle(.exitStatus(UInt8(truncatingIfNeeded: value)))
        default:
            break
        }
    }
}
