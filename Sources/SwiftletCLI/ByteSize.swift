/// Parses human sizes such as `512M`, `2G`, `1.5G` is refused (whole units only), `4096K`.
///
/// Units are binary (K = KiB, M = MiB, G = GiB, T = TiB) and may be followed by `iB` or `B`;
/// a bare number means MiB, as with QEMU's `-m`.
public enum ByteSize {
    /// The number of bytes `text` denotes, or `nil` if it is not a valid size or overflows.
    public static func parse(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var unit = digits.drop { $0.isNumber }
        digits = digits.prefix(digits.count - unit.count)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let number = UInt64(digits) else { return nil }
        // `iB` or `B` only after a unit letter: `64MiB`, `64MB`, but not `64iB` or `64B`.
        for suffix in ["iB", "ib", "B", "b"] where unit.count == suffix.count + 1 && unit.hasSuffix(suffix) {
            unit = unit.dropLast(suffix.count)
            break
        }
        let shift: UInt64
        switch unit.uppercased() {
        case "": shift = 20
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }
}

/// Quotes words for a POSIX shell so that `sh -c` sees exactly the original arguments.
public func shellQuote(_ words: [String]) -> String {
    words.map { word in
        if !word.isEmpty, word.utf8.allSatisfy({ b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || "-_./=:,+@%".utf8.contains(b)
        }) {
            return word
        }
        return "'" + word.replacing("'", with: "'\\''") + "'"
    }.joined(separator: " ")
}
