import Logging
import Synchronization
import SwiftletCore
import SwiftletHost
import SwiftletMemory
import SwiftletVirtio

/// A virtio device model as the event loop drives it: it serves the chains published on one of
/// its queues. Implementations wrap a device from `SwiftletVirtio` with its host backend.
protocol VirtioQueueServer: Sendable {
    /// What the transport presents (device ID, features, queue sizes, configuration space).
    var description: VirtioDeviceDescription { get }
    /// Serves queue `index` (see ``VirtioEntropy/process(queue:memory:source:)``).
    mutating func process(queue index: Int, _ queue: inout SplitQueue, memory: GuestMemory) throws(QueueError) -> QueueProgress
}

/// The entropy device fed by the host's `getrandom`.
struct HostEntropyDevice: VirtioQueueServer {
    private var device = VirtioEntropy()

    var description: VirtioDeviceDescription { VirtioEntropy.description }

    mutating func process(queue index: Int, _ queue: inout SplitQueue, memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try device.process(queue: &queue, memory: memory, source: HostEntropySource())
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

    mutating func process(queue index: Int, _ queue: inout SplitQueue, memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try device.process(queue: &queue, memory: memory, backend: backend)
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
        queues = []
    }

    /// Runs the device on queue `index` after a notification.
    private func serve(queue index: Int) {
        guard index < queues.count, var queue = queues[index],
              epoch.load(ordering: .sequentiallyConsistent) == activeEpoch else { return }
        do {
            let progress = try device.process(queue: index, &queue, memory: memory)
            queues[index] = queue
            if progress.interrupt { withTransport { $0.raiseInterrupt(VirtioMMIOTransport.Interrupt.usedBuffer) } }
            // Come back after the loop's other sources rather than run on unboundedly.
            if progress.moreWaiting { notifiers[index].signal() }
        } catch {
            logger.warning("\(id): queue \(index): \(error); the device needs a reset")
            queues[index] = nil
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
