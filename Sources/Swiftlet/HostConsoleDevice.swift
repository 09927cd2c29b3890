import SwiftletHost
import SwiftletMemory
import SwiftletVirtio

/// The virtio console over the machine's console buffers: output into the same ``ConsoleOutput``
/// (and so the same writer thread) as the UART's, input from the same ``ConsoleInputQueue`` the
/// standard-input reader fills (on the event loop).
///
/// Both buffers are filled or drained by other threads, which wake the device on the event loop
/// through two eventfds it watches while active: ``outputRoom`` (the console's writer made room
/// after the device stopped on a full buffer) and ``inputArrived`` (the standard-input reader
/// queued bytes). Nothing here blocks: the device only moves what the buffers take or hold.
struct HostConsoleDevice: VirtioQueueServer {
    /// The watched descriptors' tags.
    private enum Source: Int {
        case outputRoom = 0, inputArrived = 1
    }

    private var device: VirtioConsole
    private let output: ConsoleOutput
    private let input: ConsoleInputQueue
    /// Signal when the output buffer has room again (the ``ConsoleOutput/onRoom(_:)`` hook).
    let outputRoom: EventFD
    /// Signal when bytes were added to the input queue.
    let inputArrived: EventFD

    /// The device for `output` and `input`, presenting `windowSize` if known.
    init(output: ConsoleOutput, input: ConsoleInputQueue,
         windowSize: VirtioConsole.WindowSize?) throws(HostError) {
        device = VirtioConsole(windowSize: windowSize)
        self.output = output
        self.input = input
        outputRoom = try EventFD(nonBlocking: true)
        inputArrived = try EventFD(nonBlocking: true)
    }

    var description: VirtioDeviceDescription { device.description }

    mutating func activate(features: UInt64, backend: VirtioBackendWatcher) throws(HostError) {
        _ = try backend.watch(outputRoom.fd, for: .readable, source: Source.outputRoom.rawValue)
        _ = try backend.watch(inputArrived.fd, for: .readable, source: Source.inputArrived.rawValue)
        // Input typed before the driver was ready goes in as soon as it posts buffers.
        backend.requeue(VirtioConsole.receiveQueue)
    }

    mutating func deactivate() {
        device.reset()
    }

    mutating func process(queue index: Int, queues: inout [SplitQueue?], memory: GuestMemory) throws(QueueError) -> QueueProgress {
        try withEnabledQueue(index, in: &queues) { queue throws(QueueError) in
            switch index {
            case VirtioConsole.receiveQueue: return try device.processReceive(queue: &queue, memory: memory, source: input)
            case VirtioConsole.transmitQueue: return try device.processTransmit(queue: &queue, memory: memory, sink: output)
            default: return QueueProgress(interrupt: false, moreWaiting: false)
            }
        }
    }

    mutating func backendReady(source: Int, readiness: EventLoop.Readiness, queues: inout [SplitQueue?],
                               memory: GuestMemory) throws(QueueError) -> QueueProgress {
        let (event, index): (EventFD, Int)
        switch Source(rawValue: source) {
        case .outputRoom?: (event, index) = (outputRoom, VirtioConsole.transmitQueue)
        case .inputArrived?: (event, index) = (inputArrived, VirtioConsole.receiveQueue)
        case nil: return QueueProgress(interrupt: false, moreWaiting: false)
        }
        _ = event.take()
        let progress = try process(queue: index, queues: &queues, memory: memory)
        // Out of budget: come back after the loop's other sources.
        if progress.moreWaiting { event.signal() }
        return progress
    }
}
