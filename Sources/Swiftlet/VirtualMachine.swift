import Logging
import Synchronization
import SwiftletAllocator
import SwiftletArch
import SwiftletBoot
import SwiftletCore
import SwiftletDevices
import SwiftletDispatcher
import SwiftletHost
import SwiftletKVM
import SwiftletMemory

/// A built microVM, ready to run: guest memory loaded, vCPUs configured, devices on their buses.
///
/// The builder follows Firecracker's order: plan → memory → VM → vCPUs → boot image → ACPI →
/// devices → boot registers. ``run()`` starts one OS thread per vCPU and blocks until the
/// machine stops.
public final class VirtualMachine: Sendable {
    private let logger: Logger
    private let memory: GuestMemory
    private let vm: KVMVirtualMachine
    private let vcpus: [KVMVirtualCPU]
    private let router: ExitRouter
    private let control: RunControl
    private let events: MachineEventRecorder
    private let serial: SharedDevice<Serial16550>
    private let consoleOutput: ConsoleOutput?
    private let consoleInput: ConsoleInputQueue?
    /// How many times ``stop()`` was called: buffered console output is not waited for beyond the
    /// grace a stop request gets.
    private let stopRequests = Atomic<Int>(0)
    private let startTime: ContinuousClock.Instant

    /// Builds the machine described by `configuration`.
    ///
    /// - Parameter startTime: when Swiftlet started, for the boot-complete timer.
    /// - Throws: ``SwiftletError`` with kind `.usage` for bad input (kernel, initrd, sizes, no
    ///   `/dev/kvm`) and `.host` for host failures.
    public init(configuration: MachineConfiguration, logger: Logger,
                startTime: ContinuousClock.Instant = .now) throws(SwiftletError) {
        self.logger = logger
        self.startTime = startTime
        let kvm: KVM
        do {
            kvm = try KVM(path: configuration.kvmPath)
        } catch {
            if case .open = error { throw SwiftletError(.usage, error.description) }
            throw SwiftletError(.host, error.description)
        }
        let plan: MachinePlan
        do {
            let limits = ResourceLimits(maximumMemory: min(HostInfo.physicalMemory, 1 << 40),
                                        maximumVCPUs: try kvm.maxVCPUs())
            plan = try MachinePlan(vcpuCount: configuration.vcpuCount, memorySize: configuration.memorySize, limits: limits)
        } catch let error as AllocatorError {
            throw SwiftletError(.usage, error.description)
        } catch {
            throw SwiftletError(.host, "\(error)")
        }
        do {
            memory = try GuestMemory(ranges: plan.memory.ranges)
        } catch {
            throw SwiftletError(.host, error.description)
        }
        logger.trace("guest memory mapped at \(milliseconds(since: startTime)) ms")

        // The boot image and the firmware tables go into RAM first: they fail on bad input.
        let entry: BootEntry
        do {
            entry = try KernelLoader.load(kernelPath: configuration.kernelPath, initrdPath: configuration.initrdPath,
                                          commandLine: configuration.commandLine, memory: memory,
                                          e820: plan.memory.e820, rsdpAddress: X86Layout.acpiTablesAddress,
                                          lowRAMEnd: plan.memory.lowRAMEnd)
        } catch {
            throw SwiftletError(.usage, error.description)
        }
        do {
            let tables = try ACPITables.build(ACPIConfiguration(vcpuCount: plan.vcpuCount, serialPorts: [.com1]))
            try memory.write(tables.bytes, at: GuestAddress(tables.rsdpAddress))
        } catch {
            throw SwiftletError(.host, "building ACPI tables: \(error)")
        }
        logger.trace("kernel, initrd and ACPI tables loaded at \(milliseconds(since: startTime)) ms")
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

        // The VM, its vCPUs and the in-kernel interrupt controllers.
        control = RunControl()
        events = MachineEventRecorder(control: control, logger: logger, startTime: startTime)
        do {
            vm = try kvm.createVirtualMachine()
            try vm.setTSSAddress(X86Layout.kvmTSSAddress)
            try vm.setIdentityMapAddress(X86Layout.kvmIdentityMapAddress)
            if configuration.inKernelIRQChip {
                try vm.createIRQChip()
                try vm.createPIT()
            }
            try vm.registerMemory(memory)
            logger.trace("VM created at \(milliseconds(since: startTime)) ms")
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
            try created[0].setSpecialRegisters(boot.specialRegisters)
            try created[0].setRegisters(boot.registers)
            vcpus = created
        } catch {
            throw SwiftletError(.host, error.description)
        }

        // The interpreters: legacy devices on the PIO bus, Swiftlet's control page on the MMIO bus.
        // The console is buffered: vCPUs never wait on its reader (see ConsoleOutput).
        let log = logger
        let reportFailure: @Sendable (String) -> Void = { message in log.warning("\(message)") }
        do {
            switch configuration.console {
            case .stdio:
                consoleOutput = try ConsoleOutput(fd: 1, owned: false, name: "standard output", onFailure: reportFailure)
                consoleInput = try ConsoleInputQueue()
            case .off:
                consoleOutput = nil
                consoleInput = nil
            case let .file(path):
                var inputs = [(FileIdentity, String)]()
                if let kernel = FileIdentity(path: configuration.kernelPath) { inputs.append((kernel, "kernel")) }
                if let initrdPath = configuration.initrdPath, let initrd = FileIdentity(path: initrdPath) {
                    inputs.append((initrd, "initrd"))
                }
                let fd: Int32
                do {
                    fd = try ConsoleFile.open(path, inputs: inputs)
                } catch {
                    throw SwiftletError(.usage, error.description)
                }
                consoleOutput = try ConsoleOutput(fd: fd, owned: true, name: "\"\(path)\"", onFailure: reportFailure)
                consoleInput = nil
            }
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(.host, "\(error)")
        }
        let serialIRQ: any InterruptLine = configuration.inKernelIRQChip
            ? vm.interruptLine(gsi: X86Layout.com1IRQ) : NoInterruptLine()
        let serial = SharedDevice(Serial16550(irq: serialIRQ, output: consoleOutput ?? DiscardingSink(),
                                              input: consoleInput ?? NoInput()))
        self.serial = serial
        consoleOutput?.onRoom { serial.withLock { $0.outputRoomAvailable() } }
        var pio = Bus(name: "PIO")
        var mmio = Bus(name: "MMIO")
        do {
            try pio.insert(serial, named: "serial0 (16550A)", at: UInt64(X86Layout.com1Port), size: 8)
            try pio.insert(SharedDevice(I8042(events: events)), named: "i8042", at: UInt64(X86Layout.i8042Port), size: 5)
            try pio.insert(SharedDevice(CMOSClock(clock: SystemWallClock())), named: "rtc (CMOS)", at: UInt64(X86Layout.cmosPort), size: 2)
            try pio.insert(SharedDevice(ACPIPowerRegisters(events: events)), named: "acpi-power",
                           at: UInt64(X86Layout.acpiPowerPort), size: 3)
            try pio.insert(SharedDevice(PVPanic(events: events)), named: "pvpanic", at: UInt64(X86Layout.pvpanicPort), size: 1)
            try mmio.insert(SharedDevice(GuestControlPage(events: events)), named: "swiftlet-control",
                            at: X86Layout.controlPageAddress, size: 0x1000)
        } catch {
            throw SwiftletError(.host, error.description)
        }
        router = ExitRouter(pio: pio, mmio: mmio, unhandled: UnhandledAccessLog { message in log.debug("\(message)") })
        control.attach(vcpus)
    }

    /// Queues console input for the guest's UART, which takes it as its driver reads.
    ///
    /// Never waits for the guest unless `waitForRoom` is set: then, while the queue is full, it
    /// waits until the guest has read some (for piped input, which must not be lost). Without it
    /// input beyond the queue's capacity (64 KiB) is dropped, as a real line overruns; a terminal's
    /// reader uses that, so that the console escape is seen whatever the guest does. Returns
    /// early if the machine stops.
    public func sendConsoleInput(_ bytes: [UInt8], waitForRoom: Bool) {
        guard let consoleInput else { return }
        var rest = bytes[...]
        while !rest.isEmpty && !control.isStopping {
            let queued = consoleInput.append(rest)
            rest = rest.dropFirst(queued)
            if queued > 0 { _ = serial.withLock { $0.receiveInput() } }
            if rest.isEmpty || !waitForRoom { return }
            consoleInput.waitForRoom()
        }
    }

    /// Asks the machine to stop; ``run()`` then returns with ``StopReason/requested``, waiting at
    /// most a second for buffered console output (none if the machine had already stopped).
    public func stop() {
        stopRequests.add(1, ordering: .acquiringAndReleasing)
        control.stop(.requested)
    }

    /// Runs the machine on one OS thread per vCPU until it stops, and reports how it ended.
    public func run() -> RunOutcome {
        logger.debug("starting \(vcpus.count) vCPU thread(s) \(milliseconds(since: startTime)) ms after Swiftlet started")
        var threads: [OSThread] = []
        for vcpu in vcpus {
            let loop = VCPULoop(vcpu: vcpu, router: router, control: control)
            let control = self.control
            let logger = self.logger
            do {
                threads.append(try OSThread(name: "swiftlet-vcpu\(vcpu.index)") {
                    do {
                        try vcpu.bindToCurrentThread()
                    } catch {
                        control.stop(.hostError("\(error)"))
                        return
                    }
                    let counts = loop.run()
                    logger.debug("vCPU \(vcpu.index) stopped after \(counts.pio) PIO, \(counts.mmio) MMIO and \(counts.interrupted) interrupted exits")
                })
            } catch {
                control.stop(.hostError("\(error)"))
                break
            }
        }
        for thread in threads { thread.join() }
        if let consoleOutput {
            // Deliver what the guest printed: all of it after the guest ended the machine, for a
            // second at most after the stop request that ended it, and no longer once stop() is
            // called (again).
            let requested = control.reason == .requested
            let deadline: ContinuousClock.Instant? = requested ? .now + .seconds(1) : nil
            let allowedStops = requested ? 1 : 0
            consoleOutput.drain(until: deadline) { stopRequests.load(ordering: .acquiring) > allowedStops }
            consoleOutput.shutDown()
            let dropped = consoleOutput.droppedBytes
            if dropped > 0 { logger.info("\(dropped) bytes of guest console output were dropped") }
        }
        return RunOutcome(reason: control.reason ?? .requested, guestExitStatus: events.exitStatus,
                          bootCompleteAfter: events.bootCompleteAfter)
    }
}

/// Turns device-level machine events into run-control actions and records what the guest reported.
final class MachineEventRecorder: MachineEventSink {
    private let control: RunControl
    private let logger: Logger
    private let startTime: ContinuousClock.Instant
    private let state = Mutex<(exitStatus: UInt8?, bootComplete: Duration?)>((nil, nil))

    init(control: RunControl, logger: Logger, startTime: ContinuousClock.Instant) {
        self.control = control
        self.logger = logger
        self.startTime = startTime
    }

    var exitStatus: UInt8? { state.withLock { $0.exitStatus } }
    var bootCompleteAfter: Duration? { state.withLock { $0.bootComplete } }

    func handle(_ event: MachineEvent) {
        switch event {
        case .powerOff: control.stop(.powerOff)
        case .reset: control.stop(.reset)
        case .panic: control.stop(.guestPanic)
        case .bootComplete:
            let elapsed = ContinuousClock.now - startTime
            let first = state.withLock { state -> Bool in
                guard state.bootComplete == nil else { return false }
                state.bootComplete = elapsed
                return true
            }
            if first { logger.info("guest boot complete \(milliseconds(elapsed)) ms after Swiftlet started") }
        case let .exitStatus(status):
            state.withLock { $0.exitStatus = status }
        }
    }
}

/// Whole milliseconds from `start` to now.
func milliseconds(since start: ContinuousClock.Instant) -> Int64 { milliseconds(ContinuousClock.now - start) }

/// `duration` in whole milliseconds.
func milliseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
}

/// The host's wall clock.
struct SystemWallClock: WallClock {
    func secondsSinceEpoch() -> Int64 { HostInfo.wallClockSeconds }
}

/// An interrupt line that goes nowhere (machines without an in-kernel irqchip).
struct NoInterruptLine: InterruptLine {
    func trigger() {}
}
