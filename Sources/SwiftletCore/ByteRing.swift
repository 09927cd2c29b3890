/// A fixed-capacity FIFO of bytes: the buffer behind a console's bounded input and output.
///
/// Storage is allocated once, so appending and taking never allocate (they run on vCPU threads).
/// Not thread-safe by itself: owners keep it behind a lock.
public struct ByteRing: Sendable {
    private var storage: [UInt8]
    private var head = 0
    /// The number of bytes held.
    public private(set) var count = 0

    /// Creates an empty ring that holds up to `capacity` bytes (at least 1).
    public init(capacity: Int) {
        storage = [UInt8](repeating: 0, count: max(1, capacity))
    }

    /// The most bytes the ring holds.
    public var capacity: Int { storage.count }
    /// Whether the ring holds no bytes.
    public var isEmpty: Bool { count == 0 }
    /// How many more bytes fit.
    public var room: Int { storage.count - count }

    /// Appends `byte` if there is room; returns whether it did.
    public mutating func append(_ byte: UInt8) -> Bool {
        guard count < storage.count else { return false }
        storage[(head + count) % storage.count] = byte
        count += 1
        return true
    }

    /// Appends bytes from the front of `bytes` while there is room; returns how many.
    public mutating func append(contentsOf bytes: some Collection<UInt8>) -> Int {
        var appended = 0
        for byte in bytes {
            guard append(byte) else { break }
            appended += 1
        }
        return appended
    }

    /// Removes up to `limit` bytes, oldest first, handing each to `body`; returns how many.
    @discardableResult
    public mutating func take(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
        let taken = min(max(limit, 0), count)
        for offset in 0..<taken { body(storage[(head + offset) % storage.count]) }
        discard(taken)
        return taken
    }

    /// Copies up to `limit` of the oldest bytes, without removing them, to `body`; returns how many.
    public func peek(upTo limit: Int, _ body: (UInt8) -> Void) -> Int {
        let seen = min(max(limit, 0), count)
        for offset in 0..<seen { body(storage[(head + offset) % storage.count]) }
        return seen
    }

    /// Removes the `n` oldest bytes (all of them if fewer are held).
    public mutating func discard(_ n: Int) {
        let removed = min(max(n, 0), count)
        head = (head + removed) % storage.count
        count -= removed
        if count == 0 { head = 0 }
    }
}
