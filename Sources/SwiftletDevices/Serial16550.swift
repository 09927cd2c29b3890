import SwiftletCore

/// A 16550A UART (the PC's COM port), modelled as a pure state machine.
///
/// Swiftlet registers it at port 0x3f8 with 8 ports and IRQ 4. Offsets are relative to the base:
///
/// | Offset | Read                          | Write                         |
/// |--------|-------------------------------|-------------------------------|
/// | 0      | RBR (pops a byte) / DLL       | THR (sends a byte) / DLL      |
/// | 1      | IER / DLM                     | IER / DLM                     |
/// | 2      | IIR                           | FCR                           |
/// | 3      | LCR                           | LCR                           |
/// | 4      | MCR                           | MCR                           |
/// | 5      | LSR                           | ignored                       |
/// | 6      | MSR                           | ignored                       |
/// | 7      | SCR                           | SCR                           |
///
/// DLL and DLM replace RBR/THR and IER while LCR.DLAB (bit 7) is set.
///
/// Behaviour, kept to what Linux's 8250 driver needs:
/// - Output is instantaneous: THR writes go to the ``OutputSink`` one byte per call, and LSR
///   always reports THRE and TEMT. Baud rate, word length and parity are stored but have no effect.
/// - The receive FIFO always holds up to 64 bytes (also in 16450 mode, with FIFOs disabled).
///   Only the "received data available" interrupt is modelled: there is no trigger level and no
///   character-timeout interrupt; any data in the FIFO raises it.
/// - In loopback mode (MCR bit 4) THR bytes go into the receive FIFO instead of the sink, MSR's
///   top nibble mirrors MCR bits 0–3, and the line from the host is disconnected:
///   ``enqueueInput(_:)`` accepts nothing until loopback is turned off. A loopback byte that finds
///   the FIFO full is dropped and sets LSR.OE (cleared by reading LSR).
/// - The modem-status and line-status interrupts are never raised; MSR's delta bits always read 0.
/// - Interrupts are edges on the injected ``InterruptLine``, raised when a condition becomes
///   pending while enabled: IER.ETBEI going from 0 to 1 (THR is always empty), every THR write
///   while ETBEI is set, host or loopback input while IER.ERBFI is set, and IER.ERBFI going from
///   0 to 1 while the FIFO holds data.
/// - Registers are one byte wide: accesses of any other width read 0 and writes are ignored, as
///   are accesses at offsets past 7.
///
/// Threat model:
/// - Input: every register access comes from the guest (any offset, width and value, in any
///   order); ``enqueueInput(_:)`` comes from the host terminal or a file.
/// - Threat: a guest (or host input) that tries to trap the VMM with out-of-range values,
///   overflow the receive FIFO to grow memory without bound, or flood the host with interrupts.
/// - Mitigation: values are masked to their register widths, every index is bounds-checked, the
///   FIFO is capped at 64 bytes (excess host input is refused, excess loopback bytes are dropped),
///   and each guest access raises at most one interrupt edge.
public struct Serial16550: BusDevice {
    /// The capacity of the receive FIFO in bytes.
    public static let fifoCapacity = 64

    /// The UART's guest-visible registers and receive FIFO, for snapshots.
    public struct State: Codable, Equatable, Sendable {
        /// Interrupt enable register (low 4 bits).
        public var interruptEnable: UInt8
        /// Line control register; bit 7 is DLAB.
        public var lineControl: UInt8
        /// Modem control register (low 5 bits); bit 4 is loopback.
        public var modemControl: UInt8
        /// The last FIFO control value written, without the self-clearing bits 1 and 2.
        public var fifoControl: UInt8
        /// Scratch register.
        public var scratch: UInt8
        /// Divisor latch, low byte.
        public var divisorLow: UInt8
        /// Divisor latch, high byte.
        public var divisorHigh: UInt8
        /// Received bytes not yet read by the guest, oldest first (at most ``Serial16550/fifoCapacity``).
        public var receiveFIFO: [UInt8]
        /// Whether a THR-empty interrupt is pending (not yet acknowledged by an IIR read).
        public var transmitterEmptyPending: Bool
        /// LSR.OE: a loopback byte was dropped because the receive FIFO was full.
        public var overrun: Bool

        /// Creates a state; the defaults are the power-on state: 8N1 (LCR 0x03) at 9600 baud
        /// (divisor 12), modem control lines off (MCR 0), FIFOs disabled, no interrupts enabled or pending.
        public init(
            interruptEnable: UInt8 = 0, lineControl: UInt8 = 0x03, modemControl: UInt8 = 0,
            fifoControl: UInt8 = 0, scratch: UInt8 = 0, divisorLow: UInt8 = 12, divisorHigh: UInt8 = 0,
            receiveFIFO: [UInt8] = [], transmitterEmptyPending: Bool = false, overrun: Bool = false
        ) {
            self.interruptEnable = interruptEnable
            self.lineControl = lineControl
            self.modemControl = modemControl
            self.fifoControl = fifoControl
            self.scratch = scratch
            self.divisorLow = divisorLow
            self.divisorHigh = divisorHigh
            self.receiveFIFO = receiveFIFO
            self.transmitterEmptyPending = transmitterEmptyPending
            self.overrun = overrun
        }
    }

    // Register offsets.
    private static let dataOffset: UInt64 = 0
    private static let ierOffset: UInt64 = 1
    private static let iirFcrOffset: UInt64 = 2
    private static let lcrOffset: UInt64 = 3
    private static let mcrOffset: UInt64 = 4
    private static let lsrOffset: UInt64 = 5
    private static let msrOffset: UInt64 = 6
    private static let scrOffset: UInt64 = 7

    // Bits.
    private static let ierReceiveData: UInt8 = 0x01
    private static let ierTransmitterEmpty: UInt8 = 0x02
    private static let lcrDLAB: UInt8 = 0x80
    private static let mcrLoopback: UInt8 = 0x10
    /// MCR OUT2: on a PC it gates the UART's interrupt onto the bus; drivers set it when they open
    /// the port, not while probing.
    private static let mcrOut2: UInt8 = 0x08
    private static let fcrEnable: UInt8 = 0x01
    private static let fcrClearReceive: UInt8 = 0x02
    private static let iirNoInterrupt: UInt8 = 0x01
    private static let iirTransmitterEmpty: UInt8 = 0x02
    private static let iirReceiveData: UInt8 = 0x04
    private static let iirFIFOsEnabled: UInt8 = 0xC0
    private static let lsrDataReady: UInt8 = 0x01
    private static let lsrOverrun: UInt8 = 0x02
    private static let lsrTHREmpty: UInt8 = 0x20
    private static let lsrTransmitterEmpty: UInt8 = 0x40
    private static let msrIdle: UInt8 = 0xB0  // DCD | DSR | CTS

    private var current: State
    private let irq: any InterruptLine
    private let output: any OutputSink

    /// Creates a UART in `state` (power-on state by default) that raises `irq` and sends THR bytes
    /// to `output`.
    ///
    /// A restored receive FIFO longer than ``fifoCapacity`` is cut to its first 64 bytes, and
    /// registers are masked to their valid bits.
    public init(state: State = State(), irq: any InterruptLine, output: any OutputSink) {
        var state = state
        state.interruptEnable &= 0x0F
        state.modemControl &= 0x1F
        state.fifoControl &= ~(Self.fcrClearReceive | 0x04)
        if state.receiveFIFO.count > Self.fifoCapacity {
            state.receiveFIFO = Array(state.receiveFIFO.prefix(Self.fifoCapacity))
        }
        self.current = state
        self.irq = irq
        self.output = output
    }

    /// The guest-visible state, for snapshots.
    public var state: State { current }

    /// How many more bytes ``enqueueInput(_:)`` would accept now (0 in loopback mode).
    ///
    /// Zero while the guest is not listening: until its driver has opened the port (receive-data
    /// interrupts on *and* MCR OUT2 set, so a probe that writes IER for a read-back test does not
    /// count), and in loopback. Host input then waits instead of being flushed away by the
    /// driver's start-up, as it would be on a real line.
    public var inputSpace: Int {
        guard !isLoopback, current.interruptEnable & Self.ierReceiveData != 0,
              current.modemControl & Self.mcrOut2 != 0 else { return 0 }
        return max(0, Self.fifoCapacity - current.receiveFIFO.count)
    }

    /// Feeds bytes from the host into the receive FIFO and returns how many were accepted.
    ///
    /// Accepts at most ``inputSpace`` bytes, from the front of `bytes`; the caller keeps the rest
    /// and retries later. Raises one interrupt edge if any byte was accepted and IER.ERBFI is set.
    public mutating func enqueueInput(_ bytes: [UInt8]) -> Int {
        let accepted = min(bytes.count, inputSpace)
        guard accepted > 0 else { return 0 }
        current.receiveFIFO.append(contentsOf: bytes.prefix(accepted))
        if current.interruptEnable & Self.ierReceiveData != 0 {
            irq.trigger()
        }
        return accepted
    }

    /// Emulates a guest read; see the type's documentation for the register map.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0 }
        return UInt64(readRegister(offset))
    }

    /// Emulates a guest write; see the type's documentation for the register map.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        writeRegister(offset, UInt8(truncatingIfNeeded: value))
    }

    // MARK: - Registers

    private var isLoopback: Bool { current.modemControl & Self.mcrLoopback != 0 }
    private var isDLAB: Bool { current.lineControl & Self.lcrDLAB != 0 }

    private mutating func readRegister(_ offset: UInt64) -> UInt8 {
        switch offset {
        case Self.dataOffset:
            if isDLAB { return current.divisorLow }
            return current.receiveFIFO.isEmpty ? 0 : current.receiveFIFO.removeFirst()
        case Self.ierOffset:
            return isDLAB ? current.divisorHigh : current.interruptEnable
        case Self.iirFcrOffset:
            return readInterruptIdentification()
        case Self.lcrOffset:
            return current.lineControl
        case Self.mcrOffset:
            return current.modemControl
        case Self.lsrOffset:
            var status = Self.lsrTHREmpty | Self.lsrTransmitterEmpty
            if !current.receiveFIFO.isEmpty { status |= Self.lsrDataReady }
            if current.overrun { status |= Self.lsrOverrun }
            current.overrun = false
            return status
        case Self.msrOffset:
            guard isLoopback else { return Self.msrIdle }
            // DTR→DSR (bit 5), RTS→CTS (bit 4), OUT1→RI (bit 6), OUT2→DCD (bit 7).
            let mcr = current.modemControl
            var status: UInt8 = 0
            if mcr & 0x01 != 0 { status |= 0x20 }
            if mcr & 0x02 != 0 { status |= 0x10 }
            if mcr & 0x04 != 0 { status |= 0x40 }
            if mcr & 0x08 != 0 { status |= 0x80 }
            return status
        case Self.scrOffset:
            return current.scratch
        default:
            return 0
        }
    }

    /// IIR, with its one side effect: reporting THR-empty acknowledges it.
    private mutating func readInterruptIdentification() -> UInt8 {
        let fifoBits = current.fifoControl & Self.fcrEnable != 0 ? Self.iirFIFOsEnabled : 0
        let enabled = current.interruptEnable
        if enabled & Self.ierReceiveData != 0, !current.receiveFIFO.isEmpty {
            return fifoBits | Self.iirReceiveData
        }
        if enabled & Self.ierTransmitterEmpty != 0, current.transmitterEmptyPending {
            current.transmitterEmptyPending = false
            return fifoBits | Self.iirTransmitterEmpty
        }
        return fifoBits | Self.iirNoInterrupt
    }

    private mutating func writeRegister(_ offset: UInt64, _ value: UInt8) {
        switch offset {
        case Self.dataOffset:
            if isDLAB {
                current.divisorLow = value
            } else {
                transmit(value)
            }
        case Self.ierOffset:
            if isDLAB {
                current.divisorHigh = value
            } else {
                writeInterruptEnable(value & 0x0F)
            }
        case Self.iirFcrOffset:
            let newControl = value & ~(Self.fcrClearReceive | 0x04)
            // Changing the FIFO enable bit clears the FIFOs (16550 datasheet), as does FCR bit 1.
            if value & Self.fcrClearReceive != 0 || (newControl ^ current.fifoControl) & Self.fcrEnable != 0 {
                current.receiveFIFO.removeAll()
            }
            current.fifoControl = newControl
        case Self.lcrOffset:
            current.lineControl = value
        case Self.mcrOffset:
            current.modemControl = value & 0x1F
        case Self.scrOffset:
            current.scratch = value
        default:
            break  // LSR and MSR are read-only; offsets past 7 do not exist.
        }
    }

    private mutating func writeInterruptEnable(_ value: UInt8) {
        let old = current.interruptEnable
        current.interruptEnable = value
        var raise = false
        if value & Self.ierTransmitterEmpty != 0 {
            if old & Self.ierTransmitterEmpty == 0 {
                // THR is always empty, so enabling its interrupt makes it pending at once.
                current.transmitterEmptyPending = true
                raise = true
            }
        } else {
            current.transmitterEmptyPending = false
        }
        if value & Self.ierReceiveData != 0, old & Self.ierReceiveData == 0, !current.receiveFIFO.isEmpty {
            raise = true
        }
        if raise { irq.trigger() }
    }

    private mutating func transmit(_ byte: UInt8) {
        var raise = false
        if isLoopback {
            if current.receiveFIFO.count < Self.fifoCapacity {
                current.receiveFIFO.append(byte)
                if current.interruptEnable & Self.ierReceiveData != 0 { raise = true }
            } else {
                current.overrun = true
            }
        } else {
            output.write([byte])
        }
        // Writing THR acknowledges THR-empty; the byte leaves at once, so THR is empty again.
        current.transmitterEmptyPending = true
        if current.interruptEnable & Self.ierTransmitterEmpty != 0 { raise = true }
        if raise { irq.trigger() }
    }
}
