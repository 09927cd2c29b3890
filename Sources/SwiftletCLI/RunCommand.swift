import ArgumentParser
import FoundationEssentials
import Logging
import Swiftlet

/// `swiftlet`: the command-line entry point.
public struct SwiftletCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "swiftlet",
        abstract: "A KVM microVM monitor: boots a Linux guest and runs a command in it.",
        subcommands: [RunCommand.self])

    public init() {}
}

/// `swiftlet run`: boot a guest, optionally run one command in it, exit with its status.
public struct RunCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Boot a microVM; with `-- CMD ARGS...` run CMD in the default guest and exit with its status.",
        discussion: """
            Without --kernel, Swiftlet boots the default guest built by scripts/build-guest (looked up in \
            $SWIFTLET_GUEST_DIR, else $XDG_CACHE_HOME/swiftlet/guest, else ~/.cache/swiftlet/guest).
            Exit status: CMD's status; 0 when the guest powers off or reboots without reporting one \
            (e.g. no CMD, or CMD was `reboot`); 2 for bad input; 1 when the guest kernel panics, the \
            guest crashes (triple fault, KVM internal error) or the host fails; 128+N after signal N.
            """)

    /// The kernel to boot.
    @Option(help: ArgumentHelp("The guest kernel: a bzImage or an ELF vmlinux with a PVH note.", valueName: "path"))
    public var kernel: String?

    /// The initramfs.
    @Option(help: ArgumentHelp("An initramfs (defaults to the default guest's when --kernel is not given).", valueName: "path"))
    public var initrd: String?

    @Option(help: ArgumentHelp("The kernel command line (replaces Swiftlet's default; `-- CMD` is still appended).",
                               valueName: "string"))
    public var cmdline: String?

    /// The number of vCPUs.
    @Option(parsing: .unconditional, help: "The number of vCPUs.")
    public var cpus: Int = 1

    /// Guest memory as a size string.
    @Option(parsing: .unconditional,
            help: ArgumentHelp("Guest memory, e.g. 256M or 2G (binary units; a bare number means MiB).", valueName: "size"))
    public var memory: String = "256M"

    /// Where the console goes.
    @Option(help: ArgumentHelp("Where the console goes: stdio (the serial port ttyS0), virtio (stdio through a virtio "
                               + "console: the guest's hvc0, console=hvc0 in the default command line), off, or a "
                               + "file path (./virtio for a file named virtio).",
                               valueName: "stdio|virtio|off|path"))
    public var console: String = "stdio"

    /// Attach a virtio entropy device.
    @Flag(help: "Attach a virtio entropy device (virtio-rng, fed by the host's getrandom): the guest's /dev/hwrng.")
    public var rng = false

    /// Disk images, as `PATH[,ro][,id=NAME]`.
    @Option(name: .customLong("disk"),
            help: ArgumentHelp("Attach a raw disk image as a virtio block device (repeatable, up to 16: vda, vdb, … in "
                               + "order); ro attaches it read-only, id=NAME sets its id and serial (default vda, vdb, …).",
                               valueName: "path[,ro][,id=name]"))
    public var disks: [String] = []

    /// A vsock device, as `cid=N,socket=PATH`.
    @Option(help: ArgumentHelp("Attach a virtio socket device (Firecracker's hybrid model): the guest's CID (3 or more) "
                               + "and a Unix socket PATH where host clients write `CONNECT <port>\\n`; guest connections to "
                               + "host port P reach PATH_P.", valueName: "cid=N,socket=PATH"))
    public var vsock: String?
    /// The network card, as `tap=NAME[,mac=MAC]` or `passt[,mac=MAC]`.
    @Option(name: .customLong("net"),
            help: ArgumentHelp("Attach a virtio network card (once): tap=NAME uses the TAP interface NAME (create it "
                               + "first, e.g. ip tuntap add NAME mode tap user $USER); passt starts passt for "
                               + "user-mode networking without privileges (the guest gets an address by DHCP). "
                               + "mac=MAC sets its address (default 06:00:ac:10:00:02).",
                               valueName: "tap=name[,mac=mac]|passt[,mac=mac]"))
    public var net: String?

    /// The most `--disk`s one machine takes (each needs one of the interrupt lines virtio devices share).
    public static let maximumDisks = 16

    /// The log level on stderr.
    @Option(help: ArgumentHelp("Log level on stderr: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    public var logLevel: String = "warning"

    /// The command to run in the guest.
    @Argument(parsing: .postTerminator, help: ArgumentHelp("A command to run in the guest.", valueName: "cmd"))
    public var command: [String] = []

    public init() {}

    /// The default kernel command line: serial console, only critical kernel messages, reboot on panic through the i8042
    /// (`reboot=k`, as Firecracker does), and no PCI probing (the machine has no PCI bus).
    public static let defaultCommandLine = defaultCommandLine(console: "ttyS0")

    /// The default kernel command line with the console on `console` (`ttyS0`, or `hvc0` for `--console virtio`).
    static func defaultCommandLine(console: String) -> String {
        "console=\(console) quiet loglevel=3 panic=-1 reboot=k pci=off"
    }

    public mutating func validate() throws {
        guard cpus >= 1 else { throw ValidationError("--cpus \(cpus): a machine needs at least 1 vCPU") }
        guard ByteSize.parse(memory) != nil else {
            throw ValidationError("--memory '\(memory)' is not a size; use e.g. 256M or 2G")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        guard !console.isEmpty else { throw ValidationError("--console needs stdio, virtio, off or a file path") }
        guard disks.count <= Self.maximumDisks else {
            throw ValidationError("--disk given \(disks.count) times; a machine takes at most \(Self.maximumDisks) disks")
        }
        _ = try vsockConfiguration
        _ = try networkConfiguration
        var ids = Set<String>()
        for disk in try diskConfigurations where !ids.insert(disk.id).inserted {
            throw ValidationError("--disk: two disks have the id '\(disk.id)'; give each its own id=NAME")
        }
    }

    /// The disks, parsed from `--disk` (ids default to the guest's names: vda, vdb, …).
    public var diskConfigurations: [DiskConfiguration] {
        get throws(ValidationError) {
            var result: [DiskConfiguration] = []
            for (index, spec) in disks.enumerated() { result.append(try Self.parseDisk(spec, index: index)) }
            return result
        }
    }

    /// Parses one `--disk PATH[,ro][,id=NAME]` (a path cannot contain a comma).
    public static func parseDisk(_ spec: String, index: Int) throws(ValidationError) -> DiskConfiguration {
        let parts = spec.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else {
            throw ValidationError("--disk '\(spec)' has no image path; use --disk PATH[,ro][,id=NAME]")
        }
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var disk = DiskConfiguration(path: path, id: "vd" + String(letters[index % letters.count]))
        for option in parts.dropFirst() {
            if option == "ro" {
                disk.readOnly = true
            } else if option.hasPrefix("id=") {
                let id = String(option.dropFirst(3))
                let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
                guard (1...20).contains(id.utf8.count), id.allSatisfy(allowed.contains) else {
                    throw ValidationError("--disk '\(spec)': id '\(id)' must be 1 to 20 letters, digits, '.', '_' or '-'")
                }
                disk.id = id
            } else {
                throw ValidationError("--disk '\(spec)': unknown option '\(option)'; use ro or id=NAME")
            }
        }
        return disk
    }

    /// The vsock device, parsed from `--vsock`.
    public var vsockConfiguration: VsockConfiguration? {
        get throws(ValidationError) {
            guard let vsock else { return nil }
            return try Self.parseVsock(vsock)
        }
    }

    /// Parses `--vsock cid=N,socket=PATH` (in either order; a path cannot contain a comma).
    public static func parseVsock(_ spec: String) throws(ValidationError) -> VsockConfiguration {
        var cid: UInt32?
        var socket: String?
        for option in spec.split(separator: ",", omittingEmptySubsequences: false) {
            if option.hasPrefix("cid=") {
                let value = option.dropFirst(4)
                guard let number = UInt64(value), number >= 3, number < UInt64(UInt32.max) else {
                    throw ValidationError("--vsock '\(spec)': cid '\(value)' must be a number from 3 to 4294967294 (0-2 are reserved)")
                }
                cid = UInt32(number)
            } else if option.hasPrefix("socket=") {
                guard option.count > 7 else { throw ValidationError("--vsock '\(spec)': socket= needs a path") }
                socket = String(option.dropFirst(7))
            } else {
                throw ValidationError("--vsock '\(spec)': unknown option '\(option)'; use --vsock cid=N,socket=PATH")
            }
        }
        guard let cid else { throw ValidationError("--vsock '\(spec)' has no cid; use --vsock cid=N,socket=PATH") }
        guard let socket else { throw ValidationError("--vsock '\(spec)' has no socket path; use --vsock cid=N,socket=PATH") }
        return VsockConfiguration(cid: cid, socketPath: socket)
    }

    /// The network card, parsed from `--net`.
    public var networkConfiguration: NetworkConfiguration? {
        get throws(ValidationError) { try net.map(Self.parseNetwork) }
    }

    /// Parses one `--net tap=NAME[,mac=MAC]` or `--net passt[,mac=MAC]`.
    public static func parseNetwork(_ spec: String) throws(ValidationError) -> NetworkConfiguration {
        let parts = spec.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var network: NetworkConfiguration
        if parts[0] == "passt" {
            network = NetworkConfiguration(backend: .passt)
        } else if parts[0].hasPrefix("tap=") {
            let name = String(parts[0].dropFirst(4))
            guard (1...15).contains(name.utf8.count),
                  !name.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }), name != ".", name != ".." else {
                throw ValidationError("--net '\(spec)': TAP name '\(name)' must be 1 to 15 bytes without '/', ':' or spaces")
            }
            network = NetworkConfiguration(backend: .tap(name))
        } else {
            throw ValidationError("--net '\(spec)': use --net tap=NAME[,mac=MAC] or --net passt[,mac=MAC]")
        }
        for option in parts.dropFirst() {
            guard option.hasPrefix("mac=") else {
                throw ValidationError("--net '\(spec)': unknown option '\(option)'; use mac=MAC")
            }
            let text = option.dropFirst(4)
            let octets = text.split(separator: ":", omittingEmptySubsequences: false)
            let bytes = octets.compactMap { $0.utf8.count == 2 ? UInt8($0, radix: 16) : nil }
            guard octets.count == 6, bytes.count == 6 else {
                throw ValidationError("--net '\(spec)': MAC '\(text)' is not six hex pairs like 06:00:ac:10:00:02")
            }
            guard bytes[0] & 1 == 0, bytes != [0, 0, 0, 0, 0, 0] else {
                throw ValidationError("--net '\(spec)': MAC '\(text)' is multicast or zero; use a unicast address "
                                      + "(even first byte), e.g. 06:00:ac:10:00:02")
            }
            network.mac = bytes
        }
        return network
    }

    /// The console setting.
    public var consoleConfiguration: ConsoleConfiguration {
        switch console {
        case "stdio": return .stdio
        case "virtio": return .virtio
        case "off": return .off
        default: return .file(console)
        }
    }

    /// The kernel command line: `--cmdline` or the default (its console `hvc0` with `--console
    /// virtio`), plus the encoded command.
    public var kernelCommandLine: String {
        var line = cmdline ?? Self.defaultCommandLine(console: consoleConfiguration == .virtio ? "hvc0" : "ttyS0")
        if !command.isEmpty {
            line += " swiftlet.cmd=" + Data(shellQuote(command).utf8).base64EncodedString()
        }
        return line
    }

    /// The machine this invocation asks for, with the default guest resolved from `environment`.
    public func machineConfiguration(environment: [String: String]) throws(SwiftletError) -> MachineConfiguration {
        let kernelPath: String
        var initrdPath = initrd
        if let kernel {
            kernelPath = kernel
        } else {
            let directory = DefaultGuest.directory(environment: environment)
            kernelPath = directory + "/vmlinuz"
            if initrdPath == nil { initrdPath = directory + "/initrd.cpio" }
            guard DefaultGuest.exists(kernelPath) else {
                throw SwiftletError(.usage, "the default guest is not built (no \(kernelPath)); run scripts/build-guest or pass --kernel")
            }
        }
        let disks: [DiskConfiguration]
        let vsock: VsockConfiguration?
        let network: NetworkConfiguration?
        do {
            disks = try diskConfigurations
            vsock = try vsockConfiguration
            network = try networkConfiguration
        } catch {
            throw SwiftletError(.usage, error.message)
        }
        return MachineConfiguration(kernelPath: kernelPath, initrdPath: initrdPath, commandLine: kernelCommandLine,
                                    vcpuCount: cpus, memorySize: ByteSize.parse(memory) ?? 0,
                                    console: consoleConfiguration, entropy: rng,
                                    disks: disks, vsock: vsock, network: network)
    }
}
