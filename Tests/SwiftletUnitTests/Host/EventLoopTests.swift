import Foundation
import Synchronization
import Testing
import SwiftletHost

@Suite("Event loop", .serialized) struct EventLoopTests {
    /// A pipe whose ends close with the test.
    final class Pipe: @unchecked Sendable {
        let read: Int32, write: Int32
        init() throws {
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw HostError("pipe", .init(rawValue: errno)) }
            (read, write) = (ends[0], ends[1])
        }
        deinit { close(read); close(write) }
        func send(_ byte: UInt8) { var b = byte; _ = Foundation.write(write, &b, 1) }
        func receive() -> UInt8? { var b: UInt8 = 0; return Foundation.read(read, &b, 1) == 1 ? b : nil }
    }

    /// Runs `loop` on its own thread and waits (at most 10 s) for it to return.
    func runOnThread(_ loop: EventLoop) -> () -> Bool {
        let done = Mutex(false)
        Thread.detachNewThread {
            loop.run()
            done.withLock { $0 = true }
        }
        return {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if done.withLock({ $0 }) { return true }
                Thread.sleep(forTimeInterval: 0.005)
            }
            return false
        }
    }

    @Test func readableSourcesRunTheirHandlerOnTheLoopThread() throws {
        let loop = try EventLoop()
        let pipe = try Pipe()
        let seen = Mutex<[UInt8]>([])
        let onLoop = Mutex(true)
        try loop.watch(pipe.read, for: .readable) { readiness in
            #expect(readiness.contains(.readable))
            if !loop.isLoopThread { onLoop.withLock { $0 = false } }
            if let byte = pipe.receive() { seen.withLock { $0.append(byte) } }
            if seen.withLock({ $0.count }) == 3 { loop.stop() }
            return .keep
        }
        let finished = runOnThread(loop)
        for byte: UInt8 in [1, 2, 3] { pipe.send(byte) }
        #expect(finished())
        #expect(seen.withLock { $0 } == [1, 2, 3])
        #expect(onLoop.withLock { $0 })
        #expect(!loop.isLoopThread)
    }

    @Test func workFromOtherThreadsRunsOnTheLoopInOrder() throws {
        let loop = try EventLoop()
        let order = Mutex<[Int]>([])
        let finished = runOnThread(loop)
        for index in 0..<100 {
            loop.execute {
                #expect(loop.isLoopThread)
                order.withLock { $0.append(index) }
            }
        }
        loop.execute { loop.stop() }
        #expect(finished())
        #expect(order.withLock { $0 } == Array(0..<100))
    }

    @Test func aLoopThreadRunsWorkFromStartToStopAndStartsAndStopsOnce() throws {
        let io = try EventLoopThread(name: "test-io")
        let ran = try EventFD()
        try io.start()
        try io.start()                                   // no second thread
        io.loop.execute {
            #expect(io.loop.isLoopThread)
            ran.signal()
        }
        ran.wait()
        io.stop()
        io.stop()                                        // no second join
        try io.start()                                   // stopped for good
        #expect(!io.loop.isLoopThread)
    }

    @Test func aRemovedSourceIsNotCalledAgain() throws {
        let loop = try EventLoop()
        let pipe = try Pipe()
        let calls = Mutex(0)
        try loop.watch(pipe.read, for: .readable) { _ in
            calls.withLock { $0 += 1 }
            return .remove                        // leaves its data unread: still readable
        }
        pipe.send(9)
        let finished = runOnThread(loop)
        Thread.sleep(forTimeInterval: 0.1)
        loop.stop()
        #expect(finished())
        #expect(calls.withLock { $0 } == 1)
    }

    @Test func writableReadinessCanBeAskedForAndDropped() throws {
        let loop = try EventLoop()
        let pipe = try Pipe()
        let writable = Mutex(0)
        let token = try loop.watch(pipe.write, for: []) { readiness in
            if readiness.contains(.writable) { writable.withLock { $0 += 1 } }
            loop.stop()
            return .keep
        }
        try loop.change(token, to: .writable)
        let finished = runOnThread(loop)
        #expect(finished())
        #expect(writable.withLock { $0 } == 1)
    }

    @Test func eitherHangUpOrErrorIsClosed() {
        typealias R = EventLoop.Readiness
        #expect(R(rawValue: 0x010).isClosed)                           // EPOLLHUP alone: a pipe whose writers are gone
        #expect(R(rawValue: 0x008).isClosed)                           // EPOLLERR alone
        #expect(!R.readable.isClosed && !R.writable.isClosed)
    }

    @Test func aBadDescriptorIsAHostErrorNotATrap() throws {
        let loop = try EventLoop()
        #expect(throws: HostError.self) { try loop.watch(-1, for: .readable) { _ in .keep } }
        let pipe = try Pipe()
        let token = try loop.watch(pipe.read, for: .readable) { _ in .keep }
        #expect(throws: HostError.self) { try loop.watch(pipe.read, for: .readable) { _ in .keep } }   // twice
        loop.remove(token)
        loop.remove(token)                        // removing twice is harmless
    }
}
