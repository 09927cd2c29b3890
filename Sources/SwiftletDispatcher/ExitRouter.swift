import SwiftletCore
import Synchronization

/// Why a vCPU loop (and with it the machine) stopped.
public enum StopReason: Equatable, Sendable {
    /// The guest powered off.
    case powerOff
    /// The guest reset the machine.
    case reset
    /// The host asked the machine to stop (signal, API call, test).
    case requested
    /// A vCPU executed `hlt` with no in-kernel APIC to wake it.
    case halted(vcpu: Int)
    /// The guest triple-faulted.
    case tripleFault(vcpu: Int, state: String)
    /// The hypervisor could not emulate an instruction or access.
    case internalError(vcpu: Int, suberror: UInt32, state: String)
    /// The hardware refused to enter the guest.
    case failedEntry(vcpu: Int, reason: UInt64, state: String)
    /// The guest reported a crash through the hypervisor.
    case guestCrash(vcpu: Int)
    /// The guest kernel reported a panic through the pvpanic device.
    case guestPanic
    /// An exit this VMM does not handle, or a malformed one.
    case unhandledExit(vcpu: Int, exit: UnhandledExit)
    /// A host-side failure (not the guest's doing).
    case hostError(String)

    /// Whether the guest ended the machine in an orderly way.
    public var isOrderly: Bool {
        switch self {
        case .powerOff, .reset, .requested, .halted: return true
        default: return false
        }
    }

    /// One line for the user.
    public var message: String {
        switch self {
        case .powerOff: return "guest powered off"
        case .reset: return "guest reset the machine"
        case .requested: return "stopped on request"
        case let .halted(vcpu): return "vCPU \(vcpu) halted"
        case let .tripleFault(vcpu, state):
            return "guest triple-faulted on vCPU \(vcpu) (\(state)); check the kernel and its command line"
        case let .internalError(vcpu, suberror, state):
            let what = suberror == 1 ? "emulation failure" : "suberror \(suberror)"
            return "KVM internal error on vCPU \(vcpu): \(what) (\(state))"
        case let .failedEntry(vcpu, reason, state):
            return "KVM could not enter the guest on vCPU \(vcpu): hardware reason 0x\(String(reason, radix: 16)) (\(state))"
        case let .guestCrash(vcpu): return "guest reported a crash on vCPU \(vcpu)"
        case .guestPanic: return "the guest kernel panicked (see the console output above)"
        case let .unhandledExit(vcpu, exit): return "unhandled KVM exit \(exit.reason) (\(exit)) on vCPU \(vcpu)"
        case let .hostError(message): return message
        }
    }
}

/// What the vCPU loop does after an exit has been handled.
///
/// The cases the I/O exits produce carry scalars only, so routing an access does not allocate;
/// ``stop(_:)`` may carry text (the vCPU's state), built only when the machine stops.
public enum Disposition: Equatable, Sendable {
    /// Re-enter the guest (a string `in` has already stored its elements in the vCPU).
    case resume
    /// Hand this value to the vCPU (a completed one-element `in` or an MMIO read), then re-enter.
    case completeRead(UInt64)
    /// Stop this vCPU and the machine.
    case stop(StopReason)
}

/// Logs each unowned address once (up to a cap, so a guest scanning the address space cannot
/// grow host memory or flood the log). Odd-sized MMIO pieces are logged apart from whole accesses
/// at the same address; the message is built only for a line that is logged.
public final class UnhandledAccessLog: Sendable {
    private let seen = Mutex<Set<UInt64>>([])
    private let log: @Sendable (String) -> Void
    /// The number of distinct addresses reported at most.
    public static let cap = 64

    /// Creates a log that reports through `log`.
    public init(log: @escaping @Sendable (String) -> Void) { self.log = log }

    func record(bus: String, address: UInt64, write: Bool) {
        if isFirst(address ^ (bus == "PIO" ? 1 << 63 : 0)) {
            log("guest \(write ? "wrote" : "read") unowned \(bus) address 0x\(String(address, radix: 16)); \(write ? "ignored" : "answered all ones") (logged once)")
        }
    }

    func recordOddPiece(address: UInt64, length: OddAccessLength, write: Bool) {
        // Guest-physical addresses are below 2^52, so bit 62 is free to tell pieces apart.
        if isFirst(address ^ (1 << 62)) {
            log("guest \(write ? "wrote" : "read") \(length.bytes) bytes at MMIO address 0x\(String(address, radix: 16)), a piece of an access split at a page boundary; \(write ? "ignored" : "answered all ones") (logged once)")
        }
    }

    /// Whether `key` is new and under the cap; records it if so.
    private func isFirst(_ key: UInt64) -> Bool {
        seen.withLock { seen -> Bool in
            guard seen.count < Self.cap, !seen.contains(key) else { return false }
            seen.insert(key)
            return true
        }
    }
}

/// Emulates the effect of one trapped access by handing it to the device that owns the address.
///
/// Pure routing: never throws for guest behaviour, and touches the vCPU only to fetch the elements
/// of a string `out`, to store those of a string `in` and to describe its state when it stops. An
/// access to an address nobody owns is logged once and answered with all ones (reads, every
/// element of a string `in`) or dropped (writes), as on a real bus. So is an MMIO piece of an odd
/// length (``VCPUExit/mmioOddPiece(address:length:isWrite:)``), even inside a device's range:
/// devices only see accesses of 1, 2, 4 or 8 bytes (a split piece of such a length reaches its
/// device as an access of that width).
///
/// The exit path must not allocate: routing an I/O exit allocates nothing beyond what its device
/// does, except to log the first unowned access at an address.
public struct ExitRouter: Sendable {
    /// The port-I/O bus.
    public let pio: Bus
    /// The MMIO bus.
    public let mmio: Bus
    private let unhandled: UnhandledAccessLog

    /// Creates a router over two finished buses.
    public init(pio: Bus, mmio: Bus, unhandled: UnhandledAccessLog) {
        self.pio = pio
        self.mmio = mmio
        self.unhandled = unhandled
    }

    /// Routes one exit of `vcpu`.
    public func route(_ exit: VCPUExit, of vcpu: some VirtualCPU) -> Disposition {
        switch exit {
        case let .pioOut(port, width, value):
            guard let (entry, offset) = pio.lookup(UInt64(port)) else {
                unhandled.record(bus: pio.name, address: UInt64(port), write: true)
                return .resume
            }
            entry.handler.write(at: offset, width: width, value: value)
            return .resume
        case let .pioStringOut(port, width, count):
            guard let (entry, offset) = pio.lookup(UInt64(port)) else {
                unhandled.record(bus: pio.name, address: UInt64(port), write: true)
                return .resume
            }
            for index in 0..<count { entry.handler.write(at: offset, width: width, value: vcpu.value(at: index)) }
            return .resume
        case let .pioIn(port, width):
            guard let (entry, offset) = pio.lookup(UInt64(port)) else {
                unhandled.record(bus: pio.name, address: UInt64(port), write: false)
                return .completeRead(width.allOnes)
            }
            return .completeRead(entry.handler.read(at: offset, width: width) & width.allOnes)
        case let .pioStringIn(port, width, count):
            guard let (entry, offset) = pio.lookup(UInt64(port)) else {
                unhandled.record(bus: pio.name, address: UInt64(port), write: false)
                for index in 0..<count { vcpu.completeRead(index: index, value: width.allOnes) }
                return .resume
            }
            for index in 0..<count {
                vcpu.completeRead(index: index, value: entry.handler.read(at: offset, width: width) & width.allOnes)
            }
            return .resume
        case let .mmioWrite(address, width, value):
            guard let (entry, offset) = mmio.lookup(address) else {
                unhandled.record(bus: mmio.name, address: address, write: true)
                return .resume
            }
            entry.handler.write(at: offset, width: width, value: value)
            return .resume
        case let .mmioOddPiece(address, length, isWrite):
            unhandled.recordOddPiece(address: address, length: length, write: isWrite)
            return isWrite ? .resume : .completeRead(length.allOnes)
        case let .mmioRead(address, width):
            guard let (entry, offset) = mmio.lookup(address) else {
                unhandled.record(bus: mmio.name, address: address, write: false)
                return .completeRead(width.allOnes)
            }
            return .completeRead(entry.handler.read(at: offset, width: width) & width.allOnes)
        case .interrupted:
            return .resume
        case .halt:
            return .stop(.halted(vcpu: vcpu.index))
        case .shutdown:
            return .stop(.tripleFault(vcpu: vcpu.index, state: vcpu.stateSummary()))
        case let .systemEvent(event):
            switch event {
            case .shutdown: return .stop(.powerOff)
            case .reset: return .stop(.reset)
            case .crash: return .stop(.guestCrash(vcpu: vcpu.index))
            }
        case let .failedEntry(reason):
            return .stop(.failedEntry(vcpu: vcpu.index, reason: reason, state: vcpu.stateSummary()))
        case let .internalError(suberror):
            return .stop(.internalError(vcpu: vcpu.index, suberror: suberror, state: vcpu.stateSummary()))
        case let .unhandled(exit):
            return .stop(.unhandledExit(vcpu: vcpu.index, exit: exit))
        }
    }
}
