import Foundation
import Synchronization
import Testing
import SwiftletHost

@Suite("Console output", .serialized) struct ConsoleOutputTests {
    /// The virtio console's path into the buffer: a reader that stops holds the sender at the
    /// buffer's bound (plus what the pipe holds), nothing is lost or reordered, and the room hook
    /// brings the sender back once the reader catches up.
    @Test(.timeLimit(.minutes(1))) func bulkWritesStopAtTheBoundAndResumeOnTheRoomHook() throws {
        let pipe = try EventLoopTests.Pipe()
        let output = try ConsoleOutput(fd: pipe.write, owned: false, name: "a pipe") { _ in }
        let roomCalls = Mutex(0)
        output.onRoom { roomCalls.withLock { $0 += 1 } }
        // Fill until the buffer (and the pipe behind the writer thread) takes nothing for 50 ms.
        var sent: [UInt8] = []
        var idleSince: Date?
        while idleSince.map({ Date().timeIntervalSince($0) < 0.05 }) ?? true {
            let chunk = (0..<4096).map { UInt8(truncatingIfNeeded: (sent.count + $0) % 251) }
            let taken = output.write(contentsOf: chunk)
            sent += chunk.prefix(taken)
            if taken == 0 {
                if idleSince == nil { idleSince = Date() }
                Thread.sleep(forTimeInterval: 0.005)
            } else {
                idleSince = nil
            }
        }
        #expect(output.room == 0)
        #expect(sent.count >= ConsoleOutput.capacity)
        #expect(sent.count <= ConsoleOutput.capacity + (1 << 20))       // the buffer plus at most a pipe's worth
        #expect(roomCalls.withLock { $0 } == 0)
        // The reader catches up: everything arrives in order and the hook fires.
        var received: [UInt8] = []
        while received.count < sent.count {
            if let byte = pipe.receive() { received.append(byte) }
        }
        #expect(received == sent)
        #expect(output.drain(until: .now + .seconds(5)) { false })
        #expect(roomCalls.withLock { $0 } >= 1)
        #expect(output.room == ConsoleOutput.capacity)
        #expect(output.droppedBytes == 0)
        output.shutDown()
    }
}
