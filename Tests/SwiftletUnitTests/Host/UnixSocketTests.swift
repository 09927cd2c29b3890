import Foundation
import Testing
import SwiftletHost
import SwiftletMemory
import SystemPackage

@Suite("Unix sockets") struct UnixSocketTests {
    /// A fresh directory for socket files (paths must stay under 108 bytes).
    static func directory() throws -> String {
        let path = "/tmp/swiftlet-uds-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func listensAcceptsAndRemovesItsSocketFile() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/v.sock"
        let listener = try UnixListener(path: path)
        #expect(listener.accept() == nil)                   // non-blocking: nobody yet
        let client = try UnixStream.connect(path: path)
        let server = try #require(listener.accept())
        #expect(try NonBlockingIO.send(FileDescriptor(rawValue: client), Array("CONNECT 5\n".utf8)[...]) == 10)
        var line = [UInt8](repeating: 0, count: 7)
        #expect(try NonBlockingIO.read(FileDescriptor(rawValue: server), into: &line, 0..<7) == 7)
        #expect(line == Array("CONNECT".utf8))
        var more = [UInt8](repeating: 0, count: 1)
        #expect(try NonBlockingIO.read(FileDescriptor(rawValue: client), into: &more, 0..<1) == nil)   // nothing waits
        UnixStream.close(client)
        UnixStream.close(server)
        listener.removeSocketFile()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aLiveListenerIsRefusedAndAStaleSocketReplaced() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/v.sock"
        var first: UnixListener? = try UnixListener(path: path)
        #expect(throws: UnixListenerError.inUse(path: path)) { _ = try UnixListener(path: path) }
        _ = first
        first = nil
        #expect(!FileManager.default.fileExists(atPath: path))        // its file went with it
        // A stale socket: bound, never listening, closed without unlinking (as after SIGKILL).
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        close(stale)
        #expect(FileManager.default.fileExists(atPath: path))
        let second = try UnixListener(path: path)
        let client = try UnixStream.connect(path: path)
        #expect(second.accept() != nil)
        UnixStream.close(client)
    }

    @Test func refusesWhatIsNotASocketAndAMissingDirectory() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/file"
        FileManager.default.createFile(atPath: file, contents: Data("keep".utf8))
        #expect(throws: UnixListenerError.notASocket(path: file)) { _ = try UnixListener(path: file) }
        #expect(FileManager.default.contents(atPath: file) == Data("keep".utf8))
        let missing = directory + "/no/such/v.sock"
        #expect(throws: UnixListenerError.noDirectory(path: missing)) { _ = try UnixListener(path: missing) }
        let long = "/tmp/" + String(repeating: "x", count: 110)
        #expect(throws: UnixListenerError.pathTooLong(path: long)) { _ = try UnixListener(path: long) }
    }

    @Test func guestMemoryMovesStraightToAndFromAStream() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let listener = try UnixListener(path: directory + "/v.sock")
        let client = try UnixStream.connect(path: directory + "/v.sock")
        let server = try #require(listener.accept())
        defer { UnixStream.close(client) }
        let memory = try GuestMemory(ranges: [GuestRange(start: GuestAddress(0), size: 0x10000)!])
        try memory.write(Array("hello world".utf8), at: GuestAddress(0x100))
        let ranges = [GuestRange(start: GuestAddress(0x100), size: 5)!, GuestRange(start: GuestAddress(0x105), size: 6)!]
        #expect(try memory.write(toStream: FileDescriptor(rawValue: client), from: ranges) == 11)
        let into = [GuestRange(start: GuestAddress(0x2000), size: 4)!, GuestRange(start: GuestAddress(0x3000), size: 20)!]
        #expect(try memory.read(fromStream: FileDescriptor(rawValue: server), into: into) == 11)
        #expect(try memory.read(count: 4, at: GuestAddress(0x2000)) == Array("hell".utf8))
        #expect(try memory.read(count: 7, at: GuestAddress(0x3000)) == Array("o world".utf8))
        #expect(throws: GuestMemoryError.readFailed(.resourceTemporarilyUnavailable)) {
            _ = try memory.read(fromStream: FileDescriptor(rawValue: server), into: into)
        }
        UnixStream.close(server)
        // The peer is gone: EPIPE, never SIGPIPE.
        var failed = false
        for _ in 0..<4 {
            do { _ = try memory.write(toStream: FileDescriptor(rawValue: client), from: ranges) } catch { failed = true }
        }
        #expect(failed)
    }
}
