import SwiftletArch
import SwiftletCore
import SwiftletMemory

/// Why a machine could not be planned. Messages say what to change.
public enum AllocatorError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooFewVCPUs(Int)
    case tooManyVCPUs(requested: Int, limit: Int)
    case memoryTooSmall(requested: UInt64, minimum: UInt64)
    case memoryTooLarge(requested: UInt64, limit: UInt64)
    case memoryNotAligned(UInt64)
    case irqExhausted

    public var description: String {
        switch self {
        case let .tooFewVCPUs(count):
            return "--cpus \(count): a machine needs at least 1 vCPU"
        case let .tooManyVCPUs(requested, limit):
            return "--cpus \(requested): at most \(limit) vCPUs are allowed here"
        case let .memoryTooSmall(requested, minimum):
            return "--memory \(formatByteCount(requested)) is too small: give at least \(formatByteCount(minimum))"
        case let .memoryTooLarge(requested, limit):
            return "--memory \(formatByteCount(requested)) is too large: at most \(formatByteCount(limit)) is allowed here"
        case let .memoryNotAligned(requested):
            return "--memory \(requested) bytes is not a whole number of MiB"
        case .irqExhausted:
            return "no free interrupt lines left for another device"
        }
    }
}

/// The limits a machine plan must respect (resource control): what the host and hypervisor allow.
public struct ResourceLimits: Equatable, Sendable {
    /// The fewest bytes of RAM a guest may have.
    public var minimumMemory: UInt64 = 16 << 20
    /// The most bytes of RAM a guest may have (normally the host's physical RAM).
    public var maximumMemory: UInt64
    /// The most vCPUs (the hypervisor's limit, capped by the MADT's 254 xAPIC IDs).
    public var maximumVCPUs: Int

    /// Creates limits.
    public init(maximumMemory: UInt64, maximumVCPUs: Int, minimumMemory: UInt64 = 16 << 20) {
        self.maximumMemory = maximumMemory
        self.maximumVCPUs = min(maximumVCPUs, 254)
        self.minimumMemory = minimumMemory
    }
}

/// The guest-physical memory map for a given amount of RAM.
///
/// RAM fills from 0 up to the MMIO hole at 3 GiB; the rest continues at 4 GiB. The legacy area
/// from the EBDA to 1 MiB is backed by RAM (the ACPI tables live there) but reported as reserved.
public struct MemoryPlan: Equatable, Sendable {
    /// The RAM regions to map, in address order.
    public let ranges: [GuestRange]
    /// The E820 map given to the guest.
    public let e820: [E820Entry]
    /// The end of the RAM region below 4 GiB.
    public let lowRAMEnd: UInt64

    /// Plans `bytes` of RAM; `nil` below 2 MiB (no room for the legacy area and a kernel).
    public init?(memory bytes: UInt64) {
        let low = min(bytes, X86Layout.mmioHoleStart)
        let high = bytes - low
        guard low >= 2 << 20, let first = GuestRange(start: GuestAddress(0), size: low) else { return nil }
        var ranges = [first]
        var e820 = [
            E820Entry(address: 0, size: X86Layout.lowMemoryEnd, kind: .ram),
            E820Entry(address: X86Layout.lowMemoryEnd, size: X86Layout.kernelAddress - X86Layout.lowMemoryEnd, kind: .reserved),
        ]
        if low > X86Layout.kernelAddress {
            e820.append(E820Entry(address: X86Layout.kernelAddress, size: low - X86Layout.kernelAddress, kind: .ram))
        }
        if high > 0 {
            guard let upper = GuestRange(start: GuestAddress(X86Layout.mmioHoleEnd), size: high) else { return nil }
            ranges.append(upper)
            e820.append(E820Entry(address: X86Layout.mmioHoleEnd, size: high, kind: .ram))
        }
        self.ranges = ranges
        self.e820 = e820
        self.lowRAMEnd = low
    }
}

/// The validated grant for one machine: vCPUs, RAM and its map, interrupt lines.
public struct MachinePlan: Equatable, Sendable {
    /// The number of vCPUs (each gets its own OS thread).
    public let vcpuCount: Int
    /// The number of bytes of RAM.
    public let memorySize: UInt64
    /// The memory map.
    public let memory: MemoryPlan

    /// Checks the request against `limits` and plans the memory map.
    public init(vcpuCount: Int, memorySize: UInt64, limits: ResourceLimits) throws(AllocatorError) {
        guard vcpuCount >= 1 else { throw .tooFewVCPUs(vcpuCount) }
        guard vcpuCount <= limits.maximumVCPUs else {
            throw .tooManyVCPUs(requested: vcpuCount, limit: limits.maximumVCPUs)
        }
        guard memorySize % (1 << 20) == 0 else { throw .memoryNotAligned(memorySize) }
        guard memorySize >= limits.minimumMemory else {
            throw .memoryTooSmall(requested: memorySize, minimum: limits.minimumMemory)
        }
        guard memorySize <= limits.maximumMemory else {
            throw .memoryTooLarge(requested: memorySize, limit: limits.maximumMemory)
        }
        guard let memory = MemoryPlan(memory: memorySize) else {
            throw .memoryTooSmall(requested: memorySize, minimum: 2 << 20)
        }
        self.vcpuCount = vcpuCount
        self.memorySize = memorySize
        self.memory = memory
    }
}

/// Hands out interrupt lines (IOAPIC GSIs) to dynamic devices, first-fit.
///
/// Fixed legacy lines (PIT 0, COM1 4, RTC 8, SCI 9) sit below the default range, as in
/// Firecracker, which gives virtio devices GSIs 5–23.
public struct IRQAllocator: Equatable, Sendable {
    /// The lines this allocator may hand out.
    public let lines: ClosedRange<UInt32>
    private var taken: Set<UInt32> = []

    /// An allocator over `lines`.
    public init(lines: ClosedRange<UInt32> = 5...23) { self.lines = lines }

    /// Allocates the lowest free line.
    public mutating func allocate() throws(AllocatorError) -> UInt32 {
        guard let line = lines.first(where: { !taken.contains($0) && !Self.fixedLegacy.contains($0) }) else {
            throw .irqExhausted
        }
        taken.insert(line)
        return line
    }

    /// Lines owned by fixed legacy devices, never handed out (RTC 8, ACPI SCI 9).
    public static let fixedLegacy: Set<UInt32> = [8, 9]
}
