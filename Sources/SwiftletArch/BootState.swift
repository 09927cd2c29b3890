import SwiftletMemory
import SwiftletCore

/// How a vCPU enters the kernel.
public enum BootMode: Equatable, Sendable {
    /// The Linux 64-bit boot protocol: long mode with identity paging, RSI = zero page.
    case linux64(entry: UInt64, bootParams: UInt64)
    /// The PVH entry: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    case pvh(entry: UInt64, startInfo: UInt64)
}

/// The boot-time CPU state of the boot processor, and the memory it needs (GDT, page tables).
///
/// Pure values: the builder writes ``memoryWrites`` into guest RAM and hands the registers to the
/// hypervisor backend.
public struct X86BootState: Equatable, Sendable {
    /// General-purpose registers.
    public var registers: X86Registers
    /// Segment and control registers.
    public var specialRegisters: X86SpecialRegisters
    /// Bytes to place in guest memory before the vCPU starts (GDT, page tables).
    public var memoryWrites: [(address: UInt64, bytes: [UInt8])]

    public static func == (lhs: X86BootState, rhs: X86BootState) -> Bool {
        lhs.registers == rhs.registers && lhs.specialRegisters == rhs.specialRegisters
            && lhs.memoryWrites.map(\.address) == rhs.memoryWrites.map(\.address)
            && lhs.memoryWrites.map(\.bytes) == rhs.memoryWrites.map(\.bytes)
    }

    /// The boot GDT: null, null, 64-bit code (0x10), data (0x18), TSS (0x20), 32-bit code (0x28).
    ///
    /// Linux's boot protocol asks for `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18.
    public static let code64 = X86Segment(selector: 0x10, type: 0xb, db: false, l: true)
    /// The flat data segment (selector 0x18).
    public static let data = X86Segment(selector: 0x18, type: 0x3, db: true, l: false)
    /// A busy 32-bit TSS (selector 0x20); VMX needs a usable TR.
    public static let tss = X86Segment(selector: 0x20, type: 0xb, s: false, db: false, l: false, limit: 0x67, g: false)
    /// The flat 32-bit code segment for PVH (selector 0x28).
    public static let code32 = X86Segment(selector: 0x28, type: 0xb, db: true, l: false)

    /// The GDT bytes.
    public static var gdtBytes: [UInt8] {
        let entries: [UInt64] = [0, 0, code64.gdtEntry, data.gdtEntry, tss.gdtEntry, code32.gdtEntry]
        return entries.flatMap { [UInt8](littleEndian: $0, count: 8) }
    }

    /// Identity page tables for the first 4 GiB with 2 MiB pages: PML4, PDPT, then four page directories.
    public static func identityPageTables(at base: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 6 * 4096)
        func put(_ value: UInt64, at offset: Int) { bytes.storeLittleEndian(value, at: offset) }
        let pdpt = base + 0x1000
        put(pdpt | 0x3, at: 0)                                  // PML4[0] → PDPT, present | writable
        for gib in 0..<4 {
            let directory = base + 0x2000 + UInt64(gib) * 0x1000
            put(directory | 0x3, at: 0x1000 + gib * 8)          // PDPT[gib] → PD
            for entry in 0..<512 {
                let address = (UInt64(gib) << 30) | (UInt64(entry) << 21)
                put(address | 0x83, at: 0x2000 + gib * 0x1000 + entry * 8)   // 2 MiB page, present | writable
            }
        }
        return bytes
    }

    /// The boot processor's state for `mode`.
    public init(mode: BootMode) {
        var registers = X86Registers()
        var special = X86SpecialRegisters()
        special.gdt = X86DescriptorTable(base: X86Layout.gdtAddress, limit: UInt16(Self.gdtBytes.count - 1))
        special.idt = X86DescriptorTable(base: 0, limit: 0)
        special.tr = Self.tss
        special.ldt = X86Segment(selector: 0, type: 0x2, s: false, db: false, l: false, limit: 0xffff, g: false)
        special.ldt.present = false
        var writes: [(address: UInt64, bytes: [UInt8])] = [
            (X86Layout.gdtAddress, Self.gdtBytes), (X86Layout.resetVectorAddress, Self.resetVectorStub),
        ]
        switch mode {
        case let .linux64(entry, bootParams):
            registers.rip = entry
            registers.rsi = bootParams
            special.cs = Self.code64
            for keyPath in [\X86SpecialRegisters.ds, \.es, \.fs, \.gs, \.ss] { special[keyPath: keyPath] = Self.data }
            special.cr3 = X86Layout.pageTablesAddress
            special.cr4 = X86Bits.cr4PAE
            special.cr0 = X86Bits.cr0ProtectionEnable | X86Bits.cr0ExtensionType | X86Bits.cr0Paging
            special.efer = X86Bits.eferLongModeEnable | X86Bits.eferLongModeActive
            writes.append((X86Layout.pageTablesAddress, Self.identityPageTables(at: X86Layout.pageTablesAddress)))
        case let .pvh(entry, startInfo):
            registers.rip = entry
            registers.rbx = startInfo
            special.cs = Self.code32
            for keyPath in [\X86SpecialRegisters.ds, \.es, \.fs, \.gs, \.ss] { special[keyPath: keyPath] = Self.data }
            special.cr0 = X86Bits.cr0ProtectionEnable | X86Bits.cr0ExtensionType
        }
        self.registers = registers
        self.specialRegisters = special
        self.memoryWrites = writes
    }

    /// Real-mode code at the reset vector: pulse the i8042 reset line, then halt. Linux jumps here
    /// for `reboot=b` (and by default on hardware-reduced ACPI machines without EFI), so a reboot
    /// always ends the machine cleanly instead of running off into empty memory.
    public static let resetVectorStub: [UInt8] = [
        0xb0, 0xfe,         // mov al, 0xfe
        0xe6, 0x64,         // out 0x64, al
        0xf4,               // hlt
        0xeb, 0xfd,         // jmp hlt
    ]

    /// MSR values every vCPU starts with: SYSENTER/SYSCALL MSRs cleared, fast strings enabled,
    /// MTRRs enabled with write-back as the default type (as Firecracker does).
    public static let initialMSRs: [MSRValue] = [
        MSRValue(0x174, 0), MSRValue(0x175, 0), MSRValue(0x176, 0),      // IA32_SYSENTER_CS/ESP/EIP
        MSRValue(0xc000_0081, 0), MSRValue(0xc000_0082, 0),               // STAR, LSTAR
        MSRValue(0xc000_0083, 0), MSRValue(0xc000_0084, 0),               // CSTAR, SYSCALL_MASK
        MSRValue(0xc000_0102, 0),                                         // KERNEL_GS_BASE
        MSRValue(0x1a0, 1),                                               // IA32_MISC_ENABLE: fast strings
        MSRValue(0x2ff, (1 << 11) | 6),                                   // MTRRdefType: enabled, WB
    ]
}
