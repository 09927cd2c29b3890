import SwiftletHost
import SwiftletMemory
import SwiftletVirtio
import SystemPackage

/// ``VsockBackend`` over non-blocking Unix stream sockets watched on the event loop: guest
/// connections to host port P connect to `<path>_<P>`; streams are numbered from 1 (0 is the
/// listener's watch source) and watched only for what the device asks.
final class UnixVsockBackend: VsockBackend, @unchecked Sendable {
    private struct Stream {
        let fd: Int32
        var token: EventLoop.Token?
    }

    private let path: String
    private var streams: [Int: Stream] = [:]
    private var nextStream = 1
    /// The watcher of the current activation (loop thread only).
    var watcher: VirtioBackendWatcher?

    /// A backend whose host services listen at `<path>_<port>`.
    init(path: String) { self.path = path }

    /// Takes ownership of the stream `fd` and returns its number.
    func adopt(_ fd: Int32) -> Int {
        let stream = nextStream
        nextStream += 1
        streams[stream] = Stream(fd: fd, token: nil)
        return stream
    }

    func connect(port: UInt32) -> Int? {
        guard let fd = try? UnixStream.connect(path: "\(path)_\(port)") else { return nil }
        return adopt(fd)
    }

    func read(_ stream: Int, into ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        guard let fd = streams[stream]?.fd else { return .failed }
        do {
            return .moved(try memory.read(fromStream: FileDescriptor(rawValue: fd), into: ranges))
        } catch {
            return error == .readFailed(.resourceTemporarilyUnavailable) ? .wouldBlock : .failed
        }
    }

    func read(_ stream: Int, appendingTo bytes: inout [UInt8], count: Int) -> VsockIO {
        guard let fd = streams[stream]?.fd else { return .failed }
        var chunk = [UInt8](repeating: 0, count: count)
        do {
            guard let got = try NonBlockingIO.read(FileDescriptor(rawValue: fd), into: &chunk, 0..<count) else { return .wouldBlock }
            bytes += chunk.prefix(got)
            return .moved(got)
        } catch {
            return .failed
        }
    }

    func write(_ stream: Int, from ranges: [GuestRange], memory: GuestMemory) -> VsockIO {
        guard let fd = streams[stream]?.fd else { return .failed }
        do {
            return .moved(try memory.write(toStream: FileDescriptor(rawValue: fd), from: ranges))
        } catch {
            return error == .writeFailed(.resourceTemporarilyUnavailable) ? .wouldBlock : .failed
        }
    }

    func write(_ stream: Int, bytes: ArraySlice<UInt8>) -> VsockIO {
        guard let fd = streams[stream]?.fd else { return .failed }
        do {
            guard let sent = try NonBlockingIO.send(FileDescriptor(rawValue: fd), bytes) else { return .wouldBlock }
            return .moved(sent)
        } catch {
            return .failed
        }
    }

    func setInterest(_ stream: Int, _ events: VsockEvents) {
        guard var entry = streams[stream], let watcher else { return }
        var readiness: EventLoop.Readiness = []
        if events.contains(.readable) { readiness.insert(.readable) }
        if events.contains(.writable) { readiness.insert(.writable) }
        if readiness.isEmpty {
            // Not watched at all: a hung-up stream the device is not reading cannot wake the loop.
            if let token = entry.token { watcher.remove(token) }
            entry.token = nil
        } else if let token = entry.token {
            try? watcher.change(token, to: readiness)
        } else {
            entry.token = try? watcher.watch(entry.fd, for: readiness, source: stream)
        }
        streams[stream] = entry
    }

    func close(_ stream: Int) {
        guard let entry = streams.removeValue(forKey: stream) else { return }
        if let token = entry.token { watcher?.remove(token) }
        UnixStream.close(entry.fd)
    }
}

/// The vsock device in Firecracker's hybrid model: guest CID `cid`, host clients on the Unix
/// socket `listener`, host services for guest connections at `<path>_<port>`.
struct HostVsockDevice: VirtioQueueServer {
    /// The watch source of the listening socket (streams are 1 on).
    private static let listenerSource = 0
    /// The most clients accepted per readiness report of the listener.
    private static let acceptsPerWake = 16

    private var device: VirtioVsock
    private let listener: UnixListener
    private let backend: UnixVsockBackend

    /// The device for guest CID `cid` with host clients on `listener`.
    init(cid: UInt64, listener: UnixListener) {
        device = VirtioVsock(state: .init(guestCID: cid))
        self.listener = listener
        backend = UnixVsockBackend(path: listener.path)
    }

    var description: VirtioDeviceDescription { device.description }

    mutating func activate(features: UInt64, backend watcher: VirtioBackendWatcher) throws(HostError) {
        backend.watcher = watcher
        _ = try watcher.watch(listener.fd, for: .readable, source: Self.listenerSource)
    }

    mutating func deactivate() {
        device.reset(backend: backend)
        backend.watcher = nil
    }

    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try device.process(queue: index, queues: &queues, memory: memory, backend: backend)
    }

    mutating func backendReady(source: Int, readiness: EventLoop.Readiness, queues: inout [SplitQueue?],
                               memory: GuestMemory) throws(QueueError) -> QueueProgress {
        guard source != Self.listenerSource else {
            for _ in 0..<Self.acceptsPerWake {
                guard let fd = listener.accept() else { break }
                device.acceptHostConnection(backend.adopt(fd), backend: backend)
            }
            return QueueProgress(interrupt: false, moreWaiting: false)
        }
        var events: VsockEvents = []
        if readiness.contains(.readable) { events.insert(.readable) }
        if readiness.contains(.writable) { events.insert(.writable) }
        if readiness.isClosed { events.insert(.closed) }
        let progress = try device.streamReady(source, events: events, queues: &queues, memory: memory, backend: backend)
        // Readiness reports do not come back for a run cut short: serve the queues again soon.
        if progress.moreWaiting { backend.watcher?.requeue(VirtioVsock.transmitQueue) }
        return progress
    }
}
