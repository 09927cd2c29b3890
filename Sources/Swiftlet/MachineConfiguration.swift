import SwiftletAllocator
import SwiftletDispatcher
import SwiftletVirtio

/// Where the guest's console goes.
public enum ConsoleConfiguration: Equatable, Sendable {
    /// Standard output; standard input feeds the guest (raw mode on a terminal).
    case stdio
    /// Standard output and input through a virtio console (the guest's `hvc0`, with the terminal's
    /// size if standard output is one). The UART stays, its output going to standard output as
    /// well (for `earlyprintk=ttyS0`-style use), but it takes no input.
    case virtio
    /// Nowhere.
    case off
    /// A file, created or truncated.
    case file(String)
}

/// A raw disk image attached as a virtio block device.
public struct DiskConfiguration: Equatable, Sendable {
    /// The image file (raw: sector n at byte 512·n).
    public var path: String
    /// Attach it read-only (`VIRTIO_BLK_F_RO`; the image is opened `O_RDONLY` with a shared lock).
    public var readOnly: Bool
    /// The disk's id: unique in the machine, and the serial the guest reads (`GET_ID`, at most 20 bytes).
    public var id: String

    /// Describes a disk.
    public init(path: String, readOnly: Bool = false, id: String) {
        self.path = path
        self.readOnly = readOnly
        self.id = id
    }
}

/// A virtio socket device in Firecracker's hybrid model.
public struct VsockConfiguration: Equatable, Sendable {
    /// The guest's CID (3 or more; 0–2 are reserved).
    public var cid: UInt32
    /// The Unix socket host clients connect to (`CONNECT <port>\n`); guest connections to host
    /// port P reach `<socketPath>_<P>`.
    public var socketPath: String

    /// Describes a vsock device.
    public init(cid: UInt32, socketPath: String) {
        self.cid = cid
        self.socketPath = socketPath
    }
}

/// A network card (virtio-net) and where its frames go.
public struct NetworkConfiguration: Equatable, Sendable {
    /// The host side of the card.
    public enum Backend: Equatable, Sendable {
        /// The TAP interface of this name (`IFF_VNET_HDR`: checksum and TSO offloads pass through).
        case tap(String)
        /// A `passt` process Swiftlet starts (user-mode networking, no privileges, no offloads).
        case passt
    }
    /// The host side.
    public var backend: Backend
    /// The card's MAC address (6 bytes, unicast).
    public var mac: [UInt8]

    /// Describes a card; the MAC defaults to ``VirtioNet``'s locally administered 06:00:ac:10:00:02.
    public init(backend: Backend, mac: [UInt8] = VirtioNet.defaultMAC) {
        self.backend = backend
        self.mac = mac
    }
}

/// Everything needed to build and boot one microVM.
public struct MachineConfiguration: Equatable, Sendable {
    /// The kernel: a bzImage or an ELF vmlinux with a PVH note.
    public var kernelPath: String
    /// An optional initrd/initramfs.
    public var initrdPath: String?
    /// The kernel command line.
    public var commandLine: String
    /// The number of vCPUs.
    public var vcpuCount: Int
    /// Guest RAM in bytes (a whole number of MiB).
    public var memorySize: UInt64
    /// The serial console.
    public var console: ConsoleConfiguration
    /// Attach a virtio entropy device (virtio-rng) fed by the host's `getrandom`.
    public var entropy: Bool
    /// Disks, attached in order as virtio block devices (the guest's `vda`, `vdb`, …).
    public var disks: [DiskConfiguration]
    /// A vsock device, if any.
    public var vsock: VsockConfiguration?
    /// A network card, if any.
    public var network: NetworkConfiguration?
    /// Hide KVM's paravirtual CPUID features (for tiny test guests that must not `vmcall`).
    public var hideParavirtFeatures: Bool
    /// Create the in-kernel irqchip and PIT (off only for tiny test guests that exit with `hlt`).
    public var inKernelIRQChip: Bool
    /// The hypervisor device.
    public var kvmPath: String

    /// Creates a configuration with Swiftlet's defaults: 1 vCPU, 256 MiB, console on stdio, no virtio devices.
    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String = "",
                vcpuCount: Int = 1, memorySize: UInt64 = 256 << 20, console: ConsoleConfiguration = .stdio,
                entropy: Bool = false, disks: [DiskConfiguration] = [], vsock: VsockConfiguration? = nil,
                network: NetworkConfiguration? = nil,
                hideParavirtFeatures: Bool = false, inKernelIRQChip: Bool = true,
                kvmPath: String = "/dev/kvm") {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.vcpuCount = vcpuCount
        self.memorySize = memorySize
        self.console = console
        self.entropy = entropy
        self.disks = disks
        self.vsock = vsock
        self.network = network
        self.hideParavirtFeatures = hideParavirtFeatures
        self.inKernelIRQChip = inKernelIRQChip
        self.kvmPath = kvmPath
    }
}

/// How a run ended.
public struct RunOutcome: Equatable, Sendable {
    /// Why the machine stopped.
    public var reason: StopReason
    /// The exit status the guest reported for its command, if it did.
    public var guestExitStatus: UInt8?
    /// Time from Swiftlet's start to the guest's boot-complete signal, if it came.
    public var bootCompleteAfter: Duration?
}

/// A Swiftlet failure at the public boundary: what failed, in one line, and whether it was the
/// caller's input (``Kind/usage``), the host (``Kind/host``) or the guest (``Kind/guest``).
public struct SwiftletError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Who is at fault.
    public enum Kind: Sendable, Equatable {
        /// Bad configuration or input: fix the request.
        case usage
        /// The host could not do what was asked (KVM, memory, threads).
        case host
    }
    /// Who is at fault.
    public let kind: Kind
    /// The one-line message.
    public let message: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
