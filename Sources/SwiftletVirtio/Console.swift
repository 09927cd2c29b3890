import SwiftletCore
import SwiftletMemory

/// The virtio console device (virtio 1.x §5.3, device ID 3), as a plain state machine: one port
/// (no `VIRTIO_CONSOLE_F_MULTIPORT`), whose output goes to an ``OutputSink`` and whose input comes
/// from an ``InputSource`` (the host console's bounded buffers in production, arrays in tests).
///
/// Queues: `receiveq0` (index 0, device-writable buffers the driver posts for input) and
/// `transmitq0` (index 1, device-readable buffers the driver sends as output).
///
/// Behaviour:
/// - Features: ``VirtioFeature/version1``, indirect descriptors and event-idx; ``Feature/size``
///   with `cols`/`rows` in the configuration space when the terminal's size is known.
/// - Output: the readable bytes of each transmit chain go to the sink, in order, and the chain
///   returns with used length 0. When the sink is full the device keeps the chain it is sending
///   (``State/transmitting``: its head and how far it got) and takes no further chain until the
///   sink has room again and ``processTransmit(queue:memory:sink:)`` runs: the guest waits (Linux
///   spins on its console buffer), the host buffers nothing beyond the sink's capacity.
/// - Input: while the source holds bytes and the driver has posted receive chains, each chain's
///   writable buffers are filled in order with up to ``maximumChainLength`` bytes and returned with
///   the count. Without receive chains the bytes stay in the (bounded) source, and the device asks
///   the driver to notify it when it posts one.
/// - A transmit chain with a device-writable buffer, a receive chain with a device-readable one,
///   a chain longer than ``maximumChainLength`` or one the queue refuses (``ChainError``) is
///   returned with used length 0 and nothing sent or received: the request fails, the queue goes on.
/// - A broken ring (``QueueError``) is thrown: the caller sets `DEVICE_NEEDS_RESET`.
///
/// Threat model:
/// - Input: both queues' rings, descriptors and buffers, written by the guest at any time
///   (including between two runs over a chain the device is still sending).
/// - Threat: a guest that makes the host allocate unbounded memory (huge output the host reader
///   does not take, huge chains), do unbounded work per notification, trap, or read or write
///   outside guest RAM.
/// - Mitigation: every buffer comes from a checked ``DescriptorChain`` of at most
///   ``maximumChainLength`` bytes; output moves only as far as the sink's ``OutputSink/room``
///   allows, so host memory is the sink's own bound; a chain kept for later is walked and checked
///   again when it resumes (only its head and offset are kept); one run serves at most one ring's
///   worth of chains and ``maximumBytesPerRun`` bytes, then reports ``QueueProgress/moreWaiting``.
public struct VirtioConsole: Sendable {
    /// The virtio device ID of a console.
    public static let deviceID: UInt32 = 3
    /// Both queues' largest size.
    public static let queueMaximumSize: UInt16 = 256
    /// The receive queue's index (`receiveq0`).
    public static let receiveQueue = 0
    /// The transmit queue's index (`transmitq0`).
    public static let transmitQueue = 1
    /// The most bytes one chain may carry (Linux's console buffers are one page).
    public static let maximumChainLength: UInt32 = 64 << 10
    /// The most bytes one run moves.
    public static let maximumBytesPerRun = 1 << 20

    /// Console feature bits (virtio 1.x §5.3.3).
    public enum Feature {
        /// `VIRTIO_CONSOLE_F_SIZE`: `cols` and `rows` are valid.
        public static let size: UInt64 = 1 << 0
    }

    /// The terminal's size, for `VIRTIO_CONSOLE_F_SIZE`.
    public struct WindowSize: Codable, Equatable, Sendable {
        /// Columns.
        public var columns: UInt16
        /// Rows.
        public var rows: UInt16

        /// Creates a size.
        public init(columns: UInt16, rows: UInt16) {
            self.columns = columns
            self.rows = rows
        }
    }

    /// A transmit chain the device took but has not finished sending (the sink was full).
    public struct PendingChain: Codable, Equatable, Sendable {
        /// The chain's head, returned in the used ring once it is sent.
        public var head: UInt16
        /// The readable bytes already sent.
        public var sent: UInt32
    }

    /// The device's guest-visible state beyond its queues'.
    public struct State: Codable, Equatable, Sendable {
        /// The transmit chain being sent, if the sink filled up during it.
        public var transmitting: PendingChain?

        /// The state of a fresh (or reset) device.
        public init(transmitting: PendingChain? = nil) { self.transmitting = transmitting }
    }

    /// The terminal size presented, if known.
    public let windowSize: WindowSize?
    /// The device's state, for snapshots.
    public private(set) var state: State

    /// Creates the device.
    public init(windowSize: WindowSize? = nil, state: State = State()) {
        self.windowSize = windowSize
        self.state = state
    }

    /// What the transport presents: with a known size, ``Feature/size`` and the configuration space
    /// (`struct virtio_console_config`, little-endian): `cols` at 0, `rows` at 2, `max_nr_ports` at
    /// 4 and `emerg_wr` at 8, both 0 (neither feature is offered).
    public var description: VirtioDeviceDescription {
        var features = VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex
        var space = [UInt8](repeating: 0, count: 12)
        if let windowSize {
            features |= Feature.size
            space[0] = UInt8(truncatingIfNeeded: windowSize.columns)
            space[1] = UInt8(truncatingIfNeeded: windowSize.columns >> 8)
            space[2] = UInt8(truncatingIfNeeded: windowSize.rows)
            space[3] = UInt8(truncatingIfNeeded: windowSize.rows >> 8)
        }
        return VirtioDeviceDescription(deviceID: Self.deviceID, features: features,
                                       queueMaximumSizes: [Self.queueMaximumSize, Self.queueMaximumSize],
                                       configuration: space)
    }

    /// The driver reset the device: a chain being sent is forgotten with its queue.
    public mutating func reset() { state = State() }

    /// Sends the transmit chains the driver published on `queue` to `sink`, as far as its room allows.
    ///
    /// Finishes the chain kept from an earlier run first; stops, keeping the chain it is on, when the
    /// sink fills (call again when it has room), after one ring's worth of chains or
    /// ``maximumBytesPerRun`` bytes (``QueueProgress/moreWaiting``); otherwise re-arms the driver's
    /// notifications before returning.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET` and stop using the queue.
    public mutating func processTransmit(queue: inout SplitQueue, memory: GuestMemory,
                                         sink: some OutputSink) throws(QueueError) -> QueueProgress {
        var chains = 0
        var bytes = 0
        while true {
            while true {
                let pending: PendingChain
                if let kept = state.transmitting {
                    pending = kept
                } else if let head = try queue.popAvailable(in: memory) {
                    pending = PendingChain(head: head, sent: 0)
                } else {
                    break
                }
                let (sent, finished) = send(pending, queue: queue, memory: memory, sink: sink,
                                            budget: Self.maximumBytesPerRun - bytes)
                bytes += sent
                guard finished else {
                    state.transmitting = PendingChain(head: pending.head, sent: pending.sent + UInt32(sent))
                    // Out of room (the sink's hook brings the device back) or out of budget.
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory),
                                         moreWaiting: bytes >= Self.maximumBytesPerRun)
                }
                state.transmitting = nil
                try queue.addUsed(head: pending.head, length: 0, in: memory)
                chains += 1
                if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
                }
            }
            guard try queue.enableNotification(in: memory) else { break }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Sends chain `pending.head`'s readable bytes from `pending.sent` on, at most `budget` of them:
    /// returns the bytes sent and whether the chain is done (all sent, or refused).
    private func send(_ pending: PendingChain, queue: SplitQueue, memory: GuestMemory, sink: some OutputSink,
                      budget: Int) -> (sent: Int, finished: Bool) {
        guard let chain = try? queue.chain(head: pending.head, in: memory, maximumLength: Self.maximumChainLength),
              chain.writableLength == 0 else { return (0, true) }
        var skip = UInt64(pending.sent)
        var sent = 0
        for buffer in chain.buffers {
            if skip >= buffer.range.size {
                skip -= buffer.range.size
                continue
            }
            var offset = skip
            skip = 0
            while offset < buffer.range.size {
                let count = min(Int(buffer.range.size - offset), sink.room, budget - sent)
                guard count > 0 else { return (sent, false) }
                // The chain was checked against this memory: the range lies inside RAM.
                guard let bytes = try? memory.read(count: count, at: GuestAddress(buffer.range.start.rawValue + offset)) else {
                    return (sent, true)
                }
                let accepted = sink.write(contentsOf: bytes)
                sent += accepted
                offset += UInt64(accepted)
                guard accepted == count else { return (sent, false) }
            }
        }
        return (sent, true)
    }

    /// Moves waiting bytes from `source` into the receive chains the driver posted on `queue`.
    ///
    /// Stops when the source is empty, after one ring's worth of chains or ``maximumBytesPerRun``
    /// bytes (``QueueProgress/moreWaiting``). When input is left and the ring is empty, it asks the
    /// driver to notify the device when it posts a chain.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET` and stop using the queue.
    public mutating func processReceive(queue: inout SplitQueue, memory: GuestMemory,
                                        source: some InputSource) throws(QueueError) -> QueueProgress {
        var chains = 0
        var bytes = 0
        while !source.isEmpty {
            guard let head = try queue.popAvailable(in: memory) else {
                if try queue.enableNotification(in: memory) { continue }
                break
            }
            let written = receive(head: head, queue: queue, memory: memory, source: source)
            try queue.addUsed(head: head, length: UInt32(written), in: memory)
            chains += 1
            bytes += written
            if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: !source.isEmpty)
            }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Fills chain `head`'s writable buffers from `source`; returns the bytes written (0 for a
    /// chain that is refused or carries a device-readable buffer: no input is taken for it).
    private func receive(head: UInt16, queue: SplitQueue, memory: GuestMemory, source: some InputSource) -> Int {
        guard let chain = try? queue.chain(head: head, in: memory, maximumLength: Self.maximumChainLength),
              chain.readableLength == 0 else { return 0 }
        var written = 0
        for buffer in chain.buffers {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(Int(buffer.range.size))
            _ = source.take(upTo: Int(buffer.range.size)) { bytes.append($0) }
            guard !bytes.isEmpty else { break }
            // The chain was checked against this memory: the write cannot fail.
            guard (try? memory.write(bytes, at: buffer.range.start)) != nil else { break }
            written += bytes.count
            guard bytes.count == Int(buffer.range.size) else { break }
        }
        return written
    }
}
