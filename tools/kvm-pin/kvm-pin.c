/* kvm-pin: hold KVM's "APIC disabled" static keys on for as long as it runs (the nested lab's L2).
 *
 *   kvm-pin            (runs until killed; prints "kvm-pin: ready" once the VM is set up)
 *
 * Why: kvm.ko guards its APIC fast paths with two deferred static keys, apic_sw_disabled and
 * apic_hw_disabled. Every VM launch flips apic_sw_disabled 0 -> 1 (a new vCPU's APIC starts
 * software-disabled) and, about a second after the guest enables its APIC, 1 -> 0; each flip
 * live-patches kvm.ko's text (jump labels: int3, IPIs, rewrite) while other vCPU threads may be
 * executing it. In the lab, L1's QEMU 7.2 TCG can keep running a stale translation of such a
 * patched site: the CPU then loops for good on an int3 that is no longer in memory (the kprobes
 * int3 handler rewinds to the "missing" breakpoint and returns), L2 soft-locks on every CPU that
 * does, and the lab freezes (issue 8; see the README's lab section).
 * A VM with one never-run vCPU whose APIC is software-disabled (its reset state) and hardware-
 * disabled (APIC_BASE without the enable bit) keeps both keys' counts at 1 or more, so later VMs
 * never flip them and kvm.ko's text is never patched during the session.
 * Build: gcc -O2 -static -o kvm-pin kvm-pin.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MSR_IA32_APICBASE 0x1b

static int check(int r, const char *what) {
    if (r < 0) {
        fprintf(stderr, "kvm-pin: %s: %m\n", what);
        exit(1);
    }
    return r;
}

int main(void) {
    int kvm = check(open("/dev/kvm", O_RDWR | O_CLOEXEC), "open /dev/kvm");
    int vm = check(ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");
    check(ioctl(vm, KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");   /* in-kernel LAPIC for vCPUs */
    int vcpu = check(ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU"); /* apic_sw_disabled++ */

    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry entry;
    } msrs;
    memset(&msrs, 0, sizeof msrs);
    msrs.hdr.nmsrs = 1;
    msrs.entry.index = MSR_IA32_APICBASE;
    msrs.entry.data = 0xfee00000 | (1 << 8);  /* base, BSP, enable bit clear: apic_hw_disabled++ */
    if (check(ioctl(vcpu, KVM_SET_MSRS, &msrs), "KVM_SET_MSRS") != 1) {
        fprintf(stderr, "kvm-pin: KVM_SET_MSRS did not take IA32_APICBASE\n");
        return 1;
    }
    printf("kvm-pin: ready\n");
    fflush(stdout);
    for (;;) pause();
}
