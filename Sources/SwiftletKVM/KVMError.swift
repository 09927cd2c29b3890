import SystemPackage

/// What went wrong talking to KVM. Each message says what failed, why, and what to do.
public enum KVMError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `/dev/kvm` could not be opened.
    case open(path: String, Errno)
    /// An ioctl failed.
    case ioctl(name: String, detail: String, Errno)
    /// The kernel speaks another KVM API version.
    case apiVersion(Int32)
    /// A capability Swiftlet needs is missing.
    case missingCapability(String)
    /// Mapping a vCPU's `kvm_run` area failed.
    case mapRun(Errno)
    /// A host call made for KVM failed (allocating an ioctl buffer, installing the kick handler).
    case host(String, Errno)

    public var description: String {
        switch self {
        case let .open(path, errno):
            switch errno {
            case .noSuchFileOrDirectory:
                return "\(path) does not exist: this host has no KVM (load kvm_intel or kvm_amd, or use the lab: scripts/lab)"
            case .permissionDenied:
                return "cannot open \(path): permission denied (add your user to the 'kvm' group or run as root)"
            default:
                return "cannot open \(path): \(errno)"
            }
        case let .ioctl(name, detail, errno):
            return "\(name)\(detail.isEmpty ? "" : " (\(detail))") failed: \(errno)"
        case let .apiVersion(version):
            return "KVM API version \(version) is not supported (need 12)"
        case let .missingCapability(name):
            return "KVM lacks \(name), which Swiftlet needs"
        case let .mapRun(errno):
            return "cannot map the vCPU run area: \(errno)"
        case let .host(what, errno):
            return "\(what) failed: \(errno)"
        }
    }
}
