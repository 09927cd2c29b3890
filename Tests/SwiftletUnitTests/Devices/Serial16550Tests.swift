import Testing
import SwiftletCore
@testable import SwiftletDevices

extension DevicesTests {
    @Suite("Serial16550") struct Serial16550Tests {
        let irq = RecordingInterruptLine()
        let sink = RecordingSink()
        let input = QueuedInput()

        func makeUART(_ state: Serial16550.State = .init()) -> Serial16550 {
            Serial16550(state: state, irq: irq, output: sink, input: input)
        }

        /// Queues host input and lets the UART take what it can; returns how many bytes it took.
        func feed(_ uart: inout Serial16550, _ bytes: [UInt8]) -> Int {
            input.push(bytes)
            return uart.receiveInput()
        }

        /// A UART whose guest driver listens (receive-data interrupts and OUT2 on), so host input is accepted.
        func makeListeningUART() -> Serial16550 {
            var uart = makeUART()
            uart.writeU8(at: 4, 0x08)
            uart.writeU8(at: 1, 0x01)
            return uart
        }

        @Test func transmitsEachTHRByteToTheSink() {
            var uart = makeUART()
            for byte in Array("hi\n".utf8) { uart.writeU8(at: 0, byte) }
            #expect(sink.bytes == Array("hi\n".utf8))
            #expect(sink.writeCount == 3)
            #expect(irq.count == 0)  // No interrupts enabled.
        }

        @Test func lineStatusReportsTransmitterAlwaysEmptyAndDataReady() {
            var uart = makeListeningUART()
            #expect(uart.readU8(at: 5) == 0x60)
            #expect(feed(&uart, [0x41]) == 1)
            #expect(uart.readU8(at: 5) == 0x61)
            #expect(uart.readU8(at: 0) == 0x41)
            #expect(uart.readU8(at: 5) == 0x60)
            #expect(uart.readU8(at: 0) == 0)  // Empty FIFO reads 0.
        }

        @Test func receiveFIFOHolds64BytesAndTheRestFollowsInOrderAsTheGuestReads() {
            var uart = makeListeningUART()
            #expect(uart.inputSpace == 64)
            let bytes = (0..<100).map { UInt8($0) }
            #expect(feed(&uart, bytes) == 64)
            #expect(uart.inputSpace == 0)
            #expect(input.count == 36)               // The rest waits with the host,
            #expect(uart.receiveInput() == 0)
            let received = (0..<100).map { _ in uart.readU8(at: 0) }
            #expect(received == bytes)               // and follows as reads make room.
            #expect(uart.inputSpace == 64)
            #expect(input.isEmpty)
        }

        @Test func divisorLatchReplacesDataAndIERWhileDLABIsSet() {
            var uart = makeUART()
            uart.writeU8(at: 1, 0x05)
            uart.writeU8(at: 3, 0x83)  // DLAB, 8N1
            uart.writeU8(at: 0, 0x01)
            uart.writeU8(at: 1, 0x00)
            #expect(uart.readU8(at: 0) == 0x01)
            #expect(uart.readU8(at: 1) == 0x00)
            #expect(sink.bytes.isEmpty)  // The DLL write was not a THR write.
            uart.writeU8(at: 3, 0x03)
            #expect(uart.readU8(at: 1) == 0x05)
            #expect(uart.state.divisorLow == 1)
            #expect(uart.state.divisorHigh == 0)
            #expect(uart.readU8(at: 3) == 0x03)
        }

        @Test func scratchAndInterruptEnableReadBackLikeLinuxAutoconfigExpects() {
            var uart = makeUART()
            uart.writeU8(at: 7, 0xA5)
            #expect(uart.readU8(at: 7) == 0xA5)
            uart.writeU8(at: 1, 0)
            #expect(uart.readU8(at: 1) & 0x0F == 0)
            uart.writeU8(at: 1, 0xFF)
            #expect(uart.readU8(at: 1) == 0x0F)  // Only the low 4 bits exist.
        }

        @Test func modemStatusIsIdleOrMirrorsMCRInLoopback() {
            var uart = makeUART()
            #expect(uart.readU8(at: 6) == 0xB0)
            // Linux: MCR = LOOP | OUT2 | RTS, then expects MSR & 0xF0 == DCD | CTS.
            uart.writeU8(at: 4, 0x10 | 0x08 | 0x02)
            #expect(uart.readU8(at: 6) & 0xF0 == 0x90)
            uart.writeU8(at: 4, 0x10 | 0x01 | 0x04)  // DTR → DSR, OUT1 → RI
            #expect(uart.readU8(at: 6) == 0x60)
            uart.writeU8(at: 4, 0x0B)
            #expect(uart.readU8(at: 6) == 0xB0)
            #expect(uart.readU8(at: 4) == 0x0B)
        }

        @Test func loopbackSendsTHRBytesToTheReceiverAndDisconnectsTheHost() {
            var uart = makeUART()
            uart.writeU8(at: 4, 0x10)
            #expect(uart.inputSpace == 0)
            #expect(feed(&uart, [9]) == 0)
            uart.writeU8(at: 0, 0x5A)
            #expect(sink.bytes.isEmpty)
            #expect(uart.readU8(at: 5) & 0x01 == 0x01)
            #expect(uart.readU8(at: 0) == 0x5A)
            #expect(input.count == 1)                // The host's byte still waits.
        }

        @Test func loopbackOverrunDropsTheByteAndSetsOEUntilLSRIsRead() {
            var uart = makeUART()
            uart.writeU8(at: 4, 0x10)
            for i in 0..<65 { uart.writeU8(at: 0, UInt8(i)) }
            #expect(uart.state.receiveFIFO.count == 64)
            #expect(uart.readU8(at: 5) == 0x63)  // DR | OE | THRE | TEMT
            #expect(uart.readU8(at: 5) == 0x61)
            #expect(uart.readU8(at: 0) == 0)
        }

        @Test func interruptIdentificationReportsFIFOsAndPriorities() {
            var uart = makeUART()
            #expect(uart.readU8(at: 2) == 0x01)
            uart.writeU8(at: 2, 0x01)  // Enable FIFOs.
            #expect(uart.readU8(at: 2) == 0xC1)
            #expect(uart.readU8(at: 2) & 0x30 == 0)  // Not a 16750, not an NS SuperIO.
            uart.writeU8(at: 4, 0x08)  // OUT2: the driver has the port open.
            uart.writeU8(at: 1, 0x03)  // ERBFI | ETBEI
            #expect(feed(&uart, [7]) == 1)
            #expect(uart.readU8(at: 2) == 0xC4)  // Received data wins.
            #expect(uart.readU8(at: 2) == 0xC4)  // And stays until the data is read.
            _ = uart.readU8(at: 0)
            #expect(uart.readU8(at: 2) == 0xC2)  // Then THR empty, which this read acknowledges.
            #expect(uart.readU8(at: 2) == 0xC1)
            uart.writeU8(at: 0, 0x20)
            #expect(uart.readU8(at: 2) == 0xC2)  // Writing THR makes it pending again.
        }

        @Test func enablingTHREInterruptRaisesItOnceAndLinuxTHREBugTestPasses() {
            var uart = makeUART()
            // serial8250_do_startup: IER = THRI, read IIR, IER = 0, IER = THRI, read IIR.
            uart.writeU8(at: 1, 0x02)
            #expect(irq.count == 1)
            #expect(uart.readU8(at: 2) & 0x0F == 0x02)
            uart.writeU8(at: 1, 0x00)
            #expect(uart.readU8(at: 2) == 0x01)
            uart.writeU8(at: 1, 0x02)
            #expect(irq.count == 2)
            #expect(uart.readU8(at: 2) & 0x01 == 0)  // Pending, so no UART_BUG_THRE.
            uart.writeU8(at: 1, 0x02)  // Already enabled: no new edge.
            #expect(irq.count == 2)
        }

        @Test func everyTHRWriteRaisesAnEdgeWhileETBEIIsSet() {
            var uart = makeUART()
            uart.writeU8(at: 1, 0x02)
            _ = uart.readU8(at: 2)
            for byte in [UInt8](repeating: 0x2E, count: 5) { uart.writeU8(at: 0, byte) }
            #expect(irq.count == 6)
            uart.writeU8(at: 1, 0x00)
            uart.writeU8(at: 0, 0x2E)
            #expect(irq.count == 6)
        }

        @Test func inputWaitsUntilTheGuestListensAndThenRaisesAnEdge() {
            var uart = makeUART()
            #expect(uart.inputSpace == 0)
            #expect(feed(&uart, [1]) == 0)            // Nobody listening: the host keeps its input.
            uart.writeU8(at: 1, 0x0f)                 // A probe's IER read-back test is not listening either.
            #expect(uart.inputSpace == 0)
            #expect(input.count == 1)
            uart.writeU8(at: 1, 0x00)
            let edges = irq.count                     // (the probe's THRE edge, if any)
            uart.writeU8(at: 4, 0x08)                 // The driver opens the port: OUT2,
            #expect(irq.count == edges)
            uart.writeU8(at: 1, 0x01)                 // then ERBFI: the waiting byte arrives, one edge.
            #expect(irq.count == edges + 1)
            #expect(input.isEmpty)
            #expect(feed(&uart, [2, 3]) == 2)
            #expect(irq.count == edges + 2)
            #expect(feed(&uart, []) == 0)
            #expect(irq.count == edges + 2)
            #expect(uart.readU8(at: 2) == 0x04)
            uart.writeU8(at: 1, 0x00)                 // Receive interrupts off: input waits again,
            #expect(uart.inputSpace == 0)
            uart.writeU8(at: 1, 0x01)                 // and re-enabling with data waiting raises an edge.
            #expect(irq.count == edges + 3)
            #expect((0..<3).map { _ in uart.readU8(at: 0) } == [1, 2, 3])
        }

        @Test func aFullSinkKeepsTheTransmitterBusyUntilItDrains() {
            var uart = makeUART()
            uart.writeU8(at: 1, 0x02)                 // ETBEI: THR empty, one edge.
            #expect(irq.count == 1)
            #expect(uart.readU8(at: 2) == 0x02)
            sink.setRoom(17)
            uart.writeU8(at: 0, 0x41)                 // Room 16 left: still ready, another edge.
            #expect(irq.count == 2)
            #expect(uart.readU8(at: 5) == 0x60)
            uart.writeU8(at: 0, 0x42)                 // Room 15: busy. No THRE, no edge, no IIR.
            #expect(irq.count == 2)
            #expect(uart.readU8(at: 5) == 0x00)
            #expect(uart.readU8(at: 2) == 0x01)
            #expect(!uart.transmitterReady)
            uart.outputRoomAvailable()                // A wake-up while still full changes nothing.
            #expect(irq.count == 2)
            sink.setRoom(4096)                        // The writer drained: ready, THRE, one edge.
            uart.outputRoomAvailable()
            #expect(irq.count == 3)
            #expect(uart.readU8(at: 5) == 0x60)
            #expect(uart.readU8(at: 2) == 0x02)
            uart.outputRoomAvailable()                // Nothing owed any more: no edge.
            #expect(irq.count == 3)
            #expect(sink.bytes == [0x41, 0x42])
        }

        @Test func enablingTHREInterruptWhileTheSinkIsFullWaitsForRoom() {
            var uart = makeUART()
            sink.setRoom(0)
            uart.writeU8(at: 1, 0x02)
            #expect(irq.count == 0)
            #expect(uart.readU8(at: 2) == 0x01)
            uart.writeU8(at: 0, 0x43)                 // A guest that ignores THRE loses only its byte.
            #expect(sink.bytes.isEmpty)
            sink.setRoom(64)
            uart.outputRoomAvailable()
            #expect(irq.count == 1)
            #expect(uart.readU8(at: 2) == 0x02)
        }

        @Test func fifoControlClearsTheReceiveFIFO() {
            var uart = makeListeningUART()
            uart.writeU8(at: 2, 0x01)
            _ = feed(&uart, [1, 2, 3])
            uart.writeU8(at: 2, 0x07)  // Enable, clear RX, clear TX.
            #expect(uart.state.receiveFIFO.isEmpty)
            #expect(uart.state.fifoControl == 0x01)  // Clear bits self-clear.
            _ = feed(&uart, [4])
            uart.writeU8(at: 2, 0x00)  // Disabling FIFOs also clears them.
            #expect(uart.readU8(at: 5) & 0x01 == 0)
            #expect(uart.readU8(at: 2) == 0x01)
        }

        @Test func nonByteAndOutOfRangeAccessesAreInert() {
            var uart = makeListeningUART()
            _ = feed(&uart, [0x41])
            let before = uart.state
            for width in [AccessWidth.word, .dword, .qword] {
                #expect(uart.read(at: 0, width: width) == 0)
                uart.write(at: 0, width: width, value: 0x42)
            }
            #expect(uart.read(at: 8, width: .byte) == 0)
            uart.write(at: 8, width: .byte, value: 0xFF)
            uart.write(at: .max, width: .byte, value: 0xFF)
            uart.writeU8(at: 5, 0)
            uart.writeU8(at: 6, 0)
            #expect(uart.state == before)
            #expect(sink.bytes.isEmpty)
        }

        @Test func stateRoundTripsAndRestoresSanitized() {
            var uart = makeUART()
            uart.writeU8(at: 3, 0x80)
            uart.writeU8(at: 0, 3)
            uart.writeU8(at: 3, 0x1B)
            uart.writeU8(at: 2, 0x01)
            uart.writeU8(at: 1, 0x03)
            uart.writeU8(at: 4, 0x0B)
            uart.writeU8(at: 7, 0x99)
            _ = feed(&uart, [1, 2, 3])
            let copy = Serial16550(state: uart.state, irq: irq, output: sink)
            #expect(copy.state == uart.state)

            let oversized = Serial16550.State(interruptEnable: 0xFF, modemControl: 0xFF, fifoControl: 0xFF,
                                              receiveFIFO: [UInt8](repeating: 1, count: 500))
            let restored = makeUART(oversized)
            #expect(restored.state.receiveFIFO.count == 64)
            #expect(restored.state.interruptEnable == 0x0F)
            #expect(restored.state.modemControl == 0x1F)
            #expect(restored.state.fifoControl == 0xF9)
        }

        @Test func hostileGuestNeverTrapsAndKeepsInvariants() {
            var uart = makeUART()
            var rng = HostileRNG(seed: 0x3F8)
            for step in 0..<10_000 {
                HostileAccess.random(span: 10, using: &rng).perform(on: &uart)
                if step % 7 == 0, input.count < 256 {
                    let accepted = feed(&uart, [UInt8](repeating: 0x61, count: Int(rng.next() % 80)))
                    #expect(accepted >= 0 && accepted <= 64)
                }
                if step % 11 == 0 { sink.setRoom(Int(rng.next() % 40)) }
                if step % 13 == 0 { uart.outputRoomAvailable() }
                let state = uart.state
                #expect(state.receiveFIFO.count <= Serial16550.fifoCapacity)
                #expect(state.interruptEnable <= 0x0F)
                #expect(state.modemControl <= 0x1F)
                #expect(uart.inputSpace >= 0 && uart.inputSpace <= 64)
                let ready = uart.read(at: 5, width: .byte) & 0x60
                #expect(ready == (uart.transmitterReady ? 0x60 : 0))
            }
            // Every byte that reached the sink came from a THR write that it accepted.
            #expect(sink.writeCount >= sink.bytes.count)
        }
    }
}
