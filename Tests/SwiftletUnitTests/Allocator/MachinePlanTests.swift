import Testing
import SwiftletArch
import SwiftletMemory
@testable import SwiftletAllocator

@Suite("Machine plan") struct MachinePlanTests {
    let limits = ResourceLimits(maximumMemory: 16 << 30, maximumVCPUs: 8)

    @Test func smallMemoryHasNoHoleAndAReservedLegacyArea() throws {
        let plan = try MachinePlan(vcpuCount: 1, memorySize: 256 << 20, limits: limits).memory
        #expect(plan.ranges == [GuestRange(start: GuestAddress(0), size: 256 << 20)!])
        #expect(plan.lowRAMEnd == 256 << 20)
        #expect(plan.e820 == [
            E820Entry(address: 0, size: 0x9_fc00, kind: .ram),
            E820Entry(address: 0x9_fc00, size: 0x10_0000 - 0x9_fc00, kind: .reserved),
            E820Entry(address: 0x10_0000, size: (256 << 20) - 0x10_0000, kind: .ram),
        ])
    }

    @Test func largeMemorySplitsAroundTheMMIOHole() throws {
        let plan = try MachinePlan(vcpuCount: 2, memorySize: 4 << 30, limits: limits).memory
        #expect(plan.ranges == [GuestRange(start: GuestAddress(0), size: 3 << 30)!,
                                GuestRange(start: GuestAddress(4 << 30), size: 1 << 30)!])
        #expect(plan.lowRAMEnd == 3 << 30)
        #expect(plan.e820.last == E820Entry(address: 4 << 30, size: 1 << 30, kind: .ram))
        let ram = plan.e820.filter { $0.kind == .ram }.reduce(0) { $0 + $1.size }
        #expect(ram == (4 << 30) - (0x10_0000 - 0x9_fc00))
        // Nothing in the map touches the MMIO hole.
        #expect(!plan.e820.contains { $0.address < X86Layout.mmioHoleEnd && $0.address + $0.size > X86Layout.mmioHoleStart })
    }

    @Test func exactlyThreeGiBNeedsNoHighRegion() throws {
        let plan = try MachinePlan(vcpuCount: 1, memorySize: 3 << 30, limits: limits).memory
        #expect(plan.ranges.count == 1)
        #expect(plan.lowRAMEnd == X86Layout.mmioHoleStart)
    }

    @Test func limitsAreEnforcedWithMessagesThatSayWhatToChange() {
        #expect(throws: AllocatorError.tooFewVCPUs(0)) { try MachinePlan(vcpuCount: 0, memorySize: 256 << 20, limits: limits) }
        #expect(throws: AllocatorError.tooManyVCPUs(requested: 9, limit: 8)) {
            try MachinePlan(vcpuCount: 9, memorySize: 256 << 20, limits: limits)
        }
        #expect(throws: AllocatorError.memoryTooSmall(requested: 1 << 20, minimum: 16 << 20)) {
            try MachinePlan(vcpuCount: 1, memorySize: 1 << 20, limits: limits)
        }
        #expect(throws: AllocatorError.memoryTooLarge(requested: 32 << 30, limit: 16 << 30)) {
            try MachinePlan(vcpuCount: 1, memorySize: 32 << 30, limits: limits)
        }
        #expect(throws: AllocatorError.memoryNotAligned((256 << 20) + 1)) {
            try MachinePlan(vcpuCount: 1, memorySize: (256 << 20) + 1, limits: limits)
        }
        #expect(AllocatorError.tooManyVCPUs(requested: 9, limit: 8).description == "--cpus 9: at most 8 vCPUs are allowed here")
        #expect(ResourceLimits(maximumMemory: 1, maximumVCPUs: 1000).maximumVCPUs == 254)
    }

    @Test func aPlanWithNoRoomForTheLegacyAreaIsRefusedNotACrash() {
        #expect(MemoryPlan(memory: 0) == nil)
        #expect(MemoryPlan(memory: 1 << 20) == nil)
        let lax = ResourceLimits(maximumMemory: 16 << 30, maximumVCPUs: 8, minimumMemory: 0)
        #expect(throws: AllocatorError.memoryTooSmall(requested: 1 << 20, minimum: 2 << 20)) {
            try MachinePlan(vcpuCount: 1, memorySize: 1 << 20, limits: lax)
        }
    }

    @Test func irqAllocationSkipsFixedLinesAndRunsOut() throws {
        var irqs = IRQAllocator(lines: 7...10)
        #expect(try irqs.allocate() == 7)
        #expect(try irqs.allocate() == 10)
        #expect(throws: AllocatorError.irqExhausted) { try irqs.allocate() }
    }
}
