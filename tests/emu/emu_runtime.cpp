/* tests/emu/emu_runtime.cpp — the fake CUDA runtime's host side: errors,
 * device memory, streams and the runtime API (the block scheduler is in
 * emu_sched.cpp).
 *
 * Device memory is host memory with guard zones: every allocation is
 * registered (kernels, copies and library calls check their pointers
 * against the registry), starts filled with 0xFF bytes (NaN as floats, so
 * reading memory nobody wrote shows in the results), and carries 64-byte
 * canaries on both sides, checked on free and at every synchronisation.
 *
 * Streams queue their work and run it only when the host waits: on
 * cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree (which waits for
 * the whole device on a GPU too) and a device-to-host copy into pageable
 * memory (which returns only once done). Host-to-device copies from
 * pageable memory read the source when called, as CUDA stages it. So a
 * result read without the right synchronisation is stale here as there. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <deque>
#include <map>
#include <vector>

#include "cuda_runtime.h"

struct emu_stream {
  std::deque<std::function<void()>> queue;
  unsigned flags;
};

namespace {

const size_t kGuard = 64;
const unsigned char kCanary = 0xA5;

std::map<uintptr_t, size_t> g_allocs; /* user base -> user size */
cudaError_t g_last = cudaSuccess;
emu_stream g_legacy = {{}, 0};
std::vector<emu_stream *> g_streams; /* created streams, in creation order */

cudaError_t fail(cudaError_t e) {
  g_last = e;
  return e;
}

void check_guards(uintptr_t base, size_t n) {
  const unsigned char *p = (const unsigned char *)base;
  for (size_t i = 0; i < kGuard; i++)
    if (p[-1 - (ptrdiff_t)i] != kCanary || p[n + i] != kCanary)
      emu::fatal("device buffer %p (%zu bytes) was written out of bounds", (void *)base, n);
}

void check_all_guards() {
  for (const auto &a : g_allocs) check_guards(a.first, a.second);
}

void flush(emu_stream *s) {
  while (!s->queue.empty()) {
    std::function<void()> fn = std::move(s->queue.front());
    s->queue.pop_front();
    fn();
  }
}

void flush_all() {
  flush(&g_legacy);
  for (emu_stream *s : g_streams) flush(s);
  check_all_guards();
}

emu_stream *resolve(cudaStream_t s) { return s ? s : &g_legacy; }

bool known_stream(cudaStream_t s) {
  if (s == 0) return true;
  for (emu_stream *x : g_streams)
    if (x == s) return true;
  return false;
}

} // namespace

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {

void fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("emu: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
  abort();
}

bool is_device(const void *p, size_t nbytes) {
  const uintptr_t a = (uintptr_t)p;
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && nbytes <= it->second && a - it->first <= it->second - nbytes;
}

void enqueue(cudaStream_t s, std::function<void()> fn) {
  if (!known_stream(s)) fatal("work queued on an unknown or destroyed stream %p", (void *)s);
  resolve(s)->queue.push_back(std::move(fn));
}

bool check_config(const char *name, dim3 grid, dim3 block, size_t shmem) {
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || shmem > 48 * 1024) {
    fprintf(stderr, "emu: kernel %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", name,
            grid.x, grid.y, grid.z, block.x, block.y, block.z);
    fail(cudaErrorInvalidConfiguration);
    return false;
  }
  return true;
}

} // namespace emu

/* ==== runtime API ========================================================== */

cudaError_t cudaGetDeviceCount(int *count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int *device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }
const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  case cudaErrorNoDevice: return "no CUDA-capable device is detected";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  case cudaErrorInvalidResourceHandle: return "invalid resource handle";
  }
  return "unknown error";
}
cudaError_t cudaRuntimeGetVersion(int *v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) { return cudaRuntimeGetVersion(v); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = new emu_stream{{}, flags};
  g_streams.push_back(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s == 0 || !known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  flush(s); /* CUDA finishes queued work of a destroyed stream */
  for (size_t i = 0; i < g_streams.size(); i++)
    if (g_streams[i] == s) g_streams.erase(g_streams.begin() + (ptrdiff_t)i);
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  flush(resolve(s));
  check_all_guards();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  flush_all();
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t nbytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = NULL;
  if (nbytes == 0) return cudaSuccess;
  if (nbytes > ((size_t)1 << 36)) return fail(cudaErrorMemoryAllocation);
  unsigned char *raw = (unsigned char *)aligned_alloc(256, (nbytes + 2 * 256 + 255) / 256 * 256);
  if (!raw) return fail(cudaErrorMemoryAllocation);
  unsigned char *user = raw + 256;
  memset(user - kGuard, kCanary, kGuard);
  memset(user, 0xFF, nbytes);
  memset(user + nbytes, kCanary, kGuard);
  g_allocs[(uintptr_t)user] = nbytes;
  *p = user;
  return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
  if (!p) return cudaSuccess;
  flush_all(); /* cudaFree waits for the device */
  auto it = g_allocs.find((uintptr_t)p);
  if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
  check_guards(it->first, it->second);
  g_allocs.erase(it);
  free((unsigned char *)p - 256);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t nbytes, cudaStream_t s) {
  if (nbytes == 0) return cudaSuccess;
  if (!emu::is_device(p, nbytes)) return fail(cudaErrorInvalidValue);
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  emu::enqueue(s, [p, value, nbytes]() { memset(p, value, nbytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t nbytes) {
  cudaError_t e = cudaMemsetAsync(p, value, nbytes, 0);
  if (e == cudaSuccess) flush(&g_legacy);
  return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue);
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  const bool dst_dev = emu::is_device(dst, n), src_dev = emu::is_device(src, n);
  if (kind == cudaMemcpyDefault)
    kind = src_dev ? (dst_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                   : (dst_dev ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
  const bool want_dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_dev != want_dst_dev || src_dev != want_src_dev) {
    fprintf(stderr, "emu: cudaMemcpy kind %d does not match the pointers (%p <- %p, %zu bytes)\n",
            (int)kind, dst, src, n);
    return fail(cudaErrorInvalidValue);
  }
  switch (kind) {
  case cudaMemcpyHostToDevice: { /* staged now, written in stream order */
    auto buf = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src,
                                                            (const unsigned char *)src + n);
    emu::enqueue(s, [dst, buf]() { memcpy(dst, buf->data(), buf->size()); });
    break;
  }
  case cudaMemcpyDeviceToHost: /* into pageable memory: returns when done */
    flush(resolve(s));
    memcpy(dst, src, n);
    break;
  case cudaMemcpyDeviceToDevice: {
    const char *d = (const char *)dst, *c = (const char *)src;
    if (d < c + n && c < d + n) emu::fatal("cudaMemcpy of overlapping ranges (undefined)");
    emu::enqueue(s, [dst, src, n]() { memcpy(dst, src, n); });
    break;
  }
  default:
    memcpy(dst, src, n);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
  /* The legacy default stream waits for blocking streams, not for streams
   * created with cudaStreamNonBlocking. */
  for (emu_stream *x : g_streams)
    if (!(x->flags & cudaStreamNonBlocking)) flush(x);
  cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, 0);
  if (e == cudaSuccess) flush(&g_legacy);
  return e;
}
