// libFuzzer target: a hostile driver programs the virtio-mmio transport.
//
// Each 11-byte record of the input is one guest access: a control byte (bit 0 write, bits 1-2
// the width, bit 3 a device-side event instead: raise an interrupt or mark needs-reset), a 16-bit
// offset into the 4 KiB window (a little past it, too) and a 64-bit value. The transport must
// never trap, keep its queue count, and only ever activate with features the device offered,
// VERSION_1 among them. Built by scripts/fuzz with -sanitize=fuzzer; a plain build is a replay
// driver that runs the files it is given (the corpus, in CI).
import Foundation
import FuzzSupport
import SwiftletCore
import SwiftletVirtio

final class Checks: VirtioTransportEvents {
    let offered: UInt64
    let queueCount: Int
    init(offered: UInt64, queueCount: Int) {
        self.offered = offered
        self.queueCount = queueCount
    }
    func activate(features: UInt64, queues: [VirtioQueueRegisters]) {
        precondition(features & VirtioFeature.version1 != 0, "activated without VERSION_1")
        precondition(features & ~offered == 0, "activated with features the device never offered")
        precondition(queues.count == queueCount, "activated with \(queues.count) queues")
    }
    func reset() {}
    func notify(queue index: Int) { precondition(index >= 0 && index < queueCount, "notified queue \(index)") }
}

struct NoLine: InterruptLine {
    func trigger() {}
}

func exercise(_ bytes: [UInt8]) {
    let device = VirtioDeviceDescription(deviceID: 2, features: 1 << 5 | VirtioFeature.eventIndex,
                                         queueMaximumSizes: [256, 64], configuration: [1, 2, 3, 4, 5, 6, 7, 8])
    let checks = Checks(offered: device.features, queueCount: 2)
    var transport = VirtioMMIOTransport(device: device, irq: NoLine(), events: checks)
    var index = 0
    while index + 11 <= bytes.count {
        let control = bytes[index]
        let offset = UInt64(bytes[index + 1]) | UInt64(bytes[index + 2]) << 8
        var value: UInt64 = 0
        for byte in 0..<8 { value |= UInt64(bytes[index + 3 + byte]) << (8 * UInt64(byte)) }
        index += 11
        let width = [AccessWidth.byte, .word, .dword, .qword][Int(control >> 1) & 3]
        if control & 8 != 0 {
            if control & 1 == 0 { transport.raiseInterrupt(UInt32(truncatingIfNeeded: value)) } else { transport.markNeedsReset() }
        } else if control & 1 == 1 {
            transport.write(at: offset, width: width, value: value)
        } else {
            _ = transport.read(at: offset, width: width)
        }
        precondition(transport.state.queues.count == 2, "the queue count changed")
    }
}

#if FUZZING
/// The input callback libFuzzer's driver calls.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    exercise(fuzzInput(data, size))
    return 0
}

/// This target's entry point (see FuzzSupport).
@_cdecl("FuzzVirtioTransport_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv, fuzzOne)
}
#else
@main enum Replay {
    static func main() throws { try replayCorpus(exercise) }
}
#endif
