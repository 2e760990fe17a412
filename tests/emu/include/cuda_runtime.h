/* tests/emu/include/cuda_runtime.h — a fake CUDA runtime for compiling
 * the kernels/cuda .cu files as host C++ (tests/emu/README.md).
 *
 * Host side: the runtime calls the backend makes, with device memory in
 * host RAM (tracked, guarded and filled with NaN bytes when allocated) and
 * streams that QUEUE their work until a synchronisation, so a missing
 * cudaStreamSynchronize shows up as stale data, as on a GPU.
 *
 * Device side: __global__/__device__ are nothing, __shared__ is a static
 * (one block runs at a time), threadIdx & co. are globals the scheduler in
 * emu_runtime.cpp sets, and a launch `k<<<g, b, s, st>>>(args)` is rewritten
 * by rewrite_launch.cmake into `emu::launch("k", k, g, b, s, st)(args)`.
 * __syncthreads and the warp shuffles are real barriers: the threads of a
 * block run as cooperative fibers, so divergent barriers, partial warps and
 * shuffle misuse are detected and abort the test with a message. */
#ifndef LTDI_EMU_CUDA_RUNTIME_H
#define LTDI_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

/* ==== qualifiers and built-in variables =================================== */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
/* One block runs at a time on the emulating OS thread. */
#define __shared__ static thread_local

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

/* ==== runtime types ======================================================== */

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
} cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

typedef struct emu_stream *cudaStream_t;
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaRuntimeGetVersion(int *version);
cudaError_t cudaDriverGetVersion(int *version);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMalloc(void **p, size_t nbytes);
template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t nbytes) {
  return cudaMalloc(reinterpret_cast<void **>(p), nbytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMemset(void *p, int value, size_t nbytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t nbytes, cudaStream_t s = 0);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind,
                            cudaStream_t s = 0);

/* ==== the emulator's interface ============================================ */

namespace emu {

/* Aborts the process with "emu: <message>" (a failed test). */
[[noreturn]] void fatal(const char *fmt, ...);
/* The device allocation holding [p, p + nbytes), else NULL-equivalent 0. */
bool is_device(const void *p, size_t nbytes);
/* Queues fn on stream s (0 = the legacy default stream). */
void enqueue(cudaStream_t s, std::function<void()> fn);
/* Runs a grid: body is one thread's work; aborts on barrier misuse. */
void run_grid(const char *name, dim3 grid, dim3 block, const std::function<void()> &body);
/* Records a launch-configuration error for cudaGetLastError. */
bool check_config(const char *name, dim3 grid, dim3 block, size_t shmem);

void syncthreads();
uint64_t shfl(unsigned mask, uint64_t value, int mode, int arg, int width);
enum { SHFL_IDX = 0, SHFL_UP = 1, SHFL_DOWN = 2, SHFL_XOR = 3 };

template <typename T>
void check_arg(const char *name, int i, const T &v) {
  if constexpr (std::is_pointer_v<T>)
    if (v != nullptr && !is_device((const void *)v, 1))
      fatal("kernel %s: argument %d (%p) is not device memory", name, i, (const void *)v);
}

template <typename... P>
struct launcher {
  const char *name;
  void (*fn)(P...);
  dim3 grid, block;
  size_t shmem;
  cudaStream_t stream;

  template <typename... A>
  void operator()(A &&...a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel argument count");
    /* Arguments are copied at launch, as CUDA does. */
    auto args = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(a)...);
    if (!check_config(name, grid, block, shmem)) return;
    std::apply([this](const auto &...v) {
      int i = 0;
      (check_arg(name, i++, v), ...);
    }, *args);
    const char *n = name;
    auto f = fn;
    dim3 g = grid, b = block;
    enqueue(stream, [n, f, g, b, args]() {
      run_grid(n, g, b, [f, &args]() { std::apply(f, *args); });
    });
  }
};

template <typename... P>
launcher<P...> launch(const char *name, void (*fn)(P...), dim3 grid, dim3 block,
                      size_t shmem = 0, cudaStream_t stream = 0) {
  return launcher<P...>{name, fn, grid, block, shmem, stream};
}

template <typename T>
static inline T shfl_as(unsigned mask, T v, int mode, int arg, int width) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  uint64_t in = 0, out;
  memcpy(&in, &v, sizeof v);
  out = shfl(mask, in, mode, arg, width);
  T r;
  memcpy(&r, &out, sizeof r);
  return r;
}

} // namespace emu

/* ==== device functions ===================================================== */

static inline void __syncthreads() { emu::syncthreads(); }
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return emu::shfl_as(mask, v, emu::SHFL_DOWN, (int)d, width);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return emu::shfl_as(mask, v, emu::SHFL_UP, (int)d, width);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  return emu::shfl_as(mask, v, emu::SHFL_XOR, m, width);
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int lane, int width = 32) {
  return emu::shfl_as(mask, v, emu::SHFL_IDX, lane, width);
}

/* Fibers never run at the same time, so read-modify-write is atomic. */
template <typename T>
static inline T atomicAdd(T *p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
static inline T atomicMax(T *p, T v) {
  T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
static inline T atomicExch(T *p, T v) {
  T old = *p;
  *p = v;
  return old;
}
static inline int atomicCAS(int *p, int cmp, int v) {
  int old = *p;
  if (old == cmp) *p = v;
  return old;
}

/* Round-to-nearest arithmetic: the emulation is built with
 * -ffp-contract=off, so these are single IEEE operations. */
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

#endif
