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
/// - Output goes to the ``OutputSink`` one byte per THR write. The transmitter is ready (LSR
///   reports THRE and TEMT) while the sink has room for a whole 16-byte transmit FIFO, which is
///   what Linux's 8250 driver writes after each THR-empty interrupt without looking at LSR. When
///   the sink is fuller (its reader is slow or stalled) the transmitter stays busy: no THRE, no
///   THR-empty interrupt, until the host calls ``outputRoomAvailable()``. So a slow reader slows
///   the guest's output down and loses none of it, and no vCPU thread ever waits on a host
///   `write`. Baud rate, word length and parity are stored but have no effect.
/// - Host input waits in an ``InputSource`` and is pulled into the receive FIFO whenever the
///   guest listens and the FIFO has room (after every guest access, and when the host calls
///   ``receiveInput()``), so the host never waits on the guest.
/// - The receive FIFO always holds up to 64 bytes (also in 16450 mode, with FIFOs disabled).
///   Only the "received data available" interrupt is modelled: there is no trigger level and no
///   character-timeout interrupt; any data in the FIFO raises it.
/// - In loopback mode (MCR bit 4) THR bytes go into the receive FIFO instead of the sink, MSR's
///   top nibble mirrors MCR bits 0–3, and the line from the host is disconnected:
///   no host input is taken until loopback is turned off. A loopback byte that finds
///   the FIFO full is dropped and sets LSR.OE (cleared by reading LSR).
/// - The modem-status and line-status interrupts are never raised; MSR's delta bits always read 0.
/// - Interrupts are edges on the injected ``InterruptLine``, raised when a condition becomes
///   pending while enabled: IER.ETBEI going from 0 to 1 while the transmitter is ready, every THR
///   write that leaves it ready while ETBEI is set, the transmitter becoming ready again while
///   ETBEI is set, host or loopback input while IER.ERBFI is set, and IER.ERBFI going from 0 to 1
///   while the FIFO holds data.
/// - Registers are one byte wide: accesses of any other width read 0 and writes are ignored, as
///   are accesses at offsets past 7.
///
/// Threat model:
/// - Input: every register access comes from the guest (any offset, width and value, in any
///   order); host input comes from the host terminal or a pipe through the ``InputSource``.
/// - Threat: a guest (or host input) that tries to trap the VMM with out-of-range values,
///   overflow the receive FIFO to grow memory without bound, or flood the host with interrupts.
/// - Mitigation: values are masked to their register widths, every index is bounds-checked, the
///   FIFO is capped at 64 bytes (host input beyond it stays with the host, excess loopback bytes
///   are dropped), a guest that writes THR while the transmitter is busy only loses its own bytes
///   (the sink is bounded and never blocks), and each guest access raises at most one interrupt edge.
public struct Serial16550: BusDevice {
    /// The number of consecutive I/O ports the UART decodes (THR/RBR … SCR).
    public static let windowSize: UInt64 = 8

    /// The capacity of the receive FIFO in bytes.
    public static let fifoCapacity = 64
    /// The size of the transmit FIFO: the transmitter is ready while the sink has this much room.
    public static let transmitFIFOSize = 16

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
    private let input: any InputSource
    /// The transmitter went busy (the sink was full) and owes a THR-empty once there is room.
    /// Host-side flow control, not guest state: a restored UART starts with an empty sink.
    private var waitingForRoom = false

    /// Creates a UART in `state` (power-on state by default) that raises `irq`, sends THR bytes
    /// to `output` and takes host input from `input`.
    ///
    /// A restored receive FIFO longer than ``fifoCapacity`` is cut to its first 64 bytes, and
    /// registers are masked to their valid bits.
    public init(state: State = State(), irq: any InterruptLine, output: any OutputSink,
                input: any InputSource = NoInput()) {
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
        self.input = input
    }

    /// The guest-visible state, for snapshots.
    public var state: State { current }

    /// How many more host bytes the receive FIFO would take now.
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

    /// Moves waiting host input from the ``InputSource`` into the receive FIFO, as much as
    /// ``inputSpace`` allows, and returns how many bytes moved. Raises one interrupt edge if any
    /// did and IER.ERBFI is set. The host calls it when new input arrives; guest accesses call it
    /// too, so input that waited for room or for the driver follows on its own.
    @discardableResult
    public mutating func receiveInput() -> Int {
        let source = input
        guard !source.isEmpty else { return 0 }
        let space = inputSpace
        guard space > 0 else { return 0 }
        let moved = source.take(upTo: space) { current.receiveFIFO.append($0) }
        if moved > 0, current.interruptEnable & Self.ierReceiveData != 0 {
            irq.trigger()
        }
        return moved
    }

    /// Whether the transmitter can take a byte without holding the guest back: always in loopback,
    /// otherwise while the sink has room for a whole transmit FIFO.
    public var transmitterReady: Bool { isLoopback || output.room >= Self.transmitFIFOSize }

    /// Tells the UART that its sink has drained: if the transmitter went busy and is ready again,
    /// THR-empty becomes pending and, with IER.ETBEI set, one interrupt edge is raised.
    public mutating func outputRoomAvailable() {
        guard waitingForRoom, transmitterReady else { return }
        waitingForRoom = false
        current.transmitterEmptyPending = true
        if current.interruptEnable & Self.ierTransmitterEmpty != 0 { irq.trigger() }
    }

    /// Emulates a guest read; see the type's documentation for the register map.
    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0 }
        let value = readRegister(offset)
        receiveInput()
        return UInt64(value)
    }

    /// Emulates a guest write; see the type's documentation for the register map.
    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        writeRegister(offset, UInt8(truncatingIfNeeded: value))
        receiveInput()
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
            var status: UInt8 = transmitterReady ? Self.lsrTHREmpty | Self.lsrTransmitterEmpty : 0
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
                // Enabling the interrupt while THR is empty makes it pending at once; while the
                // transmitter is busy, it follows when the sink drains.
                if transmitterReady {
                    current.transmitterEmptyPending = true
                    raise = true
                } else {
                    waitingForRoom = true
                }
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
            _ = output.write(byte)     // a full sink drops and counts it: the guest ignored THRE
        }
        // Writing THR acknowledges THR-empty. The byte leaves for the sink at once, so THR is
        // empty again unless the sink is now too full to take a whole transmit FIFO.
        if transmitterReady {
            current.transmitterEmptyPending = true
            if current.interruptEnable & Self.ierTransmitterEmpty != 0 { raise = true }
        } else {
            current.transmitterEmptyPending = false
            waitingForRoom = true
        }
        if raise { irq.trigger() }
    }
}
