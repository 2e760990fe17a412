/* tests/emu/emu_sched.cpp — runs a kernel's grid on the host, one block at a
 * time, with real barrier semantics.
 *
 * A block starts in direct mode: one runner fiber calls the kernel body for
 * thread 0, 1, 2, ... in turn, which costs a function call per thread (the
 * element-wise kernels never leave this mode). The first __syncthreads or
 * warp shuffle "promotes" the block: the caller keeps the runner's stack as
 * its own fiber, every later thread gets a fresh fiber, and from then on a
 * round-robin scheduler resumes each runnable fiber until it waits at a
 * barrier or exits, then releases the barriers every participant reached.
 *
 * Misuse that hangs or is undefined on a GPU aborts the test instead:
 * __syncthreads reached by only part of a block (some threads exited or wait
 * elsewhere), a shuffle whose mask names lanes that do not exist (a block
 * size that is not a multiple of 32 with a full mask) or whose lanes
 * disagree on which shuffle they are at, and any deadlock. Warp shuffles
 * exchange values through per-warp slots, double-buffered by the shuffle's
 * parity so a fast lane cannot overwrite a value a slow lane still reads. */
#include <sys/mman.h>

#include "cuda_runtime.h"
#include "emu_fiber.h"

namespace {

enum { FRESH, RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };
const size_t kStack = 128 * 1024;
const unsigned kMaxThreads = 1024;

struct fiber {
  emu_ctx ctx;
  int st;
  uint64_t nshfl; /* shuffles completed */
};

struct block_state {
  const std::function<void()> *body;
  const char *name;
  unsigned n;    /* threads in the block */
  bool direct;   /* the runner calls the threads in turn */
  bool promoted; /* switched to one fiber per thread */
  unsigned cur;  /* the running thread */
  emu_ctx sched, runner;
  fiber fib[kMaxThreads];
  uint64_t slots[kMaxThreads / 32][2][32];
  char *stacks[kMaxThreads + 1]; /* [kMaxThreads] is the runner's */
};
block_state B;

char *stack_at(unsigned i) {
  if (B.stacks[i] == nullptr) {
    void *p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) emu::fatal("cannot map a fiber stack");
    mprotect(p, 4096, PROT_NONE); /* overflow faults instead of corrupting */
    B.stacks[i] = (char *)p;
  }
  return B.stacks[i];
}

void set_thread(unsigned t) {
  B.cur = t;
  threadIdx.x = t % blockDim.x;
  threadIdx.y = (t / blockDim.x) % blockDim.y;
  threadIdx.z = t / (blockDim.x * blockDim.y);
}

void runner_main() {
  for (unsigned t = 0; t < B.n; t++) {
    set_thread(t);
    (*B.body)();
    B.fib[t].st = DONE;
    if (B.promoted) emu_ctx_switch(&B.fib[t].ctx, &B.sched); /* never resumed */
  }
  emu_ctx_switch(&B.runner, &B.sched);
}

void fiber_main() {
  const unsigned t = B.cur;
  (*B.body)();
  B.fib[t].st = DONE;
  emu_ctx_switch(&B.fib[t].ctx, &B.sched);
}

/* The first barrier of a block in direct mode: threads before t have
 * exited, which is only legal for a shuffle in another warp. */
void promote(unsigned t, int st) {
  if (st == WAIT_BLOCK && t > 0)
    emu::fatal("kernel %s: __syncthreads reached by thread %u after threads 0..%u exited "
               "without it (divergent barrier)", B.name, t, t - 1);
  if (st == WAIT_WARP && t % 32 != 0)
    emu::fatal("kernel %s: shuffle in thread %u after lanes of its warp exited", B.name, t);
  B.direct = false;
  B.promoted = true;
  for (unsigned i = t + 1; i < B.n; i++) B.fib[i].st = FRESH;
}

void wait_at(int st) {
  const unsigned t = B.cur;
  if (B.direct) promote(t, st);
  B.fib[t].st = st;
  emu_ctx_switch(&B.fib[t].ctx, &B.sched);
}

/* All fibers wait or are done: release what can be released, else abort. */
bool release_barriers() {
  unsigned done = 0, at_block = 0;
  for (unsigned i = 0; i < B.n; i++) {
    done += B.fib[i].st == DONE;
    at_block += B.fib[i].st == WAIT_BLOCK;
  }
  if (done == B.n) return false;
  bool released = false;
  if (at_block == B.n) {
    for (unsigned i = 0; i < B.n; i++) B.fib[i].st = RUNNABLE;
    released = true;
  } else if (at_block > 0 && done > 0) {
    emu::fatal("kernel %s: block (%u,%u,%u): %u threads wait at __syncthreads while %u "
               "exited (divergent barrier)", B.name, blockIdx.x, blockIdx.y, blockIdx.z,
               at_block, done);
  }
  for (unsigned lo = 0; lo < B.n; lo += 32) {
    const unsigned hi = lo + 32 < B.n ? lo + 32 : B.n;
    unsigned waiting = 0, exited = 0;
    for (unsigned i = lo; i < hi; i++) {
      waiting += B.fib[i].st == WAIT_WARP;
      exited += B.fib[i].st == DONE;
    }
    if (waiting == hi - lo) {
      for (unsigned i = lo; i < hi; i++) {
        if (B.fib[i].nshfl != B.fib[lo].nshfl)
          emu::fatal("kernel %s: lanes %u and %u of a warp are at different shuffles", B.name,
                     lo, i);
        B.fib[i].st = RUNNABLE;
      }
      released = true;
    } else if (waiting > 0 && exited > 0) {
      emu::fatal("kernel %s: shuffle in warp %u while %u of its lanes exited", B.name, lo / 32,
                 exited);
    }
  }
  if (!released)
    emu::fatal("kernel %s: deadlock in block (%u,%u,%u): %u at __syncthreads, %u exited, the "
               "rest at shuffles of incomplete warps", B.name, blockIdx.x, blockIdx.y,
               blockIdx.z, at_block, done);
  return true;
}

void run_block() {
  B.direct = true;
  B.promoted = false;
  for (unsigned i = 0; i < B.n; i++) {
    B.fib[i].st = FRESH;
    B.fib[i].nshfl = 0;
  }
  emu_ctx_make(&B.runner, stack_at(kMaxThreads), kStack, runner_main);
  emu_ctx_switch(&B.sched, &B.runner);
  if (!B.promoted) return;
  do {
    for (unsigned i = 0; i < B.n; i++) {
      fiber &f = B.fib[i];
      if (f.st == FRESH) {
        emu_ctx_make(&f.ctx, stack_at(i), kStack, fiber_main);
        f.st = RUNNABLE;
      }
      if (f.st != RUNNABLE) continue;
      set_thread(i);
      emu_ctx_switch(&B.sched, &f.ctx);
    }
  } while (release_barriers());
}

} // namespace

namespace emu {

void run_grid(const char *name, dim3 grid, dim3 block, const std::function<void()> &body) {
  gridDim = grid;
  blockDim = block;
  B.body = &body;
  B.name = name;
  B.n = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        blockIdx.x = x;
        blockIdx.y = y;
        blockIdx.z = z;
        run_block();
      }
}

void syncthreads() { wait_at(WAIT_BLOCK); }

uint64_t shfl(unsigned mask, uint64_t value, int mode, int arg, int width) {
  const unsigned t = B.cur, lane = t & 31u, warp = t >> 5;
  const unsigned lanes = B.n - 32 * warp < 32 ? B.n - 32 * warp : 32;
  const unsigned present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
  if (mask != present)
    emu::fatal("kernel %s: shuffle mask %08x in a warp whose lanes are %08x (block of %u "
               "threads)", B.name, mask, present, B.n);
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    emu::fatal("kernel %s: shuffle width %d", B.name, width);
  fiber &f = B.fib[t];
  const unsigned parity = (unsigned)(f.nshfl & 1u);
  B.slots[warp][parity][lane] = value;
  wait_at(WAIT_WARP);
  const unsigned w = (unsigned)width, seg = lane & ~(w - 1u), in_seg = lane & (w - 1u);
  unsigned src = lane;
  switch (mode) {
  case SHFL_DOWN: src = in_seg + (unsigned)arg < w ? lane + (unsigned)arg : lane; break;
  case SHFL_UP: src = in_seg >= (unsigned)arg ? lane - (unsigned)arg : lane; break;
  case SHFL_XOR: src = seg + ((in_seg ^ (unsigned)arg) & (w - 1u)); break;
  default: src = seg + ((unsigned)arg & (w - 1u)); break;
  }
  f.nshfl++;
  return B.slots[warp][parity][src];
}

} // namespace emu
