import Testing
import SwiftletArch
@testable import SwiftletBoot

@Suite("ACPI tables") struct ACPITablesTests {
    static let virtio = (0..<3).map {
        VirtioMMIODeviceDescription(base: X86Layout.virtioMMIOStart + UInt64($0) * 0x1000, size: 0x1000, gsi: 5 + UInt32($0))
    }

    /// The bytes of the table at guest-physical `address`, checked to lie inside the blob.
    func table(at address: UInt64, in tables: ACPITables, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
        let base = tables.rsdpAddress
        try #require(address >= base && address + 36 <= base + UInt64(tables.bytes.count), sourceLocation: sourceLocation)
        let offset = Int(address - base)
        let length = Int(tables.bytes.le(offset + 4, as: UInt32.self))
        try #require(offset + length <= tables.bytes.count, sourceLocation: sourceLocation)
        return Array(tables.bytes[offset..<offset + length])
    }

    @Test(arguments: [1, 4, 254])
    func checksumsLengthsAndPointers(vcpus: Int) throws {
        let tables = try ACPITables.build(ACPIConfiguration(vcpuCount: vcpus, virtioMMIODevices: Self.virtio))
        #expect(tables.rsdpAddress == X86Layout.acpiTablesAddress)
        #expect(tables.tables.map(\.signature) == ["RSD PTR ", "XSDT", "FACP", "APIC", "DSDT"])
        #expect(UInt64(tables.bytes.count) <= X86Layout.acpiTablesEnd - X86Layout.acpiTablesAddress)

        // RSDP: both checksums, revision 2, length 36, no RSDT.
        let rsdp = try #require(tables.bytes(of: "RSD PTR "))
        #expect(tables.table("RSD PTR ")?.offset == 0)
        #expect(rsdp.count == 36)
        #expect(rsdp.ascii(0, 8) == "RSD PTR ")
        #expect(rsdp.prefix(20).byteSum == 0)
        #expect(rsdp.byteSum == 0)
        #expect(rsdp.ascii(9, 6) == "SWLET ")
        #expect(rsdp[15] == 2)
        #expect(rsdp.le(16, as: UInt32.self) == 0)
        #expect(rsdp.le(20, as: UInt32.self) == 36)

        // Every table: 16-byte aligned, checksum, header length, OEM fields.
        for entry in tables.tables where entry.signature != "RSD PTR " {
            let bytes = try #require(tables.bytes(of: entry.signature))
            #expect(entry.offset % 16 == 0)
            #expect(entry.address == tables.rsdpAddress + UInt64(entry.offset))
            #expect(bytes.ascii(0, 4) == entry.signature)
            #expect(Int(bytes.le(4, as: UInt32.self)) == entry.length, "\(entry.signature) length")
            #expect(bytes.byteSum == 0, "\(entry.signature) checksum")
            #expect(bytes.ascii(10, 6) == "SWLET ")
            #expect(bytes.ascii(16, 8) == "SWIFTLET")
            #expect(bytes.ascii(28, 4) == "SWLT")
        }

        // RSDP → XSDT → FADT, MADT; FADT → DSDT.
        let xsdt = try table(at: rsdp.le(24, as: UInt64.self), in: tables)
        #expect(xsdt.ascii(0, 4) == "XSDT")
        #expect(xsdt.count == 36 + 16)
        let fadt = try table(at: xsdt.le(36, as: UInt64.self), in: tables)
        let madt = try table(at: xsdt.le(44, as: UInt64.self), in: tables)
        #expect(fadt.ascii(0, 4) == "FACP")
        #expect(madt.ascii(0, 4) == "APIC")
        let dsdt = try table(at: fadt.le(140, as: UInt64.self), in: tables)
        #expect(dsdt.ascii(0, 4) == "DSDT")
        #expect(UInt64(fadt.le(40, as: UInt32.self)) == fadt.le(140, as: UInt64.self))
    }

    @Test func fadtFields() throws {
        let tables = try ACPITables.build(ACPIConfiguration(vcpuCount: 2))
        let fadt = try #require(tables.bytes(of: "FACP"))
        #expect(fadt.count == 276)
        #expect(fadt[8] == 6)  // revision
        #expect(fadt[131] == 5)  // minor version
        #expect(fadt.le(109, as: UInt16.self) == 0x0004)  // VGA not present only: no 8042, CMOS present
        #expect(fadt.le(112, as: UInt32.self) == (1 << 20 | 1 << 10 | 1 << 5 | 1 << 4))
        let port = UInt64(X86Layout.acpiPowerPort)
        // RESET_REG, RESET_VALUE.
        #expect(Array(fadt[116..<120]) == [1, 8, 0, 1])
        #expect(fadt.le(120, as: UInt64.self) == port + 2)
        #expect(fadt[128] == X86Layout.acpiResetValue)
        // SLEEP_CONTROL_REG, SLEEP_STATUS_REG.
        #expect(Array(fadt[244..<248]) == [1, 8, 0, 1])
        #expect(fadt.le(248, as: UInt64.self) == port)
        #expect(Array(fadt[256..<260]) == [1, 8, 0, 1])
        #expect(fadt.le(260, as: UInt64.self) == port + 1)
        #expect(fadt.ascii(268, 8) == "SWIFTLET")
        // No FACS, no legacy PM blocks.
        #expect(fadt.le(36, as: UInt32.self) == 0)
        #expect(fadt.le(132, as: UInt64.self) == 0)
        #expect(fadt.le(56, as: UInt32.self) == 0)
        #expect(fadt.le(64, as: UInt32.self) == 0)
    }

    /// The MADT's entries as (type, bytes).
    func madtEntries(_ madt: [UInt8]) throws -> [(type: UInt8, bytes: ArraySlice<UInt8>)] {
        var entries: [(UInt8, ArraySlice<UInt8>)] = []
        var offset = madt.startIndex + 44
        while offset < madt.endIndex {
            let length = Int(madt[offset + 1])
            try #require(length >= 2 && offset + length <= madt.endIndex)
            entries.append((madt[offset], madt[offset..<offset + length]))
            offset += length
        }
        return entries
    }

    @Test(arguments: [1, 4, 254])
    func madtDescribesEveryVCPU(vcpus: Int) throws {
        let tables = try ACPITables.build(ACPIConfiguration(vcpuCount: vcpus))
        let madt = try #require(tables.bytes(of: "APIC"))
        #expect(madt.le(36, as: UInt32.self) == UInt32(X86Layout.localAPICAddress))
        #expect(madt.le(40, as: UInt32.self) == 1)
        let entries = try madtEntries(madt)
        let lapics = entries.filter { $0.type == 0 }
        #expect(lapics.count == vcpus)
        for (index, lapic) in lapics.enumerated() {
            #expect(lapic.bytes.count == 8)
            #expect(lapic.bytes.dropFirst(2).first == UInt8(index))  // processor UID
            #expect(lapic.bytes.dropFirst(3).first == UInt8(index))  // APIC ID
            #expect(lapic.bytes.le(4, as: UInt32.self) == 1)
        }
        let ioapic = try #require(entries.first { $0.type == 1 }).bytes
        #expect(ioapic.count == 12)
        #expect(ioapic.le(4, as: UInt32.self) == UInt32(X86Layout.ioapicAddress))
        #expect(ioapic.le(8, as: UInt32.self) == 0)
        let override = try #require(entries.first { $0.type == 2 }).bytes
        #expect(Array(override) == [2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0])
        let nmi = try #require(entries.first { $0.type == 4 }).bytes
        #expect(Array(nmi) == [4, 6, 0xff, 0, 0, 1])
        #expect(entries.count == vcpus + 3)
    }

    @Test(arguments: [0, 255, -1])
    func refusesUnsupportedVCPUCounts(vcpus: Int) {
        #expect(throws: ACPIError.vcpuCountOutOfRange(vcpus)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: vcpus))
        }
    }

    @Test func refusesBadPlacementAndDevices() {
        #expect(throws: ACPIError.misalignedBase(0xe0008)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 1), at: 0xe0008)
        }
        #expect {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 254), at: 0xe0000, limit: 0xe0400)
        } throws: { error in
            guard case .tablesTooLarge(0xe0000, _, 0xe0400) = error as? ACPIError else { return false }
            return "\(error)".contains("raise the limit")
        }
        #expect(throws: ACPIError.tooManyVirtioDevices(101)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 1, virtioMMIODevices: Array(repeating: Self.virtio[0], count: 101)))
        }
        #expect(throws: ACPIError.virtioWindowUnrepresentable(index: 0, base: 0xffff_f000, size: 0x2000)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 1, virtioMMIODevices: [.init(base: 0xffff_f000, size: 0x2000, gsi: 5)]))
        }
        #expect(throws: ACPIError.serialIRQOutOfRange(port: 0x2f8, irq: 20)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 1, serialPorts: [.init(port: 0x2f8, irq: 20)]))
        }
        #expect(throws: ACPIError.tooManySerialPorts(10)) {
            try ACPITables.build(ACPIConfiguration(vcpuCount: 1, serialPorts: Array(repeating: .com1, count: 10)))
        }
    }

    @Test func largestConfigurationFitsTheDefaultArea() throws {
        let devices = (0..<100).map {
            VirtioMMIODeviceDescription(base: X86Layout.virtioMMIOStart + UInt64($0) * 0x1000, gsi: 5 + UInt32($0 % 19))
        }
        let tables = try ACPITables.build(ACPIConfiguration(vcpuCount: 254, serialPorts: Array(repeating: .com1, count: 9),
                                                             virtioMMIODevices: devices))
        #expect(tables.bytes.count < 0x2_0000)
        #expect(tables.bytes(of: "DSDT")?.byteSum == 0)
    }

    @Test func dsdtFollowsTheDeviceList() throws {
        func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
            haystack.indices.contains { haystack[$0...].starts(with: needle) }
        }
        let rtcID = try AML.eisaID("PNP0B00").bytes
        let bare = try #require(try ACPITables.build(ACPIConfiguration(vcpuCount: 1, serialPorts: [], hasCMOSClock: false)).bytes(of: "DSDT"))
        #expect(!contains(bare, rtcID))
        #expect(!contains(bare, Array("COM1".utf8)))
        #expect(contains(bare, Array("_S5_".utf8)))
        let full = try #require(try ACPITables.build(ACPIConfiguration(vcpuCount: 1, serialPorts: [.com1, .init(port: 0x2f8, irq: 3)])).bytes(of: "DSDT"))
        #expect(contains(full, rtcID))
        #expect(contains(full, Array("COM2".utf8) + [0x08] + Array("_HID".utf8)))
        #expect(contains(full, [0x22, 0x08, 0x00]))  // IRQNoFlags {3}
    }

    @Test func errorMessagesAreOneLine() {
        let errors: [ACPIError] = [
            .vcpuCountOutOfRange(0), .tooManySerialPorts(10), .serialIRQOutOfRange(port: 0x3f8, irq: 99),
            .tooManyVirtioDevices(101), .virtioWindowUnrepresentable(index: 1, base: 0, size: 0), .misalignedBase(1),
            .tablesTooLarge(base: 0xe0000, needed: 1, limit: 0), .invalidNameSegment("x"), .invalidNamePath(""),
            .invalidEISAID("x"), .invalidString("x"), .packageTooLong(300), .packageLengthTooLarge(1 << 30),
            .invalidMethodArgumentCount(9), .legacyIRQOutOfRange(16), .invalidInterruptCount(0),
        ]
        for error in errors {
            #expect(!error.description.isEmpty)
            #expect(!error.description.contains("\n"))
        }
    }
}
