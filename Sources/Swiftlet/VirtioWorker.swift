import Logging
import Synchronization
import SwiftletCore
import SwiftletHost
import SwiftletMemory
import SwiftletVirtio

/// A virtio device model as the event loop drives it: it serves the chains published on its
/// queues and, for a device with host descriptors (a TAP, sockets), reacts to their readiness.
/// Implementations wrap a device from `SwiftletVirtio` with its host backend. Every method runs on
/// the loop thread and must not block.
protocol VirtioQueueServer: Sendable {
    /// What the transport presents (device ID, features, queue sizes, configuration space).
    var description: VirtioDeviceDescription { get }
    /// The driver set DRIVER_OK with `features`; the queues are validated. A device with host
    /// descriptors starts watching them through `backend` here. The default does nothing.
    mutating func activate(features: UInt64, backend: VirtioBackendWatcher) throws(HostError)
    /// The driver reset the device: the worker has already removed every watch made through the
    /// ``VirtioBackendWatcher``; the device drops per-activation state. The default does nothing.
    mutating func deactivate()
    /// The driver notified queue `index`: serve it (see ``VirtioEntropy/process(queue:memory:source:)``).
    /// `queues` holds every queue, `nil` where the driver did not enable one.
    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress
    /// A descriptor watched with tag `source` is ready for `readiness`. The default does nothing.
    /// ``QueueProgress/moreWaiting`` is ignored here: epoll is level-triggered, so a source still
    /// ready is reported again.
    mutating func backendReady(source: Int, readiness: EventLoop.Readiness, queues: inout [SplitQueue?],
                               memory: GuestMemory) throws(QueueError) -> QueueProgress
}

extension VirtioQueueServer {
    mutating func activate(features: UInt64, backend: VirtioBackendWatcher) throws(HostError) {}
    mutating func deactivate() {}
    mutating func backendReady(source: Int, readiness: EventLoop.Readiness, queues: inout [SplitQueue?],
                               memory: GuestMemory) throws(QueueError) -> QueueProgress {
        QueueProgress(interrupt: false, moreWaiting: false)
    }
}

/// Runs `body` on queue `index` if the driver enabled it, storing the queue back afterwards; a
/// queue the driver left disabled has nothing to serve.
func withEnabledQueue(_ index: Int, in queues: inout [SplitQueue?],
                      _ body: (inout SplitQueue) throws(QueueError) -> QueueProgress) throws(QueueError) -> QueueProgress {
    guard index < queues.count, var queue = queues[index] else { return QueueProgress(interrupt: false, moreWaiting: false) }
    defer { queues[index] = queue }
    return try body(&queue)
}

/// How a device watches its host descriptors on the event loop while it is active. Watches made
/// here are removed by the worker when the driver resets the device; the device closes its own
/// descriptors. Use only on the loop thread, from the device's methods; a device keeps it from
/// ``VirtioQueueServer/activate(features:backend:)`` to ``VirtioQueueServer/deactivate()`` (hence
/// `@unchecked Sendable`: devices are `Sendable`, and their methods all run on that thread).
struct VirtioBackendWatcher: @unchecked Sendable {
    fileprivate let add: (Int32, EventLoop.Readiness, Int) throws(HostError) -> EventLoop.Token
    fileprivate let modify: (EventLoop.Token, EventLoop.Readiness) throws(HostError) -> Void
    fileprivate let drop: (EventLoop.Token) -> Void
    fileprivate let kick: (Int) -> Void

    /// Watches `fd` for `readiness`; the device's ``VirtioQueueServer/backendReady(source:readiness:queues:memory:)``
    /// is called with `source` when it is ready.
    func watch(_ fd: Int32, for readiness: EventLoop.Readiness, source: Int) throws(HostError) -> EventLoop.Token {
        try add(fd, readiness, source)
    }

    /// Changes what a watched descriptor is watched for (e.g. stop reading while the guest has no
    /// receive buffers, watch for room to write while output waits).
    func change(_ token: EventLoop.Token, to readiness: EventLoop.Readiness) throws(HostError) {
        try modify(token, readiness)
    }

    /// Stops watching a descriptor (before the device closes it).
    func remove(_ token: EventLoop.Token) { drop(token) }

    /// Serves queue `index` again soon, after the loop's other sources, as if the driver had
    /// notified it (e.g. backend room came back for output the queue holds).
    func requeue(_ index: Int) { kick(index) }
}

/// The entropy device fed by the host's `getrandom`.
struct HostEntropyDevice: VirtioQueueServer {
    private var device = VirtioEntropy()

    var description: VirtioDeviceDescription { VirtioEntropy.description }

    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try withEnabledQueue(index, in: &queues) { queue throws(QueueError) in
            try device.process(queue: &queue, memory: memory, source: HostEntropySource())
        }
    }
}

/// A block device over a raw image file.
struct HostBlockDevice: VirtioQueueServer {
    private var device: VirtioBlock
    private let backend: FileBlockBackend

    /// The device for `backend`, whose serial is `serial`.
    init(backend: FileBlockBackend, serial: String) {
        device = VirtioBlock(configuration: .init(capacity: backend.capacity, readOnly: backend.readOnly, serial: serial))
        self.backend = backend
    }

    var description: VirtioDeviceDescription { device.description }

    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try withEnabledQueue(index, in: &queues) { queue throws(QueueError) in
            try device.process(queue: &queue, memory: memory, backend: backend)
        }
    }
}

/// A network card over a TAP interface or passt.
///
/// Watches the backend's descriptor with the device's needs: readable while the receive ring has
/// buffers (after it ran out, not until the driver notifies the receive queue, so a busy peer
/// neither spins the loop nor piles frames up in Swiftlet), writable while output waits (held
/// back by the backend, or a transmit chain left in the ring), then serves the transmit queue
/// again through ``VirtioBackendWatcher/requeue(_:)``. A backend that hangs up (passt exited) is
/// no longer watched; frames sent to it are dropped.
struct HostNetDevice: VirtioQueueServer {
    private var device: VirtioNet
    private let backend: any HostNetBackend
    private let logger: Logger
    private var watcher: VirtioBackendWatcher?
    private var token: EventLoop.Token?
    private var watching: EventLoop.Readiness = []
    /// The driver did not enable the receive queue: never read the backend.
    private var receiveDisabled = false

    init(backend: any HostNetBackend, mac: [UInt8], logger: Logger) {
        device = VirtioNet(configuration: .init(mac: mac, offloads: backend.supportsOffloads))
        self.backend = backend
        self.logger = logger
    }

    var description: VirtioDeviceDescription { device.description }

    mutating func activate(features: UInt64, backend watcher: VirtioBackendWatcher) throws(HostError) {
        device.activate(features: features)
        do {
            try backend.enableOffloads(guestFeatures: features)
        } catch {
            // The kernel then completes checksums and segments itself: safe, only slower.
            logger.warning("network: cannot enable the guest's offloads: \(error)")
        }
        token = try watcher.watch(backend.fd.rawValue, for: .readable, source: 0)
        self.watcher = watcher
        watching = .readable
        receiveDisabled = false
    }

    mutating func deactivate() {
        (watcher, token, watching) = (nil, nil, [])
        device.reset()
    }

    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress {
        let progress = try withEnabledQueue(index, in: &queues) { queue throws(QueueError) in
            index == VirtioNet.receiveQueue ? try device.receive(queue: &queue, memory: memory, backend: backend)
                                            : try device.transmit(queue: &queue, memory: memory, backend: backend)
        }
        updateWatch()
        return progress
    }

    mutating func backendReady(source: Int, readiness: EventLoop.Readiness, queues: inout [SplitQueue?],
                               memory: GuestMemory) throws(QueueError) -> QueueProgress {
        var progress = QueueProgress(interrupt: false, moreWaiting: false)
        if readiness.contains(.writable) {
            do { try backend.flush() } catch { logger.debug("network: \(error)") }
            if device.transmitBlocked && !backend.hasPendingOutput { watcher?.requeue(VirtioNet.transmitQueue) }
        }
        let hungUp = readiness.isClosed
        if readiness.contains(.readable) || hungUp {
            receiveDisabled = queues.first.map { $0 == nil } ?? true
            progress = try process(queue: VirtioNet.receiveQueue, queues: &queues, memory: memory)
            // Frames may wait in the backend's own buffer, which the descriptor's readiness does not show.
            if progress.moreWaiting { watcher?.requeue(VirtioNet.receiveQueue) }
        }
        if hungUp, let token {
            logger.warning("network: the backend hung up (passt exited?); the guest's network is down")
            watcher?.remove(token)
            (self.token, watching) = (nil, [])
        }
        updateWatch()
        return progress
    }

    /// Watches the backend for what the device needs now.
    private mutating func updateWatch() {
        guard let token, let watcher else { return }
        var wanted: EventLoop.Readiness = []
        if !device.receiveStarved && !receiveDisabled { wanted.insert(.readable) }
        if device.transmitBlocked || backend.hasPendingOutput { wanted.insert(.writable) }
        guard wanted != watching else { return }
        do {
            try watcher.change(token, to: wanted)
            watching = wanted
        } catch {
            logger.warning("network: \(error)")
        }
    }
}

/// ``EntropySource`` over ``HostRandom``.
struct HostEntropySource: EntropySource {
    func randomBytes(count: Int) throws(EntropyError) -> [UInt8] {
        do {
            return try HostRandom.bytes(count: count)
        } catch {
            throw EntropyError(error.description)
        }
    }
}

/// Runs one virtio-mmio device on the machine's I/O event loop, with the ownership of design review
/// §3.a:
/// - Until DRIVER_OK the transport (behind its lock, on vCPU threads) owns the queue registers.
/// - At DRIVER_OK the transport reports ``activate(features:queues:)`` and this posts the registers
///   to the loop, which validates them into ``SplitQueue``s (a refusal sets `DEVICE_NEEDS_RESET`)
///   and watches the queues' ioeventfds. From then on only the loop touches the queues and the device.
/// - A reset posts the opposite: the watches go and the queues are dropped.
/// - The loop takes the transport's lock only to raise an interrupt or set `DEVICE_NEEDS_RESET`,
///   never across the device's work, so a vCPU's MMIO access never waits for the backend.
///
/// Every activation and reset bumps an epoch on the vCPU side, under the transport's lock; the loop
/// drops work posted for an older epoch and, under the same lock, touches the transport only if
/// the epoch it serves is still current. A run already under way when the guest resets still
/// finishes on the rings it was given: the transport reads status 0 at once rather than waiting
/// for the loop to let go (virtio 1.x §4.2.2.1 allows a device to delay it; not done yet).
///
/// Threading: the stored `var`s are touched only on the loop thread (hence `@unchecked Sendable`);
/// the transport-event methods run on vCPU threads and only post work or signal eventfds.
final class VirtioWorker<Device: VirtioQueueServer>: VirtioTransportEvents, @unchecked Sendable {
    /// A reference that does not keep the transport alive (it holds this worker).
    private struct WeakTransport: @unchecked Sendable {
        weak var value: SharedDevice<VirtioMMIOTransport>?
    }

    let id: String
    private let loop: EventLoop
    private let memory: GuestMemory
    private let notifiers: [EventFD]
    private let logger: Logger
    private let transport = Mutex(WeakTransport())
    private let epoch = Atomic<UInt64>(0)

    // Loop-thread state.
    private var device: Device
    private var queues: [SplitQueue?] = []
    private var watches: [EventLoop.Token] = []
    /// The device's own descriptors' watches, made through its ``VirtioBackendWatcher``.
    private var backendWatches: Set<EventLoop.Token> = []
    private var activeEpoch: UInt64 = 0

    /// A worker for `device`, whose queue `n` is notified through `notifiers[n]`.
    init(device: Device, id: String, loop: EventLoop, memory: GuestMemory, notifiers: [EventFD], logger: Logger) {
        precondition(notifiers.count == device.description.queueMaximumSizes.count, "one notifier per queue")
        self.device = device
        self.id = id
        self.loop = loop
        self.memory = memory
        self.notifiers = notifiers
        self.logger = logger
    }

    /// Connects the transport that reports to this worker (once, before the guest runs).
    func connect(_ transport: SharedDevice<VirtioMMIOTransport>) {
        self.transport.withLock { $0.value = transport }
    }

    // MARK: Transport events (vCPU threads, transport lock held)

    func activate(features: UInt64, queues registers: [VirtioQueueRegisters]) {
        let current = epoch.add(1, ordering: .sequentiallyConsistent).newValue
        loop.execute { [weak self] in self?.start(epoch: current, features: features, registers: registers) }
    }

    func reset() {
        epoch.add(1, ordering: .sequentiallyConsistent)
        loop.execute { [weak self] in self?.stop() }
    }

    func notify(queue index: Int) {
        notifiers[index].signal()
    }

    // MARK: Loop thread

    /// Validates the queues the driver enabled and starts watching their notifications.
    private func start(epoch current: UInt64, features: UInt64, registers: [VirtioQueueRegisters]) {
        stop()
        guard current == epoch.load(ordering: .sequentiallyConsistent) else { return }     // reset since
        activeEpoch = current
        var validated: [SplitQueue?] = []
        for (index, queue) in registers.enumerated() {
            guard queue.ready else {
                validated.append(nil)
                continue
            }
            let state = SplitQueue.State(size: queue.size, descriptorTable: GuestAddress(queue.descriptorTable),
                                         availableRing: GuestAddress(queue.availableRing),
                                         usedRing: GuestAddress(queue.usedRing),
                                         eventIndex: features & VirtioFeature.eventIndex != 0,
                                         indirectDescriptors: features & VirtioFeature.indirectDescriptors != 0)
            do {
                validated.append(try SplitQueue(state: state, maximumSize: device.description.queueMaximumSizes[index],
                                                memory: memory))
            } catch {
                logger.warning("\(id): queue \(index) refused: \(error); the device needs a reset")
                withTransport { $0.markNeedsReset() }
                return
            }
        }
        queues = validated
        do {
            try device.activate(features: features, backend: backendWatcher())
        } catch {
            logger.error("\(id): cannot start the device's backend: \(error); the device needs a reset")
            withTransport { $0.markNeedsReset() }
            return
        }
        for (index, notifier) in notifiers.enumerated() where queues[index] != nil {
            do {
                watches.append(try loop.watch(notifier.fd, for: .readable) { [weak self] _ in
                    _ = notifier.take()
                    self?.serve(queue: index)
                    return .keep
                })
            } catch {
                logger.error("\(id): cannot watch queue \(index)'s notifications: \(error)")
                withTransport { $0.markNeedsReset() }
            }
        }
    }

    /// Stops serving the queues (a reset, or before a new activation).
    private func stop() {
        for token in watches { loop.remove(token) }
        watches = []
        let wasActive = !queues.isEmpty || !backendWatches.isEmpty
        for token in backendWatches { loop.remove(token) }
        backendWatches = []
        queues = []
        if wasActive { device.deactivate() }
    }

    /// The watcher the device uses for its host descriptors during this activation.
    private func backendWatcher() -> VirtioBackendWatcher {
        VirtioBackendWatcher(
            add: { [unowned self] fd, readiness, source throws(HostError) in
                let token = try loop.watch(fd, for: readiness) { [weak self] ready in
                    self?.backendReady(source: source, readiness: ready)
                    return .keep
                }
                backendWatches.insert(token)
                return token
            },
            modify: { [unowned self] token, readiness throws(HostError) in try loop.change(token, to: readiness) },
            drop: { [unowned self] token in
                if backendWatches.remove(token) != nil { loop.remove(token) }
            },
            kick: { [unowned self] index in if index < notifiers.count { notifiers[index].signal() } })
    }

    /// Runs the device after one of its host descriptors became ready.
    private func backendReady(source: Int, readiness: EventLoop.Readiness) {
        guard epoch.load(ordering: .sequentiallyConsistent) == activeEpoch, !queues.isEmpty else { return }
        do {
            let progress = try device.backendReady(source: source, readiness: readiness, queues: &queues, memory: memory)
            if progress.interrupt { withTransport { $0.raiseInterrupt(VirtioMMIOTransport.Interrupt.usedBuffer) } }
        } catch {
            logger.warning("\(id): backend \(source): \(error); the device needs a reset")
            stop()
            withTransport { $0.markNeedsReset() }
        }
    }

    /// Runs the device on queue `index` after a notification.
    private func serve(queue index: Int) {
        guard index < queues.count, queues[index] != nil,
              epoch.load(ordering: .sequentiallyConsistent) == activeEpoch else { return }
        do {
            let progress = try device.process(queue: index, queues: &queues, memory: memory)
            if progress.interrupt { withTransport { $0.raiseInterrupt(VirtioMMIOTransport.Interrupt.usedBuffer) } }
            // Come back after the loop's other sources rather than run on unboundedly.
            if progress.moreWaiting { notifiers[index].signal() }
        } catch {
            logger.warning("\(id): queue \(index): \(error); the device needs a reset")
            stop()
            withTransport { $0.markNeedsReset() }
        }
    }

    /// Runs `body` on the transport under its lock, if the activation being served is still current.
    private func withTransport(_ body: (inout VirtioMMIOTransport) -> Void) {
        guard let transport = transport.withLock({ $0.value }) else { return }
        let active = activeEpoch
        transport.withLock { transport in
            guard epoch.load(ordering: .sequentiallyConsistent) == active else { return }
            body(&transport)
        }
    }
}
