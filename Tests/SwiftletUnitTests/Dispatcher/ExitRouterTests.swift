import Synchronization
import Testing
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

/// A vCPU that replays a script of exits and records what it was handed back.
final class ScriptedVCPU: VirtualCPU, @unchecked Sendable {
    let index: Int
    private var script: [VCPUExit]
    private(set) var completions: [[UInt64]] = []
    private(set) var kicks = 0

    init(index: Int = 0, script: [VCPUExit]) {
        self.index = index
        self.script = script
    }

    func run() throws(VCPUError) -> VCPUExit {
        guard !script.isEmpty else { throw VCPUError("script ran out") }
        return script.removeFirst()
    }
    func completeRead(_ values: [UInt64]) { completions.append(values) }
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

    @Test func pioOutGoesToTheOwnerAtItsOffsetAndStringIOWritesEachValue() throws {
        let (router, uart, _) = try makeRouter()
        #expect(router.route(.pioOut(port: 0x3f8, width: .byte, values: [0x41, 0x42]), vcpu: 0, summary: { "" }) == .resume)
        #expect(uart.withLock { $0.writes.map(\.1) } == [0x41, 0x42])
        #expect(uart.withLock { $0.writes.map(\.0) } == [0, 0])
    }

    @Test func readsAreMaskedToTheAccessWidth() throws {
        let (router, _, page) = try makeRouter()
        page.withLock { $0.values[8] = 0x1122_3344_5566_7788 }
        #expect(router.route(.mmioRead(address: 0xc000_0008, width: .word), vcpu: 0, summary: { "" }) == .completeRead([0x7788]))
        #expect(router.route(.pioIn(port: 0x3fd, width: .byte, count: 3), vcpu: 0, summary: { "" })
                == .completeRead([0xf0, 0xf0, 0xf0]))
    }

    @Test func unownedAccessesAreAnsweredWithAllOnesAndLoggedOnce() throws {
        let lines = Mutex<[String]>([])
        let (router, _, _) = try makeRouter { line in lines.withLock { $0.append(line) } }
        for _ in 0..<3 {
            #expect(router.route(.pioIn(port: 0x80, width: .dword, count: 1), vcpu: 0, summary: { "" }) == .completeRead([0xffff_ffff]))
            #expect(router.route(.mmioWrite(address: 0xdead_0000, width: .qword, value: 1), vcpu: 0, summary: { "" }) == .resume)
        }
        #expect(router.route(.mmioRead(address: 0xdead_0000, width: .qword), vcpu: 0, summary: { "" }) == .completeRead([.max]))
        let logged = lines.withLock { $0 }
        #expect(logged.count == 2)           // one line per address, whatever the direction
        #expect(logged[0].contains("PIO address 0x80"))
    }

    @Test func theUnownedLogIsCapped() throws {
        let count = Mutex(0)
        let (router, _, _) = try makeRouter { _ in count.withLock { $0 += 1 } }
        for address in 0..<1000 as Range<UInt64> {
            _ = router.route(.mmioWrite(address: 0x1_0000_0000 + address * 8, width: .byte, value: 0), vcpu: 0, summary: { "" })
        }
        #expect(count.withLock { $0 } == UnhandledAccessLog.cap)
    }

    @Test func fatalExitsStopWithAClearReason() throws {
        let (router, _, _) = try makeRouter()
        #expect(router.route(.shutdown, vcpu: 1, summary: { "at RIP 0x1" }) == .stop(.tripleFault(vcpu: 1, state: "at RIP 0x1")))
        #expect(router.route(.internalError(suberror: 1), vcpu: 0, summary: { "s" }) == .stop(.internalError(vcpu: 0, suberror: 1, state: "s")))
        #expect(router.route(.halt, vcpu: 2, summary: { "" }) == .stop(.halted(vcpu: 2)))
        #expect(router.route(.systemEvent(.reset), vcpu: 0, summary: { "" }) == .stop(.reset))
        #expect(router.route(.interrupted, vcpu: 0, summary: { "" }) == .resume)
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
            .pioOut(port: 0x3f8, width: .byte, values: [0x68]),
            .interrupted,
            .pioIn(port: 0x3f8, width: .byte, count: 1),
            .shutdown,
            .pioOut(port: 0x3f8, width: .byte, values: [0x69]),   // never reached
        ])
        let control = RunControl()
        control.attach([vcpu])
        let counts = VCPULoop(vcpu: vcpu, router: router, control: control).run()
        #expect(counts.pio == 2)
        #expect(counts.interrupted == 1)
        #expect(vcpu.completions == [[0x68]])
        #expect(control.reason == .tripleFault(vcpu: 0, state: "scripted vCPU 0 at RIP 0x1000"))
        #expect(uart.withLock { $0.writes.count } == 1)
        #expect(vcpu.kicks == 1)
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
