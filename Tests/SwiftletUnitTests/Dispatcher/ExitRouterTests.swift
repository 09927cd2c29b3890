import Synchronization
import Testing
import SwiftletHost
import SwiftletCore
@testable import SwiftletDispatcher

/// A register file that records writes and answers reads from a table.
struct Registers: BusDevice {
    var values: [UInt64: UInt64] = [:]
    var writes: [(UInt64, UInt64)] = []
    mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 { values[offset] ?? 0x1234_5678_9abc_def0 }
    mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        writes.append((offset, value))
        values[offset] = value
    }
}

/// A port whose reads return 1, 2, 3, ... in turn, as a FIFO hands out what it holds.
struct CountingPort: BusDevice {
    var reads: UInt64 = 0
    mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        reads += 1
        return reads
    }
    mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {}
}

/// A vCPU that replays a script of exits and records what it was handed back.
final class ScriptedVCPU: VirtualCPU, @unchecked Sendable {
    let index: Int
    private var script: [VCPUExit]
    /// The string I/O data area: ``value(at:)`` reads it, ``completeRead(index:value:)`` writes it.
    var data: [UInt64]
    private(set) var completions: [UInt64] = []
    private(set) var kicks = 0

    init(index: Int = 0, script: [VCPUExit] = [], data: [UInt64] = []) {
        self.index = index
        self.script = script
        self.data = data
    }

    func run() throws(VCPUError) -> VCPUExit {
        guard !script.isEmpty else { throw VCPUError("script ran out") }
        return script.removeFirst()
    }
    func completeRead(_ value: UInt64) { completions.append(value) }
    func completeRead(index: Int, value: UInt64) { data[index] = value }
    func value(at index: Int) -> UInt64 { data[index] }
    func kick() { kicks += 1 }
    func stateSummary() -> String { "scripted vCPU \(index) at RIP 0x1000" }
}

@Suite("Exit router") struct ExitRouterTests {
    func makeRouter(log: @escaping @Sendable (String) -> Void = { _ in }) throws -> (ExitRouter, SharedDevice<Registers>, SharedDevice<Registers>) {
        let uart = SharedDevice(Registers())
        let page = SharedDevice(Registers())
        var pio = Bus(name: "PIO")
        var mmio = Bus(name: "MMIO")
        try pio.insert(uart, named: "uart", at: 0x3f8, size: 8)
        try mmio.insert(page, named: "page", at: 0xc000_0000, size: 0x1000)
        return (ExitRouter(pio: pio, mmio: mmio, unhandled: UnhandledAccessLog(log: log)), uart, page)
    }

    @Test func pioOutGoesToTheOwnerAtItsOffset() throws {
        let (router, uart, _) = try makeRouter()
        #expect(router.route(.pioOut(port: 0x3f9, width: .byte, value: 0x41), of: ScriptedVCPU()) == .resume)
        #expect(uart.withLock { $0.writes.map(\.0) } == [1])
        #expect(uart.withLock { $0.writes.map(\.1) } == [0x41])
    }

    @Test func aStringOutWritesEveryElementInOrder() throws {
        let (router, uart, _) = try makeRouter()
        let vcpu = ScriptedVCPU(data: [0x48, 0x69, 0x21, 0x0a])
        #expect(router.route(.pioStringOut(port: 0x3f8, width: .byte, count: 4), of: vcpu) == .resume)
        #expect(uart.withLock { $0.writes.map(\.1) } == [0x48, 0x69, 0x21, 0x0a])
        #expect(uart.withLock { $0.writes.map(\.0) } == [0, 0, 0, 0])
        #expect(vcpu.completions.isEmpty)
    }

    @Test func aStringInFillsEveryElementInOrder() throws {
        let port = SharedDevice(CountingPort())
        var pio = Bus(name: "PIO")
        try pio.insert(port, named: "fifo", at: 0x60, size: 1)
        let router = ExitRouter(pio: pio, mmio: Bus(name: "MMIO"), unhandled: UnhandledAccessLog { _ in })
        let vcpu = ScriptedVCPU(data: [UInt64](repeating: 0xdead, count: 5))
        #expect(router.route(.pioStringIn(port: 0x60, width: .word, count: 5), of: vcpu) == .resume)
        #expect(vcpu.data == [1, 2, 3, 4, 5])
        #expect(vcpu.completions.isEmpty)      // the elements went into the data area, not a completion
        #expect(port.withLock { $0.reads } == 5)
    }

    @Test func readsAreMaskedToTheAccessWidth() throws {
        let (router, _, page) = try makeRouter()
        page.withLock { $0.values[8] = 0x1122_3344_5566_7788 }
        #expect(router.route(.mmioRead(address: 0xc000_0008, width: .word), of: ScriptedVCPU()) == .completeRead(0x7788))
        #expect(router.route(.pioIn(port: 0x3fd, width: .byte), of: ScriptedVCPU()) == .completeRead(0xf0))
        let vcpu = ScriptedVCPU(data: [0, 0, 0])
        #expect(router.route(.pioStringIn(port: 0x3fd, width: .byte, count: 3), of: vcpu) == .resume)
        #expect(vcpu.data == [0xf0, 0xf0, 0xf0])
    }

    @Test func unownedAccessesAreAnsweredWithAllOnesAndLoggedOnce() throws {
        let lines = Mutex<[String]>([])
        let (router, _, _) = try makeRouter { line in lines.withLock { $0.append(line) } }
        for _ in 0..<3 {
            #expect(router.route(.pioIn(port: 0x80, width: .dword), of: ScriptedVCPU()) == .completeRead(0xffff_ffff))
            #expect(router.route(.mmioWrite(address: 0xdead_0000, width: .qword, value: 1), of: ScriptedVCPU()) == .resume)
        }
        #expect(router.route(.mmioRead(address: 0xdead_0000, width: .qword), of: ScriptedVCPU()) == .completeRead(.max))
        let logged = lines.withLock { $0 }
        #expect(logged.count == 2)           // one line per address, whatever the direction
        #expect(logged[0].contains("PIO address 0x80"))
    }

    @Test func anUnownedStringInReadsAllOnesInEveryElementAndAStringOutIsDropped() throws {
        let lines = Mutex<[String]>([])
        let (router, uart, _) = try makeRouter { line in lines.withLock { $0.append(line) } }
        let words = ScriptedVCPU(data: [0, 0, 0])
        #expect(router.route(.pioStringIn(port: 0x2f8, width: .word, count: 3), of: words) == .resume)
        #expect(words.data == [0xffff, 0xffff, 0xffff])
        let dwords = ScriptedVCPU(data: [0, 0])
        #expect(router.route(.pioStringIn(port: 0x2f8, width: .dword, count: 2), of: dwords) == .resume)
        #expect(dwords.data == [0xffff_ffff, 0xffff_ffff])
        #expect(router.route(.pioStringOut(port: 0x2f9, width: .byte, count: 2), of: ScriptedVCPU(data: [1, 2])) == .resume)
        #expect(uart.withLock { $0.writes.isEmpty })
        #expect(lines.withLock { $0 } == [
            "guest read unowned PIO address 0x2f8; answered all ones (logged once)",
            "guest wrote unowned PIO address 0x2f9; ignored (logged once)",
        ])
    }

    @Test func thePIOOutPIOInAndMMIOReadPathCarriesScalarsOnly() throws {
        // An exit must stay BitwiseCopyable, so it cannot hold a heap payload (an array, a string,
        // a class): the conformance in SwiftletCore, and `scalar` here, would not compile. A read
        // is completed with one UInt64 (`Disposition` itself is not BitwiseCopyable: its `stop`
        // carries the vCPU's state as text, built only when the machine stops).
        func scalar<T: BitwiseCopyable>(_ exit: T) -> T { exit }
        let (router, uart, page) = try makeRouter()
        page.withLock { $0.values[8] = 0x5357_4c54 }
        #expect(router.route(scalar(VCPUExit.pioOut(port: 0x3ff, width: .byte, value: 0x41)), of: ScriptedVCPU()) == .resume)
        #expect(router.route(scalar(VCPUExit.pioIn(port: 0x3ff, width: .byte)), of: ScriptedVCPU()) == .completeRead(0x41))
        #expect(router.route(scalar(VCPUExit.mmioRead(address: 0xc000_0008, width: .dword)), of: ScriptedVCPU())
                == .completeRead(0x5357_4c54))
        #expect(uart.withLock { $0.writes.map(\.1) } == [0x41])
    }

    @Test func theUnownedLogIsCapped() throws {
        let count = Mutex(0)
        let (router, _, _) = try makeRouter { _ in count.withLock { $0 += 1 } }
        for address in 0..<1000 as Range<UInt64> {
            _ = router.route(.mmioWrite(address: 0x1_0000_0000 + address * 8, width: .byte, value: 0), of: ScriptedVCPU())
        }
        #expect(count.withLock { $0 } == UnhandledAccessLog.cap)
    }

    @Test func oddSizedMMIOPiecesAreUnownedAccessesEvenInsideADevice() throws {
        // KVM splits a dword at 0xc0000ffd into 3 bytes in the control page and 1 byte after it.
        let lines = Mutex<[String]>([])
        let (router, _, page) = try makeRouter { line in lines.withLock { $0.append(line) } }
        for _ in 0..<2 {
            #expect(router.route(.mmioOddPiece(address: 0xc000_0ffd, length: .three, isWrite: true), of: ScriptedVCPU())
                    == .resume)
            #expect(router.route(.mmioOddPiece(address: 0xc000_0ffd, length: .three, isWrite: false), of: ScriptedVCPU())
                    == .completeRead(0xff_ffff))
        }
        for length in OddAccessLength.allCases {
            #expect(router.route(.mmioOddPiece(address: 0x200_0000, length: length, isWrite: false), of: ScriptedVCPU())
                    == .completeRead(UInt64.max >> (64 - 8 * UInt64(length.bytes))))
            #expect(router.route(.mmioOddPiece(address: 0x200_0000, length: length, isWrite: true), of: ScriptedVCPU())
                    == .resume)
        }
        #expect(page.withLock { $0.writes.isEmpty })      // the device never saw a partial access
        let logged = lines.withLock { $0 }
        #expect(logged == [
            "guest wrote 3 bytes at MMIO address 0xc0000ffd, a piece of an access split at a page boundary; ignored (logged once)",
            "guest read 3 bytes at MMIO address 0x2000000, a piece of an access split at a page boundary; answered all ones (logged once)",
        ])
    }

    @Test func anOddSizedPieceIsLoggedApartFromAWholeAccessAtTheSameAddress() throws {
        let lines = Mutex<[String]>([])
        let (router, _, _) = try makeRouter { line in lines.withLock { $0.append(line) } }
        _ = router.route(.mmioRead(address: 0xdead_0000, width: .byte), of: ScriptedVCPU())
        _ = router.route(.mmioOddPiece(address: 0xdead_0000, length: .seven, isWrite: false), of: ScriptedVCPU())
        #expect(lines.withLock { $0.count } == 2)
    }

    @Test func unhandledAndMalformedExitsNameTheirCause() throws {
        let (router, _, _) = try makeRouter()
        let window = UnhandledExit(reason: 7, name: "KVM_EXIT_IRQ_WINDOW_OPEN")
        #expect(router.route(.unhandled(window), of: ScriptedVCPU()) == .stop(.unhandledExit(vcpu: 0, exit: window)))
        #expect(StopReason.unhandledExit(vcpu: 0, exit: window).message
                == "unhandled KVM exit 7 (KVM_EXIT_IRQ_WINDOW_OPEN) on vCPU 0")
        let io = UnhandledExit(reason: 2, name: "KVM_EXIT_IO", detail: "malformed, a count of 0")
        #expect(StopReason.unhandledExit(vcpu: 1, exit: io).message
                == "unhandled KVM exit 2 (KVM_EXIT_IO: malformed, a count of 0) on vCPU 1")
        #expect(io != UnhandledExit(reason: 2, name: "KVM_EXIT_IO"))
    }

    @Test func fatalExitsStopWithAClearReason() throws {
        let (router, _, _) = try makeRouter()
        #expect(router.route(.shutdown, of: ScriptedVCPU(index: 1))
                == .stop(.tripleFault(vcpu: 1, state: "scripted vCPU 1 at RIP 0x1000")))
        #expect(router.route(.internalError(suberror: 1), of: ScriptedVCPU())
                == .stop(.internalError(vcpu: 0, suberror: 1, state: "scripted vCPU 0 at RIP 0x1000")))
        #expect(router.route(.halt, of: ScriptedVCPU(index: 2)) == .stop(.halted(vcpu: 2)))
        #expect(router.route(.systemEvent(.reset), of: ScriptedVCPU()) == .stop(.reset))
        #expect(router.route(.interrupted, of: ScriptedVCPU()) == .resume)
        #expect(StopReason.tripleFault(vcpu: 0, state: "x").message.contains("triple-faulted"))
        #expect(StopReason.internalError(vcpu: 0, suberror: 1, state: "x").message.contains("emulation failure"))
    }
}

@Suite("vCPU loop") struct VCPULoopTests {
    @Test func runsTheScriptRoutesAndCompletesReadsUntilAStop() throws {
        let uart = SharedDevice(Registers())
        var pio = Bus(name: "PIO")
        try pio.insert(uart, named: "uart", at: 0x3f8, size: 8)
        let router = ExitRouter(pio: pio, mmio: Bus(name: "MMIO"), unhandled: UnhandledAccessLog { _ in })
        let vcpu = ScriptedVCPU(script: [
            .pioOut(port: 0x3f8, width: .byte, value: 0x68),
            .interrupted,
            .pioIn(port: 0x3f8, width: .byte),
            .pioStringOut(port: 0x3f8, width: .byte, count: 2),
            .pioStringIn(port: 0x3f8, width: .byte, count: 2),
            .shutdown,
            .pioOut(port: 0x3f8, width: .byte, value: 0x69),   // never reached
        ], data: [0x61, 0x62])
        let control = RunControl()
        control.attach([vcpu])
        let counts = VCPULoop(vcpu: vcpu, router: router, control: control).run()
        #expect(counts.pio == 4)
        #expect(counts.interrupted == 1)
        #expect(vcpu.completions == [0x68])
        #expect(vcpu.data == [0x62, 0x62])      // the register holds the string out's last element
        #expect(control.reason == .tripleFault(vcpu: 0, state: "scripted vCPU 0 at RIP 0x1000"))
        #expect(uart.withLock { $0.writes.map(\.1) } == [0x68, 0x61, 0x62])
        #expect(vcpu.kicks == 1)
    }

    @Test func theGuestGoesOnAfterOddSizedPieces() throws {
        // Issue 8: a dword written across the end of the control page, then one read across the
        // end of RAM, used to stop the machine with "unknown VM exit 6".
        let page = SharedDevice(Registers())
        var mmio = Bus(name: "MMIO")
        try mmio.insert(page, named: "page", at: 0xc000_0000, size: 0x1000)
        let router = ExitRouter(pio: Bus(name: "PIO"), mmio: mmio, unhandled: UnhandledAccessLog { _ in })
        let vcpu = ScriptedVCPU(script: [
            .mmioOddPiece(address: 0xc000_0ffd, length: .three, isWrite: true),
            .mmioWrite(address: 0xc000_1000, width: .byte, value: 0x11),
            .mmioOddPiece(address: 0x200_0000, length: .three, isWrite: false),
            .mmioOddPiece(address: 0x200_0000, length: .five, isWrite: false),
            .systemEvent(.shutdown),
        ])
        let control = RunControl()
        control.attach([vcpu])
        let counts = VCPULoop(vcpu: vcpu, router: router, control: control).run()
        #expect(control.reason == .powerOff)
        #expect(counts.mmio == 4)
        #expect(vcpu.completions == [0xff_ffff, 0xff_ffff_ffff])
        #expect(page.withLock { $0.writes.isEmpty })
    }

    @Test func aHostErrorFromRunStopsTheMachine() {
        let vcpu = ScriptedVCPU(script: [])
        let control = RunControl()
        VCPULoop(vcpu: vcpu, router: ExitRouter(pio: Bus(name: "PIO"), mmio: Bus(name: "MMIO"),
                                                unhandled: UnhandledAccessLog { _ in }), control: control).run()
        #expect(control.reason == .hostError("script ran out"))
    }

    @Test func theFirstStopWinsAndEveryVCPUIsKicked() {
        let a = ScriptedVCPU(index: 0, script: [])
        let b = ScriptedVCPU(index: 1, script: [])
        let control = RunControl()
        control.attach([a, b])
        control.stop(.powerOff)
        control.stop(.reset)
        #expect(control.reason == .powerOff)
        #expect(control.isStopping)
        #expect(a.kicks == 2 && b.kicks == 2)
    }
}
