/// The guest-physical address map of a Swiftlet x86_64 machine, and the fixed PIO ports.
///
/// ```
/// 0x0000_0000  real-mode IVT/BDA (RAM)
/// 0x0000_0500  GDT                           (boot-time, rewritten by the kernel)
/// 0x0000_7000  zero page (boot_params) or PVH start_info
/// 0x0000_9000  identity page tables: PML4, PDPT, 4 × PD (2 MiB pages, first 4 GiB)
/// 0x0002_0000  kernel command line (up to 64 KiB)
/// 0x0009_fc00  ── reserved (EBDA, VGA, ROM area) ──
/// 0x000e_0000  ACPI tables (RSDP first), up to 0xf_0000
/// 0x000f_fff0  reset-vector stub (i8042 reset), for guests that reboot through the "BIOS"
/// 0x0010_0000  kernel (bzImage protected-mode part or ELF segments); RAM up to the MMIO hole
/// 0xc000_0000  MMIO hole (1 GiB): Swiftlet control page, virtio-mmio devices, IOAPIC, LAPIC, KVM TSS
/// 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3 GiB
/// ```
public enum X86Layout {
    /// The boot GDT.
    public static let gdtAddress: UInt64 = 0x500
    /// The zero page (`struct boot_params`) for the 64-bit boot protocol, or PVH's `hvm_start_info`.
    public static let bootParamsAddress: UInt64 = 0x7000
    /// The PML4 of the boot identity map; the PDPT and the page directories follow it.
    public static let pageTablesAddress: UInt64 = 0x9000
    /// Where the kernel command line goes.
    public static let commandLineAddress: UInt64 = 0x2_0000
    /// The largest command line Swiftlet places (Linux x86 accepts 2048 bytes by default).
    public static let commandLineCapacity: UInt64 = 0x1_0000
    /// The end of conventional low memory (start of the EBDA).
    public static let lowMemoryEnd: UInt64 = 0x9_fc00
    /// Where the ACPI tables go (RSDP first, inside the legacy BIOS area Linux scans).
    public static let acpiTablesAddress: UInt64 = 0xe_0000
    /// The end of the ACPI area.
    public static let acpiTablesEnd: UInt64 = 0xf_0000
    /// The x86 reset vector (F000:FFF0), where a BIOS-style reboot jumps; Swiftlet puts a stub
    /// there that resets the machine through the i8042.
    public static let resetVectorAddress: UInt64 = 0xf_fff0
    /// Where kernels are loaded (1 MiB).
    public static let kernelAddress: UInt64 = 0x10_0000
    /// The first byte of the MMIO hole below 4 GiB.
    public static let mmioHoleStart: UInt64 = 0xc000_0000
    /// The first byte after the MMIO hole (4 GiB).
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    /// The Swiftlet control page (boot-complete signal, command exit status), 4 KiB.
    public static let controlPageAddress: UInt64 = 0xc000_0000
    /// The first virtio-mmio device window; each device takes 4 KiB.
    public static let virtioMMIOStart: UInt64 = 0xd000_0000
    /// The IOAPIC's registers.
    public static let ioapicAddress: UInt64 = 0xfec0_0000
    /// The local APICs' registers.
    public static let localAPICAddress: UInt64 = 0xfee0_0000
    /// KVM's three-page TSS area (`KVM_SET_TSS_ADDR`).
    public static let kvmTSSAddress: UInt64 = 0xfffb_d000
    /// KVM's identity-map page (`KVM_SET_IDENTITY_MAP_ADDR`).
    public static let kvmIdentityMapAddress: UInt64 = 0xfffb_c000

    /// The 16550A UART COM1.
    public static let com1Port: UInt16 = 0x3f8
    /// COM1's interrupt line.
    public static let com1IRQ: UInt32 = 4
    /// The i8042 controller's data port; its command/status port is `+4`.
    public static let i8042Port: UInt16 = 0x60
    /// The CMOS RTC's index port; the data port is `+1`.
    public static let cmosPort: UInt16 = 0x70
    /// The ACPI power registers: sleep control `+0`, sleep status `+1`, reset `+2`.
    public static let acpiPowerPort: UInt16 = 0x600
    /// The pvpanic port (QEMU's `QEMU0001` device): the guest kernel writes 1 there when it panics.
    public static let pvpanicPort: UInt16 = 0x505
    /// The value written to the ACPI reset register to reset the machine.
    public static let acpiResetValue: UInt8 = 0x1
    /// The `\_S5` sleep type Swiftlet advertises for power-off.
    public static let acpiS5SleepType: UInt8 = 5
}

/// One entry of the x86 E820 memory map, as in `struct boot_e820_entry`.
public struct E820Entry: Hashable, Sendable {
    /// The kind of a memory range.
    public enum Kind: UInt32, Sendable {
        case ram = 1, reserved = 2, acpiReclaimable = 3, acpiNVS = 4, unusable = 5
    }
    /// The first address.
    public var address: UInt64
    /// The number of bytes.
    public var size: UInt64
    /// What the range is.
    public var kind: Kind

    /// Creates an entry.
    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }
}
