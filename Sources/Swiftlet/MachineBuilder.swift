import Logging
import SwiftletAllocator
import SwiftletArch
import SwiftletBoot
import SwiftletCore
import SwiftletDevices
import SwiftletHost
import SwiftletKVM
import SwiftletMemory
import SwiftletVirtio

/// The steps that build a ``VirtualMachine``, one verb per stage (Firecracker's
/// `build_microvm_for_boot` shape). Each step turns its failures into a ``SwiftletError`` whose
/// kind says whose fault it is: `.usage` for the caller's input, `.host` for the host.
extension VirtualMachine {
    /// Opens the hypervisor device; a missing or inaccessible one is the caller's to fix.
    static func openHypervisor(at path: String) throws(SwiftletError) -> KVM {
        do {
            return try KVM(path: path)
        } catch {
            if case .open = error { throw SwiftletError(.usage, error.description) }
            throw SwiftletError(.host, error.description)
        }
    }

    /// Checks the requested vCPUs and memory against this host and lays out the address map.
    static func plan(_ configuration: MachineConfiguration, kvm: KVM) throws(SwiftletError) -> MachinePlan {
        do {
            let limits = ResourceLimits(maximumMemory: min(HostInfo.physicalMemory, 1 << 40),
                                        maximumVCPUs: try kvm.maxVCPUs())
            return try MachinePlan(vcpuCount: configuration.vcpuCount, memorySize: configuration.memorySize, limits: limits)
        } catch let error as AllocatorError {
            throw SwiftletError(.usage, error.description)
        } catch {
            throw SwiftletError(.host, "\(error)")
        }
    }

    /// Maps guest RAM.
    static func mapMemory(_ plan: MachinePlan) throws(SwiftletError) -> GuestMemory {
        do {
            return try GuestMemory(ranges: plan.memory.ranges)
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }

    /// Loads the kernel, the initrd and the command line into RAM (they fail on bad input, before
    /// KVM is touched) and writes the page tables and GDT the entry needs.
    static func loadBootImage(_ configuration: MachineConfiguration, plan: MachinePlan,
                              memory: GuestMemory) throws(SwiftletError) -> X86BootState {
        let entry: BootEntry
        do {
            entry = try KernelLoader.load(kernelPath: configuration.kernelPath, initrdPath: configuration.initrdPath,
                                          commandLine: configuration.commandLine, memory: memory,
                                          e820: plan.memory.e820, rsdpAddress: X86Layout.acpiTablesAddress,
                                          lowRAMEnd: plan.memory.lowRAMEnd)
        } catch {
            throw SwiftletError(.usage, error.description)
        }
        let mode: BootMode
        switch entry {
        case let .linux64(address, bootParams): mode = .linux64(entry: address, bootParams: bootParams)
        case let .pvh(address, startInfo): mode = .pvh(entry: address, startInfo: startInfo)
        }
        let boot = X86BootState(mode: mode)
        do {
            for write in boot.memoryWrites { try memory.write(write.bytes, at: GuestAddress(write.address)) }
        } catch {
            throw SwiftletError(.host, error.description)
        }
        return boot
    }

    /// Creates the VM with its TSS and identity-map pages, the in-kernel interrupt controllers and
    /// PIT (unless a tiny test guest asks for none), and registers guest RAM.
    static func createVM(_ kvm: KVM, memory: GuestMemory, inKernelIRQChip: Bool) throws(SwiftletError) -> KVMVirtualMachine {
        do {
            let vm = try kvm.createVirtualMachine()
            try vm.setTSSAddress(X86Layout.kvmTSSAddress)
            try vm.setIdentityMapAddress(X86Layout.kvmIdentityMapAddress)
            if inKernelIRQChip {
                try vm.createIRQChip()
                try vm.createPIT()
            }
            try vm.registerMemory(memory)
            return vm
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }

    /// Creates the vCPUs with their CPUID, boot MSRs, FPU and local interrupt pins.
    static func createVCPUs(_ vm: KVMVirtualMachine, kvm: KVM, plan: MachinePlan, configuration: MachineConfiguration,
                            logger: Logger) throws(SwiftletError) -> [KVMVirtualCPU] {
        do {
            let supported = try kvm.supportedCPUID()
            let policy = CPUIDPolicy(vcpuCount: plan.vcpuCount, hideParavirtFeatures: configuration.hideParavirtFeatures)
            var created: [KVMVirtualCPU] = []
            for index in 0..<plan.vcpuCount {
                let vcpu = try vm.createVirtualCPU(index: index)
                try vcpu.setCPUID(policy.entries(for: index, from: supported))
                let accepted = try vcpu.setMSRs(X86BootState.initialMSRs)
                if accepted < X86BootState.initialMSRs.count {
                    logger.debug("KVM accepted \(accepted) of \(X86BootState.initialMSRs.count) boot MSRs on vCPU \(index)")
                }
                try vcpu.resetFPU()
                if configuration.inKernelIRQChip { try vcpu.configureLocalInterrupts() }
                created.append(vcpu)
            }
            return created
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }

    /// Opens and locks the disk images, in order, before anything is created or truncated (the
    /// console file), so a bad image leaves nothing behind.
    static func openDisks(_ configuration: MachineConfiguration) throws(SwiftletError) -> [(FileBlockBackend, id: String)] {
        var ids = Set<String>()
        for disk in configuration.disks where !ids.insert(disk.id).inserted {
            throw SwiftletError(.usage, "two disks have the id \"\(disk.id)\"; give each --disk its own id=NAME")
        }
        // The same file twice would otherwise meet its own lock and be reported as another
        // process's; say what it is instead.
        var seen: [FileIdentity: DiskConfiguration] = [:]
        for disk in configuration.disks {
            guard let identity = FileIdentity(path: disk.path) else { continue }    // opening it says why
            if let first = seen[identity] {
                throw SwiftletError(.usage, "disk \"\(disk.id)\" (\"\(disk.path)\") is the same file as disk \"\(first.id)\" "
                                    + "(\"\(first.path)\"); attach an image once")
            }
            seen[identity] = disk
        }
        var opened: [(FileBlockBackend, id: String)] = []
        for disk in configuration.disks {
            do {
                opened.append((try FileBlockBackend(path: disk.path, readOnly: disk.readOnly), disk.id))
            } catch {
                throw SwiftletError(.usage, error.description)
            }
        }
        return opened
    }

    /// Listens on the vsock device's Unix socket, before anything else is created (the console
    /// file), so a path in use leaves nothing behind; a stale socket file is replaced.
    static func openVsockSocket(_ configuration: MachineConfiguration) throws(SwiftletError) -> UnixListener? {
        guard let vsock = configuration.vsock else { return nil }
        guard vsock.cid >= 3, vsock.cid != UInt32.max else {
            throw SwiftletError(.usage, "vsock CID \(vsock.cid) is reserved; use a CID from 3 to 4294967294")
        }
        do {
            return try UnixListener(path: vsock.socketPath)
        } catch {
            throw SwiftletError(.usage, "vsock: \(error)")
        }
    }

    /// Opens the network backend (the TAP, or a passt process on a socket pair) before anything is
    /// created or truncated: a TAP that cannot be opened or a missing passt is the caller's to fix.
    static func openNetwork(_ configuration: MachineConfiguration) throws(SwiftletError) -> (any HostNetBackend)? {
        guard let network = configuration.network else { return nil }
        do {
            switch network.backend {
            case let .tap(name): return TapNetBackend(try TapDevice(name: name))
            case .passt: return PasstNetBackend(try PasstProcess())
            }
        } catch {
            if case .passtStartFailed = error { throw SwiftletError(.host, error.description) }
            throw SwiftletError(.usage, error.description)
        }
    }

    /// The console's host-side output buffer and input queue, the virtio console (attached later,
    /// with the other virtio devices) if it is the console, and what tells the console device
    /// (the UART or the virtio console) that input was queued.
    struct Console {
        let output: ConsoleOutput?
        let input: ConsoleInputQueue?
        let virtio: HostConsoleDevice?
        let inputArrived: @Sendable () -> Void
    }

    /// Opens the console's destination (never blocking; a file is locked and may not be one of the
    /// machine's input files) and attaches COM1's UART to it. The console is buffered: vCPUs never
    /// wait on its reader (see ``ConsoleOutput``). With ``ConsoleConfiguration/virtio`` the input
    /// goes to a virtio console instead, and the UART's output and the virtio console's share the
    /// one buffer and writer.
    static func attachConsole(_ configuration: MachineConfiguration, to registry: inout DeviceRegistry,
                              vm: KVMVirtualMachine, logger: Logger) throws(SwiftletError) -> Console {
        let reportFailure: @Sendable (String) -> Void = { message in logger.warning("\(message)") }
        let output: ConsoleOutput?
        let input: ConsoleInputQueue?
        var virtio: HostConsoleDevice?
        do {
            switch configuration.console {
            case .virtio:
                let stdout = try ConsoleOutput(fd: 1, owned: false, name: "standard output", onFailure: reportFailure)
                let queue = try ConsoleInputQueue()
                let size = Terminal.outputWindowSize.map { VirtioConsole.WindowSize(columns: $0.columns, rows: $0.rows) }
                virtio = try HostConsoleDevice(output: stdout, input: queue, windowSize: size)
                output = stdout
                input = queue
            case .stdio:
                output = try ConsoleOutput(fd: 1, owned: false, name: "standard output", onFailure: reportFailure)
                input = try ConsoleInputQueue()
            case .off:
                output = nil
                input = nil
            case let .file(path):
                var inputs = [(FileIdentity, String)]()
                if let kernel = FileIdentity(path: configuration.kernelPath) { inputs.append((kernel, "kernel")) }
                if let initrdPath = configuration.initrdPath, let initrd = FileIdentity(path: initrdPath) {
                    inputs.append((initrd, "initrd"))
                }
                for disk in configuration.disks {
                    if let image = FileIdentity(path: disk.path) { inputs.append((image, "disk image \"\(disk.id)\"")) }
                }
                let fd: Int32
                do {
                    fd = try ConsoleFile.open(path, inputs: inputs)
                } catch {
                    throw SwiftletError(.usage, error.description)
                }
                output = try ConsoleOutput(fd: fd, owned: true, name: "\"\(path)\"", onFailure: reportFailure)
                input = nil
            }
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(.host, "\(error)")
        }
        let irq: any InterruptLine
        do {
            irq = configuration.inKernelIRQChip ? try vm.interruptLine(gsi: X86Layout.com1IRQ) : NoInterruptLine()
        } catch {
            throw SwiftletError(.host, error.description)
        }
        // With a virtio console the UART takes no input: it is not the console.
        var serialInput: any InputSource = NoInput()
        if virtio == nil, let input { serialInput = input }
        let serial = SharedDevice(Serial16550(irq: irq, output: output ?? DiscardingSink(), input: serialInput))
        let outputRoom = virtio?.outputRoom
        output?.onRoom {
            serial.withLock { $0.outputRoomAvailable() }
            outputRoom?.signal()
        }
        try attach(serial, id: "serial0", kind: .serial16550, bus: .pio, base: UInt64(X86Layout.com1Port),
                   size: Serial16550.windowSize, gsi: X86Layout.com1IRQ, to: &registry)
        let inputArrived: @Sendable () -> Void
        if let event = virtio?.inputArrived {
            inputArrived = { event.signal() }
        } else {
            inputArrived = { _ = serial.withLock { $0.receiveInput() } }
        }
        return Console(output: output, input: input, virtio: virtio, inputArrived: inputArrived)
    }

    /// Attaches the i8042 (reset line), the CMOS RTC, the ACPI power registers, the pvpanic port
    /// and Swiftlet's control page.
    static func attachLegacyDevices(to registry: inout DeviceRegistry, events: MachineEventRecorder) throws(SwiftletError) {
        try attach(SharedDevice(I8042(events: events)), id: "i8042", kind: .i8042, bus: .pio,
                   base: UInt64(X86Layout.i8042Port), size: I8042.windowSize, to: &registry)
        try attach(SharedDevice(CMOSClock(clock: SystemWallClock())), id: "rtc", kind: .cmosClock, bus: .pio,
                   base: UInt64(X86Layout.cmosPort), size: CMOSClock.windowSize, to: &registry)
        let power = ACPIPowerRegisters(powerOffSleepType: X86Layout.acpiS5SleepType, resetValue: X86Layout.acpiResetValue,
                                       events: events)
        try attach(SharedDevice(power), id: "acpi-power", kind: .acpiPower, bus: .pio,
                   base: UInt64(X86Layout.acpiPowerPort), size: ACPIPowerRegisters.windowSize, to: &registry)
        try attach(SharedDevice(PVPanic(events: events)), id: "pvpanic", kind: .pvpanic, bus: .pio,
                   base: UInt64(X86Layout.pvpanicPort), size: PVPanic.windowSize, to: &registry)
        try attach(SharedDevice(GuestControlPage(events: events)), id: "swiftlet-control", kind: .controlPage, bus: .mmio,
                   base: X86Layout.controlPageAddress, size: GuestControlPage.windowSize, to: &registry)
    }

    /// Creates the I/O event loop the virtio devices' workers run on (started by ``run()``).
    static func makeIOThread() throws(SwiftletError) -> EventLoopThread {
        do {
            return try EventLoopThread()
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }

    /// Where the next virtio-mmio device goes: its 4 KiB window, from ``X86Layout/virtioMMIOStart``
    /// up, and its GSI, from the allocator.
    struct VirtioSlots {
        var nextWindow = X86Layout.virtioMMIOStart
        var interrupts = IRQAllocator()
    }

    /// Attaches a virtio-mmio device, in Firecracker's steps: the next window and GSI → one
    /// ioeventfd per queue at the window's `QueueNotify` matching the queue's index → an irqfd for
    /// the GSI → the transport on the MMIO bus and in the registry (so in the DSDT) → its worker on
    /// the I/O event loop, which serves the queues from DRIVER_OK on (``VirtioWorker``).
    static func attachVirtio(_ device: some VirtioQueueServer, id: String, to registry: inout DeviceRegistry,
                             slots: inout VirtioSlots, vm: KVMVirtualMachine, memory: GuestMemory, loop: EventLoop,
                             inKernelIRQChip: Bool, logger: Logger) throws(SwiftletError) {
        let gsi: UInt32
        do {
            gsi = try slots.interrupts.allocate()
        } catch {
            throw SwiftletError(.usage, "cannot attach \(id): \(error)")
        }
        let base = slots.nextWindow
        let description = device.description
        var notifiers: [EventFD] = []
        let irq: any InterruptLine
        do {
            for index in description.queueMaximumSizes.indices {
                let notifier = try EventFD(nonBlocking: true)
                try vm.registerIOEvent(notifier, address: base + VirtioMMIOTransport.Register.queueNotify.rawValue,
                                       length: 4, datamatch: UInt64(index))
                notifiers.append(notifier)
            }
            irq = inKernelIRQChip ? try vm.interruptLine(gsi: gsi) : NoInterruptLine()
        } catch {
            throw SwiftletError(.host, "attaching \(id): \(error)")
        }
        let worker = VirtioWorker(device: device, id: id, loop: loop, memory: memory, notifiers: notifiers, logger: logger)
        let transport = SharedDevice(VirtioMMIOTransport(device: description, irq: irq, events: worker))
        worker.connect(transport)
        try attach(transport, id: id, kind: .virtioMMIO(deviceID: description.deviceID), bus: .mmio, base: base,
                   size: VirtioMMIOTransport.windowSize, gsi: gsi, to: &registry)
        slots.nextWindow += VirtioMMIOTransport.windowSize
    }

    /// Registers one device; a clash is Swiftlet's own layout error, not the caller's.
    private static func attach(_ handler: any BusHandler, id: String, kind: DeviceKind, bus: DeviceBus, base: UInt64,
                               size: UInt64, gsi: UInt32? = nil, to registry: inout DeviceRegistry) throws(SwiftletError) {
        do {
            try registry.attach(handler, id: id, kind: kind, bus: bus, base: base, size: size, gsi: gsi)
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }

    /// Builds the ACPI tables from the devices attached (so the DSDT describes exactly what is on
    /// the buses) and writes them at ``X86Layout/acpiTablesAddress``, where the boot information
    /// already points.
    static func writeACPITables(from registry: DeviceRegistry, vcpuCount: Int, memory: GuestMemory) throws(SwiftletError) {
        let configuration = registry.acpiConfiguration(vcpuCount: vcpuCount, resetValue: X86Layout.acpiResetValue,
                                                       s5SleepType: X86Layout.acpiS5SleepType)
        do {
            let tables = try ACPITables.build(configuration)
            try memory.write(tables.bytes, at: GuestAddress(tables.rsdpAddress))
        } catch {
            throw SwiftletError(.host, "building ACPI tables: \(error)")
        }
    }

    /// Sets the boot processor's registers for the kernel's entry.
    static func setBootRegisters(_ boot: X86BootState, vcpu: KVMVirtualCPU) throws(SwiftletError) {
        do {
            try vcpu.setSpecialRegisters(boot.specialRegisters)
            try vcpu.setRegisters(boot.registers)
        } catch {
            throw SwiftletError(.host, error.description)
        }
    }
}
