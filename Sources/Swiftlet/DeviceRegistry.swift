import SwiftletBoot
import SwiftletCore

/// What a registered device is, as far as the firmware tables care.
enum DeviceKind: Equatable, Sendable {
    /// A 16550A UART (described in the DSDT as `PNP0501` with its IRQ).
    case serial16550
    /// The i8042 keyboard controller (its reset line only; not in the DSDT).
    case i8042
    /// The CMOS RTC (`PNP0B00`).
    case cmosClock
    /// The hardware-reduced ACPI sleep and reset registers (the FADT points at them).
    case acpiPower
    /// The pvpanic port (`QEMU0001`).
    case pvpanic
    /// Swiftlet's own control page (not in the DSDT: the default guest finds it at a fixed address).
    case controlPage
    /// A virtio-mmio transport presenting virtio device `deviceID` (`LNRO0005` with its window and GSI).
    case virtioMMIO(deviceID: UInt32)
}

/// The address space a device sits in.
enum DeviceBus: Equatable, Sendable {
    case pio, mmio
}

/// One device of the machine: its stable id, kind, address range and interrupt.
struct DeviceRegistration: Sendable {
    /// A stable id (`"serial0"`), used on the bus, in messages and, later, in snapshots.
    let id: String
    let kind: DeviceKind
    let bus: DeviceBus
    let range: BusRange
    /// The GSI it interrupts on, if it interrupts.
    let gsi: UInt32?
}

/// Why a device could not be registered.
enum DeviceRegistryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another device already has this id.
    case duplicateID(String)
    /// The bus refused the range (overlap, empty or wrapping).
    case bus(BusError)

    var description: String {
        switch self {
        case let .duplicateID(id): return "a device with id \"\(id)\" is already attached; choose another id"
        case let .bus(error): return error.description
        }
    }
}

/// The devices of one machine, in attach order: the single record from which both the buses (what
/// the dispatcher routes to) and the ACPI DSDT (what the guest is told) are built, so the two
/// cannot disagree (Firecracker's device manager).
struct DeviceRegistry: Sendable {
    private(set) var devices: [DeviceRegistration] = []
    /// The port-I/O bus, filled as devices register.
    private(set) var pio = Bus(name: "PIO")
    /// The MMIO bus, filled as devices register.
    private(set) var mmio = Bus(name: "MMIO")

    /// Registers `handler` as device `id` of `kind` at `size` addresses from `base` on `bus`.
    mutating func attach(_ handler: any BusHandler, id: String, kind: DeviceKind, bus: DeviceBus, base: UInt64,
                         size: UInt64, gsi: UInt32? = nil) throws(DeviceRegistryError) {
        guard !devices.contains(where: { $0.id == id }) else { throw .duplicateID(id) }
        do {
            switch bus {
            case .pio: try pio.insert(handler, named: id, at: base, size: size)
            case .mmio: try mmio.insert(handler, named: id, at: base, size: size)
            }
        } catch {
            throw .bus(error)
        }
        // The bus accepted the range, so it is valid.
        guard let range = BusRange(base: base, size: size) else { throw .bus(.invalidRange(bus: "\(bus)", base: base, size: size)) }
        devices.append(DeviceRegistration(id: id, kind: kind, bus: bus, range: range, gsi: gsi))
    }

    /// What the ACPI tables must describe for these devices on a machine with `vcpuCount` vCPUs.
    func acpiConfiguration(vcpuCount: Int, resetValue: UInt8, s5SleepType: UInt8) -> ACPIConfiguration {
        let ports = devices.filter { $0.bus == .pio }
        let serials = ports.filter { $0.kind == .serial16550 }.map {
            LegacySerialPort(port: UInt16(truncatingIfNeeded: $0.range.base), irq: $0.gsi ?? 0)
        }
        let cmos = ports.first { $0.kind == .cmosClock }
        let power = ports.first { $0.kind == .acpiPower }
        let pvpanic = ports.first { $0.kind == .pvpanic }
        var configuration = ACPIConfiguration(vcpuCount: vcpuCount, serialPorts: serials, hasCMOSClock: cmos != nil,
                                              resetValue: resetValue, s5SleepType: s5SleepType,
                                              pvpanicPort: pvpanic.map { UInt16(truncatingIfNeeded: $0.range.base) })
        configuration.virtioMMIODevices = devices.compactMap { device in
            guard case .virtioMMIO = device.kind, let gsi = device.gsi else { return nil }
            return VirtioMMIODeviceDescription(base: device.range.base, size: device.range.size, gsi: gsi)
        }
        if let cmos { configuration.cmosPort = UInt16(truncatingIfNeeded: cmos.range.base) }
        if let power { configuration.powerPort = UInt16(truncatingIfNeeded: power.range.base) }
        return configuration
    }
}
