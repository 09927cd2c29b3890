import Testing
import SwiftletCore
@testable import SwiftletArch

@Suite("CPUID policy") struct CPUIDPolicyTests {
    static let amd: [CPUIDEntry] = [
        CPUIDEntry(function: 0, eax: 0x10, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65),  // AuthenticAMD
        CPUIDEntry(function: 1, eax: 0x830f10, ebx: 0x0000_0800, ecx: 0x0, edx: 0x789_3fbff),
        CPUIDEntry(function: 0xb, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 0),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d),
        CPUIDEntry(function: 0x4000_0001, eax: 0x0100_7afb),
        CPUIDEntry(function: 0x8000_0001, ecx: 0x0),
        CPUIDEntry(function: 0x8000_0008, eax: 0x3030, ecx: 0x7007),
        CPUIDEntry(function: 0x8000_001e, eax: 9, ebx: 0x0100, ecx: 0x0300),
    ]

    func entry(_ entries: [CPUIDEntry], _ function: UInt32, _ index: UInt32 = 0) throws -> CPUIDEntry {
        try #require(entries.first { $0.function == function && $0.index == index })
    }

    @Test(arguments: [1, 2, 4, 8]) func topologyDescribesOneSocketOfNCores(count: Int) throws {
        let policy = CPUIDPolicy(vcpuCount: count)
        for index in 0..<count {
            let entries = policy.entries(for: index, from: Self.amd)
            let leaf1 = try entry(entries, 1)
            #expect(leaf1.ebx >> 24 == UInt32(index))                  // initial APIC ID
            #expect((leaf1.ebx >> 16) & 0xff == UInt32(count))         // logical processors
            #expect(leaf1.ebx & 0xffff == 0x0800)                      // CLFLUSH size kept
            #expect(leaf1.ecx & (1 << 31) != 0)                         // hypervisor bit
            #expect((leaf1.edx >> 28) & 1 == (count > 1 ? 1 : 0))
            let core = try entry(entries, 0xb, 1)
            #expect(core.ebx == UInt32(count))
            #expect(core.edx == UInt32(index))
            #expect(core.ecx == 0x201)
            #expect(1 << core.eax >= count)
            #expect(try entry(entries, 0xb, 0).ebx == 1)
            #expect(entries.filter { $0.function == 0xb }.count == 3)
            #expect(try entry(entries, 0x8000_0008).ecx & 0xff == UInt32(count - 1))
            #expect(try entry(entries, 0x8000_001e).eax == UInt32(index))
            #expect(try entry(entries, 0x4000_0001).eax == 0x0100_7afb)
        }
    }

    @Test func paravirtFeaturesCanBeHiddenButTheSignatureStays() throws {
        let entries = CPUIDPolicy(vcpuCount: 1, hideParavirtFeatures: true).entries(for: 0, from: Self.amd)
        #expect(try entry(entries, 0x4000_0001).eax == 0)
        #expect(try entry(entries, 0x4000_0000).ebx == 0x4b4d_564b)
    }
}

@Suite("Boot state") struct BootStateTests {
    @Test func gdtEntriesMatchTheClassicEncodings() {
        #expect(X86BootState.code64.gdtEntry == 0x00af_9b00_0000_ffff)
        #expect(X86BootState.data.gdtEntry == 0x00cf_9300_0000_ffff)
        #expect(X86BootState.code32.gdtEntry == 0x00cf_9b00_0000_ffff)
        #expect(X86BootState.gdtBytes.count == 48)
    }

    @Test func longModeEntryFollowsTheLinuxBootProtocol() throws {
        let state = X86BootState(mode: .linux64(entry: 0x10_0200, bootParams: 0x7000))
        #expect(state.registers.rip == 0x10_0200)
        #expect(state.registers.rsi == 0x7000)
        #expect(state.registers.rflags == 2)                         // interrupts off
        #expect(state.specialRegisters.cs.selector == 0x10)
        #expect(state.specialRegisters.ds.selector == 0x18)
        #expect(state.specialRegisters.cs.l)
        #expect(state.specialRegisters.efer & X86Bits.eferLongModeActive != 0)
        #expect(state.specialRegisters.cr0 & X86Bits.cr0Paging != 0)
        #expect(state.specialRegisters.cr0 & (1 << 30) == 0)          // caches enabled (CD clear)
        #expect(state.specialRegisters.cr3 == X86Layout.pageTablesAddress)
        let tables = try #require(state.memoryWrites.first { $0.address == X86Layout.pageTablesAddress })
        // PML4[0] → PDPT, PDPT[3] → fourth PD, and the 2 MiB page covering 3 GiB + 2 MiB.
        #expect(Array(tables.bytes[0..<8]) == [UInt8](littleEndian: 0xa003, count: 8))
        #expect(Array(tables.bytes[0x1018..<0x1020]) == [UInt8](littleEndian: 0xe003, count: 8))
        #expect(Array(tables.bytes[0x5008..<0x5010]) == [UInt8](littleEndian: 0xc020_0083, count: 8))
        // The tables end below the command line and the ACPI area.
        #expect(X86Layout.pageTablesAddress + UInt64(tables.bytes.count) <= X86Layout.commandLineAddress)
    }

    @Test func theResetVectorHoldsAnI8042ResetStubAboveTheACPIArea() throws {
        let state = X86BootState(mode: .linux64(entry: 0x10_0200, bootParams: 0x7000))
        let stub = try #require(state.memoryWrites.first { $0.address == 0xf_fff0 })
        #expect(stub.bytes.starts(with: [0xb0, 0xfe, 0xe6, 0x64]))     // mov al, 0xfe; out 0x64, al
        #expect(X86Layout.acpiTablesEnd <= X86Layout.resetVectorAddress)
        #expect(X86Layout.resetVectorAddress + UInt64(stub.bytes.count) <= X86Layout.kernelAddress)
    }

    @Test func pvhEntryIs32BitProtectedModeWithoutPaging() {
        let state = X86BootState(mode: .pvh(entry: 0x100_0000, startInfo: 0x7000))
        #expect(state.registers.rbx == 0x7000)
        #expect(state.registers.rip == 0x100_0000)
        #expect(state.specialRegisters.cs.db && !state.specialRegisters.cs.l)
        #expect(state.specialRegisters.cr0 & X86Bits.cr0Paging == 0)
        #expect(state.specialRegisters.cr0 & X86Bits.cr0ProtectionEnable != 0)
        #expect(state.specialRegisters.efer == 0)
        #expect(state.memoryWrites.map(\.address) == [X86Layout.gdtAddress, X86Layout.resetVectorAddress])
    }
}
