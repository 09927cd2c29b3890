import SwiftletMemory

/// A ``NetBackend`` over arrays, for tests and fuzzing: frames the device sends are recorded in
/// ``sent``; frames put in ``incoming`` are what the device receives, oldest first.
///
/// Threading: used by one thread at a time, as a device's backend is (hence `@unchecked Sendable`).
public final class MemoryNetBackend: NetBackend, @unchecked Sendable {
    public let carriesHeader: Bool
    public let supportsOffloads: Bool
    /// The frames the device sent, in order (with the header when ``carriesHeader``).
    public private(set) var sent: [[UInt8]] = []
    /// The frames waiting for the device, oldest first.
    public var incoming: [[UInt8]] = []
    /// How many more frames ``send(_:memory:)`` takes before it would block (`nil`: no limit).
    public var room: Int?
    /// The guest features ``enableOffloads(guestFeatures:)`` was given last.
    public private(set) var enabledGuestFeatures: UInt64?

    /// Creates a backend that carries the header (or not) and supports offloads (or not).
    public init(carriesHeader: Bool, supportsOffloads: Bool) {
        self.carriesHeader = carriesHeader
        self.supportsOffloads = supportsOffloads
    }

    public func enableOffloads(guestFeatures: UInt64) throws(NetBackendError) {
        enabledGuestFeatures = guestFeatures
    }

    public func send(_ ranges: [GuestRange], memory: GuestMemory) throws(NetBackendError) -> Bool {
        if let room {
            guard room > 0 else { return false }
            self.room = room - 1
        }
        var frame: [UInt8] = []
        for range in ranges {
            do { frame += try memory.read(count: Int(range.size), at: range.start) } catch {
                throw NetBackendError("\(error)")
            }
        }
        sent.append(frame)
        return true
    }

    public func receive(into buffer: inout [UInt8], at offset: Int) throws(NetBackendError) -> Int? {
        guard !incoming.isEmpty else { return nil }
        let frame = incoming.removeFirst().prefix(buffer.count - offset)
        buffer.replaceSubrange(offset..<offset + frame.count, with: frame)
        return frame.count
    }
}
