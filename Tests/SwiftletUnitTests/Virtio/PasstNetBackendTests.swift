import Foundation
import SystemPackage
import Testing
@testable import Swiftlet
import SwiftletHost
import SwiftletMemory
import SwiftletVirtio

@Suite("passt stream backend") struct PasstNetBackendTests {
    /// A backend on one end of a non-blocking Unix stream socket pair; the other end is the "passt" side.
    final class Pair: @unchecked Sendable {
        let backend: PasstNetBackend
        let peer: FileDescriptor
        private let mine: FileDescriptor

        init(sendBuffer: Int32? = nil) throws {
            var fds: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
                throw Errno(rawValue: errno)
            }
            if var size = sendBuffer {
                for fd in fds { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4); setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4) }
            }
            mine = FileDescriptor(rawValue: fds[0])
            peer = FileDescriptor(rawValue: fds[1])
            backend = PasstNetBackend(socket: mine, owner: 0)
        }

        deinit {
            try? mine.close()
            try? peer.close()
        }

        func peerWrite(_ bytes: [UInt8]) throws {
            var rest = bytes[...]
            while !rest.isEmpty {
                guard let sent = try NonBlockingIO.send(peer, rest) else { throw Errno.resourceTemporarilyUnavailable }
                rest = rest.dropFirst(sent)
            }
        }

        func peerReadAll() throws -> [UInt8] {
            var result: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while let got = try NonBlockingIO.read(peer, into: &buffer, 0..<buffer.count), got > 0 {
                result += buffer[0..<got]
            }
            return result
        }
    }

    static func framed(_ frame: [UInt8]) -> [UInt8] {
        let n = frame.count
        return [UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + frame
    }

    @Test func cutsTheStreamIntoFramesWhateverPiecesItArrivesIn() throws {
        let pair = try Pair()
        var buffer = [UInt8](repeating: 0xee, count: 12 + VirtioNet.maximumFrameLength)
        #expect(try pair.backend.receive(into: &buffer, at: 12) == nil)
        let first = (0..<100).map { UInt8($0) }, second = [UInt8](repeating: 7, count: 3000)
        let stream = Self.framed(first) + Self.framed(second)
        try pair.peerWrite(Array(stream[0..<2]))
        #expect(try pair.backend.receive(into: &buffer, at: 12) == nil)
        try pair.peerWrite(Array(stream[2..<150]))
        #expect(try pair.backend.receive(into: &buffer, at: 12) == 100)
        #expect(Array(buffer[12..<112]) == first)
        #expect(buffer[0] == 0xee)
        #expect(try pair.backend.receive(into: &buffer, at: 12) == nil)
        try pair.peerWrite(Array(stream[150...]))
        #expect(try pair.backend.receive(into: &buffer, at: 12) == 3000)
        #expect(Array(buffer[12..<3012]) == second)
        #expect(try pair.backend.receive(into: &buffer, at: 12) == nil)
    }

    @Test func aLengthAboveTheLimitBreaksTheStreamForGood() throws {
        let pair = try Pair()
        var buffer = [UInt8](repeating: 0, count: 12 + VirtioNet.maximumFrameLength)
        try pair.peerWrite([0, 2, 0, 0] + [UInt8](repeating: 1, count: 100))      // 128 KiB
        #expect(throws: NetBackendError.self) { try pair.backend.receive(into: &buffer, at: 12) }
        try pair.peerWrite(Self.framed([1, 2, 3]))
        #expect(try pair.backend.receive(into: &buffer, at: 12) == nil)
    }

    @Test func theEndOfTheStreamIsNoMoreFrames() throws {
        var buffer = [UInt8](repeating: 0, count: 100)
        let pair = try Pair()
        try pair.peerWrite(Self.framed([9, 9]))
        try pair.peer.close()
        #expect(try pair.backend.receive(into: &buffer, at: 0) == 2)
        #expect(try pair.backend.receive(into: &buffer, at: 0) == nil)
    }

    @Test func framesGoOutLengthPrefixedAndABlockedPeerFillsOnlyTheBoundedBuffer() throws {
        let pair = try Pair(sendBuffer: 4096)
        let memory = try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x2_0000)!])
        let frame = (0..<60_000).map { UInt8(truncatingIfNeeded: $0 * 3) }
        try memory.write(frame, at: GuestAddress(0x1000))
        let ranges = [GuestRange(start: GuestAddress(0x1000), size: 20_000)!, GuestRange(start: GuestAddress(0x1000 + 20_000), size: 40_000)!]
        var accepted = 0
        while try pair.backend.send(ranges, memory: memory) {
            accepted += 1
            #expect(accepted < 100, "the output buffer is not bounded")
            if accepted >= 100 { break }
        }
        #expect(accepted >= PasstNetBackend.outputCapacity / 60_004 - 1)
        #expect(pair.backend.hasPendingOutput)
        var received: [UInt8] = []
        while pair.backend.hasPendingOutput {
            received += try pair.peerReadAll()
            try pair.backend.flush()
        }
        received += try pair.peerReadAll()
        #expect(received == Array((0..<accepted).map { _ in Self.framed(frame) }.joined()))
    }
}
