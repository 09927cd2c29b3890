/// One CPUID leaf/subleaf result (hypervisor-neutral form of `kvm_cpuid_entry2`).
public struct CPUIDEntry: Equatable, Sendable {
    /// The leaf (EAX on input).
    public var function: UInt32
    /// The subleaf (ECX on input), when significant.
    public var index: UInt32
    /// Backend flags (KVM: bit 0 = the index is significant).
    public var flags: UInt32
    /// The output registers.
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32

    /// Creates an entry.
    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    /// KVM's "index is significant" flag.
    public static let significantIndex: UInt32 = 1
}

/// Adjusts the hypervisor's supported CPUID for one vCPU of a machine.
///
/// - Topology: one socket of `vcpuCount` single-threaded cores; the APIC ID is the vCPU index
///   (leaf 0x1 EBX, leaves 0xB and 0x1F, AMD leaves 0x80000008 and 0x8000001E, Intel leaf 0x4).
/// - The hypervisor bit (leaf 0x1 ECX bit 31) is set, and the KVM signature leaves stay.
/// - With `hideParavirtFeatures`, leaf 0x40000001 advertises no KVM paravirtual features, so a
///   guest never issues hypercalls (tiny test guests; see DEVELOPERS.md on `vmcall`).
public struct CPUIDPolicy: Sendable {
    /// The number of vCPUs in the machine.
    public var vcpuCount: Int
    /// Hide KVM's paravirtual features (leaf 0x40000001).
    public var hideParavirtFeatures: Bool

    /// Creates a policy.
    public init(vcpuCount: Int, hideParavirtFeatures: Bool = false) {
        self.vcpuCount = vcpuCount
        self.hideParavirtFeatures = hideParavirtFeatures
    }

    /// The number of APIC-ID bits needed to number `vcpuCount` cores.
    public var coreIDBits: UInt32 {
        var bits: UInt32 = 0
        while (1 << bits) < vcpuCount { bits += 1 }
        return bits
    }

    /// The CPUID table for vCPU `index`, derived from `supported`.
    public func entries(for index: Int, from supported: [CPUIDEntry]) -> [CPUIDEntry] {
        let apicID = UInt32(truncatingIfNeeded: index)
        let count = UInt32(truncatingIfNeeded: vcpuCount)
        let isIntel = supported.first { $0.function == 0 }.map { $0.ebx == 0x756e_6547 } ?? false  // "Genu"
        let maxBasic = supported.first { $0.function == 0 }?.eax ?? 0
        var result: [CPUIDEntry] = []
        for var entry in supported {
            switch entry.function {
            case 0x1:
                entry.ebx = (entry.ebx & 0x0000_ffff) | (min(count, 255) << 16) | (apicID << 24)
                entry.ecx |= 1 << 31                                   // hypervisor present
                if count > 1 { entry.edx |= 1 << 28 } else { entry.edx &= ~(1 << 28) }   // HTT
            case 0x4 where isIntel:
                entry.eax = (entry.eax & 0x03ff_ffff) | ((min(count, 64) - 1) << 26)
            case 0xb, 0x1f:
                continue                                               // rebuilt below
            case 0x4000_0001 where hideParavirtFeatures:
                entry.eax = 0
                entry.edx = 0
            case 0x8000_0001:
                if count > 1 { entry.ecx |= 1 << 1 } else { entry.ecx &= ~(1 << 1) }   // CmpLegacy
            case 0x8000_0008:
                entry.ecx = (entry.ecx & ~0xf0ff) | (coreIDBits << 12) | ((count - 1) & 0xff)
            case 0x8000_001e:
                entry.eax = apicID
                entry.ebx = (entry.ebx & ~0xffff) | (apicID & 0xff)     // compute unit, 1 thread each
                entry.ecx = entry.ecx & ~0x7ff                          // node 0, 1 node per socket
            default:
                break
            }
            result.append(entry)
        }
        for leaf: UInt32 in [0xb, 0x1f] where leaf <= maxBasic && supported.contains(where: { $0.function == leaf }) {
            let significant = CPUIDEntry.significantIndex
            result.append(CPUIDEntry(function: leaf, index: 0, flags: significant, eax: 0, ebx: 1, ecx: 1 << 8, edx: apicID))
            result.append(CPUIDEntry(function: leaf, index: 1, flags: significant, eax: coreIDBits, ebx: count,
                                     ecx: (2 << 8) | 1, edx: apicID))
            result.append(CPUIDEntry(function: leaf, index: 2, flags: significant, eax: 0, ebx: 0, ecx: 2, edx: apicID))
        }
        return result
    }
}
