import SwiftletCore

/// What a virtio device offers through its transport: its type, features, queues and
/// configuration space.
public struct VirtioDeviceDescription: Equatable, Sendable {
    /// The virtio device ID (1 network, 2 block, 3 console, 4 entropy, 19 vsock, …).
    public var deviceID: UInt32
    /// The feature bits the device offers; ``VirtioFeature/version1`` is always added.
    public var features: UInt64
    /// The largest size of each queue; the count is the number of queues (at most 1024).
    public var queueMaximumSizes: [UInt16]
    /// The device-specific configuration space, read-only to the driver.
    public var configuration: [UInt8]

    /// Describes a device.
    public init(deviceID: UInt32, features: UInt64, queueMaximumSizes: [UInt16], configuration: [UInt8] = []) {
        self.deviceID = deviceID
        self.features = features | VirtioFeature.version1
        self.queueMaximumSizes = Array(queueMaximumSizes.prefix(VirtioMMIOTransport.maximumQueueCount))
        self.configuration = Array(configuration.prefix(Int(VirtioMMIOTransport.windowSize - VirtioMMIOTransport.Register.configuration.rawValue)))
    }
}

/// Feature bits common to every virtio device (virtio 1.x §6).
public enum VirtioFeature {
    /// `VIRTIO_F_VERSION_1`: the device follows virtio 1.x (not legacy).
    public static let version1: UInt64 = 1 << 32
    /// `VIRTIO_RING_F_INDIRECT_DESC`: indirect descriptor tables.
    public static let indirectDescriptors: UInt64 = 1 << 28
    /// `VIRTIO_RING_F_EVENT_IDX`: `used_event` / `avail_event` notification suppression.
    public static let eventIndex: UInt64 = 1 << 29
}

/// One queue's registers as the driver programs them; validated into a ring only at activation.
public struct VirtioQueueRegisters: Codable, Equatable, Sendable {
    /// The size the driver chose (`QueueNum`); 0 until it writes one.
    public var size: UInt16 = 0
    /// Whether the driver enabled the queue (`QueueReady`).
    public var ready = false
    /// The descriptor table's guest address (`QueueDesc`).
    public var descriptorTable: UInt64 = 0
    /// The available ring's guest address (`QueueDriver`).
    public var availableRing: UInt64 = 0
    /// The used ring's guest address (`QueueDevice`).
    public var usedRing: UInt64 = 0

    /// A queue the driver has not touched.
    public init() {}
}

/// What the transport tells the rest of the machine.
public protocol VirtioTransportEvents: Sendable {
    /// The driver set DRIVER_OK after FEATURES_OK: the device may run with `features` and these
    /// queues (the ones with `ready` set; validate each before use).
    func activate(features: UInt64, queues: [VirtioQueueRegisters])
    /// The driver reset the device (wrote 0 to `Status`): stop using the queues.
    func reset()
    /// The driver notified queue `index` through the register (when no ioeventfd caught it).
    func notify(queue index: Int)
}

/// The virtio-mmio transport, register layout version 2 (virtio 1.x §4.2.2), as a plain state
/// machine: one 4 KiB window per device.
///
/// | Offset | Register | Access |
/// |---|---|---|
/// | 0x000 | MagicValue "virt" | R |
/// | 0x004 | Version (2) | R |
/// | 0x008 | DeviceID | R |
/// | 0x00c | VendorID | R |
/// | 0x010 | DeviceFeatures (32 bits chosen by DeviceFeaturesSel) | R |
/// | 0x014 | DeviceFeaturesSel | W |
/// | 0x020 | DriverFeatures (32 bits chosen by DriverFeaturesSel) | W |
/// | 0x024 | DriverFeaturesSel | W |
/// | 0x030 | QueueSel | W |
/// | 0x034 | QueueNumMax | R |
/// | 0x038 | QueueNum | W |
/// | 0x044 | QueueReady | RW |
/// | 0x050 | QueueNotify | W |
/// | 0x060 | InterruptStatus | R |
/// | 0x064 | InterruptACK | W |
/// | 0x070 | Status | RW |
/// | 0x080/0x084 | QueueDesc low/high | W |
/// | 0x090/0x094 | QueueDriver (available ring) low/high | W |
/// | 0x0a0/0x0a4 | QueueDevice (used ring) low/high | W |
/// | 0x0fc | ConfigGeneration | R |
/// | 0x100… | device configuration space | R (any width) |
///
/// Behaviour:
/// - Registers are 32 bits wide; other widths read 0 and writes are ignored (the configuration
///   space takes any width).
/// - Writing 0 to `Status` resets the device: every queue and feature returns to its initial state,
///   and ``VirtioTransportEvents/reset()`` is reported.
/// - FEATURES_OK sticks only if the driver accepted ``VirtioFeature/version1`` and nothing the
///   device did not offer; otherwise it reads back clear and the driver gives up (§3.1.1).
/// - Queue registers take writes only while the selected queue exists, is not ready and the
///   driver has not set DRIVER_OK; `QueueNum` above `QueueNumMax` is refused at activation, not
///   here (the queue's own validation decides).
/// - DRIVER_OK after FEATURES_OK reports ``VirtioTransportEvents/activate(features:queues:)``
///   once; DRIVER_OK without FEATURES_OK sets ``Status/needsReset``.
///
/// Threat model:
/// - Input: every access from the guest, at any offset, width and value, in any order.
/// - Threat: a driver that selects queues that do not exist, moves a running queue, skips
///   feature negotiation, or floods notifications, to trap Swiftlet or make it use bad rings.
/// - Mitigation: selectors are bounds-checked on use, running queues are frozen, activation hands
///   over register values only (the queue validates them against guest RAM), and notifications for
///   a queue that does not exist are dropped.
public struct VirtioMMIOTransport: BusDevice {
    /// The size of the register window.
    public static let windowSize: UInt64 = 0x1000
    /// "virt" in little-endian byte order.
    public static let magic: UInt32 = 0x7472_6976
    /// The most queues a device may have.
    public static let maximumQueueCount = 1024
    /// Swiftlet's vendor ID: "SL" in ASCII (drivers do not check it).
    public static let vendorID: UInt32 = 0x4C53

    /// The register offsets (see the table above).
    public enum Register: UInt64, Sendable {
        case magic = 0x000, version = 0x004, deviceID = 0x008, vendorID = 0x00c
        case deviceFeatures = 0x010, deviceFeaturesSelect = 0x014
        case driverFeatures = 0x020, driverFeaturesSelect = 0x024
        case queueSelect = 0x030, queueSizeMaximum = 0x034, queueSize = 0x038, queueReady = 0x044
        case queueNotify = 0x050, interruptStatus = 0x060, interruptAcknowledge = 0x064, status = 0x070
        case queueDescriptorLow = 0x080, queueDescriptorHigh = 0x084
        case queueDriverLow = 0x090, queueDriverHigh = 0x094
        case queueDeviceLow = 0x0a0, queueDeviceHigh = 0x0a4
        case configurationGeneration = 0x0fc, configuration = 0x100
    }

    /// The device status bits (§2.1).
    public enum Status {
        /// The guest found the device.
        public static let acknowledge: UInt32 = 1
        /// The guest has a driver for it.
        public static let driver: UInt32 = 2
        /// The driver is set up: the device is live.
        public static let driverOK: UInt32 = 4
        /// Feature negotiation is complete.
        public static let featuresOK: UInt32 = 8
        /// The device hit an error it cannot recover from without a reset.
        public static let needsReset: UInt32 = 64
        /// The driver gave up on the device.
        public static let failed: UInt32 = 128
    }

    /// The interrupt status bits (§4.2.2).
    public enum Interrupt {
        /// A used buffer was added to a queue.
        public static let usedBuffer: UInt32 = 1
        /// The configuration space changed.
        public static let configurationChange: UInt32 = 2
    }

    /// The transport's guest-visible state, for snapshots.
    public struct State: Codable, Equatable, Sendable {
        /// The device status (``Status`` bits).
        public var status: UInt32 = 0
        /// Which 32 bits of the device features `DeviceFeatures` shows (0 or 1).
        public var deviceFeaturesSelect: UInt32 = 0
        /// Which 32 bits of the driver features a `DriverFeatures` write sets (0 or 1).
        public var driverFeaturesSelect: UInt32 = 0
        /// The features the driver accepted.
        public var driverFeatures: UInt64 = 0
        /// The queue the queue registers address (`QueueSel`, unchecked until used).
        public var queueSelect: UInt32 = 0
        /// Each queue's registers.
        public var queues: [VirtioQueueRegisters] = []
        /// Pending interrupt reasons (``Interrupt`` bits).
        public var interruptStatus: UInt32 = 0
        /// Bumped when the device changes its configuration space.
        public var configurationGeneration: UInt32 = 0

        /// The state after reset for a device with `queueCount` queues.
        public init(queueCount: Int) {
            queues = Array(repeating: VirtioQueueRegisters(), count: queueCount)
        }
    }

    /// The device this transport presents.
    public let device: VirtioDeviceDescription
    private var current: State
    private let irq: any InterruptLine
    private let events: any VirtioTransportEvents

    /// Creates the transport in its reset state.
    public init(device: VirtioDeviceDescription, irq: any InterruptLine, events: any VirtioTransportEvents) {
        self.device = device
        self.current = State(queueCount: device.queueMaximumSizes.count)
        self.irq = irq
        self.events = events
    }

    /// The guest-visible state.
    public var state: State { current }

    // MARK: Device side

    /// Sets interrupt status bits (``Interrupt``) and raises one edge: the device used buffers
    /// or changed its configuration.
    public mutating func raiseInterrupt(_ bits: UInt32) {
        current.interruptStatus |= bits & (Interrupt.usedBuffer | Interrupt.configurationChange)
        irq.trigger()
    }

    /// Sets DEVICE_NEEDS_RESET (the device found the driver broke the rules, e.g. a malformed
    /// ring) and tells the driver with a configuration-change interrupt (§2.1.2).
    public mutating func markNeedsReset() {
        guard current.status & Status.driverOK != 0 else { return }
        current.status |= Status.needsReset
        raiseInterrupt(Interrupt.configurationChange)
    }

    // MARK: Guest side

    public mutating func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        if offset >= Register.configuration.rawValue { return readConfiguration(at: offset - Register.configuration.rawValue, width: width) }
        guard width == .dword, let register = Register(rawValue: offset) else { return 0 }
        switch register {
        case .magic: return UInt64(Self.magic)
        case .version: return 2
        case .deviceID: return UInt64(device.deviceID)
        case .vendorID: return UInt64(Self.vendorID)
        case .deviceFeatures:
            switch current.deviceFeaturesSelect {
            case 0: return device.features & 0xFFFF_FFFF
            case 1: return device.features >> 32
            default: return 0
            }
        case .queueSizeMaximum:
            return selectedQueueIndex.map { UInt64(device.queueMaximumSizes[$0]) } ?? 0
        case .queueReady:
            return selectedQueueIndex.map { current.queues[$0].ready ? 1 : 0 } ?? 0
        case .interruptStatus: return UInt64(current.interruptStatus)
        case .status: return UInt64(current.status)
        case .configurationGeneration: return UInt64(current.configurationGeneration)
        default: return 0     // write-only registers read 0
        }
    }

    public mutating func write(at offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .dword, let register = Register(rawValue: offset) else { return }
        let value = UInt32(truncatingIfNeeded: value)
        switch register {
        case .deviceFeaturesSelect: current.deviceFeaturesSelect = value
        case .driverFeaturesSelect: current.driverFeaturesSelect = value
        case .driverFeatures:
            // Features are fixed once FEATURES_OK is set (§3.1.1).
            guard current.status & Status.featuresOK == 0 else { return }
            switch current.driverFeaturesSelect {
            case 0: current.driverFeatures = current.driverFeatures & ~0xFFFF_FFFF | UInt64(value)
            case 1: current.driverFeatures = current.driverFeatures & 0xFFFF_FFFF | UInt64(value) << 32
            default: break
            }
        case .queueSelect: current.queueSelect = value
        case .queueSize: updateSelectedQueue { $0.size = UInt16(truncatingIfNeeded: value) }
        case .queueReady:
            guard let index = selectedQueueIndex, current.status & Status.driverOK == 0 else { return }
            current.queues[index].ready = value & 1 == 1
        case .queueNotify:
            if Int(value) < current.queues.count, current.status & Status.driverOK != 0 { events.notify(queue: Int(value)) }
        case .interruptAcknowledge: current.interruptStatus &= ~value
        case .status: writeStatus(value)
        case .queueDescriptorLow: updateSelectedQueue { $0.descriptorTable = $0.descriptorTable.replacingLow(value) }
        case .queueDescriptorHigh: updateSelectedQueue { $0.descriptorTable = $0.descriptorTable.replacingHigh(value) }
        case .queueDriverLow: updateSelectedQueue { $0.availableRing = $0.availableRing.replacingLow(value) }
        case .queueDriverHigh: updateSelectedQueue { $0.availableRing = $0.availableRing.replacingHigh(value) }
        case .queueDeviceLow: updateSelectedQueue { $0.usedRing = $0.usedRing.replacingLow(value) }
        case .queueDeviceHigh: updateSelectedQueue { $0.usedRing = $0.usedRing.replacingHigh(value) }
        default: break        // read-only registers
        }
    }

    // MARK: Internals

    private var selectedQueueIndex: Int? {
        Int(current.queueSelect) < current.queues.count ? Int(current.queueSelect) : nil
    }

    /// Applies `change` to the selected queue if it exists, is not running and the device is not live.
    private mutating func updateSelectedQueue(_ change: (inout VirtioQueueRegisters) -> Void) {
        guard let index = selectedQueueIndex, !current.queues[index].ready,
              current.status & Status.driverOK == 0 else { return }
        change(&current.queues[index])
    }

    private mutating func writeStatus(_ value: UInt32) {
        if value == 0 {
            let wasLive = current.status & Status.driverOK != 0
            current = State(queueCount: device.queueMaximumSizes.count)
            if wasLive { events.reset() }         // the running device must give its queues back
            return
        }
        let old = current.status
        var new = value & (Status.acknowledge | Status.driver | Status.driverOK | Status.featuresOK | Status.failed)
        new |= old & Status.needsReset                       // only a reset clears it
        if new & Status.featuresOK != 0, old & Status.featuresOK == 0 {
            let accepted = current.driverFeatures
            let valid = accepted & VirtioFeature.version1 != 0 && accepted & ~device.features == 0
            if !valid { new &= ~Status.featuresOK }
        }
        if new & Status.driverOK != 0, old & Status.driverOK == 0 {
            if new & Status.featuresOK == 0 {
                new = (new & ~Status.driverOK) | Status.needsReset
            } else {
                current.status = new
                events.activate(features: current.driverFeatures, queues: current.queues)
                return
            }
        }
        current.status = new
    }

    private func readConfiguration(at offset: UInt64, width: AccessWidth) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<UInt64(width.bytes) {
            let (position, overflow) = offset.addingReportingOverflow(index)
            guard !overflow, position < UInt64(device.configuration.count) else { continue }
            value |= UInt64(device.configuration[Int(position)]) << (8 * index)
        }
        return value
    }
}

extension UInt64 {
    fileprivate func replacingLow(_ low: UInt32) -> UInt64 { self & 0xFFFF_FFFF_0000_0000 | UInt64(low) }
    fileprivate func replacingHigh(_ high: UInt32) -> UInt64 { self & 0xFFFF_FFFF | UInt64(high) << 32 }
}
