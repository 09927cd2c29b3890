import SwiftletArch
import SwiftletCore

/// Swiftlet's ACPI tables, laid out as one blob to copy into guest memory.
///
/// The blob holds, each on a 16-byte boundary: the RSDP (at the base, where Linux's scan of
/// 0xe0000–0xfffff finds it), the XSDT, the FADT, the MADT and the DSDT. The FADT declares a
/// hardware-reduced ACPI platform, so there are no PM1/GPE blocks, no SCI handling and no FACS.
public struct ACPITables: Sendable, Hashable {
    /// Where one table sits in the blob.
    public struct Table: Sendable, Hashable {
        /// The four-character signature (`"RSD PTR "` for the RSDP).
        public let signature: String
        /// The table's offset from the start of ``ACPITables/bytes``.
        public let offset: Int
        /// The table's length in bytes.
        public let length: Int
        /// The table's guest-physical address.
        public let address: UInt64
    }

    /// The RSDP's guest-physical address: the base the blob was built for.
    public let rsdpAddress: UInt64
    /// The tables, to copy into guest memory at ``rsdpAddress``.
    public let bytes: [UInt8]
    /// Where each table sits, in blob order: RSDP, XSDT, FACP, APIC, DSDT.
    public let tables: [Table]

    /// The entry for `signature`, if the blob has one.
    public func table(_ signature: String) -> Table? { tables.first { $0.signature == signature } }

    /// The bytes of the table with `signature`, if the blob has one.
    public func bytes(of signature: String) -> [UInt8]? {
        table(signature).map { Array(bytes[$0.offset..<$0.offset + $0.length]) }
    }

    /// Builds the tables for `configuration`, to live at guest-physical `base`.
    /// - Parameters:
    ///   - base: where the blob goes; must be 16-byte aligned.
    ///   - limit: the first address the blob must not reach.
    /// - Throws: ``ACPIError`` if the configuration exceeds a limit, `base` is misaligned or the blob
    ///   would pass `limit`.
    public static func build(_ configuration: ACPIConfiguration, at base: UInt64 = X86Layout.acpiTablesAddress,
                             limit: UInt64 = X86Layout.acpiTablesEnd) throws(ACPIError) -> ACPITables {
        guard base % 16 == 0 else { throw .misalignedBase(base) }
        try configuration.validate()
        let dsdt = try ACPITableBuilder.dsdt(configuration)
        let madt = ACPITableBuilder.madt(configuration)

        // Lay out first: only the FADT, XSDT and RSDP hold pointers, and their sizes are fixed.
        let xsdtEntryCount = 2
        let sizes: [(signature: String, length: Int)] = [
            (ACPITableBuilder.rsdpSignature, ACPITableBuilder.rsdpLength),
            ("XSDT", ACPITableBuilder.headerLength + 8 * xsdtEntryCount),
            ("FACP", ACPITableBuilder.fadtLength),
            ("APIC", madt.count),
            ("DSDT", dsdt.count),
        ]
        var tables: [Table] = []
        var offset = 0
        for (signature, length) in sizes {
            offset = (offset + 15) & ~15
            tables.append(Table(signature: signature, offset: offset, length: length, address: base &+ UInt64(offset)))
            offset += length
        }
        guard limit >= base, limit - base >= UInt64(offset) else {
            throw .tablesTooLarge(base: base, needed: offset, limit: limit)
        }
        let (rsdpEntry, xsdtEntry, fadtEntry, madtEntry, dsdtEntry) = (tables[0], tables[1], tables[2], tables[3], tables[4])

        let fadt = ACPITableBuilder.fadt(configuration, dsdtAddress: dsdtEntry.address)
        let xsdt = ACPITableBuilder.xsdt(entries: [fadtEntry.address, madtEntry.address])
        let rsdp = ACPITableBuilder.rsdp(xsdtAddress: xsdtEntry.address)

        var blob = [UInt8](repeating: 0, count: offset)
        for (entry, table) in [(rsdpEntry, rsdp), (xsdtEntry, xsdt), (fadtEntry, fadt), (madtEntry, madt), (dsdtEntry, dsdt)] {
            precondition(table.count == entry.length, "ACPI \(entry.signature) length changed during layout")
            blob.replaceSubrange(entry.offset..<entry.offset + entry.length, with: table)
        }
        return ACPITables(rsdpAddress: base, bytes: blob, tables: tables)
    }
}

/// The table encoders behind ``ACPITables/build(_:at:limit:)``. Each returns a complete table with
/// its length and checksum filled in.
enum ACPITableBuilder {
    /// The OEM ID in every header and in the RSDP.
    static let oemID = "SWLET "
    /// The OEM table ID in every header.
    static let oemTableID = "SWIFTLET"
    /// The OEM revision in every header.
    static let oemRevision: UInt32 = 1
    /// The creator ID in every header.
    static let creatorID = "SWLT"
    /// The creator revision in every header.
    static let creatorRevision: UInt32 = 1
    /// The FADT's hypervisor vendor identity.
    static let hypervisorVendorID = "SWIFTLET"

    /// The RSDP's signature.
    static let rsdpSignature = "RSD PTR "
    /// The length of an ACPI 2.0+ RSDP.
    static let rsdpLength = 36
    /// The length of a system description table header.
    static let headerLength = 36
    /// The length of an ACPI 6.x FADT.
    static let fadtLength = 276

    /// The byte that makes `bytes` sum to zero modulo 256 when added.
    static func checksum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    /// A system description table: the 36-byte header, then `body`, with length and checksum set.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var table = ascii(signature, count: 4)
        table += [UInt8](littleEndian: UInt32(headerLength + body.count), count: 4)
        table += [revision, 0]  // checksum at offset 9, set below
        table += ascii(oemID, count: 6) + ascii(oemTableID, count: 8) + [UInt8](littleEndian: oemRevision, count: 4)
        table += ascii(creatorID, count: 4) + [UInt8](littleEndian: creatorRevision, count: 4)
        table += body
        table[9] = checksum(table)
        return table
    }

    /// The ACPI 2.0+ RSDP: no RSDT, only the XSDT; both checksums set.
    static func rsdp(xsdtAddress: UInt64) -> [UInt8] {
        var rsdp = ascii(rsdpSignature, count: 8) + [0] + ascii(oemID, count: 6) + [2]  // revision 2
        rsdp += [UInt8](littleEndian: UInt32(0), count: 4)  // RsdtAddress: none
        rsdp += [UInt8](littleEndian: UInt32(rsdpLength), count: 4)
        rsdp += [UInt8](littleEndian: xsdtAddress, count: 8)
        rsdp += [0, 0, 0, 0]  // extended checksum, reserved
        rsdp[8] = checksum(rsdp[0..<20])
        rsdp[32] = checksum(rsdp)
        return rsdp
    }

    /// The XSDT listing `entries` (64-bit table addresses).
    static func xsdt(entries: [UInt64]) -> [UInt8] {
        table("XSDT", revision: 1, body: entries.flatMap { [UInt8](littleEndian: $0, count: 8) })
    }

    /// FADT flag bits (ACPI 6.5 table 5.10).
    enum FADTFlags {
        /// No fixed power button (a control-method one, if any).
        static let powerButton: UInt32 = 1 << 4
        /// No fixed sleep button.
        static let sleepButton: UInt32 = 1 << 5
        /// RESET_REG is supported.
        static let resetRegisterSupported: UInt32 = 1 << 10
        /// Hardware-reduced ACPI: no fixed hardware, no SCI-driven PM1/GPE blocks.
        static let hardwareReduced: UInt32 = 1 << 20
    }

    /// IA-PC boot architecture flags (ACPI 6.5 table 5.11). The 8042 and "CMOS RTC not present" bits
    /// stay clear: Linux must not probe an i8042, and it may use the CMOS RTC.
    enum BootArchitectureFlags {
        /// No VGA.
        static let vgaNotPresent: UInt16 = 1 << 2
    }

    /// A Generic Address Structure for an 8-bit, byte-accessed register in system I/O space.
    static func ioRegister(_ port: UInt16) -> [UInt8] {
        [1, 8, 0, 1] + [UInt8](littleEndian: port, count: 8)  // SystemIO, 8 bits, offset 0, byte access
    }

    /// The ACPI 6.5 FADT (revision 6, minor 5) for a hardware-reduced platform.
    static func fadt(_ configuration: ACPIConfiguration, dsdtAddress: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: fadtLength - headerLength)
        func put(_ bytes: [UInt8], at offset: Int) {
            body.replaceSubrange(offset - headerLength..<offset - headerLength + bytes.count, with: bytes)
        }
        put([UInt8](littleEndian: UInt32(0), count: 4), at: 36)  // FIRMWARE_CTRL: no FACS
        put([UInt8](littleEndian: dsdtAddress <= UInt64(UInt32.max) ? UInt32(dsdtAddress) : 0, count: 4), at: 40)
        put([UInt8](littleEndian: UInt16(9), count: 2), at: 46)  // SCI_INT, matching the MADT's IRQ 9 override
        put([UInt8](littleEndian: BootArchitectureFlags.vgaNotPresent, count: 2), at: 109)
        let flags = FADTFlags.powerButton | FADTFlags.sleepButton | FADTFlags.resetRegisterSupported
            | FADTFlags.hardwareReduced
        put([UInt8](littleEndian: flags, count: 4), at: 112)
        put(ioRegister(configuration.powerPort &+ 2), at: 116)  // RESET_REG
        put([configuration.resetValue], at: 128)  // RESET_VALUE
        put([5], at: 131)  // FADT minor version: ACPI 6.5
        put([UInt8](littleEndian: dsdtAddress, count: 8), at: 140)  // X_DSDT
        put(ioRegister(configuration.powerPort), at: 244)  // SLEEP_CONTROL_REG
        put(ioRegister(configuration.powerPort &+ 1), at: 256)  // SLEEP_STATUS_REG
        put(ascii(hypervisorVendorID, count: 8), at: 268)
        return table("FACP", revision: 6, body: body)
    }

    /// The MADT (revision 5): one enabled local APIC per vCPU, the IOAPIC, IRQ 9 as a level-triggered
    /// active-high GSI 9, and LINT1 as NMI on every processor.
    static func madt(_ configuration: ACPIConfiguration) -> [UInt8] {
        var body = [UInt8](littleEndian: configuration.localAPICAddress, count: 4)
        body += [UInt8](littleEndian: UInt32(1), count: 4)  // PCAT_COMPAT
        for index in 0..<configuration.vcpuCount {
            // Processor Local APIC: UID, APIC ID, flags (enabled).
            body += [0, 8, UInt8(index), UInt8(index)] + [UInt8](littleEndian: UInt32(1), count: 4)
        }
        // I/O APIC: ID, reserved, address, GSI base.
        body += [1, 12, configuration.ioapicID, 0] + [UInt8](littleEndian: configuration.ioapicAddress, count: 4)
            + [UInt8](littleEndian: UInt32(0), count: 4)
        // Interrupt Source Override: bus ISA, IRQ 9 → GSI 9, active-high (01) level-triggered (11 << 2).
        body += [2, 10, 0, 9] + [UInt8](littleEndian: UInt32(9), count: 4) + [UInt8](littleEndian: UInt16(0x000d), count: 2)
        // Local APIC NMI: all processors, conforming flags, LINT1.
        body += [4, 6, 0xff] + [UInt8](littleEndian: UInt16(0), count: 2) + [1]
        return table("APIC", revision: 5, body: body)
    }

    /// The DSDT (revision 2, 64-bit integers): `\_SB` with the serial ports, the RTC, the pvpanic
    /// port and the virtio-mmio devices, and `\_S5` for power-off.
    static func dsdt(_ configuration: ACPIConfiguration) throws(ACPIError) -> [UInt8] {
        var devices: [AML] = []
        for (index, serial) in configuration.serialPorts.enumerated() {
            devices.append(try .device("COM\(index + 1)", [
                try .name("_HID", .eisaID("PNP0501")),
                try .name("_UID", .integer(index + 1)),
                try .name("_CRS", .resourceTemplate([
                    .io(minimum: serial.port, maximum: serial.port, alignment: 1, length: 8),
                    .irqNoFlags(serial.irq),
                ])),
            ]))
        }
        if configuration.hasCMOSClock {
            devices.append(try .device("RTC", [
                try .name("_HID", .eisaID("PNP0B00")),
                try .name("_CRS", .resourceTemplate([
                    .io(minimum: configuration.cmosPort, maximum: configuration.cmosPort, alignment: 1, length: 2),
                ])),
            ]))
        }
        if let port = configuration.pvpanicPort {
            devices.append(try .device("PEVT", [
                try .name("_HID", .string("QEMU0001")),
                try .name("_CRS", .resourceTemplate([.io(minimum: port, maximum: port, alignment: 1, length: 1)])),
            ]))
        }
        for (index, device) in configuration.virtioMMIODevices.enumerated() {
            let digits = String(index)
            devices.append(try .device("VR" + String(repeating: "0", count: 2 - digits.count) + digits, [
                try .name("_HID", .string("LNRO0005")),
                try .name("_UID", .integer(index)),
                try .name("_CCA", .one),
                try .name("_CRS", .resourceTemplate([
                    .memory32Fixed(writable: true, base: UInt32(device.base), length: UInt32(device.size)),
                    .interrupt(trigger: device.trigger, polarity: .activeHigh, shared: false, [device.gsi]),
                ])),
            ]))
        }
        let s5 = try AML.name("\\_S5", .package([.integer(configuration.s5SleepType), .zero, .zero, .zero]))
        let body = try AML.scope("\\_SB", devices).bytes + s5.bytes
        return table("DSDT", revision: 2, body: body)
    }

    /// `string`'s ASCII bytes, truncated or space-padded to `count`.
    static func ascii(_ string: String, count: Int) -> [UInt8] {
        let bytes = Array(string.utf8.prefix(count))
        return bytes + Array(repeating: UInt8(ascii: " "), count: count - bytes.count)
    }
}
