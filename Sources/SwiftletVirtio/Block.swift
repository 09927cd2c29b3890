import SwiftletMemory

/// Why a ``BlockBackend`` could not serve a request; the device answers with the matching status.
public enum BlockBackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The host I/O failed or came up short (`VIRTIO_BLK_S_IOERR`); the message says which call.
    case ioError(String)
    /// The backend cannot do this kind of request (`VIRTIO_BLK_S_UNSUPP`), e.g. a host file system
    /// without hole punching.
    case unsupported(String)

    public var description: String {
        switch self {
        case let .ioError(message), let .unsupported(message): return message
        }
    }
}

/// Where a ``VirtioBlock`` device's sectors live: a raw image file in production, an array in tests.
///
/// The device checks every request against ``capacity`` and the disk's read-only flag before it
/// calls the backend, so a backend only ever sees sector ranges inside the disk. Data moves straight
/// between the backend and the guest `ranges` (each inside guest RAM) in order.
public protocol BlockBackend: Sendable {
    /// The disk's size in 512-byte sectors.
    var capacity: UInt64 { get }
    /// Reads the sectors from `sector` on into `ranges` (their total is a multiple of 512), completely.
    func read(sector: UInt64, into ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError)
    /// Writes `ranges` to the sectors from `sector` on, completely.
    func write(sector: UInt64, from ranges: [GuestRange], memory: GuestMemory) throws(BlockBackendError)
    /// Makes every completed write durable before it returns (`fdatasync`).
    func flush() throws(BlockBackendError)
    /// Deallocates `count` sectors from `sector` on; they then read as zeroes.
    func discard(sector: UInt64, count: UInt64) throws(BlockBackendError)
    /// Makes `count` sectors from `sector` on read as zeroes.
    func writeZeroes(sector: UInt64, count: UInt64) throws(BlockBackendError)
}

/// The virtio block device (virtio 1.x §5.2, device ID 2), as a plain state machine over one
/// request queue and a ``BlockBackend``.
///
/// Request layout (§5.2.6): a 16-byte device-readable header `{type u32, reserved u32, sector u64}`,
/// the data buffers (device-readable for writes, discards and write-zeroes, device-writable for
/// reads and `GET_ID`), and a 1-byte device-writable status at the very end. The header and the
/// status may share buffers with the data: the device works on byte offsets within the chain's
/// readable and writable parts, never on descriptor boundaries.
///
/// Behaviour:
/// - `IN` (0) / `OUT` (1): whole sectors (a multiple of 512 bytes) inside the disk; a write to a
///   read-only disk fails with `IOERR` without touching it.
/// - `FLUSH` (4): the backend's flush completes before the status is written.
/// - `GET_ID` (8): the serial, 20 bytes, zero-padded.
/// - `DISCARD` (11) / `WRITE_ZEROES` (13): one segment `{sector u64, num_sectors u32, flags u32}`;
///   `unmap` is allowed for write-zeroes only, other flag bits get `UNSUPP`.
/// - Any other type: `UNSUPP`. Any malformed request (short header, data in the wrong direction,
///   partial sectors, a range past the end or overflowing): `IOERR`.
/// - A chain the queue refuses (``ChainError``) or without a writable status byte is returned with
///   length 0: there is nowhere to put a status. A broken ring (``QueueError``) is thrown: the
///   caller sets `DEVICE_NEEDS_RESET`.
///
/// Threat model:
/// - Input: the rings, descriptors, headers and segments, written by the guest at any time.
/// - Threat: a guest that makes the host trap (overflowing sector arithmetic), read or write
///   outside the image or outside guest RAM, write a read-only image, or do unbounded work per
///   notification.
/// - Mitigation: buffers come from a checked ``DescriptorChain``; the header and segments are read
///   once into locals and every sector range is checked with overflow-reporting arithmetic against
///   the capacity before the backend sees it; one run serves at most one ring's worth of chains and
///   about ``maximumBytesPerRun`` bytes, then reports ``QueueProgress/moreWaiting``.
public struct VirtioBlock: Sendable {
    /// The virtio device ID of a block device.
    public static let deviceID: UInt32 = 2
    /// The request queue's largest size.
    public static let queueMaximumSize: UInt16 = 256
    /// The sector size of the protocol.
    public static let sectorSize: UInt64 = 512
    /// The length of the serial `GET_ID` returns.
    public static let serialLength = 20
    /// The data bytes after which one ``process(queue:memory:backend:)`` run yields.
    public static let maximumBytesPerRun: UInt64 = 16 << 20
    /// The most data buffers per request the driver is told (`seg_max`): the queue size less the
    /// header and status.
    public static let maximumSegments: UInt32 = UInt32(queueMaximumSize) - 2

    /// Block-device feature bits (virtio 1.x §5.2.3).
    public enum Feature {
        /// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` is valid.
        public static let segmentMaximum: UInt64 = 1 << 2
        /// `VIRTIO_BLK_F_RO`: the disk is read-only.
        public static let readOnly: UInt64 = 1 << 5
        /// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` is valid.
        public static let blockSize: UInt64 = 1 << 6
        /// `VIRTIO_BLK_F_FLUSH`: the `FLUSH` request.
        public static let flush: UInt64 = 1 << 9
        /// `VIRTIO_BLK_F_DISCARD`: the `DISCARD` request and its configuration fields.
        public static let discard: UInt64 = 1 << 13
        /// `VIRTIO_BLK_F_WRITE_ZEROES`: the `WRITE_ZEROES` request and its configuration fields.
        public static let writeZeroes: UInt64 = 1 << 14
    }

    /// Request types (`type` in the header).
    public enum RequestType {
        public static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
        public static let discard: UInt32 = 11, writeZeroes: UInt32 = 13
    }

    /// Request statuses (the last byte of the chain).
    public enum Status {
        public static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2
    }

    /// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP` in a segment's flags.
    static let unmapFlag: UInt32 = 1

    /// What the device presents, fixed when it is attached.
    public struct Configuration: Codable, Equatable, Sendable {
        /// The disk's size in 512-byte sectors.
        public var capacity: UInt64
        /// Whether the disk refuses writes (`VIRTIO_BLK_F_RO`; no discard or write-zeroes offered).
        public var readOnly: Bool
        /// The serial `GET_ID` returns (its first 20 bytes of UTF-8).
        public var serial: String

        /// Creates a configuration.
        public init(capacity: UInt64, readOnly: Bool, serial: String) {
            self.capacity = capacity
            self.readOnly = readOnly
            self.serial = serial
        }
    }

    /// The device's own guest-visible state: none beyond its queue's, which the queue's owner keeps;
    /// kept for the snapshot shape every device shares.
    public struct State: Codable, Equatable, Sendable {
        /// The state of a fresh device.
        public init() {}
    }

    /// What the device presents.
    public let configuration: Configuration
    /// The device's state, for snapshots.
    public private(set) var state: State

    /// Creates the device.
    public init(configuration: Configuration, state: State = State()) {
        self.configuration = configuration
        self.state = state
    }

    /// What the transport presents: the features and the configuration space (`struct
    /// virtio_blk_config`, little-endian): `capacity` at 0, `seg_max` at 12, `blk_size` at 20,
    /// `max_discard_sectors`, `max_discard_seg`, `discard_sector_alignment` at 36–47,
    /// `max_write_zeroes_sectors`, `max_write_zeroes_seg`, `write_zeroes_may_unmap` at 48–56.
    public var description: VirtioDeviceDescription {
        var features = VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex | Feature.segmentMaximum
            | Feature.blockSize | Feature.flush
        features |= configuration.readOnly ? Feature.readOnly : Feature.discard | Feature.writeZeroes
        var space = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for index in 0..<MemoryLayout<T>.size { space[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(configuration.capacity, at: 0)
        put(Self.maximumSegments, at: 12)
        put(UInt32(Self.sectorSize), at: 20)
        put(UInt32.max, at: 36)        // max_discard_sectors
        put(UInt32(1), at: 40)         // max_discard_seg
        put(UInt32(1), at: 44)         // discard_sector_alignment
        put(UInt32.max, at: 48)        // max_write_zeroes_sectors
        put(UInt32(1), at: 52)         // max_write_zeroes_seg
        put(UInt8(1), at: 56)          // write_zeroes_may_unmap
        return VirtioDeviceDescription(deviceID: Self.deviceID, features: features,
                                       queueMaximumSizes: [Self.queueMaximumSize], configuration: space)
    }

    /// Serves the requests the driver published on `queue` through `backend`, writing each status
    /// before the chain goes back in the used ring.
    ///
    /// Stops after one ring's worth of chains or about ``maximumBytesPerRun`` data bytes; otherwise
    /// re-arms the driver's notifications before returning, so a chain published meanwhile is not missed.
    /// - Throws: ``QueueError`` for a broken ring: set `DEVICE_NEEDS_RESET` and stop using the queue.
    public mutating func process(queue: inout SplitQueue, memory: GuestMemory,
                                 backend: some BlockBackend) throws(QueueError) -> QueueProgress {
        var chains = 0
        var bytes: UInt64 = 0
        while true {
            while let head = try queue.popAvailable(in: memory) {
                let (written, moved) = serve(head: head, queue: queue, memory: memory, backend: backend)
                try queue.addUsed(head: head, length: written, in: memory)
                chains += 1
                bytes += moved
                if chains >= Int(queue.state.size) || bytes >= Self.maximumBytesPerRun {
                    return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: true)
                }
            }
            guard try queue.enableNotification(in: memory) else { break }
        }
        return QueueProgress(interrupt: try queue.needsNotification(in: memory), moreWaiting: false)
    }

    /// Serves chain `head`: returns the bytes written to its writable buffers (the used length) and
    /// the data bytes moved (for the run's budget).
    private func serve(head: UInt16, queue: SplitQueue, memory: GuestMemory,
                       backend: some BlockBackend) -> (written: UInt32, moved: UInt64) {
        guard let chain = try? queue.chain(head: head, in: memory), chain.writableLength > 0 else { return (0, 0) }
        let readable = chain.buffers.filter { !$0.isWritable }.map(\.range)
        let writable = chain.buffers.filter(\.isWritable).map(\.range)
        let dataOut = UInt64(chain.writableLength) - 1
        // The status byte is the last writable byte.
        guard let status = ChainBytes.slice(writable, from: dataOut, count: 1).first else { return (0, 0) }
        let request = Request(readable: readable, readableLength: UInt64(chain.readableLength),
                              writable: ChainBytes.slice(writable, from: 0, count: dataOut), writableLength: dataOut)
        let (code, written, moved) = handle(request, memory: memory, backend: backend)
        do {
            try memory.store(code, at: status.start)
        } catch {
            return (0, moved)       // the chain was checked against this memory: cannot happen
        }
        return (UInt32(written) + 1, moved)
    }

    /// One request's buffers, split into the readable part (header first) and the writable data
    /// before the status byte.
    struct Request {
        let readable: [GuestRange]
        let readableLength: UInt64
        let writable: [GuestRange]
        let writableLength: UInt64
    }

    /// Carries out `request`: its status, the data bytes written to the guest, the data bytes moved.
    private func handle(_ request: Request, memory: GuestMemory,
                        backend: some BlockBackend) -> (status: UInt8, written: UInt64, moved: UInt64) {
        let failed: (UInt8, UInt64, UInt64) = (Status.ioError, 0, 0)
        guard request.readableLength >= 16,
              let header = try? ChainBytes.gather(request.readable, count: 16, memory: memory) else { return failed }
        let type = UInt32(littleEndian: ChainBytes.integer(header, at: 0))
        let sector = UInt64(littleEndian: ChainBytes.integer(header, at: 8))
        let dataIn = request.readableLength - 16
        switch type {
        case RequestType.read:
            guard dataIn == 0, isInside(sector, bytes: request.writableLength) else { return failed }
            guard request.writableLength > 0 else { return (Status.ok, 0, 0) }
            do { try backend.read(sector: sector, into: request.writable, memory: memory) } catch { return failed }
            return (Status.ok, request.writableLength, request.writableLength)
        case RequestType.write:
            guard request.writableLength == 0, !configuration.readOnly,
                  isInside(sector, bytes: dataIn) else { return failed }
            guard dataIn > 0 else { return (Status.ok, 0, 0) }
            do {
                try backend.write(sector: sector, from: ChainBytes.slice(request.readable, from: 16, count: dataIn), memory: memory)
            } catch { return failed }
            return (Status.ok, 0, dataIn)
        case RequestType.flush:
            guard dataIn == 0, request.writableLength == 0 else { return failed }
            do { try backend.flush() } catch { return failed }
            return (Status.ok, 0, 0)
        case RequestType.getID:
            guard dataIn == 0, request.writableLength > 0 else { return failed }
            var serial = Array(configuration.serial.utf8.prefix(Self.serialLength))
            serial += [UInt8](repeating: 0, count: Self.serialLength - serial.count)
            let count = min(UInt64(Self.serialLength), request.writableLength)
            var offset: UInt64 = 0
            for range in ChainBytes.slice(request.writable, from: 0, count: count) {
                do {
                    try memory.write(serial[Int(offset)..<Int(offset + range.size)], at: range.start)
                } catch { return failed }
                offset += range.size
            }
            return (Status.ok, count, 0)
        case RequestType.discard, RequestType.writeZeroes:
            guard !configuration.readOnly, request.writableLength == 0, dataIn == 16,
                  let segment = try? ChainBytes.gather(ChainBytes.slice(request.readable, from: 16, count: 16), count: 16,
                                                 memory: memory) else { return failed }
            let start = UInt64(littleEndian: ChainBytes.integer(segment, at: 0))
            let count = UInt64(UInt32(littleEndian: ChainBytes.integer(segment, at: 8)))
            let flags = UInt32(littleEndian: ChainBytes.integer(segment, at: 12))
            let allowed = type == RequestType.writeZeroes ? Self.unmapFlag : 0
            guard flags & ~allowed == 0 else { return (Status.unsupported, 0, 0) }
            guard isInside(start, bytes: count * Self.sectorSize) else { return failed }
            guard count > 0 else { return (Status.ok, 0, 0) }
            do {
                if type == RequestType.discard {
                    try backend.discard(sector: start, count: count)
                } else {
                    try backend.writeZeroes(sector: start, count: count)
                }
            } catch let error {
                if case .unsupported = error { return (Status.unsupported, 0, 0) }
                return failed
            }
            return (Status.ok, 0, 0)
        default:
            return (Status.unsupported, 0, 0)
        }
    }

    /// Whether `bytes` bytes from `sector` on are whole sectors inside the disk (overflow-checked).
    private func isInside(_ sector: UInt64, bytes: UInt64) -> Bool {
        guard bytes % Self.sectorSize == 0 else { return false }
        let (end, overflow) = sector.addingReportingOverflow(bytes / Self.sectorSize)
        return !overflow && end <= configuration.capacity
    }
}
