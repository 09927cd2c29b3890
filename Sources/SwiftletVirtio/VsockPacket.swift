import SwiftletMemory

/// The header of every vsock packet (virtio 1.x §5.10.6, `struct virtio_vsock_hdr`): 44 bytes,
/// little-endian, followed by `len` payload bytes for `RW`.
///
/// | offset | field      | size |
/// |--------|------------|------|
/// | 0      | `src_cid`  | 8    |
/// | 8      | `dst_cid`  | 8    |
/// | 16     | `src_port` | 4    |
/// | 20     | `dst_port` | 4    |
/// | 24     | `len`      | 4    |
/// | 28     | `type`     | 2    |
/// | 30     | `op`       | 2    |
/// | 32     | `flags`    | 4    |
/// | 36     | `buf_alloc`| 4    |
/// | 40     | `fwd_cnt`  | 4    |
public struct VsockHeader: Equatable, Sendable {
    /// The size of the header in a buffer.
    public static let size = 44

    public var sourceCID: UInt64
    public var destinationCID: UInt64
    public var sourcePort: UInt32
    public var destinationPort: UInt32
    /// The payload length (`RW` only).
    public var length: UInt32
    /// The socket type (``VsockType``).
    public var type: UInt16
    /// The operation (``VsockOperation``).
    public var operation: UInt16
    /// `SHUTDOWN`'s ``VsockShutdown`` bits.
    public var flags: UInt32
    /// The sender's receive buffer size (its credit to the other side).
    public var bufferAllocation: UInt32
    /// The payload bytes the sender has consumed from this connection so far (mod 2^32).
    public var forwardCount: UInt32

    /// Creates a header.
    public init(sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32,
                length: UInt32 = 0, type: UInt16 = VsockType.stream, operation: UInt16, flags: UInt32 = 0,
                bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        self.sourceCID = sourceCID
        self.destinationCID = destinationCID
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.type = type
        self.operation = operation
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    /// Decodes the first ``size`` bytes of `bytes` (which holds at least that many).
    public init(bytes: [UInt8]) {
        precondition(bytes.count >= Self.size, "a vsock header is 44 bytes")
        sourceCID = ChainBytes.integer(bytes, at: 0)
        destinationCID = ChainBytes.integer(bytes, at: 8)
        sourcePort = ChainBytes.integer(bytes, at: 16)
        destinationPort = ChainBytes.integer(bytes, at: 20)
        length = ChainBytes.integer(bytes, at: 24)
        type = ChainBytes.integer(bytes, at: 28)
        operation = ChainBytes.integer(bytes, at: 30)
        flags = ChainBytes.integer(bytes, at: 32)
        bufferAllocation = ChainBytes.integer(bytes, at: 36)
        forwardCount = ChainBytes.integer(bytes, at: 40)
    }

    /// The 44 encoded bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        func put<T: FixedWidthInteger>(_ value: T) {
            for index in 0..<MemoryLayout<T>.size { out.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
        }
        put(sourceCID)
        put(destinationCID)
        put(sourcePort)
        put(destinationPort)
        put(length)
        put(type)
        put(operation)
        put(flags)
        put(bufferAllocation)
        put(forwardCount)
        return out
    }
}

/// vsock socket types (`type`).
public enum VsockType {
    /// `VIRTIO_VSOCK_TYPE_STREAM`: the only type this device serves.
    public static let stream: UInt16 = 1
    /// `VIRTIO_VSOCK_TYPE_SEQPACKET`: refused with `RST` (the feature is not offered).
    public static let sequencedPacket: UInt16 = 2
}

/// vsock operations (`op`).
public enum VsockOperation {
    public static let request: UInt16 = 1
    public static let response: UInt16 = 2
    public static let reset: UInt16 = 3
    public static let shutdown: UInt16 = 4
    public static let readWrite: UInt16 = 5
    public static let creditUpdate: UInt16 = 6
    public static let creditRequest: UInt16 = 7
}

/// `SHUTDOWN` flags.
public enum VsockShutdown {
    /// The sender will receive no more data.
    public static let receive: UInt32 = 1
    /// The sender will send no more data.
    public static let send: UInt32 = 2
}
