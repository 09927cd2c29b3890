#if canImport(Glibc)
import Glibc
#endif
import CSwiftletKVM
import SwiftletArch
import SystemPackage

/// The one funnel every KVM ioctl goes through: retries `EINTR` unless told not to, and turns
/// `-errno` into a typed ``KVMError`` naming the request.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ argument: UInt = 0, name: String, detail: String = "",
              retryOnInterrupt: Bool = true) throws(KVMError) -> Int32 {
    while true {
        let result = ckvm_ioctl(fd, request, argument)
        if result >= 0 { return result }
        if result == -EINTR && retryOnInterrupt { continue }
        throw .ioctl(name: name, detail: detail, Errno(rawValue: -result))
    }
}

/// The same funnel for ioctls whose argument is a pointer.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, pointer: UnsafeMutableRawPointer?, name: String, detail: String = "",
              retryOnInterrupt: Bool = true) throws(KVMError) -> Int32 {
    while true {
        // SAFETY: callers pass a pointer to a live struct of the size `request` encodes.
        let result = unsafe ckvm_ioctl_ptr(fd, request, pointer)
        if result >= 0 { return result }
        if result == -EINTR && retryOnInterrupt { continue }
        throw .ioctl(name: name, detail: detail, Errno(rawValue: -result))
    }
}

/// Passes `&value` to an ioctl; the pointer never escapes the call.
@inline(__always)
func kvmIoctl<T: BitwiseCopyable>(_ fd: Int32, _ request: UInt, value: inout T, name: String,
                                   detail: String = "") throws(KVMError) -> Int32 {
    // SAFETY: `value` is a plain C struct that lives across the call; the kernel reads/writes
    // exactly MemoryLayout<T>.size bytes (the size encoded in `request`).
    try unsafe withUnsafeMutablePointer(to: &value) { (pointer) throws(KVMError) -> Int32 in
        try unsafe kvmIoctl(fd, request, pointer: UnsafeMutableRawPointer(pointer), name: name, detail: detail)
    }
}

/// An open descriptor that closes itself.
final class OwnedFD: @unchecked Sendable {
    let raw: Int32
    init(_ raw: Int32) { self.raw = raw }
    deinit { close(raw) }
}

/// The host's KVM: `/dev/kvm`, its capabilities and supported CPUID.
///
/// The corresponding device is `/dev/kvm`; ioctls `KVM_GET_API_VERSION`, `KVM_CHECK_EXTENSION`,
/// `KVM_GET_SUPPORTED_CPUID`, `KVM_CREATE_VM`.
public final class KVM: @unchecked Sendable {
    let fd: OwnedFD
    /// The size of each vCPU's `kvm_run` mapping.
    public let vcpuMapSize: Int

    /// Opens `path` (normally `/dev/kvm`) and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = unsafe open(path, O_RDWR | O_CLOEXEC)
        guard raw >= 0 else { throw .open(path: path, Errno(rawValue: errno)) }
        fd = OwnedFD(raw)
        let version = try kvmIoctl(raw, CKVM_GET_API_VERSION, name: "KVM_GET_API_VERSION")
        guard version == KVM_API_VERSION else { throw .apiVersion(version) }
        vcpuMapSize = Int(try kvmIoctl(raw, CKVM_GET_VCPU_MMAP_SIZE, name: "KVM_GET_VCPU_MMAP_SIZE"))
        for (capability, name) in [(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                                   (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"), (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
                                   (KVM_CAP_PIT2, "KVM_CAP_PIT2"), (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")] {
            guard try capabilityValue(capability) > 0 else { throw .missingCapability(name) }
        }
    }

    /// The value `KVM_CHECK_EXTENSION` reports for `capability` (0 = absent).
    public func capabilityValue(_ capability: Int32) throws(KVMError) -> Int32 {
        try kvmIoctl(fd.raw, CKVM_CHECK_EXTENSION, UInt(capability), name: "KVM_CHECK_EXTENSION")
    }

    /// The most vCPUs one VM may have (`KVM_CAP_MAX_VCPUS`, else `KVM_CAP_NR_VCPUS`, else 4).
    public func maxVCPUs() throws(KVMError) -> Int {
        let max = try capabilityValue(KVM_CAP_MAX_VCPUS)
        if max > 0 { return Int(max) }
        let recommended = try capabilityValue(KVM_CAP_NR_VCPUS)
        return recommended > 0 ? Int(recommended) : 4
    }

    /// The CPUID leaves KVM can expose (`KVM_GET_SUPPORTED_CPUID`), growing the buffer on `E2BIG`.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var capacity: UInt32 = 128
        while true {
            // SAFETY: calloc'd header + `capacity` entries, freed below; only read up to `nent`.
            guard let buffer = unsafe ckvm_cpuid2_alloc(capacity) else { throw .host("allocating CPUID buffer", .noMemory) }
            defer { unsafe free(buffer) }
            do {
                _ = try unsafe kvmIoctl(fd.raw, CKVM_GET_SUPPORTED_CPUID, pointer: UnsafeMutableRawPointer(buffer),
                                        name: "KVM_GET_SUPPORTED_CPUID")
            } catch let error {
                if case let .ioctl(_, _, errno) = error, errno == Errno(rawValue: E2BIG), capacity < 4096 {
                    capacity *= 2
                    continue
                }
                throw error
            }
            let count = Int(unsafe buffer.pointee.nent)
            let entries = unsafe ckvm_cpuid2_entries(buffer)
            return (0..<count).map { i in
                let e = unsafe entries[i]
                return CPUIDEntry(function: e.function, index: e.index, flags: e.flags,
                                  eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
            }
        }
    }

    /// Creates a VM (`KVM_CREATE_VM`).
    public func createVirtualMachine() throws(KVMError) -> KVMVirtualMachine {
        let vmfd = try kvmIoctl(fd.raw, CKVM_CREATE_VM, 0, name: "KVM_CREATE_VM")
        return KVMVirtualMachine(fd: OwnedFD(vmfd), kvm: self)
    }
}
