import Foundation
import Logging
import Testing
@testable import Swiftlet

/// Builds tiny hand-assembled guests as ELF files with a PVH entry note, the way
/// lab-and-peers.md §8 describes: the code is loaded at 1 MiB and entered in 32-bit protected
/// mode with paging off.
enum TinyGuest {
    static let loadAddress: UInt64 = 0x10_0000

    /// An ELF64 x86-64 executable with one PT_LOAD segment holding `code` at 1 MiB and a
    /// PT_NOTE segment holding the Xen PVH entry note (type 18) pointing at it.
    static func elf(_ code: [UInt8]) -> [UInt8] {
        func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        let headerSize = 64, phSize = 56
        let noteOffset = headerSize + 2 * phSize
        var note = le32(4) + le32(8) + le32(18) + Array("Xen\0".utf8) + le64(loadAddress)
        while note.count % 8 != 0 { note.append(0) }
        let codeOffset = (noteOffset + note.count + 15) / 16 * 16
        var file: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        file += le16(2) + le16(62) + le32(1) + le64(loadAddress) + le64(UInt64(headerSize)) + le64(0)
        file += le32(0) + le16(UInt16(headerSize)) + le16(UInt16(phSize)) + le16(2) + le16(64) + le16(0) + le16(0)
        // PT_LOAD, R+X
        file += le32(1) + le32(5) + le64(UInt64(codeOffset)) + le64(loadAddress) + le64(loadAddress)
        file += le64(UInt64(code.count)) + le64(UInt64(code.count)) + le64(0x1000)
        // PT_NOTE
        file += le32(4) + le32(4) + le64(UInt64(noteOffset)) + le64(0) + le64(0)
        file += le64(UInt64(note.count)) + le64(UInt64(note.count)) + le64(4)
        file += note
        file += [UInt8](repeating: 0, count: codeOffset - file.count)
        return file + code
    }

    /// Boots `code` as a tiny guest (32 MiB, console to a file, paravirtual features hidden) and
    /// returns how the run ended and what the guest printed; `stopAfter` stops it from another thread.
    static func boot(_ code: [UInt8], name: String, irqchip: Bool = true, entropy: Bool = false,
                     disks: [DiskConfiguration] = [], stopAfter: Duration? = nil,
                     prepare: (VirtualMachine) throws -> Void = { _ in }) throws -> (outcome: RunOutcome, console: [UInt8]) {
        let kernel = try write(elf(code), name: name + ".elf")
        let consolePath = kernel + ".console"
        let configuration = MachineConfiguration(kernelPath: kernel, memorySize: 32 << 20, console: .file(consolePath),
                                                 entropy: entropy, disks: disks, hideParavirtFeatures: true,
                                                 inKernelIRQChip: irqchip)
        let machine: VirtualMachine
        do {
            machine = try VirtualMachine(configuration: configuration, logger: Logger(label: "swiftlet-tests"))
        } catch {
            Issue.record("cannot build a VM on /dev/kvm: \(error.message)")
            throw error
        }
        try prepare(machine)
        if let stopAfter {
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: Double(stopAfter.components.seconds) + Double(stopAfter.components.attoseconds) / 1e18)
                machine.stop()
            }
        }
        let outcome = machine.run()
        let console = (try? Data(contentsOf: URL(fileURLWithPath: consolePath))).map { [UInt8]($0) } ?? []
        return (outcome, console)
    }

    /// Writes `bytes` to a fresh temporary file and returns its path.
    static func write(_ bytes: [UInt8], name: String) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-kvm-tests-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    // 32-bit instruction encodings used by the tests.
    static func movDX(_ port: UInt16) -> [UInt8] { [0x66, 0xba, UInt8(port & 0xff), UInt8(port >> 8)] }
    static func movAL(_ value: UInt8) -> [UInt8] { [0xb0, value] }
    static let outDXAL: [UInt8] = [0xee]
    static let inALDX: [UInt8] = [0xec]
    static func movMemImm32(_ address: UInt32, _ value: UInt32) -> [UInt8] { [0xc7, 0x05] + le32(address) + le32(value) }
    static func movEAXMem(_ address: UInt32) -> [UInt8] { [0xa1] + le32(address) }
    static func movMemImm8(_ address: UInt32, _ value: UInt8) -> [UInt8] { [0xc6, 0x05] + le32(address) + [value] }
    /// `movq mm0, [address]`: an 8-byte MMX load (CR0.EM and CR0.TS are clear at the PVH entry).
    static func movqMM0Mem(_ address: UInt32) -> [UInt8] { [0x0f, 0x6f, 0x05] + le32(address) }
    /// `movq [address], mm0`: an 8-byte MMX store.
    static func movqMemMM0(_ address: UInt32) -> [UInt8] { [0x0f, 0x7f, 0x05] + le32(address) }
    static let shrEAX8: [UInt8] = [0xc1, 0xe8, 0x08]
    private static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func movESI(_ value: UInt32) -> [UInt8] { [0xbe] + le32(value) }
    static func movEDI(_ value: UInt32) -> [UInt8] { [0xbf] + le32(value) }
    static func movECX(_ value: UInt32) -> [UInt8] { [0xb9] + le32(value) }
    static let cld: [UInt8] = [0xfc]
    /// `rep outsb`: ECX bytes from [ESI] to port DX.
    static let repOutsb: [UInt8] = [0xf3, 0x6e]
    /// `rep insb`: ECX bytes from port DX to [EDI].
    static let repInsb: [UInt8] = [0xf3, 0x6c]
    /// `rep insw`: ECX 16-bit words from port DX to [EDI].
    static let repInsw: [UInt8] = [0x66, 0xf3, 0x6d]
    static let cli: [UInt8] = [0xfa]
    static func addAL(_ value: UInt8) -> [UInt8] { [0x04, value] }
    /// `movzx eax, word [address]`.
    static func movzxEAXMem16(_ address: UInt32) -> [UInt8] { [0x0f, 0xb7, 0x05] + le32(address) }
    /// `or eax, [address]`.
    static func orEAXMem(_ address: UInt32) -> [UInt8] { [0x0b, 0x05] + le32(address) }
    static func cmpEAX(_ value: UInt8) -> [UInt8] { [0x83, 0xf8, value] }
    static let testEAXEAX: [UInt8] = [0x85, 0xc0]
    /// `setnz al`.
    static let setnzAL: [UInt8] = [0x0f, 0x95, 0xc0]
    static let pause: [UInt8] = [0xf3, 0x90]
    static let decECX: [UInt8] = [0x49]
    /// `je` / `jnz` with an 8-bit displacement from the next instruction.
    static func je(_ displacement: Int8) -> [UInt8] { [0x74, UInt8(bitPattern: displacement)] }
    static func jnz(_ displacement: Int8) -> [UInt8] { [0x75, UInt8(bitPattern: displacement)] }

    /// Spins at most `limit` rounds (a `pause` in each; clobbers ECX) until `exit` jumps out:
    /// `probe` loads EAX and sets the flags, `exit` builds the conditional jump (`je`, `jnz`) that leaves.
    static func poll(limit: UInt32, probe: [UInt8], exitWhen exit: (Int8) -> [UInt8]) -> [UInt8] {
        let tail = pause + decECX
        let body = probe + exit(Int8(tail.count + 2)) + tail
        return movECX(limit) + body + jnz(-Int8(body.count + 2))
    }
    static let hltForever: [UInt8] = [0xf4, 0xeb, 0xfd]

    /// Prints `text` on COM1.
    static func print(_ text: String) -> [UInt8] {
        movDX(0x3f8) + text.utf8.flatMap { movAL($0) + outDXAL }
    }

    /// Writes the 4 bytes of EAX, low first, to COM1 (DX must be 0x3f8).
    static let printEAX: [UInt8] = outDXAL + shrEAX8 + outDXAL + shrEAX8 + outDXAL + shrEAX8 + outDXAL

    /// Writes the 8 bytes of MM0, low first, to COM1 (DX must be 0x3f8; clobbers EAX). It goes
    /// through RAM at 2 MiB: this machine's kvm-pvm fails to emulate MMX register moves such as
    /// `movd eax, mm0` (a KVM internal error), while `movq` to and from memory works.
    static let printMM0: [UInt8] = movqMemMM0(0x20_0000) + movEAXMem(0x20_0000) + printEAX
        + movEAXMem(0x20_0004) + printEAX

    /// Powers off through the ACPI sleep-control register (S5).
    static let powerOff: [UInt8] = movDX(0x600) + movAL(0x34) + outDXAL + hltForever
}
