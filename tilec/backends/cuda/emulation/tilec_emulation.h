// tilec CUDA emulation: lets g++ (C++20) compile the CUDA C that tilec generates, unchanged,
// and run it on the CPU for correctness tests.
//
// Model: one std::thread per CUDA thread of a block; the same threads then run every block of
// the grid in turn. __shared__ variables become function statics (one copy, seen by all the
// threads of the block), __syncthreads is a barrier over the block (it aborts with a message
// after $TILEC_EMU_BARRIER_TIMEOUT seconds, 300 by default, rather than hang), warp shuffles exchange
// through a per-warp slot array fenced by a per-warp barrier. WMMA fragments hold the whole
// 16x16 tile in every lane (each lane computes the full product; store_matrix_sync writes each
// element from exactly one lane). __half / __nv_bfloat16 are 16-bit storage structs with
// round-to-nearest-even conversions.
#pragma once

#include <math.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

using std::max;
using std::min;

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace tilec_emu {
// A reusable barrier that gives up loudly: threads that diverge at __syncthreads (or a warp
// collective) would otherwise hang the test run forever.
class Barrier {
 public:
  explicit Barrier(unsigned int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned long long generation = generation_;
    if (++count_ == n_) {
      count_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(timeout_seconds()), [&] { return generation_ != generation; })) {
      std::fprintf(stderr, "tilec CUDA emulator: %u of %u threads waited %d s at a barrier; the others never "
                           "arrived (divergent __syncthreads or warp collective)\n", count_, n_, timeout_seconds());
      std::abort();
    }
  }
  static int timeout_seconds() {
    static const int s = [] {
      const char* env = std::getenv("TILEC_EMU_BARRIER_TIMEOUT");
      return env ? std::atoi(env) : 300;
    }();
    return s;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  unsigned int n_, count_ = 0;
  unsigned long long generation_ = 0;
};
struct Warp {
  Barrier bar{32};
  unsigned long long slot[32];
};
struct Block {
  explicit Block(unsigned int threads) : bar(threads), warps(new Warp[threads / 32]) {}
  Barrier bar;
  std::unique_ptr<Warp[]> warps;
};
inline Block* block = nullptr;
inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline dim3 grid_dim;
inline dim3 block_dim;
}  // namespace tilec_emu

#define threadIdx (::tilec_emu::thread_idx)
#define blockIdx (::tilec_emu::block_idx)
#define gridDim (::tilec_emu::grid_dim)
#define blockDim (::tilec_emu::block_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
// dynamic shared memory: the generated source names its size, so a static array stands in
#define TILEC_DYNAMIC_SHARED(name, bytes) static __attribute__((aligned(128))) unsigned char name[bytes]

inline void __syncthreads() { tilec_emu::block->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { tilec_emu::block->warps[threadIdx.x / 32].bar.arrive_and_wait(); }

template <class T>
inline T __shfl_xor_sync(unsigned int, T value, int lane_mask, int = 32) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  tilec_emu::Warp& w = tilec_emu::block->warps[threadIdx.x / 32];
  const unsigned int lane = threadIdx.x % 32;
  unsigned long long bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  w.slot[lane] = bits;
  w.bar.arrive_and_wait();  // every lane has published
  const unsigned long long other = w.slot[lane ^ static_cast<unsigned int>(lane_mask)];
  w.bar.arrive_and_wait();  // every lane has read before the slots are reused
  T out;
  std::memcpy(&out, &other, sizeof(T));
  return out;
}

// -- bit casts and fast-math spellings --------------------------------------------------------
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __int_as_float(unsigned int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

// -- 16-bit floats ------------------------------------------------------------------------------
struct __half { unsigned short x; };
struct __nv_bfloat16 { unsigned short x; };

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.x & 0x8000u) << 16;
  const uint32_t e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
  if (e == 0) {
    const float v = ldexpf(static_cast<float>(m), -24);
    return sign ? -v : v;
  }
  const uint32_t bits = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e + 112u) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline __half __float2half_rn(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  uint32_t h;
  if (ax >= 0x7f800000u) {
    h = sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);  // inf, nan
  } else if (ax >= 0x477ff000u) {
    h = sign | 0x7c00u;  // >= 65520 rounds to inf
  } else if (ax < 0x38800000u) {
    float a;
    std::memcpy(&a, &ax, 4);
    h = sign | static_cast<uint32_t>(nearbyintf(a * 16777216.0f));  // subnormal: units of 2^-24
  } else {
    uint32_t v = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (v & 1u))) v += 1u;  // a carry into the exponent is right
    h = sign | v;
  }
  return __half{static_cast<unsigned short>(h)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = static_cast<uint32_t>(b.x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<unsigned short>((x >> 16) | 0x40u)};
  return __nv_bfloat16{static_cast<unsigned short>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}

namespace tilec_emu {
inline float widen(float x) { return x; }
inline float widen(__half x) { return __half2float(x); }
inline float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
}  // namespace tilec_emu

// -- WMMA ---------------------------------------------------------------------------------------
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct shape_of;
template <int M, int N, int K> struct shape_of<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct shape_of<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct shape_of<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = shape_of<Use, M, N, K>::rows, cols = shape_of<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  T x[rows * cols];  // the whole tile, row-major, in every lane
};

template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned int ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool col = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned int ldm, layout_t layout) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned int ldm, layout_t layout) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int i = lane; i < M * N; i += 32) {  // each element written by one lane
    const int r = i / N, c = i % N;
    (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[i];
  }
  __syncwarp();
}

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T v) {
  for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; ++i) f.x[i] = v;
}

template <int M, int N, int K, class TA, class LA, class TB, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += tilec_emu::widen(a.x[i * K + k]) * tilec_emu::widen(b.x[k * N + j]);
      out[i * N + j] = s;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda

// -- the launcher -----------------------------------------------------------------------------
namespace tilec_emu {
// Runs body() for every (block, thread) of the grid; one launch at a time.
template <class Body>
int run_grid(dim3 grid, unsigned int threads, Body body) {
  static std::mutex one_launch;
  std::lock_guard<std::mutex> hold(one_launch);
  if (threads == 0 || threads % 32 != 0) return 1;
  Block blk(threads);
  block = &blk;
  grid_dim = grid;
  block_dim = dim3(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_idx = dim3(t);
      for (unsigned int z = 0; z < grid.z; ++z)
        for (unsigned int y = 0; y < grid.y; ++y)
          for (unsigned int x = 0; x < grid.x; ++x) {
            block_idx = dim3(x, y, z);
            body();
            blk.bar.arrive_and_wait();  // the block's shared storage is reused by the next block
          }
    });
  }
  for (auto& th : pool) th.join();
  block = nullptr;
  return 0;
}
}  // namespace tilec_emu
