#if canImport(Glibc)
import Glibc
#endif
import CSwiftletKVM
import SwiftletCore
import SwiftletMemory

/// A KVM virtual machine: memory slots, the in-kernel irqchip and PIT, vCPUs and IRQ lines.
public final class KVMVirtualMachine: @unchecked Sendable {
    let fd: OwnedFD
    let kvm: KVM

    init(fd: OwnedFD, kvm: KVM) {
        self.fd = fd
        self.kvm = kvm
    }

    /// Sets the three-page TSS area VMX needs (`KVM_SET_TSS_ADDR`).
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try kvmIoctl(fd.raw, CKVM_SET_TSS_ADDR, UInt(address), name: "KVM_SET_TSS_ADDR")
    }

    /// Sets the identity-map page VMX needs for real mode (`KVM_SET_IDENTITY_MAP_ADDR`).
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var value = address
        _ = try kvmIoctl(fd.raw, CKVM_SET_IDENTITY_MAP_ADDR, value: &value, name: "KVM_SET_IDENTITY_MAP_ADDR")
    }

    /// Creates the in-kernel PIC, IOAPIC and local APICs (`KVM_CREATE_IRQCHIP`).
    public func createIRQChip() throws(KVMError) {
        _ = try kvmIoctl(fd.raw, CKVM_CREATE_IRQCHIP, name: "KVM_CREATE_IRQCHIP")
    }

    /// Creates the in-kernel i8254 PIT (`KVM_CREATE_PIT2`).
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        _ = try kvmIoctl(fd.raw, CKVM_CREATE_PIT2, value: &config, name: "KVM_CREATE_PIT2")
    }

    /// Registers every region of `memory` as a memory slot (slot n = region n).
    public func registerMemory(_ memory: GuestMemory) throws(KVMError) {
        for (slot, region) in memory.regions.enumerated() {
            var descriptor = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: 0, guest_phys_addr: region.range.start.rawValue,
                memory_size: region.range.size, userspace_addr: UInt64(region.hostAddress))
            _ = try kvmIoctl(fd.raw, CKVM_SET_USER_MEMORY_REGION, value: &descriptor,
                             name: "KVM_SET_USER_MEMORY_REGION", detail: "slot \(slot) \(region.range)")
        }
    }

    /// Creates vCPU `index` (`KVM_CREATE_VCPU`) and maps its `kvm_run` area.
    public func createVirtualCPU(index: Int) throws(KVMError) -> KVMVirtualCPU {
        let vcpufd = try kvmIoctl(fd.raw, CKVM_CREATE_VCPU, UInt(index), name: "KVM_CREATE_VCPU", detail: "vCPU \(index)")
        return try KVMVirtualCPU(fd: OwnedFD(vcpufd), index: index, mapSize: kvm.vcpuMapSize)
    }

    /// Sets the level of interrupt line `gsi` (`KVM_IRQ_LINE`).
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        // SAFETY: `line` lives across the call; KVM reads sizeof(struct kvm_irq_level) bytes.
        _ = try unsafe withUnsafeMutablePointer(to: &line) { (pointer) throws(KVMError) -> Int32 in
            try unsafe kvmIoctl(fd.raw, CKVM_IRQ_LINE, pointer: UnsafeMutableRawPointer(pointer),
                                name: "KVM_IRQ_LINE", detail: "GSI \(gsi)")
        }
    }

    /// An ``InterruptLine`` that pulses `gsi` (an edge) on each trigger.
    public func interruptLine(gsi: UInt32) -> some InterruptLine { KVMEdgeLine(vm: self, gsi: gsi) }
}

/// An edge-triggered line on the in-kernel irqchip: raise, then lower.
struct KVMEdgeLine: InterruptLine {
    let vm: KVMVirtualMachine
    let gsi: UInt32

    func trigger() {
        // A failure here means the VM fd is gone (teardown); there is no guest-visible recovery.
        try? vm.setIRQLine(gsi, level: true)
        try? vm.setIRQLine(gsi, level: false)
    }
}
