import SwiftletMemory

/// Where the entropy device's bytes come from: the host's `getrandom` in production, a
/// deterministic generator in tests.
public protocol EntropySource: Sendable {
    /// Returns `count` random bytes (`count` is at most ``VirtioEntropy/maximumBytesPerChain``).
    ///
    /// - Throws: ``EntropyError`` when the host cannot supply them; the device then returns the
    ///   bytes it already has.
    func randomBytes(count: Int) throws(EntropyError) -> [UInt8]
}

/// The entropy source failed (the message names the host call and its error).
public struct EntropyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed, in one line.
    public let message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// What one ``VirtioEntropy/process(queue:memory:source:)`` run left behind.
public struct QueueProgress: Equatable, Sendable {
    /// Whether the driver should be interrupted for the used buffers (``SplitQueue/needsNotification(in:)``).
    public var interrupt: Bool
    /// Whether chains are still waiting because the run's budget ran out: run again soon (after
    /// the event loop's other sources), without waiting for a notification.
    public var moreWaiting: Bool

    /// Creates a result.
    public init(interrupt: Bool, moreWaiting: Bool) {
        self.interrupt = interrupt
        self.moreWaiting = moreWaiting
    }
}

/// The virtio entropy device (virtio 1.x §5.4, device ID 4), as a plain state machine: one
/// request queue whose device-writable buffers it fills with random bytes.
///
/// Behaviour:
/// - Features: ``VirtioFeature/version1`` plus indirect descriptors and event-idx (the queue
///   handles both); no configuration space.
/// - A chain of device-writable buffers is filled in order, at most ``maximumBytesPerChain`` bytes,
///   and returned with the count written (a partial fill is valid: the driver asks again).
/// - A chain with a device-readable buffer, or one the queue refuses (``ChainError``), is returned
///   with length 0: the request fails, the queue goes on.
/// - A broken ring (``QueueError``) is thrown: the caller sets `DEVICE_NEEDS_RESET`.
///
/// Threat model:
/// - Input: the queue's rings and descriptors, written by the guest at any time.
/// - Threat: a guest that makes the host do unbounded work or allocate unbounded memory per
///   notification (huge buffers, a ring refilled as fast as it is drained), or write outside guest RAM.
/// - Mitigation: every buffer comes from a checked ``DescriptorChain``; a chain gets at most
///   ``maximumBytesPerChain`` bytes and one run at most ``maximumBytesPerRun`` bytes and one ring's
///   worth of chains, after which it reports ``QueueProgress/moreWaiting`` instead of going on.
public struct VirtioEntropy: Sendable {
    /// The virtio device ID of an entropy source.
    public static let deviceID: UInt32 = 4
    /// The request queue's largest size.
    public static let queueMaximumSize: UInt16 = 256
    /// The most bytes one chain receives.
    public static let maximumBytesPerChain = 64 << 10
    /// The most bytes one ``process(queue:memory:source:)`` run hands out.
    public static let maximumBytesPerRun = 1 << 20

    /// What the transport presents for this device.
    public static let description = VirtioDeviceDescription(
        deviceID: deviceID, features: VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex,
        queueMaximumSizes: [queueMaximumSize])

    /// The device's own guest-visible state: none beyond its queue's (``SplitQueue/State``), which
    /// the queue's owner keeps; kept for the snapshot shape every device shares.
    public struct State: Codable, Equatable, Sendable {
        /// The state of a fresh device.
        public init() {}
    }

    /// The device's state, for snapshots.
    public private(set) var state: State

    /// Creates the device from `state` (a fresh one by default).
    public init(state: State = State()) { self.state = state }

    /// Serves the chains the driver published on `queue`: fills their writable buffers from
    /// `source` and returns them in the used ring.
    ///
    /// Stops after one ring's worth of chains or ``maximumBytesPerRun`` bytes; otherwise re-arms the
    /// driver's notifications (``SplitQueue/enableNotification(in:)``) before returning, so a chain
    /// published meanwhile is not missed.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET` and stop using the queue.
    public mutating func process(queue: inout SplitQueue, memory: GuestMemory,
                                 source: some EntropySource) throws(QueueError) -> QueueProgress {
        var chains = 0
        var bytes = 0
        while true {
            while let head = try queue.popAvailable(in: memory) {
                let written = fill(head: head, queue: queue, memory: memory, source: source)
                try queue.addUsed(head: head, length: UInt32(written), in: memory)
                chains += 1
                bytes += written
                if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
                }
            }
            guard try queue.enableNotification(in: memory) else { break }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Fills chain `head`'s writable buffers and returns the bytes written; 0 for a chain that is
    /// refused or carries a device-readable buffer.
    private func fill(head: UInt16, queue: SplitQueue, memory: GuestMemory, source: some EntropySource) -> Int {
        guard let chain = try? queue.chain(head: head, in: memory), chain.readableLength == 0 else { return 0 }
        var written = 0
        for buffer in chain.buffers {
            let count = min(Int(buffer.range.size), Self.maximumBytesPerChain - written)
            guard count > 0 else { break }
            do {
                let random = try source.randomBytes(count: count)
                guard random.count == count else { break }
                try memory.write(random, at: buffer.range.start)
            } catch {
                break      // the source failed (or the memory is not the queue's): return what is there
            }
            written += count
        }
        return written
    }
}
