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
/// Built in named steps (MachineBuilder.swift), failing on bad input before touching KVM:
/// open the hypervisor → plan → map memory → load the boot image → create the VM → create the
/// vCPUs → attach the console, the legacy devices and the virtio devices (each recorded in a
/// ``DeviceRegistry``) → write the ACPI tables from that registry → set the boot registers.
/// ``run()`` starts the I/O event-loop thread (`swiftlet-io`, which serves the virtio queues) and
/// one OS thread per vCPU, and blocks until the machine stops.
public final class VirtualMachine: Sendable {
    private let logger: Logger
    private let memory: GuestMemory
    private let vm: KVMVirtualMachine
    private let vcpus: [KVMVirtualCPU]
    private let router: ExitRouter
    private let control: RunControl
    private let events: MachineEventRecorder
    private let consoleOutput: ConsoleOutput?
    private let consoleInput: ConsoleInputQueue?
    /// Tells the console device (the UART, or the virtio console) that input was queued.
    private let consoleInputArrived: @Sendable () -> Void
    /// The I/O event loop: virtio queue notifications and device work, on the `swiftlet-io` thread.
    private let io: EventLoopThread
    /// The vsock device's Unix socket, whose file goes when the machine has stopped.
    private let vsockListener: UnixListener?
    /// How many times ``stop()`` was called: buffered console output is not waited for beyond the
    /// grace a stop request gets.
    private let stopRequests = Atomic<Int>(0)
    private let startTime: ContinuousClock.Instant

    /// Builds the machine described by `configuration`.
    ///
    /// - Parameters:
    ///   - startTime: when Swiftlet started, for the boot-complete timer.
    ///   - io: the I/O event loop to run the devices on, which may already be running (Swiftlet's
    ///     CLI starts it first, for the termination signals and standard input); by default the
    ///     machine makes its own. ``run()`` starts it if needed and stops it when the machine stops.
    /// - Throws: ``SwiftletError`` with kind `.usage` for bad input (kernel, initrd, sizes, console
    ///   file, no `/dev/kvm`) and `.host` for host failures.
    public init(configuration: MachineConfiguration, logger: Logger,
                startTime: ContinuousClock.Instant = .now, io: EventLoopThread? = nil) throws(SwiftletError) {
        self.logger = logger
        self.startTime = startTime
        let kvm = try Self.openHypervisor(at: configuration.kvmPath)
        let plan = try Self.plan(configuration, kvm: kvm)
        memory = try Self.mapMemory(plan)
        logger.trace("guest memory mapped at \(milliseconds(since: startTime)) ms")
        let boot = try Self.loadBootImage(configuration, plan: plan, memory: memory)
        logger.trace("kernel and initrd loaded at \(milliseconds(since: startTime)) ms")
        let disks = try Self.openDisks(configuration)
        vsockListener = try Self.openVsockSocket(configuration)
        let network = try Self.openNetwork(configuration)

        control = RunControl()
        events = MachineEventRecorder(control: control, logger: logger, startTime: startTime)
        vm = try Self.createVM(kvm, memory: memory, inKernelIRQChip: configuration.inKernelIRQChip)
        logger.trace("VM created at \(milliseconds(since: startTime)) ms")
        vcpus = try Self.createVCPUs(vm, kvm: kvm, plan: plan, configuration: configuration, logger: logger)

        var registry = DeviceRegistry()
        let console = try Self.attachConsole(configuration, to: &registry, vm: vm, logger: logger)
        (consoleOutput, consoleInput, consoleInputArrived) = (console.output, console.input, console.inputArrived)
        try Self.attachLegacyDevices(to: &registry, events: events)
        if let io { self.io = io } else { self.io = try Self.makeIOThread() }
        let ioLoop = self.io.loop
        var virtio = VirtioSlots()
        for (backend, id) in disks {
            try Self.attachVirtio(HostBlockDevice(backend: backend, serial: id), id: "virtio-blk-\(id)", to: &registry,
                                  slots: &virtio, vm: vm, memory: memory, loop: ioLoop,
                                  inKernelIRQChip: configuration.inKernelIRQChip, logger: logger)
        }
        if let vsock = configuration.vsock, let vsockListener {
            try Self.attachVirtio(HostVsockDevice(cid: UInt64(vsock.cid), listener: vsockListener), id: "vsock0",
                                  to: &registry, slots: &virtio, vm: vm, memory: memory, loop: ioLoop,
                                  inKernelIRQChip: configuration.inKernelIRQChip, logger: logger)
        }
        if let network, let mac = configuration.network?.mac {
            try Self.attachVirtio(HostNetDevice(backend: network, mac: mac, logger: logger), id: "virtio-net0", to: &registry,
                                  slots: &virtio, vm: vm, memory: memory, loop: ioLoop,
                                  inKernelIRQChip: configuration.inKernelIRQChip, logger: logger)
        }
        if configuration.entropy {
            try Self.attachVirtio(HostEntropyDevice(), id: "rng0", to: &registry, slots: &virtio, vm: vm, memory: memory,
                                  loop: ioLoop, inKernelIRQChip: configuration.inKernelIRQChip, logger: logger)
        }
        if let device = console.virtio {
            try Self.attachVirtio(device, id: "console0", to: &registry, slots: &virtio, vm: vm, memory: memory,
                                  loop: ioLoop, inKernelIRQChip: configuration.inKernelIRQChip, logger: logger)
        }
        try Self.writeACPITables(from: registry, vcpuCount: plan.vcpuCount, memory: memory)
        try Self.setBootRegisters(boot, vcpu: vcpus[0])
        logger.trace("devices attached and ACPI tables written at \(milliseconds(since: startTime)) ms")

        let log = logger
        router = ExitRouter(pio: registry.pio, mmio: registry.mmio,
                            unhandled: UnhandledAccessLog { message in log.debug("\(message)") })
        control.attach(vcpus)
    }

    /// Queues console input for the guest's console device (the UART, or the virtio console with
    /// ``ConsoleConfiguration/virtio``), which takes it as its driver reads; returns how many bytes
    /// fit (all of them once the machine is stopping, or without a console: they go nowhere).
    /// Never waits: after a short count, ``consoleInputRoom`` is signalled when the guest has
    /// taken input.
    public func offerConsoleInput(_ bytes: [UInt8]) -> Int {
        guard let consoleInput, !control.isStopping else { return bytes.count }
        let queued = consoleInput.append(bytes)
        if queued > 0 { consoleInputArrived() }
        return queued
    }

    /// Signalled when the guest takes console input after an ``offerConsoleInput(_:)`` that did
    /// not fit; `nil` without console input.
    public var consoleInputRoom: EventFD? { consoleInput?.room }

    /// Asks the machine to stop; ``run()`` then returns with ``StopReason/requested``, waiting at
    /// most a second for buffered console output (none if the machine had already stopped).
    public func stop() {
        stopRequests.add(1, ordering: .acquiringAndReleasing)
        control.stop(.requested)
    }

    /// Runs the machine on one OS thread per vCPU until it stops, and reports how it ended.
    public func run() -> RunOutcome {
        logger.debug("starting \(vcpus.count) vCPU thread(s) \(milliseconds(since: startTime)) ms after Swiftlet started")
        var ioRunning = true
        do {
            try io.start()
        } catch {
            control.stop(.hostError("\(error)"))
            ioRunning = false
        }
        var threads: [OSThread] = []
        for vcpu in vcpus where ioRunning {
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
        io.stop()
        vsockListener?.removeSocketFile()
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
