// swift-tools-version:6.2
// Swiftlet: a KVM microVM monitor in Swift. See README.md for the module map.
import PackageDescription

/// Targets that must not use unsafe constructs: everything except the unsafe modules (guest memory,
/// host primitives, KVM).
let safe: [SwiftSetting] = [.strictMemorySafety(), .treatWarning("StrictMemorySafety", as: .error)]

let package = Package(
    name: "Swiftlet",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Swiftlet", targets: ["Swiftlet"]),
        .executable(name: "swiftlet", targets: ["swiftlet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // Tier 0: the C shims over <linux/kvm.h> and ioctl, over host calls and over ordered guest-memory
        // accesses (virtqueue indices), guest RAM and host primitives (threads, terminal, signals,
        // console buffers): three of the four unsafe Swift modules.
        .target(name: "CSwiftletHost"),
        .target(name: "CSwiftletKVM", dependencies: ["CSwiftletHost"]),
        .target(name: "CSwiftletMemory"),
        .target(name: "SwiftletMemory", dependencies: [
            "CSwiftletMemory", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: [.strictMemorySafety()]),
        // Tier 1: vocabulary shared by the dispatcher and the interpreters.
        .target(name: "SwiftletCore", dependencies: ["SwiftletMemory"], swiftSettings: safe),
        .target(name: "SwiftletHost", dependencies: [
            "CSwiftletHost", "SwiftletCore", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: [.strictMemorySafety()]),
        // Tier 2: x86_64 machine description (layout, GDT, page tables, CPUID, MSRs, registers).
        .target(name: "SwiftletArch", dependencies: ["SwiftletCore", "SwiftletMemory"], swiftSettings: safe),
        // Tier 3: the KVM wrapper (the last unsafe module), the allocator, the boot loaders and ACPI,
        // the dispatcher and the interpreters (device models).
        .target(name: "SwiftletKVM", dependencies: [
            "CSwiftletKVM", "SwiftletCore", "SwiftletMemory", "SwiftletArch", "SwiftletHost",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: [.strictMemorySafety()]),
        .target(name: "SwiftletAllocator", dependencies: ["SwiftletCore", "SwiftletArch", "SwiftletMemory"], swiftSettings: safe),
        .target(name: "SwiftletBoot", dependencies: [
            "SwiftletCore", "SwiftletMemory", "SwiftletArch", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: safe),
        .target(name: "SwiftletDispatcher", dependencies: ["SwiftletCore"], swiftSettings: safe),
        .target(name: "SwiftletDevices", dependencies: ["SwiftletCore"], swiftSettings: safe),
        // The para-virtualized interpreters: the virtio-mmio transport, split virtqueues validated
        // against guest RAM, and the devices (entropy so far).
        .target(name: "SwiftletVirtio", dependencies: ["SwiftletCore", "SwiftletMemory"], swiftSettings: safe),
        // Tier 5: the composition root (builder, VM lifecycle, public API).
        .target(name: "Swiftlet", dependencies: [
            "SwiftletCore", "SwiftletMemory", "SwiftletArch", "SwiftletKVM", "SwiftletHost", "SwiftletAllocator",
            "SwiftletBoot", "SwiftletDispatcher", "SwiftletDevices", "SwiftletVirtio",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: safe),
        // Tier 6: the command line (a library so it can be unit-tested) and the executable.
        .target(name: "SwiftletCLI", dependencies: [
            "Swiftlet", "SwiftletHost", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: safe),
        .executableTarget(name: "swiftlet", dependencies: ["SwiftletCLI"], swiftSettings: safe),

        // libFuzzer targets (scripts/fuzz builds them with -sanitize=fuzzer; a plain build replays a corpus).
        .target(name: "FuzzSupport", path: "Fuzz/Support"),
        .executableTarget(name: "FuzzVirtioTransport", dependencies: ["FuzzSupport", "SwiftletCore", "SwiftletVirtio"],
                          path: "Fuzz/VirtioTransport"),
        .executableTarget(name: "FuzzSplitQueue", dependencies: ["FuzzSupport", "SwiftletMemory", "SwiftletVirtio"],
                          path: "Fuzz/SplitQueue"),
        .executableTarget(name: "FuzzVirtioBlock", dependencies: ["FuzzSupport", "SwiftletMemory", "SwiftletVirtio"],
                          path: "Fuzz/VirtioBlock"),
        .executableTarget(name: "FuzzCommandLine", dependencies: ["FuzzSupport", "Swiftlet", "SwiftletCLI"],
                          path: "Fuzz/CommandLine"),
        .executableTarget(name: "FuzzVirtioConsole", dependencies: ["FuzzSupport", "SwiftletCore", "SwiftletMemory", "SwiftletVirtio"],
                          path: "Fuzz/VirtioConsole"),
        .executableTarget(name: "FuzzVirtioVsock", dependencies: ["FuzzSupport", "SwiftletMemory", "SwiftletVirtio"],
                          path: "Fuzz/VirtioVsock"),
        .executableTarget(name: "FuzzVirtioNet", dependencies: ["FuzzSupport", "SwiftletMemory", "SwiftletVirtio"],
                          path: "Fuzz/VirtioNet"),

        // Unit tests: no /dev/kvm needed.
        .testTarget(name: "SwiftletUnitTests", dependencies: [
            "SwiftletCore", "SwiftletMemory", "SwiftletArch", "SwiftletAllocator", "SwiftletBoot",
            "SwiftletDispatcher", "SwiftletDevices", "SwiftletVirtio", "SwiftletHost", "Swiftlet", "SwiftletCLI",
        ], resources: [.copy("Fixtures")]),
        // Direct tests on /dev/kvm with tiny hand-made guests. They fail (never skip) without /dev/kvm.
        .testTarget(name: "SwiftletKVMTests", dependencies: [
            "Swiftlet", "SwiftletKVM", "SwiftletHost", "SwiftletCore", "SwiftletMemory",
        ]),
    ]
)
