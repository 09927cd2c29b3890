/// QEMU-style escapes on an interactive console, since raw mode hands Ctrl-C to the guest:
/// `Ctrl-A x` stops the machine; `Ctrl-A Ctrl-A` sends one `Ctrl-A` to the guest. Any other byte
/// after `Ctrl-A` is passed through with it.
public struct ConsoleEscape: Sendable, Equatable {
    /// The escape byte, Ctrl-A.
    public static let escape: UInt8 = 0x01
    private var afterEscape = false

    /// A filter with no escape pending.
    public init() {}

    /// Filters a chunk of terminal input: what to send to the guest, and whether to stop.
    public mutating func filter(_ bytes: [UInt8]) -> (forward: [UInt8], quit: Bool) {
        var forward: [UInt8] = []
        forward.reserveCapacity(bytes.count)
        for byte in bytes {
            if afterEscape {
                afterEscape = false
                switch byte {
                case UInt8(ascii: "x"), UInt8(ascii: "X"): return (forward, true)
                case Self.escape: forward.append(Self.escape)
                default: forward += [Self.escape, byte]
                }
            } else if byte == Self.escape {
                afterEscape = true
            } else {
                forward.append(byte)
            }
        }
        return (forward, false)
    }
}
