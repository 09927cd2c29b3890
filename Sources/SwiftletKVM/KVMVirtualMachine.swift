#if canImport(Glibc)
import Glibc
#endif
import CSwiftletKVM
import SwiftletCore
import SwiftletHost
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

    /// Routes `event` to interrupt line `gsi` (`KVM_IRQFD`, no resample fd): each signal on the
    /// eventfd is one edge on the line, raised by KVM without an ioctl or a lock in Swiftlet.
    public func registerIRQFD(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(bitPattern: event.fd)
        irqfd.gsi = gsi
        _ = try kvmIoctl(fd.raw, CKVM_IRQFD, value: &irqfd, name: "KVM_IRQFD", detail: "GSI \(gsi)")
    }

    /// An ``InterruptLine`` for `gsi` backed by an irqfd: a trigger is one eventfd write.
    public func interruptLine(gsi: UInt32) throws(KVMError) -> IRQFDLine {
        let event: EventFD
        do {
            event = try EventFD()
        } catch {
            throw .host(error.what, error.errno)
        }
        try registerIRQFD(event, gsi: gsi)
        return IRQFDLine(event: event)
    }

    /// Makes a guest write of `length` bytes (1, 2, 4 or 8) at `address` signal `event` instead of
    /// exiting to Swiftlet (`KVM_IOEVENTFD`): on the MMIO bus, or on the port-I/O bus if `pio`; with
    /// `datamatch`, only writes of that value do. A virtio queue's notification arrives this way.
    public func registerIOEvent(_ event: EventFD, address: UInt64, length: UInt32, pio: Bool = false,
                                datamatch: UInt64? = nil) throws(KVMError) {
        var ioeventfd = kvm_ioeventfd()
        ioeventfd.addr = address
        ioeventfd.len = length
        ioeventfd.fd = event.fd
        ioeventfd.datamatch = datamatch ?? 0
        ioeventfd.flags = (datamatch != nil ? CKVM_IOEVENTFD_FLAG_DATAMATCH : 0) | (pio ? CKVM_IOEVENTFD_FLAG_PIO : 0)
        _ = try kvmIoctl(fd.raw, CKVM_IOEVENTFD, value: &ioeventfd, name: "KVM_IOEVENTFD",
                         detail: "\(pio ? "port" : "MMIO") 0x\(String(address, radix: 16)), \(length) bytes")
    }
}

/// An edge-triggered line on the in-kernel irqchip through an irqfd.
public struct IRQFDLine: InterruptLine {
    let event: EventFD

    public func trigger() { event.signal() }
}
