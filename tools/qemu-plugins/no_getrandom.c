/*
 * no_getrandom: run a command with the getrandom(2) system call failing with ENOSYS (seccomp filter, x86_64 hosts).
 *
 * Why: rtvla's ARM cost ledger (xtask/src/arm_ledger.rs) needs runs that retire exactly the same instructions
 * every time. qemu-user 7.2 forwards a guest's getrandom to the host, so Rust's hash maps (tract's optimiser uses
 * many) get new keys each run and probe differently: counts varied by up to tens of thousands of instructions.
 * With getrandom failing, Rust's standard library falls back to reading /dev/urandom, which qemu's `-L` prefix
 * redirects to a fixed file: the same keys every run.
 *
 * Usage: no_getrandom COMMAND [ARGS...]
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getrandom, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (argc < 2) {
        fprintf(stderr, "usage: no_getrandom COMMAND [ARGS...]\n");
        return 127;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("no_getrandom: seccomp");
        return 127;
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
