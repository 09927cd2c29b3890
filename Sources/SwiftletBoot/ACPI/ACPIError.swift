/// Why Swiftlet could not build its ACPI tables or an AML object. Each message says what to change.
public enum ACPIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The vCPU count is outside 1...254 (more would need x2APIC MADT entries).
    case vcpuCountOutOfRange(Int)
    /// There are more legacy serial ports than the `COM1`...`COM9` device names allow.
    case tooManySerialPorts(Int)
    /// A legacy serial port's IRQ is not an ISA IRQ (0...15).
    case serialIRQOutOfRange(port: UInt16, irq: UInt32)
    /// There are more virtio-mmio devices than the `VR00`...`VR99` device names allow.
    case tooManyVirtioDevices(Int)
    /// A virtio-mmio window is empty or does not fit below 4 GiB (it is described with `Memory32Fixed`).
    case virtioWindowUnrepresentable(index: Int, base: UInt64, size: UInt64)
    /// The table area does not start on a 16-byte boundary (the guest only finds the RSDP on one).
    case misalignedBase(UInt64)
    /// The tables need more room than the area between the base and the limit.
    case tablesTooLarge(base: UInt64, needed: Int, limit: UInt64)
    /// An AML name segment is not 1–4 characters of `A`–`Z`, `0`–`9`, `_` starting with a non-digit.
    case invalidNameSegment(String)
    /// An AML name path is empty or malformed.
    case invalidNamePath(String)
    /// A string is not a valid compressed EISA ID (three letters `A`–`Z` and four hex digits).
    case invalidEISAID(String)
    /// An AML string contains a NUL or a non-ASCII character.
    case invalidString(String)
    /// An AML package has more than 255 elements.
    case packageTooLong(Int)
    /// An AML object is larger than a PkgLength can express (2^28 − 1 bytes).
    case packageLengthTooLarge(Int)
    /// A control method declares more than 7 arguments.
    case invalidMethodArgumentCount(Int)
    /// A legacy IRQ descriptor names an IRQ outside 0...15.
    case legacyIRQOutOfRange(UInt32)
    /// An extended interrupt descriptor lists no interrupts or more than 255.
    case invalidInterruptCount(Int)

    /// A one-line explanation that says what to fix.
    public var description: String {
        switch self {
        case let .vcpuCountOutOfRange(count):
            return "ACPI: \(count) vCPUs is not supported; use 1 to 254 (more needs x2APIC entries in the MADT)"
        case let .tooManySerialPorts(count):
            return "ACPI: \(count) serial ports is too many; describe at most 9 (COM1 to COM9)"
        case let .serialIRQOutOfRange(port, irq):
            return "ACPI: serial port 0x\(hex(port)) uses IRQ \(irq); use an ISA IRQ from 0 to 15"
        case let .tooManyVirtioDevices(count):
            return "ACPI: \(count) virtio-mmio devices is too many; describe at most 100 (VR00 to VR99)"
        case let .virtioWindowUnrepresentable(index, base, size):
            return "ACPI: virtio-mmio device \(index) at 0x\(hex(base)) size 0x\(hex(size)) must be non-empty and below 4 GiB"
        case let .misalignedBase(base):
            return "ACPI: table base 0x\(hex(base)) is not 16-byte aligned; place the RSDP on a 16-byte boundary"
        case let .tablesTooLarge(base, needed, limit):
            return "ACPI: tables need \(needed) bytes from 0x\(hex(base)) but the area ends at 0x\(hex(limit)); raise the limit or describe fewer devices"
        case let .invalidNameSegment(segment):
            return "AML: name segment \"\(segment)\" is invalid; use 1-4 of A-Z, 0-9, _ not starting with a digit"
        case let .invalidNamePath(path):
            return "AML: name path \"\(path)\" is invalid; use segments separated by dots, optionally after \\ or ^"
        case let .invalidEISAID(id):
            return "AML: EISA ID \"\(id)\" is invalid; use three letters A-Z then four hex digits, like PNP0501"
        case let .invalidString(string):
            return "AML: string \"\(string)\" is invalid; use printable ASCII without NUL"
        case let .packageTooLong(count):
            return "AML: package of \(count) elements is too long; use at most 255"
        case let .packageLengthTooLarge(length):
            return "AML: object of \(length) bytes is too large for a PkgLength; keep it under 256 MiB"
        case let .invalidMethodArgumentCount(count):
            return "AML: a method cannot take \(count) arguments; use 0 to 7"
        case let .legacyIRQOutOfRange(irq):
            return "AML: IRQ \(irq) cannot go in an IRQ descriptor; use 0 to 15 or an Interrupt descriptor"
        case let .invalidInterruptCount(count):
            return "AML: an Interrupt descriptor cannot list \(count) interrupts; list 1 to 255"
        }
    }
}

/// Lower-case hexadecimal without prefix.
private func hex<T: BinaryInteger>(_ value: T) -> String { String(value, radix: 16) }
