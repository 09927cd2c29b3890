import Testing
import SwiftletArch
@testable import SwiftletBoot

/// Cross-checks the tables with the ACPICA disassembler. Needs `iasl` (Debian: acpica-tools); fails
/// without it.
@Suite("ACPI iasl") struct ACPIIASLTests {
    static func configuration(virtioDevices: Int) -> ACPIConfiguration {
        ACPIConfiguration(vcpuCount: 4, virtioMMIODevices: (0..<virtioDevices).map {
            VirtioMMIODeviceDescription(base: X86Layout.virtioMMIOStart + UInt64($0) * 0x1000, gsi: 5 + UInt32($0))
        })
    }

    func expectClean(_ result: IASL.Result, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 0, "iasl -d \(name).dat exited \(result.status): \(result.output)", sourceLocation: sourceLocation)
        #expect(!IASL.reportsError(result.output), "\(result.output)", sourceLocation: sourceLocation)
        #expect(!result.disassembly.contains("Error"), "\(result.disassembly)", sourceLocation: sourceLocation)
        #expect(!result.disassembly.isEmpty, "iasl wrote no \(name).dsl: \(result.output)", sourceLocation: sourceLocation)
    }

    @Test(arguments: ["XSDT", "FACP", "APIC", "DSDT"])
    func disassemblesCleanly(signature: String) throws {
        let tables = try ACPITables.build(Self.configuration(virtioDevices: 2))
        let table = try #require(tables.bytes(of: signature))
        let name = ["FACP": "FADT", "APIC": "MADT"][signature] ?? signature
        let result = try IASL.disassemble(table, name: name)
        expectClean(result, name)
        switch signature {
        case "FACP":
            #expect(result.disassembly.contains("Hardware Reduced (V5) : 1"))
            #expect(result.disassembly.contains("Hypervisor ID : 54454C5446495753"))  // "SWIFTLET"
        case "APIC":
            #expect(result.disassembly.components(separatedBy: "Subtable Type : 00 [Processor Local APIC]").count == 5)
        default:
            break
        }
    }

    @Test(arguments: [0, 1, 8])
    func dsdtWithVirtioDevicesDisassemblesCleanly(virtioDevices: Int) throws {
        let tables = try ACPITables.build(Self.configuration(virtioDevices: virtioDevices))
        let result = try IASL.disassemble(try #require(tables.bytes(of: "DSDT")), name: "DSDT")
        expectClean(result, "DSDT")
        let dsl = result.disassembly
        #expect(dsl.contains("PNP0501"))
        #expect(dsl.contains("PNP0B00"))
        #expect(dsl.contains("_S5_"))
        #expect(dsl.contains("QEMU0001"))                      // pvpanic
        #expect(dsl.components(separatedBy: "\"LNRO0005\"").count - 1 == virtioDevices)
        if virtioDevices > 0 {
            #expect(dsl.contains("Device (VR00)"))
            #expect(dsl.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"))
            #expect(dsl.contains("0xD0000000"))
        }
        if virtioDevices == 8 { #expect(dsl.contains("Device (VR07)")) }
    }

    /// Recompiling the disassembly without optimizations gives back the same AML byte for byte.
    @Test func dsdtRoundTripsThroughTheCompiler() throws {
        let dsdt = try #require(try ACPITables.build(Self.configuration(virtioDevices: 3)).bytes(of: "DSDT"))
        let result = try IASL.disassemble(dsdt, name: "DSDT", recompile: true)
        expectClean(result, "DSDT")
        let aml = try #require(result.recompiled, "iasl -oa DSDT.dsl wrote no DSDT.aml: \(result.output)")
        #expect(Array(aml.dropFirst(36)) == Array(dsdt.dropFirst(36)))
    }
}

