import Testing
@testable import SwiftletKVM

/// The names stop messages give KVM's exit reasons (issue 8: "unknown VM exit 6" named nothing).
@Suite("KVM exit names") struct KVMExitNamesTests {
    @Test func exitReasonsAreNamedAsInTheKernelHeader() {
        #expect(KVMExitNames.exitReason(2).description == "KVM_EXIT_IO")
        #expect(KVMExitNames.exitReason(6).description == "KVM_EXIT_MMIO")
        #expect(KVMExitNames.exitReason(7).description == "KVM_EXIT_IRQ_WINDOW_OPEN")
        #expect(KVMExitNames.exitReason(4).description == "KVM_EXIT_DEBUG")
        #expect(KVMExitNames.exitReason(39).description == "KVM_EXIT_MEMORY_FAULT")
        #expect(KVMExitNames.exitReason(1000).description == "an exit reason newer than Swiftlet knows")
    }

    @Test func systemEventTypesAreNamed() {
        #expect(KVMExitNames.systemEvent(5).description == "KVM_SYSTEM_EVENT_SUSPEND")
        #expect(KVMExitNames.systemEvent(99).description == "a system event type newer than Swiftlet knows")
    }
}
