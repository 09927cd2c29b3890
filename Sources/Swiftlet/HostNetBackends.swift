import SwiftletHost
import SwiftletMemory
import SwiftletVirtio
import SystemPackage

/// A ``NetBackend`` on a host descriptor the event loop watches.
protocol HostNetBackend: NetBackend {
    /// The descriptor to watch: readable when a frame may be waiting, writable when held output can go.
    var fd: FileDescriptor { get }
    /// Whether output is held back, waiting for room in the descriptor.
    var hasPendingOutput: Bool { get }
    /// Writes held-back output while the descriptor takes it.
    func flush() throws(NetBackendError)
}

/// A TAP interface as a ``NetBackend``: frames carry the virtio-net header both ways, so the
/// guest's checksum and TSO offloads pass through; a frame goes out with one `writev` straight from
/// guest RAM and comes in with one `read`.
final class TapNetBackend: HostNetBackend, @unchecked Sendable {
    private let tap: TapDevice
    var fd: FileDescriptor { tap.fd }
    let carriesHeader = true
    let supportsOffloads = true
    let hasPendingOutput = false

    init(_ tap: TapDevice) { self.tap = tap }

    /// The kernel may deliver partial checksums and TSO segments only if the driver takes them.
    func enableOffloads(guestFeatures: UInt64) throws(NetBackendError) {
        let feature = VirtioNet.Feature.self
        do {
            try tap.setOffloads(checksum: guestFeatures & feature.guestChecksum != 0,
                                tso4: guestFeatures & feature.guestTSO4 != 0, tso6: guestFeatures & feature.guestTSO6 != 0)
        } catch {
            throw NetBackendError(error.description)
        }
    }

    func send(_ ranges: [GuestRange], memory: GuestMemory) throws(NetBackendError) -> Bool {
        do {
            _ = try memory.write(to: tap.fd, from: ranges)
            return true
        } catch {
            if case .writeFailed(let errno) = error, errno == .resourceTemporarilyUnavailable { return false }
            throw NetBackendError("writing to TAP \(tap.name): \(error)")
        }
    }

    func receive(into buffer: inout [UInt8], at offset: Int) throws(NetBackendError) -> Int? {
        do {
            return try NonBlockingIO.read(tap.fd, into: &buffer, offset..<buffer.count)
        } catch {
            throw NetBackendError("reading TAP \(tap.name): \(error)")
        }
    }

    func flush() throws(NetBackendError) {}
}

/// passt as a ``NetBackend``: frames on its Unix stream socket as a 4-byte big-endian length and
/// the Ethernet frame, no virtio-net header, no offloads.
///
/// The stream may take or give part of a frame at a time, so both directions go through bounded
/// host buffers: output waits in at most ``outputCapacity`` bytes (a frame that does not fit is
/// refused, and the device retries once the socket drained some), input is read in large chunks
/// into ``inputCapacity`` bytes and cut into frames. A length above ``VirtioNet/maximumFrameLength``
/// means the stream is broken: the backend stops reading it.
final class PasstNetBackend: HostNetBackend, @unchecked Sendable {
    /// The most bytes of output held back.
    static let outputCapacity = 256 << 10
    /// The input buffer: room for two of the longest frames with their lengths.
    static let inputCapacity = 2 * (4 + VirtioNet.maximumFrameLength)

    /// What keeps the socket open (the passt process).
    private let owner: any Sendable
    let fd: FileDescriptor
    let carriesHeader = false
    let supportsOffloads = false
    private var output: [UInt8] = []
    private var outputSent = 0
    private var input = [UInt8](repeating: 0, count: PasstNetBackend.inputCapacity)
    private var inputStart = 0, inputEnd = 0
    /// The stream ended or broke: nothing more is read.
    private var inputClosed = false

    /// The backend on passt's socket.
    convenience init(_ passt: PasstProcess) { self.init(socket: passt.socket, owner: passt) }

    /// The backend on a connected stream `socket` (non-blocking) that `owner` keeps open.
    init(socket: FileDescriptor, owner: any Sendable) {
        fd = socket
        self.owner = owner
    }

    var hasPendingOutput: Bool { outputSent < output.count }

    func enableOffloads(guestFeatures: UInt64) throws(NetBackendError) {}

    func send(_ ranges: [GuestRange], memory: GuestMemory) throws(NetBackendError) -> Bool {
        let length = ranges.reduce(0) { $0 + Int($1.size) }
        try flush()
        guard output.count - outputSent + 4 + length <= Self.outputCapacity else { return false }
        if outputSent > 0 {
            output.removeFirst(outputSent)
            outputSent = 0
        }
        output += [UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                   UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
        for range in ranges {
            do { output += try memory.read(count: Int(range.size), at: range.start) } catch {
                throw NetBackendError("\(error)")
            }
        }
        try flush()
        return true
    }

    func flush() throws(NetBackendError) {
        while outputSent < output.count {
            let sent: Int?
            do { sent = try NonBlockingIO.send(fd, output[outputSent...]) } catch {
                output.removeAll()
                outputSent = 0
                throw NetBackendError("writing to passt: \(error)")
            }
            guard let sent, sent > 0 else { return }
            outputSent += sent
        }
        output.removeAll(keepingCapacity: true)
        outputSent = 0
    }

    func receive(into buffer: inout [UInt8], at offset: Int) throws(NetBackendError) -> Int? {
        while !inputClosed {
            if inputEnd - inputStart >= 4 {
                let length = input[inputStart..<inputStart + 4].reduce(0) { $0 << 8 | Int($1) }
                guard length <= VirtioNet.maximumFrameLength else {
                    inputClosed = true
                    throw NetBackendError("passt sent a frame length of \(length) bytes; the stream is broken")
                }
                if inputEnd - inputStart >= 4 + length {
                    let frame = inputStart + 4
                    let count = min(length, buffer.count - offset)
                    buffer.replaceSubrange(offset..<offset + count, with: input[frame..<frame + count])
                    inputStart = frame + length
                    return count
                }
            }
            if inputStart > 0 {
                input.replaceSubrange(0..<inputEnd - inputStart, with: input[inputStart..<inputEnd])
                inputEnd -= inputStart
                inputStart = 0
            }
            let got: Int?
            do { got = try NonBlockingIO.read(fd, into: &input, inputEnd..<input.count) } catch {
                inputClosed = true
                throw NetBackendError("reading from passt: \(error)")
            }
            guard let got else { return nil }
            guard got > 0 else {
                inputClosed = true
                return nil
            }
            inputEnd += got
        }
        return nil
    }
}
