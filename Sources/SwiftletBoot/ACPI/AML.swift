import SwiftletCore

/// A piece of encoded AML (ACPI Machine Language), the bytecode of a DSDT or SSDT.
///
/// Build objects with the static factories and nest them; each factory encodes its operands at once,
/// so a finished value is just bytes. Only the small subset a microVM needs is here (ACPI 6.5 §20.2):
///
/// ```swift
/// let com1 = try AML.device("COM1", [
///     try .name("_HID", .eisaID("PNP0501")),
///     try .name("_UID", .integer(1)),
///     try .name("_CRS", .resourceTemplate([.io(minimum: 0x3f8, maximum: 0x3f8, alignment: 1, length: 8),
///                                           .irqNoFlags(4)])),
/// ])
/// let table = try AML.scope("\\_SB", [com1])
/// ```
public struct AML: Sendable, Hashable {
    /// The encoded bytes.
    public let bytes: [UInt8]

    /// Wraps bytes that are already valid AML (an escape hatch for opcodes this builder lacks).
    public init(bytes: [UInt8]) { self.bytes = bytes }

    // MARK: Constants and data

    /// `Zero` (`ZeroOp`).
    public static let zero = AML(bytes: [Opcode.zero])
    /// `One` (`OneOp`).
    public static let one = AML(bytes: [Opcode.one])
    /// `Ones` (`OnesOp`): all bits set, 64-bit in a revision-2 definition block.
    public static let ones = AML(bytes: [Opcode.ones])

    /// An integer in the shortest encoding: `ZeroOp`/`OneOp` for 0 and 1, otherwise a byte, word,
    /// dword or qword constant.
    public static func integer<T: BinaryInteger>(_ value: T) -> AML {
        let value = UInt64(truncatingIfNeeded: value)
        switch value {
        case 0: return .zero
        case 1: return .one
        case ...0xff: return AML(bytes: [Opcode.bytePrefix] + [UInt8](littleEndian: value, count: 1))
        case ...0xffff: return AML(bytes: [Opcode.wordPrefix] + [UInt8](littleEndian: value, count: 2))
        case ...0xffff_ffff: return AML(bytes: [Opcode.dwordPrefix] + [UInt8](littleEndian: value, count: 4))
        default: return AML(bytes: [Opcode.qwordPrefix] + [UInt8](littleEndian: value, count: 8))
        }
    }

    /// A string constant (`StringPrefix`, ASCII, NUL-terminated).
    /// - Throws: ``ACPIError/invalidString(_:)`` if it holds a NUL or a non-ASCII character.
    public static func string(_ value: String) throws(ACPIError) -> AML {
        let ascii = Array(value.utf8)
        guard ascii.allSatisfy({ $0 >= 0x01 && $0 <= 0x7f }) else { throw .invalidString(value) }
        return AML(bytes: [Opcode.stringPrefix] + ascii + [0])
    }

    /// A compressed EISA ID such as `EisaId("PNP0501")`, as the dword constant ASL compilers emit.
    /// - Throws: ``ACPIError/invalidEISAID(_:)`` unless it is three letters `A`–`Z` then four hex digits.
    public static func eisaID(_ id: String) throws(ACPIError) -> AML {
        integer(try compressedEISAID(id))
    }

    /// The 32-bit value of a compressed EISA ID: three 5-bit letters and four hex digits, big-endian,
    /// then stored little-endian (so `PNP0501` is `0x0105d041`).
    /// - Throws: ``ACPIError/invalidEISAID(_:)`` unless it is three letters `A`–`Z` then four hex digits.
    public static func compressedEISAID(_ id: String) throws(ACPIError) -> UInt32 {
        let chars = Array(id.utf8)
        guard chars.count == 7 else { throw .invalidEISAID(id) }
        var value: UInt32 = 0
        for letter in chars[0..<3] {
            guard letter >= UInt8(ascii: "A"), letter <= UInt8(ascii: "Z") else { throw .invalidEISAID(id) }
            value = value << 5 | UInt32(letter - 0x40)
        }
        for digit in chars[3..<7] {
            guard let nibble = hexValue(digit) else { throw .invalidEISAID(id) }
            value = value << 4 | UInt32(nibble)
        }
        return value.byteSwapped
    }

    /// A `Package` of constant elements (`PackageOp`).
    /// - Throws: ``ACPIError/packageTooLong(_:)`` for more than 255 elements.
    public static func package(_ elements: [AML]) throws(ACPIError) -> AML {
        guard elements.count <= 0xff else { throw .packageTooLong(elements.count) }
        return try AML(bytes: [Opcode.package] + packageLengthPrefixed([UInt8(elements.count)] + elements.flatMap(\.bytes)))
    }

    /// A `Buffer` holding `contents` (`BufferOp`).
    public static func buffer(_ contents: [UInt8]) throws(ACPIError) -> AML {
        try AML(bytes: [Opcode.buffer] + packageLengthPrefixed(integer(contents.count).bytes + contents))
    }

    /// A `ResourceTemplate`: a buffer of resource descriptors closed by an End Tag.
    public static func resourceTemplate(_ resources: [AMLResource]) throws(ACPIError) -> AML {
        var contents: [UInt8] = []
        for resource in resources { contents += try resource.encoded() }
        contents += [0x79, 0x00]  // End Tag; a zero checksum means "treat as valid".
        return try buffer(contents)
    }

    // MARK: Named objects

    /// `Name(path, value)` (`NameOp`).
    public static func name(_ path: String, _ value: AML) throws(ACPIError) -> AML {
        AML(bytes: [Opcode.name] + (try nameString(path)) + value.bytes)
    }

    /// `Scope(path) { body }` (`ScopeOp`).
    public static func scope(_ path: String, _ body: [AML]) throws(ACPIError) -> AML {
        try AML(bytes: [Opcode.scope] + packageLengthPrefixed(nameString(path) + body.flatMap(\.bytes)))
    }

    /// `Device(path) { body }` (`DeviceOp`).
    public static func device(_ path: String, _ body: [AML]) throws(ACPIError) -> AML {
        try AML(bytes: Opcode.device + packageLengthPrefixed(nameString(path) + body.flatMap(\.bytes)))
    }

    /// `Method(path, arguments, Serialized/NotSerialized) { body }` (`MethodOp`, sync level 0).
    /// - Throws: ``ACPIError/invalidMethodArgumentCount(_:)`` unless `arguments` is 0...7.
    public static func method(_ path: String, arguments: Int = 0, serialized: Bool = false,
                              _ body: [AML]) throws(ACPIError) -> AML {
        guard (0...7).contains(arguments) else { throw .invalidMethodArgumentCount(arguments) }
        let flags = UInt8(arguments) | (serialized ? 0x08 : 0)
        return try AML(bytes: [Opcode.method] + packageLengthPrefixed(nameString(path) + [flags] + body.flatMap(\.bytes)))
    }

    /// `Return(value)` (`ReturnOp`).
    public static func `return`(_ value: AML) -> AML {
        AML(bytes: [Opcode.return] + value.bytes)
    }

    // MARK: Encodings

    /// Encodes a name path: an optional `\` (root) or `^`s (parents), then dot-separated segments of
    /// up to four characters, padded with `_` (`"\\_SB.COM1"`, `"_S5"`, `"^PCI0"`).
    /// - Throws: ``ACPIError/invalidNamePath(_:)`` or ``ACPIError/invalidNameSegment(_:)``.
    public static func nameString(_ path: String) throws(ACPIError) -> [UInt8] {
        var rest = Substring(path)
        var prefix: [UInt8] = []
        if rest.first == "\\" {
            prefix = [0x5c]
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" {
                prefix.append(0x5e)
                rest = rest.dropFirst()
            }
        }
        if rest.isEmpty {
            guard !prefix.isEmpty else { throw .invalidNamePath(path) }
            return prefix + [0x00]  // NullName: the root or a parent itself.
        }
        let segments = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count <= 0xff else { throw .invalidNamePath(path) }
        var encoded: [UInt8] = []
        for segment in segments { encoded += try nameSegment(String(segment)) }
        switch segments.count {
        case 1: return prefix + encoded
        case 2: return prefix + [0x2e] + encoded
        default: return prefix + [0x2f, UInt8(segments.count)] + encoded
        }
    }

    /// Encodes one name segment: `A`–`Z` or `_`, then up to three of `A`–`Z`, `0`–`9`, `_`, padded to
    /// four bytes with `_`.
    /// - Throws: ``ACPIError/invalidNameSegment(_:)``.
    public static func nameSegment(_ segment: String) throws(ACPIError) -> [UInt8] {
        let chars = Array(segment.utf8)
        guard (1...4).contains(chars.count) else { throw .invalidNameSegment(segment) }
        for (index, char) in chars.enumerated() {
            let letter = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(char) || char == UInt8(ascii: "_")
            let digit = (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(char)
            guard letter || (digit && index > 0) else { throw .invalidNameSegment(segment) }
        }
        return chars + Array(repeating: UInt8(ascii: "_"), count: 4 - chars.count)
    }

    /// Encodes a PkgLength for `contentLength` bytes that follow it. The value counts its own bytes:
    /// one byte up to 63 in total, otherwise a lead byte (count of following bytes in bits 7–6,
    /// low nibble in bits 3–0) and one to three more bytes, up to 2^28 − 1.
    /// - Throws: ``ACPIError/packageLengthTooLarge(_:)``.
    public static func packageLength(contentLength: Int) throws(ACPIError) -> [UInt8] {
        precondition(contentLength >= 0, "negative AML content length")
        if contentLength + 1 <= 0x3f { return [UInt8(contentLength + 1)] }
        for extra in 1...3 {
            let total = contentLength + 1 + extra
            guard total < 1 << (4 + 8 * extra) else { continue }
            var encoded = [UInt8(extra << 6) | UInt8(total & 0x0f)]
            for index in 0..<extra { encoded.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
            return encoded
        }
        throw .packageLengthTooLarge(contentLength)
    }

    /// `contents` preceded by its PkgLength.
    static func packageLengthPrefixed(_ contents: [UInt8]) throws(ACPIError) -> [UInt8] {
        try packageLength(contentLength: contents.count) + contents
    }

    /// The opcodes this builder emits.
    enum Opcode {
        static let zero: UInt8 = 0x00
        static let one: UInt8 = 0x01
        static let name: UInt8 = 0x08
        static let bytePrefix: UInt8 = 0x0a
        static let wordPrefix: UInt8 = 0x0b
        static let dwordPrefix: UInt8 = 0x0c
        static let stringPrefix: UInt8 = 0x0d
        static let qwordPrefix: UInt8 = 0x0e
        static let scope: UInt8 = 0x10
        static let buffer: UInt8 = 0x11
        static let package: UInt8 = 0x12
        static let method: UInt8 = 0x14
        static let `return`: UInt8 = 0xa4
        static let ones: UInt8 = 0xff
        static let device: [UInt8] = [0x5b, 0x82]
    }
}

/// How an interrupt line signals.
public enum AMLInterruptTrigger: Sendable, Hashable {
    /// Edge-triggered (a pulse per interrupt, as KVM's irqfd without a resample fd delivers).
    case edge
    /// Level-triggered (the line stays asserted until the guest acknowledges the device).
    case level
}

/// The active level or edge of an interrupt line.
public enum AMLInterruptPolarity: Sendable, Hashable {
    /// Active-high / rising edge.
    case activeHigh
    /// Active-low / falling edge.
    case activeLow
}

/// One resource descriptor inside a ``AML/resourceTemplate(_:)`` (ACPI 6.5 §6.4).
public enum AMLResource: Sendable, Hashable {
    /// `IO(Decode16, minimum, maximum, alignment, length)`: an I/O port range (small descriptor 0x47).
    case io(minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8)
    /// `IRQNoFlags() {irqs}`: ISA IRQs, edge-triggered active-high (small descriptor 0x22).
    case irqNoFlags([UInt32])
    /// `Memory32Fixed(ReadWrite/ReadOnly, base, length)` (large descriptor 0x86).
    case memory32Fixed(writable: Bool, base: UInt32, length: UInt32)
    /// `Interrupt(ResourceConsumer, trigger, polarity, Exclusive/Shared) {gsis}` (extended interrupt
    /// descriptor 0x89), for GSIs beyond the ISA range or with explicit trigger and polarity.
    case interrupt(trigger: AMLInterruptTrigger, polarity: AMLInterruptPolarity, shared: Bool, [UInt32])

    /// `IRQNoFlags() {irq}` for one IRQ.
    public static func irqNoFlags(_ irq: UInt32) -> AMLResource { .irqNoFlags([irq]) }

    /// The descriptor's bytes.
    /// - Throws: ``ACPIError/legacyIRQOutOfRange(_:)`` or ``ACPIError/invalidInterruptCount(_:)``.
    public func encoded() throws(ACPIError) -> [UInt8] {
        switch self {
        case let .io(minimum, maximum, alignment, length):
            return [0x47, 0x01] + [UInt8](littleEndian: minimum, count: 2) + [UInt8](littleEndian: maximum, count: 2) + [alignment, length]
        case let .irqNoFlags(irqs):
            var mask: UInt16 = 0
            for irq in irqs {
                guard irq < 16 else { throw .legacyIRQOutOfRange(irq) }
                mask |= 1 << UInt16(irq)
            }
            return [0x22] + [UInt8](littleEndian: mask, count: 2)
        case let .memory32Fixed(writable, base, length):
            return [0x86] + [UInt8](littleEndian: UInt16(9), count: 2) + [writable ? 1 : 0]
                + [UInt8](littleEndian: base, count: 4) + [UInt8](littleEndian: length, count: 4)
        case let .interrupt(trigger, polarity, shared, gsis):
            guard (1...0xff).contains(gsis.count) else { throw .invalidInterruptCount(gsis.count) }
            var flags: UInt8 = 0x01  // ResourceConsumer
            if trigger == .edge { flags |= 0x02 }
            if polarity == .activeLow { flags |= 0x04 }
            if shared { flags |= 0x08 }
            return [0x89] + [UInt8](littleEndian: UInt16(2 + 4 * gsis.count), count: 2) + [flags, UInt8(gsis.count)]
                + gsis.flatMap { [UInt8](littleEndian: $0, count: 4) }
        }
    }
}

/// The value of an ASCII hex digit (either case).
private func hexValue(_ char: UInt8) -> UInt8? {
    switch char {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return char - UInt8(ascii: "0")
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return char - UInt8(ascii: "A") + 10
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return char - UInt8(ascii: "a") + 10
    default: return nil
    }
}
