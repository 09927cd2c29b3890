/// The general-purpose registers of an x86_64 vCPU (hypervisor-neutral).
public struct X86Registers: Equatable, Sendable {
    /// The general-purpose registers.
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    /// The instruction pointer.
    public var rip: UInt64 = 0
    /// RFLAGS; bit 1 is always set on x86.
    public var rflags: UInt64 = 0x2
    /// All-zero registers with RFLAGS = 2.
    public init() {}
}

/// A segment register in its descriptor-cache form.
public struct X86Segment: Equatable, Sendable {
    /// The segment's base address.
    public var base: UInt64 = 0
    /// The segment's limit (in bytes, or in 4 KiB pages when `g` is set).
    public var limit: UInt32 = 0xffff
    /// The selector loaded into the segment register.
    public var selector: UInt16 = 0
    /// The 4-bit type field (e.g. 0xb execute/read accessed code, 0x3 read/write accessed data).
    public var type: UInt8 = 0
    /// Whether the segment is present (a non-present segment is unusable).
    public var present: Bool = true
    /// The descriptor privilege level.
    public var dpl: UInt8 = 0
    /// Default operation size (32-bit) for code, big for data.
    public var db: Bool = false
    /// Code or data (true) rather than system.
    public var s: Bool = true
    /// 64-bit code segment.
    public var l: Bool = false
    /// Granularity: the limit counts 4 KiB pages.
    public var g: Bool = false
    /// The descriptor's software-available bit.
    public var avl: Bool = false
    /// A segment with default (real-mode-like) attributes.
    public init() {}

    /// A flat segment from a GDT entry's fields.
    public init(selector: UInt16, type: UInt8, s: Bool = true, db: Bool, l: Bool, limit: UInt32 = 0xffff_ffff, g: Bool = true) {
        self.selector = selector
        self.type = type
        self.s = s
        self.db = db
        self.l = l
        self.limit = limit
        self.g = g
    }

    /// The 8-byte GDT descriptor for this segment (base below 4 GiB).
    public var gdtEntry: UInt64 {
        let limitField = UInt64(g ? limit >> 12 : limit)
        var entry = limitField & 0xffff
        entry |= (base & 0xff_ffff) << 16
        entry |= UInt64(type & 0xf) << 40
        entry |= (s ? 1 : 0) << 44
        entry |= UInt64(dpl & 3) << 45
        entry |= (present ? 1 : 0) << 47
        entry |= ((limitField >> 16) & 0xf) << 48
        entry |= (avl ? 1 : 0) << 52
        entry |= (l ? 1 : 0) << 53
        entry |= (db ? 1 : 0) << 54
        entry |= (g ? 1 : 0) << 55
        entry |= ((base >> 24) & 0xff) << 56
        return entry
    }
}

/// A descriptor-table register (GDTR, IDTR).
public struct X86DescriptorTable: Equatable, Sendable {
    /// The table's base address.
    public var base: UInt64 = 0
    /// The table's limit (size in bytes minus one).
    public var limit: UInt16 = 0
    /// Creates a descriptor-table register.
    public init(base: UInt64 = 0, limit: UInt16 = 0) {
        self.base = base
        self.limit = limit
    }
}

/// The system registers of an x86_64 vCPU that boot code sets (hypervisor-neutral).
public struct X86SpecialRegisters: Equatable, Sendable {
    /// The segment registers.
    public var cs = X86Segment(), ds = X86Segment(), es = X86Segment(), fs = X86Segment()
    public var gs = X86Segment(), ss = X86Segment(), tr = X86Segment(), ldt = X86Segment()
    /// The descriptor-table registers.
    public var gdt = X86DescriptorTable(), idt = X86DescriptorTable()
    /// The control registers and EFER.
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, efer: UInt64 = 0
    /// Default registers.
    public init() {}
}

/// Control-register and EFER bits used when setting up a boot vCPU.
public enum X86Bits {
    /// CR0.PE: protected mode.
    public static let cr0ProtectionEnable: UInt64 = 1 << 0
    /// CR0.ET: 387 present (always 1 on modern CPUs).
    public static let cr0ExtensionType: UInt64 = 1 << 4
    /// CR0.PG: paging.
    public static let cr0Paging: UInt64 = 1 << 31
    /// CR4.PAE: physical address extension (needed for long mode).
    public static let cr4PAE: UInt64 = 1 << 5
    /// EFER.LME: long mode enable.
    public static let eferLongModeEnable: UInt64 = 1 << 8
    /// EFER.LMA: long mode active.
    public static let eferLongModeActive: UInt64 = 1 << 10
}

/// One model-specific register value.
public struct MSRValue: Equatable, Sendable {
    /// The MSR's number.
    public var index: UInt32
    /// Its value.
    public var value: UInt64
    /// Creates an MSR value.
    public init(_ index: UInt32, _ value: UInt64) {
        self.index = index
        self.value = value
    }
}
