/* tests/emu/emu_fiber.h — minimal cooperative fibers for the block
 * scheduler (emu_runtime.cpp): a context is a saved stack pointer, and a
 * switch saves the callee-saved registers of the ABI, which is all a
 * cooperative switch at a call boundary must keep. x86-64 uses a few lines
 * of assembly (a glibc swapcontext makes a signal-mask system call per
 * switch, far too slow for 2^24 threads); other machines fall back to
 * ucontext, which is correct but slower. */
#ifndef LTDI_EMU_FIBER_H
#define LTDI_EMU_FIBER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && !defined(LTDI_EMU_UCONTEXT)

extern "C" void ltdi_emu_switch(void **save_sp, void *load_sp);
__asm__(
    ".text\n"
    ".globl ltdi_emu_switch\n"
    ".type ltdi_emu_switch,@function\n"
    "ltdi_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size ltdi_emu_switch,.-ltdi_emu_switch\n");

typedef struct emu_ctx {
  void *sp;
} emu_ctx;

/* Prepares ctx to start entry() on [stack, stack + size); entry never returns. */
static inline void emu_ctx_make(emu_ctx *ctx, char *stack, size_t size, void (*entry)(void)) {
  uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
  void **sp = (void **)top;
  *--sp = 0;              /* entry's "return address": entry sees rsp % 16 == 8 */
  *--sp = (void *)entry;  /* where the switch's ret goes */
  for (int i = 0; i < 6; i++) *--sp = 0; /* rbp rbx r12..r15 */
  ctx->sp = sp;
}
static inline void emu_ctx_switch(emu_ctx *from, emu_ctx *to) { ltdi_emu_switch(&from->sp, to->sp); }

#else
#include <ucontext.h>

typedef struct emu_ctx {
  ucontext_t uc;
} emu_ctx;

static inline void emu_ctx_make(emu_ctx *ctx, char *stack, size_t size, void (*entry)(void)) {
  getcontext(&ctx->uc);
  ctx->uc.uc_stack.ss_sp = stack;
  ctx->uc.uc_stack.ss_size = size;
  ctx->uc.uc_link = NULL;
  makecontext(&ctx->uc, entry, 0);
}
static inline void emu_ctx_switch(emu_ctx *from, emu_ctx *to) { swapcontext(&from->uc, &to->uc); }

#endif
#endif
