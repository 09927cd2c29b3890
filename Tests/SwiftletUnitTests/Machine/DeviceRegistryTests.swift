import Logging
import Testing
import SwiftletHost
@testable import Swiftlet
import SwiftletArch
import SwiftletBoot
import SwiftletCore
import SwiftletDevices
import SwiftletDispatcher
import SwiftletVirtio

@Suite("Device registry") struct DeviceRegistryTests {
    func machineDevices() throws -> DeviceRegistry {
        var registry = DeviceRegistry()
        let uart = SharedDevice(Serial16550(irq: NoInterruptLine(), output: DiscardingSink()))
        try registry.attach(uart, id: "serial0", kind: .serial16550, bus: .pio, base: UInt64(X86Layout.com1Port),
                            size: Serial16550.windowSize, gsi: X86Layout.com1IRQ)
        let events = MachineEventRecorder(control: RunControl(), logger: Logger(label: "t"), startTime: .now)
        try VirtualMachine.attachLegacyDevices(to: &registry, events: events)
        return registry
    }

    @Test func theDSDTIsBuiltFromTheDevicesOnTheBuses() throws {
        let registry = try machineDevices()
        let configuration = registry.acpiConfiguration(vcpuCount: 2, resetValue: X86Layout.acpiResetValue,
                                                       s5SleepType: X86Layout.acpiS5SleepType)
        // The machine's devices give exactly the tables Swiftlet described by hand before.
        #expect(configuration == ACPIConfiguration(vcpuCount: 2, serialPorts: [.com1]))
        #expect(registry.devices.map(\.id) == ["serial0", "i8042", "rtc", "acpi-power", "pvpanic", "swiftlet-control"])
        // Every registration is on its bus, under its id.
        for device in registry.devices {
            let bus = device.bus == .pio ? registry.pio : registry.mmio
            let found = bus.lookup(device.range.base)
            #expect(found?.entry.name == device.id && found?.offset == 0)
            #expect(bus.lookup(device.range.last)?.entry.name == device.id)
        }
    }

    @Test func aDeviceWithoutItsRegistrationIsNotDescribed() throws {
        var registry = DeviceRegistry()
        let events = MachineEventRecorder(control: RunControl(), logger: Logger(label: "t"), startTime: .now)
        try VirtualMachine.attachLegacyDevices(to: &registry, events: events)
        let configuration = registry.acpiConfiguration(vcpuCount: 1, resetValue: 1, s5SleepType: 5)
        #expect(configuration.serialPorts.isEmpty)
        #expect(configuration.pvpanicPort == X86Layout.pvpanicPort)
    }

    @Test func virtioDevicesAreDescribedWithTheirWindowAndInterrupt() throws {
        var registry = try machineDevices()
        struct NoEvents: VirtioTransportEvents {
            func activate(features: UInt64, queues: [VirtioQueueRegisters]) {}
            func reset() {}
            func notify(queue index: Int) {}
        }
        for (index, gsi) in [(0, UInt32(5)), (1, UInt32(6))] {
            let transport = SharedDevice(VirtioMMIOTransport(device: VirtioEntropy.description, irq: NoInterruptLine(),
                                                             events: NoEvents()))
            try registry.attach(transport, id: "rng\(index)", kind: .virtioMMIO(deviceID: 4), bus: .mmio,
                                base: X86Layout.virtioMMIOStart + 0x1000 * UInt64(index), size: 0x1000, gsi: gsi)
        }
        let configuration = registry.acpiConfiguration(vcpuCount: 1, resetValue: 1, s5SleepType: 5)
        #expect(configuration.virtioMMIODevices == [VirtioMMIODeviceDescription(base: 0xd000_0000, gsi: 5),
                                                    VirtioMMIODeviceDescription(base: 0xd000_1000, gsi: 6)])
        #expect(registry.mmio.lookup(0xd000_1050)?.entry.name == "rng1")
    }

    @Test func duplicateIDsAndOverlapsAreRefused() throws {
        var registry = try machineDevices()
        let extra = SharedDevice(PVPanic(events: MachineEventRecorder(control: RunControl(), logger: Logger(label: "t"),
                                                                       startTime: .now)))
        #expect(throws: DeviceRegistryError.duplicateID("pvpanic")) {
            try registry.attach(extra, id: "pvpanic", kind: .pvpanic, bus: .pio, base: 0x900, size: 1)
        }
        #expect(throws: DeviceRegistryError.self) {
            try registry.attach(extra, id: "pvpanic2", kind: .pvpanic, bus: .pio, base: UInt64(X86Layout.com1Port) + 7, size: 1)
        }
        #expect(registry.devices.count == 6)
    }
}
