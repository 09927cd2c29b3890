import Foundation
import Logging
import Testing
@testable import Swiftlet
import SwiftletDispatcher
import SwiftletHost

/// Direct tests on this machine's /dev/kvm with tiny hand-made guests. They never skip: without a
/// usable /dev/kvm they fail and say why.
@Suite("Direct KVM", .serialized) struct DirectKVMTests {
    @Test func pioReachesTheUARTAndACPIPowerOffEndsTheMachine() throws {
        let (outcome, console) = try TinyGuest.boot(TinyGuest.print("Hello from PIO\n") + TinyGuest.powerOff, name: "pio")
        #expect(outcome.reason == .powerOff)
        #expect(String(decoding: console, as: UTF8.self) == "Hello from PIO\n")
    }

    @Test func mmioIsRoutedToTheControlPageAndUnownedReadsAreAllOnes() throws {
        var code = TinyGuest.movMemImm32(0xc000_0000, 123)          // boot complete
        code += TinyGuest.movMemImm32(0xc000_0004, 42)              // exit status
        code += TinyGuest.movDX(0x3f8)
        code += TinyGuest.movEAXMem(0xc000_0008) + TinyGuest.printEAX   // "SWLT"
        code += TinyGuest.movEAXMem(0xd000_0000) + TinyGuest.printEAX   // nobody there: ff ff ff ff
        code += TinyGuest.powerOff
        let (outcome, console) = try TinyGuest.boot(code, name: "mmio")
        #expect(outcome.reason == .powerOff)
        #expect(outcome.guestExitStatus == 42)
        #expect(outcome.bootCompleteAfter != nil)
        #expect(console == Array("SWLT".utf8) + [0xff, 0xff, 0xff, 0xff])
    }

    @Test func stringIOMovesEveryElementInOrder() throws {
        // rep outsb, rep insb and rep insw. KVM reads ahead for a string in: each of the two below
        // is one exit with a count of 3, its elements in the kvm_run data area. (This machine's KVM
        // hands a string out over one element per exit.)
        let text = Array("String I/O\n".utf8)
        var code: [UInt8] = []
        for (i, byte) in (text + Array("xyz".utf8)).enumerated() {
            code += TinyGuest.movMemImm8(0x20_0000 + UInt32(i), byte)
        }
        code += TinyGuest.cld
        code += TinyGuest.movESI(0x20_0000) + TinyGuest.movECX(UInt32(text.count)) + TinyGuest.movDX(0x3f8)
        code += TinyGuest.repOutsb                                                // the text to COM1
        code += TinyGuest.movECX(3) + TinyGuest.movDX(0x3ff) + TinyGuest.repOutsb   // "xyz" to the scratch register
        code += TinyGuest.movEDI(0x20_0100) + TinyGuest.movECX(3) + TinyGuest.repInsb   // "zzz" back
        code += TinyGuest.movECX(3) + TinyGuest.movDX(0x2f8) + TinyGuest.repInsw    // nobody there: all ones
        code += TinyGuest.movESI(0x20_0100) + TinyGuest.movECX(9) + TinyGuest.movDX(0x3f8) + TinyGuest.repOutsb
        code += TinyGuest.powerOff
        let (outcome, console) = try TinyGuest.boot(code, name: "string-io")
        #expect(outcome.reason == .powerOff, "\(outcome.reason.message)")
        #expect(console == text + Array("zzz".utf8) + [UInt8](repeating: 0xff, count: 6))
    }

    @Test func hltWithoutAnInKernelAPICStopsTheMachine() throws {
        let (outcome, console) = try TinyGuest.boot(TinyGuest.print("H") + TinyGuest.cli + [0xf4], name: "hlt", irqchip: false)
        #expect(outcome.reason == .halted(vcpu: 0))
        #expect(console == Array("H".utf8))
    }

    @Test func aHaltedGuestIsKickedOutOfKVMRunOnStop() throws {
        let start = ContinuousClock.now
        let (outcome, console) = try TinyGuest.boot(TinyGuest.print("idle") + TinyGuest.cli + TinyGuest.hltForever, name: "idle",
                                          stopAfter: .milliseconds(300))
        #expect(outcome.reason == .requested)
        #expect(console == Array("idle".utf8))
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    @Test func aTripleFaultIsReportedCleanly() throws {
        // lidt with a zero limit, then #DE: no IDT → #DF → shutdown.
        let idtDescriptorAddress = UInt32(TinyGuest.loadAddress) + 0x800
        var code: [UInt8] = [0x0f, 0x01, 0x1d] + (0..<4).map { UInt8(truncatingIfNeeded: idtDescriptorAddress >> (8 * $0)) }
        code += [0x31, 0xc9, 0xf7, 0xf1]                           // xor ecx,ecx; div ecx
        code += TinyGuest.hltForever
        code += [UInt8](repeating: 0, count: 0x800 - code.count) + [0, 0, 0, 0, 0, 0]   // the IDT descriptor
        let (outcome, _) = try TinyGuest.boot(code, name: "triple")
        guard case let .tripleFault(vcpu, state) = outcome.reason else {
            Issue.record("expected a triple fault, got \(outcome.reason)")
            return
        }
        #expect(vcpu == 0)
        #expect(state.contains("RIP"))
        #expect(!outcome.reason.isOrderly)
    }
}

@Suite("KVM availability") struct KVMAvailabilityTests {
    @Test func aMissingKVMDeviceIsAUsageErrorThatSaysWhatToDo() throws {
        let kernel = try TinyGuest.write(TinyGuest.elf(TinyGuest.powerOff), name: "nokvm.elf")
        let configuration = MachineConfiguration(kernelPath: kernel, memorySize: 32 << 20, kvmPath: "/nonexistent/kvm")
        do {
            _ = try VirtualMachine(configuration: configuration, logger: Logger(label: "t"))
            Issue.record("built a VM without KVM")
        } catch {
            #expect(error.kind == .usage)
            #expect(error.message.contains("/nonexistent/kvm does not exist"))
        }
    }

    @Test func thisMachineHasAUsableKVM() throws {
        // The direct tests need /dev/kvm; say so plainly when it is missing instead of skipping.
        #expect(FileManager.default.fileExists(atPath: "/dev/kvm"), "no /dev/kvm on this machine: the direct KVM tests cannot run")
    }
}

@Suite("Direct KVM: reset paths", .serialized) struct ResetPathTests {
    func run(_ code: [UInt8], name: String) throws -> RunOutcome {
        let kernel = try TinyGuest.write(TinyGuest.elf(code), name: name + ".elf")
        let configuration = MachineConfiguration(kernelPath: kernel, memorySize: 32 << 20, console: .off,
                                                 hideParavirtFeatures: true)
        return try VirtualMachine(configuration: configuration, logger: Logger(label: "t")).run()
    }

    @Test func theI8042ResetLineResetsTheMachine() throws {
        // Linux's BOOT_KBD path: wait for the input buffer to drain (status bit 1), then 0xfe → 0x64.
        var code = TinyGuest.movDX(0x64) + TinyGuest.inALDX
        code += [0xa8, 0x02, 0x75, 0xfb]                                 // test al,2; jnz back to `in`
        code += TinyGuest.movAL(0xfe) + TinyGuest.outDXAL + TinyGuest.hltForever
        #expect(try run(code, name: "kbd-reset").reason == .reset)
    }

    @Test func theACPIResetRegisterResetsTheMachine() throws {
        let code = TinyGuest.movDX(0x602) + TinyGuest.movAL(1) + TinyGuest.outDXAL + TinyGuest.hltForever
        #expect(try run(code, name: "acpi-reset").reason == .reset)
    }
}

@Suite("Direct KVM: hostile guest", .serialized) struct HostileGuestTests {
    @Test func aGuestSweepingEveryLegacyPortAndTheMMIOHoleCannotCrashSwiftlet() throws {
        // out/in 0xaa on every port below 0x1000 (UART, i8042, RTC, ACPI, pvpanic and unowned ports;
        // 0xaa neither resets, powers off nor reports a panic), then 32-bit writes and reads across
        // the control page and unowned MMIO, then a clean power-off.
        var code: [UInt8] = [0x31, 0xd2]                                        // xor edx, edx
        code += [0xb0, 0xaa, 0xee, 0xec, 0x42, 0x81, 0xfa, 0x00, 0x10, 0x00, 0x00, 0x72, 0xf3]
        //        mov al,0xaa; out dx,al; in al,dx; inc edx; cmp edx,0x1000; jb (back 13)
        code += [0xbb, 0x00, 0x00, 0x00, 0xc0]                                  // mov ebx, 0xc0000000
        code += [0xc7, 0x03, 0xef, 0xbe, 0xad, 0xde, 0x8b, 0x03, 0x81, 0xc3, 0x04, 0x00, 0x00, 0x00]
        //        mov dword [ebx], 0xdeadbeef; mov eax, [ebx]; add ebx, 4
        code += [0x81, 0xfb, 0x00, 0x40, 0x00, 0xc0, 0x72, 0xea]               // cmp ebx, 0xc0004000; jb (back 22)
        code += TinyGuest.movDX(0x3fb) + TinyGuest.movAL(0x03) + TinyGuest.outDXAL   // LCR: 8N1, DLAB off
        code += TinyGuest.movDX(0x3fc) + TinyGuest.movAL(0x00) + TinyGuest.outDXAL   // MCR: no loopback
        code += TinyGuest.print("survived") + TinyGuest.powerOff
        let (outcome, console) = try TinyGuest.boot(code, name: "hostile")
        #expect(outcome.reason == .powerOff)
        #expect(outcome.guestExitStatus == 0xef)        // the sweep reached the control page's status register
        #expect(console.count >= 8 && Array(console.suffix(8)) == Array("survived".utf8))
    }

    @Test func accessesThatKVMSplitsIntoOddSizedPiecesAreAnsweredAndTheGuestGoesOn() throws {
        // KVM splits an access that crosses a page boundary, and hands each MMIO part to the VMM as
        // its own exit, whose length can be 3, 5, 6 or 7 (issue 8). Here: across the end of the
        // control page (0xc0001000, unowned MMIO after it) and across the end of the 32 MiB of RAM
        // (0x2000000, unbacked after it). RAM parts keep their bytes; MMIO parts are unowned:
        // writes dropped, reads all ones.
        var code = TinyGuest.movMemImm32(0xc000_0ffd, 0x1122_3344)        // dword write: 3 + 1 bytes
        code += TinyGuest.movDX(0x3f8)
        code += TinyGuest.movEAXMem(0xc000_0ffd) + TinyGuest.printEAX     // dword read: 3 + 1
        code += TinyGuest.movMemImm8(0x1ff_ffff, 0x5a)
        code += TinyGuest.movEAXMem(0x1ff_ffff) + TinyGuest.printEAX      // 1 byte RAM + 3 unbacked
        code += TinyGuest.movMemImm32(0x1ff_fffc, 0x4433_2211)
        code += TinyGuest.movEAXMem(0x1ff_fffd) + TinyGuest.printEAX      // 3 bytes RAM + 1 unbacked
        code += TinyGuest.movMemImm32(0x1ff_fffe, 0xaabb_ccdd)            // 2 bytes RAM + 2 dropped
        code += TinyGuest.movEAXMem(0x1ff_fffc) + TinyGuest.printEAX      // all RAM: 11 22 dd cc
        code += TinyGuest.movqMM0Mem(0xc000_0ffb) + TinyGuest.printMM0    // qword read: 5 + 3
        code += TinyGuest.movqMemMM0(0xc000_0ffa)                         // qword write: 6 + 2
        code += TinyGuest.movqMM0Mem(0x1ff_fffd) + TinyGuest.printMM0     // 3 bytes RAM + 5 unbacked
        code += TinyGuest.movqMM0Mem(0xc000_0ff9)                         // qword read: 7 + 1
        code += TinyGuest.movqMemMM0(0x1ff_fffb) + TinyGuest.printMM0     // 5 bytes RAM + 3 dropped
        code += TinyGuest.movEAXMem(0x1ff_fffc) + TinyGuest.printEAX      // all RAM: ff ff ff ff
        code += TinyGuest.print("survived") + TinyGuest.powerOff
        let (outcome, console) = try TinyGuest.boot(code, name: "odd-mmio")
        #expect(outcome.reason == .powerOff, "\(outcome.reason.message)")
        #expect(outcome.guestExitStatus == nil)          // the control page saw no partial write
        let ones4: [UInt8] = [0xff, 0xff, 0xff, 0xff]
        var expected = ones4                              // the control page's tail and unowned MMIO
        expected += [0x5a, 0xff, 0xff, 0xff]
        expected += [0x22, 0x33, 0x44, 0xff]
        expected += [0x11, 0x22, 0xdd, 0xcc]
        expected += ones4 + ones4
        expected += [0x22, 0xdd, 0xcc, 0xff, 0xff, 0xff, 0xff, 0xff]
        expected += ones4 + ones4                         // MM0 read as all ones at 0xc0000ff9
        expected += ones4                                 // ... and stored over 0x1fffffb–0x1ffffff
        expected += Array("survived".utf8)
        #expect(console == expected)
    }
}

/// The virtio entropy device driven end to end through its MMIO transport, as Linux's
/// virtio_mmio and virtio_rng drivers do it.
@Suite("Direct KVM: virtio", .serialized) struct DirectVirtioTests {
    typealias G = TinyGuest

    @Test func aGuestDrivesTheEntropyDeviceThroughTheMMIOTransport() throws {
        let base: UInt32 = 0xd000_0000
        func register(_ offset: UInt32) -> UInt32 { base + offset }
        let descriptors: UInt32 = 0x30_0000, available: UInt32 = 0x30_1000, used: UInt32 = 0x30_2000
        let buffer: UInt32 = 0x30_3000
        var code = G.cli + G.movDX(0x3f8)
        code += G.movEAXMem(register(0x000)) + G.printEAX                          // "virt"
        code += G.movEAXMem(register(0x004)) + G.addAL(0x30) + G.outDXAL           // version "2"
        code += G.movEAXMem(register(0x008)) + G.addAL(0x30) + G.outDXAL           // device ID "4"
        code += G.movMemImm32(register(0x070), 0)                                  // reset
        code += G.movMemImm32(register(0x070), 1) + G.movMemImm32(register(0x070), 3)   // ACKNOWLEDGE, DRIVER
        code += G.movMemImm32(register(0x014), 1) + G.movEAXMem(register(0x010))   // device features 32–63
        code += G.addAL(0x30) + G.outDXAL                                          // VERSION_1: "1"
        code += G.movMemImm32(register(0x024), 1) + G.movMemImm32(register(0x020), 1)   // accept VERSION_1
        code += G.movMemImm32(register(0x024), 0) + G.movMemImm32(register(0x020), 0)
        code += G.movMemImm32(register(0x070), 0xb)                                // FEATURES_OK
        code += G.movEAXMem(register(0x070)) + G.outDXAL                           // it stuck: 0x0b
        code += G.movMemImm32(register(0x030), 0) + G.movMemImm32(register(0x038), 8)   // queue 0, size 8
        code += G.movMemImm32(register(0x080), descriptors) + G.movMemImm32(register(0x084), 0)
        code += G.movMemImm32(register(0x090), available) + G.movMemImm32(register(0x094), 0)
        code += G.movMemImm32(register(0x0a0), used) + G.movMemImm32(register(0x0a4), 0)
        code += G.movMemImm32(register(0x044), 1)                                  // QueueReady
        code += G.movMemImm32(register(0x070), 0xf)                                // DRIVER_OK
        // Descriptor 0: 16 device-writable bytes; head 0 in avail.ring[0], then avail.idx = 1.
        code += G.movMemImm32(descriptors, buffer) + G.movMemImm32(descriptors + 4, 0)
        code += G.movMemImm32(descriptors + 8, 16) + G.movMemImm32(descriptors + 12, 2)
        code += G.movMemImm32(available + 4, 0) + G.movMemImm32(available, 1 << 16)
        code += G.movMemImm32(register(0x050), 7)                                  // no queue 7: ignored
        code += G.movMemImm32(register(0x050), 0)                                  // QueueNotify: the ioeventfd
        code += G.poll(limit: 0x400_0000, probe: G.movzxEAXMem16(used + 2) + G.cmpEAX(1), exitWhen: G.je)
        code += G.poll(limit: 0x10_0000, probe: G.movEAXMem(register(0x060)) + G.testEAXEAX, exitWhen: G.jnz)
        code += G.addAL(0x30) + G.outDXAL                                          // InterruptStatus "1"
        code += G.movMemImm32(register(0x064), 1)                                  // InterruptACK
        code += G.movEAXMem(register(0x060)) + G.addAL(0x30) + G.outDXAL           // "0"
        code += G.movzxEAXMem16(used + 2) + G.addAL(0x30) + G.outDXAL              // used.idx "1"
        code += G.movEAXMem(used + 4) + G.addAL(0x30) + G.outDXAL                  // used id "0"
        code += G.movEAXMem(used + 8) + G.printEAX                                 // used len 16
        code += G.movEAXMem(buffer) + G.orEAXMem(buffer + 4) + G.orEAXMem(buffer + 8) + G.orEAXMem(buffer + 12)
        code += G.setnzAL + G.addAL(0x30) + G.outDXAL                              // filled: "1"
        code += G.powerOff
        let (outcome, console) = try G.boot(code, name: "virtio-rng", entropy: true)
        #expect(outcome.reason == .powerOff)
        #expect(console == Array("virt241".utf8) + [0x0b] + Array("1010".utf8) + [16, 0, 0, 0] + Array("1".utf8))
    }

    /// Sets up queue 0 (size 8) of the device at `base` with VERSION_1 and DRIVER_OK; rings at
    /// `descriptors`, +0x1000 (available) and +0x2000 (used).
    static func startQueue(base: UInt32, descriptors: UInt32) -> [UInt8] {
        var code = G.movMemImm32(base + 0x070, 0) + G.movMemImm32(base + 0x070, 1) + G.movMemImm32(base + 0x070, 3)
        code += G.movMemImm32(base + 0x024, 1) + G.movMemImm32(base + 0x020, 1)
        code += G.movMemImm32(base + 0x024, 0) + G.movMemImm32(base + 0x020, 0) + G.movMemImm32(base + 0x070, 0xb)
        code += G.movMemImm32(base + 0x030, 0) + G.movMemImm32(base + 0x038, 8)
        code += G.movMemImm32(base + 0x080, descriptors) + G.movMemImm32(base + 0x084, 0)
        code += G.movMemImm32(base + 0x090, descriptors + 0x1000) + G.movMemImm32(base + 0x094, 0)
        code += G.movMemImm32(base + 0x0a0, descriptors + 0x2000) + G.movMemImm32(base + 0x0a4, 0)
        code += G.movMemImm32(base + 0x044, 1) + G.movMemImm32(base + 0x070, 0xf)
        return code
    }

    @Test func malformedRingsOnOneDeviceLeaveTheOthersWorking() throws {
        let image = try G.write([UInt8](repeating: 0x5a, count: 4096), name: "hostile-disk.img")
        let disk: UInt32 = 0xd000_0000, rng: UInt32 = 0xd000_1000        // attached in that order
        let diskRing: UInt32 = 0x30_0000, rngRing: UInt32 = 0x40_0000, buffer: UInt32 = 0x40_3000
        var code = G.cli + G.movDX(0x3f8)
        code += Self.startQueue(base: disk, descriptors: diskRing)
        // Disk, request 1: descriptor 0 chains to itself forever (NEXT, next = 0).
        code += G.movMemImm32(diskRing, 0x30_3000) + G.movMemImm32(diskRing + 4, 0)
        code += G.movMemImm32(diskRing + 8, 16) + G.movMemImm32(diskRing + 12, 1)
        // Request 2: descriptor 1, a writable buffer far outside guest RAM.
        code += G.movMemImm32(diskRing + 16, 0) + G.movMemImm32(diskRing + 20, 0xffff_0000)
        code += G.movMemImm32(diskRing + 24, 4096) + G.movMemImm32(diskRing + 28, 2)
        code += G.movMemImm32(diskRing + 0x1004, 0 | 1 << 16) + G.movMemImm32(diskRing + 0x1000, 2 << 16)
        code += G.movMemImm32(disk + 0x050, 0)
        code += G.poll(limit: 0x400_0000, probe: G.movzxEAXMem16(diskRing + 0x2002) + G.cmpEAX(2), exitWhen: G.je)
        code += G.movEAXMem(diskRing + 0x2008) + G.addAL(0x30) + G.outDXAL         // both returned with length 0: "0"
        code += G.movEAXMem(diskRing + 0x2010) + G.addAL(0x30) + G.outDXAL         // "0"
        // Then avail.idx jumps 1000 ahead: a broken ring, the disk needs a reset (status bit 64).
        code += G.movMemImm32(diskRing + 0x1000, 1002 << 16) + G.movMemImm32(disk + 0x050, 0)
        code += G.poll(limit: 0x10_0000, probe: G.movEAXMem(disk + 0x070) + [0xa8, 0x40], exitWhen: G.jnz)
        code += G.movEAXMem(disk + 0x070) + G.outDXAL                              // 0x4f
        // The entropy device still serves a request.
        code += Self.startQueue(base: rng, descriptors: rngRing)
        code += G.movMemImm32(rngRing, buffer) + G.movMemImm32(rngRing + 4, 0)
        code += G.movMemImm32(rngRing + 8, 16) + G.movMemImm32(rngRing + 12, 2)
        code += G.movMemImm32(rngRing + 0x1004, 0) + G.movMemImm32(rngRing + 0x1000, 1 << 16)
        code += G.movMemImm32(rng + 0x050, 0)
        code += G.poll(limit: 0x400_0000, probe: G.movzxEAXMem16(rngRing + 0x2002) + G.cmpEAX(1), exitWhen: G.je)
        code += G.movEAXMem(rngRing + 0x2008) + G.printEAX                         // used len 16
        code += G.powerOff
        let (outcome, console) = try G.boot(code, name: "virtio-hostile", entropy: true,
                                            disks: [DiskConfiguration(path: image, id: "d0")])
        #expect(outcome.reason == .powerOff)
        #expect(console == Array("00".utf8) + [0x4f, 16, 0, 0, 0])
    }

    @Test func aQueueTheDeviceRefusesSetsNeedsResetAndAResetClearsIt() throws {
        let base: UInt32 = 0xd000_0000
        var code = G.cli + G.movDX(0x3f8)
        code += G.movMemImm32(base + 0x070, 0) + G.movMemImm32(base + 0x070, 3)
        code += G.movMemImm32(base + 0x024, 1) + G.movMemImm32(base + 0x020, 1) + G.movMemImm32(base + 0x070, 0xb)
        code += G.movMemImm32(base + 0x030, 0) + G.movMemImm32(base + 0x038, 3)   // size 3: not a power of two
        code += G.movMemImm32(base + 0x080, 0x30_0000) + G.movMemImm32(base + 0x090, 0x30_1000)
        code += G.movMemImm32(base + 0x0a0, 0x30_2000) + G.movMemImm32(base + 0x044, 1)
        code += G.movMemImm32(base + 0x070, 0xf)                                   // DRIVER_OK
        // The loop refuses the queue: DEVICE_NEEDS_RESET (64) and a configuration-change interrupt.
        code += G.poll(limit: 0x10_0000, probe: G.movEAXMem(base + 0x070) + [0xa8, 0x40], exitWhen: G.jnz)  // test al, 64
        code += G.movEAXMem(base + 0x070) + G.outDXAL + G.movEAXMem(base + 0x060) + G.outDXAL
        code += G.movMemImm32(base + 0x070, 0) + G.movEAXMem(base + 0x070) + G.outDXAL      // reset: 0
        code += G.powerOff
        let (outcome, console) = try G.boot(code, name: "virtio-refused", entropy: true)
        #expect(outcome.reason == .powerOff)
        #expect(console == [0x4f, 0x02, 0x00])
    }

    @Test func aGuestReadsASectorFromADiskImageThroughTheMMIOTransport() throws {
        // A 4 KiB image whose sector n is filled with "A" + n.
        let image = try G.write((0..<8).flatMap { [UInt8](repeating: 0x41 + UInt8($0), count: 512) }, name: "disk.img")
        let base: UInt32 = 0xd000_0000
        func register(_ offset: UInt32) -> UInt32 { base + offset }
        let descriptors: UInt32 = 0x30_0000, available: UInt32 = 0x30_1000, used: UInt32 = 0x30_2000
        let header: UInt32 = 0x30_3000, status: UInt32 = 0x30_3800, data: UInt32 = 0x30_4000
        var code = G.cli + G.movDX(0x3f8)
        code += G.movEAXMem(register(0x000)) + G.printEAX                          // "virt"
        code += G.movEAXMem(register(0x004)) + G.addAL(0x30) + G.outDXAL           // version "2"
        code += G.movEAXMem(register(0x008)) + G.addAL(0x30) + G.outDXAL           // device ID "2"
        code += G.movMemImm32(register(0x070), 0)
        code += G.movMemImm32(register(0x070), 1) + G.movMemImm32(register(0x070), 3)
        code += G.movMemImm32(register(0x024), 1) + G.movMemImm32(register(0x020), 1)   // accept VERSION_1 only
        code += G.movMemImm32(register(0x024), 0) + G.movMemImm32(register(0x020), 0)
        code += G.movMemImm32(register(0x070), 0xb)
        code += G.movEAXMem(register(0x070)) + G.outDXAL                           // 0x0b
        code += G.movEAXMem(register(0x100)) + G.addAL(0x30) + G.outDXAL           // capacity 8 sectors: "8"
        code += G.movMemImm32(register(0x030), 0) + G.movMemImm32(register(0x038), 8)
        code += G.movMemImm32(register(0x080), descriptors) + G.movMemImm32(register(0x084), 0)
        code += G.movMemImm32(register(0x090), available) + G.movMemImm32(register(0x094), 0)
        code += G.movMemImm32(register(0x0a0), used) + G.movMemImm32(register(0x0a4), 0)
        code += G.movMemImm32(register(0x044), 1)
        code += G.movMemImm32(register(0x070), 0xf)                                // DRIVER_OK
        // IN, sector 1: header (readable) -> 512 bytes (writable) -> status (writable).
        code += G.movMemImm32(header, 0) + G.movMemImm32(header + 4, 0)
        code += G.movMemImm32(header + 8, 1) + G.movMemImm32(header + 12, 0) + G.movMemImm32(status, 0xff)
        code += G.movMemImm32(descriptors, header) + G.movMemImm32(descriptors + 4, 0)
        code += G.movMemImm32(descriptors + 8, 16) + G.movMemImm32(descriptors + 12, 1 | 1 << 16)
        code += G.movMemImm32(descriptors + 16, data) + G.movMemImm32(descriptors + 20, 0)
        code += G.movMemImm32(descriptors + 24, 512) + G.movMemImm32(descriptors + 28, 3 | 2 << 16)
        code += G.movMemImm32(descriptors + 32, status) + G.movMemImm32(descriptors + 36, 0)
        code += G.movMemImm32(descriptors + 40, 1) + G.movMemImm32(descriptors + 44, 2)
        code += G.movMemImm32(available + 4, 0) + G.movMemImm32(available, 1 << 16)
        code += G.movMemImm32(register(0x050), 0)                                  // QueueNotify
        code += G.poll(limit: 0x400_0000, probe: G.movzxEAXMem16(used + 2) + G.cmpEAX(1), exitWhen: G.je)
        code += G.movEAXMem(used + 8) + G.printEAX                                 // used len 513
        code += G.movEAXMem(status) + G.addAL(0x30) + G.outDXAL                    // status OK: "0"
        code += G.movEAXMem(data + 508) + G.printEAX                               // "BBBB"
        code += G.powerOff
        let (outcome, console) = try G.boot(code, name: "virtio-blk", disks: [DiskConfiguration(path: image, id: "d0")])
        #expect(outcome.reason == .powerOff)
        #expect(console == Array("virt22".utf8) + [0x0b] + Array("8".utf8) + [0x01, 0x02, 0, 0] + Array("0BBBB".utf8))
    }
}
