import SwiftletArch

/// A legacy ISA serial port (a 16550A UART) as the DSDT describes it.
public struct LegacySerialPort: Sendable, Hashable {
    /// The first of its eight I/O ports.
    public var port: UInt16
    /// Its ISA IRQ (0...15).
    public var irq: UInt32

    /// Creates a port description.
    public init(port: UInt16, irq: UInt32) {
        self.port = port
        self.irq = irq
    }

    /// COM1: ports 0x3f8–0x3ff, IRQ 4.
    public static let com1 = LegacySerialPort(port: X86Layout.com1Port, irq: X86Layout.com1IRQ)
}

/// A virtio-mmio transport window and its interrupt, as the DSDT describes it (`_HID "LNRO0005"`).
public struct VirtioMMIODeviceDescription: Sendable, Hashable {
    /// The first byte of the register window; it must lie below 4 GiB.
    public var base: UInt64
    /// The window's size in bytes (usually 4 KiB).
    public var size: UInt64
    /// The IOAPIC GSI the device interrupts on.
    public var gsi: UInt32
    /// How the VMM signals the GSI. Edge (the default, as Firecracker does) suits KVM irqfd without a
    /// resample fd, which pulses the line; use level when the line is held until `InterruptACK`
    /// (as QEMU's microvm does).
    public var trigger: AMLInterruptTrigger

    /// Creates a device description.
    public init(base: UInt64, size: UInt64 = 0x1000, gsi: UInt32, trigger: AMLInterruptTrigger = .edge) {
        self.base = base
        self.size = size
        self.gsi = gsi
        self.trigger = trigger
    }
}

/// What the ACPI tables describe: the CPUs, the interrupt controllers and the few platform devices.
public struct ACPIConfiguration: Sendable, Hashable {
    /// The number of vCPUs (1...254); vCPU *n* gets APIC ID and ACPI processor UID *n*.
    public var vcpuCount: Int
    /// The IOAPIC's ID.
    public var ioapicID: UInt8
    /// The IOAPIC's register address.
    public var ioapicAddress: UInt32
    /// The local APICs' register address.
    public var localAPICAddress: UInt32
    /// The legacy serial ports, named `COM1`, `COM2`, … in order (at most 9).
    public var serialPorts: [LegacySerialPort]
    /// Whether to describe the CMOS RTC (`PNP0B00` at ``cmosPort``, two ports, no IRQ).
    public var hasCMOSClock: Bool
    /// The CMOS RTC's index port.
    public var cmosPort: UInt16
    /// The first ACPI power register: sleep control at `+0`, sleep status at `+1`, reset at `+2`.
    public var powerPort: UInt16
    /// The value the guest writes to the reset register.
    public var resetValue: UInt8
    /// The sleep type `\_S5` advertises; the guest writes it to the sleep control register to power off.
    public var s5SleepType: UInt8
    /// The virtio-mmio devices, named `VR00`, `VR01`, … in order (at most 100).
    public var virtioMMIODevices: [VirtioMMIODeviceDescription]
    /// The pvpanic port (`QEMU0001`, one I/O port), if any: the guest writes 1 there when it panics.
    public var pvpanicPort: UInt16?

    /// Creates a configuration; the defaults follow ``X86Layout``.
    public init(vcpuCount: Int,
                ioapicID: UInt8 = 0,
                ioapicAddress: UInt32 = UInt32(X86Layout.ioapicAddress),
                localAPICAddress: UInt32 = UInt32(X86Layout.localAPICAddress),
                serialPorts: [LegacySerialPort] = [.com1],
                hasCMOSClock: Bool = true,
                cmosPort: UInt16 = X86Layout.cmosPort,
                powerPort: UInt16 = X86Layout.acpiPowerPort,
                resetValue: UInt8 = X86Layout.acpiResetValue,
                s5SleepType: UInt8 = X86Layout.acpiS5SleepType,
                virtioMMIODevices: [VirtioMMIODeviceDescription] = [],
                pvpanicPort: UInt16? = X86Layout.pvpanicPort) {
        self.vcpuCount = vcpuCount
        self.ioapicID = ioapicID
        self.ioapicAddress = ioapicAddress
        self.localAPICAddress = localAPICAddress
        self.serialPorts = serialPorts
        self.hasCMOSClock = hasCMOSClock
        self.cmosPort = cmosPort
        self.powerPort = powerPort
        self.resetValue = resetValue
        self.s5SleepType = s5SleepType
        self.virtioMMIODevices = virtioMMIODevices
        self.pvpanicPort = pvpanicPort
    }

    /// The largest vCPU count the MADT's xAPIC entries can describe (APIC ID 255 is the broadcast ID).
    public static let maximumVCPUCount = 254

    /// Checks the limits the tables impose.
    /// - Throws: the first ``ACPIError`` found.
    public func validate() throws(ACPIError) {
        guard (1...Self.maximumVCPUCount).contains(vcpuCount) else { throw .vcpuCountOutOfRange(vcpuCount) }
        guard serialPorts.count <= 9 else { throw .tooManySerialPorts(serialPorts.count) }
        for serial in serialPorts where serial.irq > 15 {
            throw .serialIRQOutOfRange(port: serial.port, irq: serial.irq)
        }
        guard virtioMMIODevices.count <= 100 else { throw .tooManyVirtioDevices(virtioMMIODevices.count) }
        for (index, device) in virtioMMIODevices.enumerated() {
            let (end, overflow) = device.base.addingReportingOverflow(device.size)
            guard device.size > 0, device.size <= UInt32.max, !overflow, end <= 0x1_0000_0000 else {
                throw .virtioWindowUnrepresentable(index: index, base: device.base, size: device.size)
            }
        }
    }
}
