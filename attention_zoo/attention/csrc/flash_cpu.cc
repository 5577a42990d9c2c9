// FlashAttention on CPU as an XLA FFI custom call (Dao et al. 2022, alg. 1-2; Dao 2023, sec. 3.1).
//
// Forward, per (batch, head, block of BR queries), a pass over blocks of BC keys:
//   s = scale · q kᵀ,  m' = max(m, max_k s),  l' = l·e^{m-m'} + Σ_k e^{s-m'},
//   o' = o·e^{m-m'} + e^{s-m'} v;   out = o / l,  lse = m + log l.
// Backward, per (batch, head), for each key block a pass over the query blocks:
//   p = e^{s - lse},  dv += pᵀ do,  dp = do vᵀ,  ds = p ∘ (dp - δ) with δ = rowsum(do ∘ out),
//   dq += scale · ds k,  dk += scale · dsᵀ q.
// Masks: key j is visible to query i iff j < Lk, key_valid[b, j] and (not causal or j <= i).
// A query with no visible key gets out = 0, lse = -inf and zero gradients.
//
// Layouts (the zoo's): q [B, Lq, N, D], k [B, Lk, N, D], v [B, Lk, N, Dv], out [B, Lq, N, Dv],
// lse [B, N, Lq], key_valid uint8 [1 | B, Lk]; float32 only. Blocks are packed into aligned
// buffers padded with zeros, and every product is one register-tiled micro-kernel in GCC vector
// extensions whose width and tiling follow the target (AVX-512, AVX2, SSE or NEON: see VL below).
// Work items run on XLA's intra-op thread pool.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Vector width VL (floats) and register blocking per target, chosen by the compiler's -march
// macros (native.py builds one library per level). The micro-kernel keeps an MR x NR tile of C in
// MR·NV accumulator registers (NR = NV·VL columns), plus NV vectors of B and a broadcast of A.
// A vector wider than the target's registers would be passed through memory (GCC -Wpsabi).
#if defined(__AVX512F__)                         // x86-64-v4: 32 zmm registers
constexpr int64_t VL = 16, MR = 8, NV = 2;       // 8 x 32 tile: 16 accumulators
#elif defined(__AVX2__) && defined(__FMA__)      // x86-64-v3: 16 ymm registers
constexpr int64_t VL = 8, MR = 6, NV = 2;        // 6 x 16 tile: 12 accumulators
#elif defined(__ARM_NEON)                        // armv8-a (aarch64): 32 q registers
constexpr int64_t VL = 4, MR = 8, NV = 2;        // 8 x 8 tile: 16 accumulators
#else                                            // x86-64-v2 (SSE4.2, 16 xmm) or portable
constexpr int64_t VL = 4, MR = 4, NV = 2;        // 4 x 8 tile: 8 accumulators
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));
constexpr int64_t NR = NV * VL;
constexpr int64_t BR = 64, BC = 64;  // query and key block sizes (multiples of NR)
constexpr int64_t TAIL = BR % MR;    // rows of C in the last, narrower tile of a block
constexpr int64_t GROUP = 8;         // query blocks per forward work item
static_assert(BR == BC && BR % NR == 0, "block sizes");

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A zero-filled float buffer aligned for vector loads.
struct Buffer {
  explicit Buffer(int64_t n)
      : data(static_cast<float*>(std::aligned_alloc(64, RoundUp(n * sizeof(float), 64)))) {
    std::memset(data, 0, n * sizeof(float));
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* data;
};

inline vf Load(const float* p) { vf x; std::memcpy(&x, p, sizeof(vf)); return x; }
inline void Store(float* p, vf x) { std::memcpy(p, &x, sizeof(vf)); }
// Every lane a (a - 0 is exactly a, so the compiler emits a bare broadcast; 0 + a is not: -0).
inline vf Splat(float a) { return a - vf{}; }

// The micro-kernel: rows [i, i + R) x columns [j, j + NR) of C, in R·NV registers.
template <int64_t R, bool kAccumulate, bool kTransA>
inline void Tile(int64_t i, int64_t j, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc) {
  vf acc[R][NV];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < NV; ++c)
      acc[r][c] = kAccumulate ? Load(C + (i + r) * ldc + j + c * VL) : vf{};
  for (int64_t k = 0; k < K; ++k) {
    vf b[NV];
    for (int64_t c = 0; c < NV; ++c) b[c] = Load(B + k * ldb + j + c * VL);
    for (int64_t r = 0; r < R; ++r) {
      const vf a = Splat(kTransA ? A[k * lda + i + r] : A[(i + r) * lda + k]);
      for (int64_t c = 0; c < NV; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < NV; ++c) Store(C + (i + r) * ldc + j + c * VL, acc[r][c]);
}

// C[BR, N] (+)= op(A) · B[K, N], row-major with leading dims, for one block of BR (== BC) rows;
// op(A) = A[BR, K], or with kTransA, A[K, BR]ᵀ (the scalar of A that a row of C takes is
// broadcast, so either layout reads as fast). MR-row tiles, then one of TAIL rows; N % NR == 0.
template <bool kAccumulate, bool kTransA = false>
void Gemm(int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
          float* C, int64_t ldc) {
  constexpr int64_t full = BR - TAIL;
  for (int64_t i = 0; i < full; i += MR)
    for (int64_t j = 0; j < N; j += NR)
      Tile<MR, kAccumulate, kTransA>(i, j, K, A, lda, B, ldb, C, ldc);
  if constexpr (TAIL > 0)
    for (int64_t j = 0; j < N; j += NR)
      Tile<TAIL, kAccumulate, kTransA>(full, j, K, A, lda, B, ldb, C, ldc);
}

// e^x for x <= 0 (x = -inf -> 0): 2^n · p(r), r = x - n ln 2 in [-ln2/2, ln2/2], a degree-6
// polynomial (Cephes expf), relative error ~1e-7.
inline vf Exp(vf x) {
  const vi finite = x > Splat(-87.0f);
  x = finite ? x : Splat(-87.0f);
  const vf t = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(t, vi), vf);  // truncated toward 0
  n += __builtin_convertvector((vi)(n > t), vf);  // floor(x / ln 2 + 0.5) (true is -1)
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(vf));
  return finite ? p * scale : vf{};
}

// Copies rows [r0, r0 + rows) of a strided [L, N, D] head (stride between rows: row_stride)
// into dst [rows_pad, ld] (zero padding beyond `rows` and `d`), times `mul`.
void PackRows(const float* src, int64_t row_stride, int64_t rows, int64_t d, float mul, float* dst,
              int64_t ld) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < d; ++c) dst[i * ld + c] = src[i * row_stride + c] * mul;
}

// The transpose: dst [d_pad, ld], dst[c, i] = src row i, column c.
void PackCols(const float* src, int64_t row_stride, int64_t rows, int64_t d, float* dst,
              int64_t ld) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < d; ++c) dst[c * ld + i] = src[i * row_stride + c];
}

// Runs f(0..n-1) on the caller and XLA's intra-op pool; returns when every item is done.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const F& f) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &f] {  // a late task finds no item left and never touches f
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      f(i);
      if (state->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == n; });
}

struct Dims {
  int64_t b, lq, lk, n, d, dv, mask_b;
  int64_t dp, dvp;  // d, dv rounded up to NR
  float scale;
  bool causal;
};

Dims GetDims(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
             ffi::Buffer<ffi::U8>& key_valid, float scale, int32_t causal) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  Dims s{qd[0], qd[1], kd[1], qd[2], qd[3], vd[3], key_valid.dimensions()[0], 0, 0, scale,
         causal != 0};
  s.dp = RoundUp(s.d, NR);
  s.dvp = RoundUp(s.dv, NR);
  return s;
}

ffi::Error CheckShapes(const Dims& s, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                       ffi::Buffer<ffi::U8>& key_valid) {
  auto kd = k.dimensions(), vd = v.dimensions(), md = key_valid.dimensions();
  if (kd.size() != 4 || vd.size() != 4 || md.size() != 2 || kd[0] != s.b || kd[2] != s.n ||
      kd[3] != s.d || vd[0] != s.b || vd[1] != s.lk || vd[2] != s.n || md[1] != s.lk ||
      (md[0] != 1 && md[0] != s.b))
    return ffi::Error::InvalidArgument("flash_cpu: q, k, v, key_valid shapes do not agree");
  return ffi::Error::Success();
}

// The visible keys of block [k0, k0 + BC) for the query block [q0, q0 + BR): s -> -inf elsewhere.
void MaskBlock(const Dims& s, const uint8_t* valid, int64_t q0, int64_t k0, float* sc) {
  if (k0 + BC <= s.lk && !(s.causal && k0 + BC - 1 > q0) &&
      std::all_of(valid + k0, valid + k0 + BC, [](uint8_t x) { return x != 0; }))
    return;  // every key of the block is visible to every query
  for (int64_t i = 0; i < BR; ++i)
    for (int64_t j = 0; j < BC; ++j) {
      const int64_t key = k0 + j;
      if (key >= s.lk || !valid[key] || (s.causal && key > q0 + i)) sc[i * BC + j] = NEG_INF;
    }
}

// The key blocks a query block sees: [0, last) with causal skipping of blocks above it.
int64_t KeyBlocks(const Dims& s, int64_t q0) {
  const int64_t keys = s.causal ? std::min(s.lk, q0 + BR) : s.lk;
  return (keys + BC - 1) / BC;
}

ffi::Error FlashFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                        ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::U8> key_valid, float scale,
                        int32_t causal, ffi::ResultBuffer<ffi::F32> out,
                        ffi::ResultBuffer<ffi::F32> lse) {
  const Dims s = GetDims(q, k, v, key_valid, scale, causal);
  if (ffi::Error e = CheckShapes(s, k, v, key_valid); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const uint8_t* mp = key_valid.typed_data();
  float *op = out->typed_data(), *lp = lse->typed_data();
  // A work item: GROUP query blocks of one head, for which the head's keys and values are
  // packed once (kᵀ [D, Lk] and v [Lk, Dv]).
  const int64_t q_blocks = (s.lq + BR - 1) / BR, groups = (q_blocks + GROUP - 1) / GROUP;

  ParallelFor(pool, s.b * s.n * groups, [&](int64_t item) {
    const int64_t group = item % groups, head = item / groups % s.n, b = item / groups / s.n;
    const int64_t first = group * GROUP, last = std::min(q_blocks, first + GROUP);
    const uint8_t* valid = mp + (s.mask_b == 1 ? 0 : b) * s.lk;
    const int64_t keys = KeyBlocks(s, (last - 1) * BR) * BC;  // the keys any block here sees
    const int64_t k_rows = std::min(keys, s.lk);
    Buffer kt(s.dp * keys), vb(keys * s.dvp);  // kᵀ as contiguous [D, BC] blocks
    for (int64_t k0 = 0; k0 < k_rows; k0 += BC)
      PackCols(kp + ((b * s.lk + k0) * s.n + head) * s.d, s.n * s.d, std::min(BC, k_rows - k0),
               s.d, kt.data + k0 * s.dp, BC);
    PackRows(vp + (b * s.lk * s.n + head) * s.dv, s.n * s.dv, k_rows, s.dv, 1.0f, vb.data,
             s.dvp);
    Buffer qs(BR * s.dp), sc(BR * BC), o(BR * s.dvp);
    std::vector<float> m(BR), l(BR);
    for (int64_t qb = first; qb < last; ++qb) {
      const int64_t q0 = qb * BR, q_rows = std::min(BR, s.lq - q0);
      std::fill(m.begin(), m.end(), NEG_INF);
      std::fill(l.begin(), l.end(), 0.0f);
      std::memset(o.data, 0, BR * s.dvp * sizeof(float));
      std::memset(qs.data, 0, BR * s.dp * sizeof(float));
      PackRows(qp + ((b * s.lq + q0) * s.n + head) * s.d, s.n * s.d, q_rows, s.d, s.scale,
               qs.data, s.dp);
      for (int64_t kb = 0, nkb = KeyBlocks(s, q0); kb < nkb; ++kb) {
        const int64_t k0 = kb * BC;
        // sc [BR, BC] = (scale · q) [BR, D] · kᵀ [D, BC]
        Gemm<false>(BC, s.dp, qs.data, s.dp, kt.data + k0 * s.dp, BC, sc.data, BC);
        MaskBlock(s, valid, q0, k0, sc.data);
        for (int64_t i = 0; i < BR; ++i) {  // online softmax, row i
          float* row = sc.data + i * BC;
          vf row_max = Splat(m[i]);
          for (int64_t j = 0; j < BC; j += VL) {
            const vf x = Load(row + j);
            row_max = x > row_max ? x : row_max;
          }
          float m_new = m[i];
          for (int64_t c = 0; c < VL; ++c) m_new = std::max(m_new, row_max[c]);
          if (m_new == NEG_INF) {  // nothing visible yet: p = 0, o and l stay 0
            std::memset(row, 0, BC * sizeof(float));
            continue;
          }
          const float correction = m[i] == NEG_INF ? 0.0f : std::exp(m[i] - m_new);
          vf sum{};
          for (int64_t j = 0; j < BC; j += VL) {
            const vf p = Exp(Load(row + j) - m_new);
            Store(row + j, p);
            sum += p;
          }
          float total = 0.0f;
          for (int64_t c = 0; c < VL; ++c) total += sum[c];
          l[i] = l[i] * correction + total;
          m[i] = m_new;
          if (correction != 1.0f)
            for (int64_t c = 0; c < s.dvp; c += VL)
              Store(o.data + i * s.dvp + c, Load(o.data + i * s.dvp + c) * correction);
        }
        // o [BR, Dv] += p [BR, BC] · v [BC, Dv]
        Gemm<true>(s.dvp, BC, sc.data, BC, vb.data + k0 * s.dvp, s.dvp, o.data, s.dvp);
      }
      for (int64_t i = 0; i < q_rows; ++i) {
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        float* dst = op + ((b * s.lq + q0 + i) * s.n + head) * s.dv;
        for (int64_t c = 0; c < s.dv; ++c) dst[c] = o.data[i * s.dvp + c] * inv;
        lp[(b * s.n + head) * s.lq + q0 + i] = l[i] > 0.0f ? m[i] + std::log(l[i]) : NEG_INF;
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error FlashBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                        ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::U8> key_valid,
                        ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                        ffi::Buffer<ffi::F32> d_out, float scale, int32_t causal,
                        ffi::ResultBuffer<ffi::F32> d_q, ffi::ResultBuffer<ffi::F32> d_k,
                        ffi::ResultBuffer<ffi::F32> d_v) {
  const Dims s = GetDims(q, k, v, key_valid, scale, causal);
  if (ffi::Error e = CheckShapes(s, k, v, key_valid); e.failure()) return e;
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *outp = out.typed_data(), *lsep = lse.typed_data(), *dop = d_out.typed_data();
  const uint8_t* mp = key_valid.typed_data();
  float *dqp = d_q->typed_data(), *dkp = d_k->typed_data(), *dvp = d_v->typed_data();
  const int64_t q_blocks = (s.lq + BR - 1) / BR, k_blocks = (s.lk + BC - 1) / BC;
  const int64_t lq_pad = q_blocks * BR;

  ParallelFor(pool, s.b * s.n, [&](int64_t item) {
    const int64_t head = item % s.n, b = item / s.n;
    const uint8_t* valid = mp + (s.mask_b == 1 ? 0 : b) * s.lk;
    const int64_t q_stride = s.n * s.d, v_stride = s.n * s.dv;
    // The head's queries (times scale), output gradients, lse and δ, packed once.
    Buffer qs(lq_pad * s.dp), dob(lq_pad * s.dvp), dq(lq_pad * s.dp);
    std::vector<float> lse_h(lq_pad, NEG_INF), delta(lq_pad, 0.0f);
    PackRows(qp + (b * s.lq * s.n + head) * s.d, q_stride, s.lq, s.d, s.scale, qs.data, s.dp);
    PackRows(dop + (b * s.lq * s.n + head) * s.dv, v_stride, s.lq, s.dv, 1.0f, dob.data, s.dvp);
    for (int64_t i = 0; i < s.lq; ++i) {
      const float* o_row = outp + ((b * s.lq + i) * s.n + head) * s.dv;
      float dot = 0.0f;
      for (int64_t c = 0; c < s.dv; ++c) dot += o_row[c] * dob.data[i * s.dvp + c];
      delta[i] = dot;
      lse_h[i] = lsep[(b * s.n + head) * s.lq + i];
    }
    Buffer kt(s.dp * BC), kb_rows(BC * s.dp), vt(s.dvp * BC), dk(BC * s.dp), dv(BC * s.dvp);
    Buffer p(BR * BC), dp(BR * BC);
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      const int64_t k0 = kb * BC, k_rows = std::min(BC, s.lk - k0);
      for (Buffer* buf : {&kt, &kb_rows, &vt, &dk, &dv})
        std::memset(buf->data, 0, (buf == &vt || buf == &dv ? s.dvp : s.dp) * BC * sizeof(float));
      const float* k_src = kp + ((b * s.lk + k0) * s.n + head) * s.d;
      PackCols(k_src, q_stride, k_rows, s.d, kt.data, BC);
      PackRows(k_src, q_stride, k_rows, s.d, 1.0f, kb_rows.data, s.dp);
      PackCols(vp + ((b * s.lk + k0) * s.n + head) * s.dv, v_stride, k_rows, s.dv, vt.data, BC);
      for (int64_t qb = s.causal ? k0 / BR : 0; qb < q_blocks; ++qb) {
        const int64_t q0 = qb * BR;
        const float* q_blk = qs.data + q0 * s.dp;
        const float* do_blk = dob.data + q0 * s.dvp;
        // s [BR, BC] = (scale · q) [BR, D] · kᵀ [D, BC], then masked
        Gemm<false>(BC, s.dp, q_blk, s.dp, kt.data, BC, p.data, BC);
        MaskBlock(s, valid, q0, k0, p.data);
        for (int64_t i = 0; i < BR; ++i) {  // p = e^{s - lse}; -inf lse (no key): p = 0
          float* row = p.data + i * BC;
          const float lse_i = lse_h[q0 + i];
          if (lse_i == NEG_INF) {
            std::memset(row, 0, BC * sizeof(float));
            continue;
          }
          for (int64_t j = 0; j < BC; j += VL) Store(row + j, Exp(Load(row + j) - lse_i));
        }
        // dv [BC, Dv] += pᵀ [BC, BR] · do [BR, Dv]
        Gemm<true, true>(s.dvp, BR, p.data, BC, do_blk, s.dvp, dv.data, s.dvp);
        // dp [BR, BC] = do [BR, Dv] · vᵀ [Dv, BC]
        Gemm<false>(BC, s.dvp, do_blk, s.dvp, vt.data, BC, dp.data, BC);
        for (int64_t i = 0; i < BR; ++i) {  // ds = p ∘ (dp - δ), in place of dp
          const vf d = Splat(delta[q0 + i]);
          for (int64_t j = 0; j < BC; j += VL) {
            float* at = dp.data + i * BC + j;
            Store(at, Load(p.data + i * BC + j) * (Load(at) - d));
          }
        }
        // dq [BR, D] += ds [BR, BC] · k [BC, D]  (times scale below)
        Gemm<true>(s.dp, BC, dp.data, BC, kb_rows.data, s.dp, dq.data + q0 * s.dp, s.dp);
        // dk [BC, D] += dsᵀ [BC, BR] · (scale · q) [BR, D]
        Gemm<true, true>(s.dp, BR, dp.data, BC, q_blk, s.dp, dk.data, s.dp);
      }
      for (int64_t j = 0; j < k_rows; ++j) {
        float* dk_dst = dkp + ((b * s.lk + k0 + j) * s.n + head) * s.d;
        float* dv_dst = dvp + ((b * s.lk + k0 + j) * s.n + head) * s.dv;
        std::memcpy(dk_dst, dk.data + j * s.dp, s.d * sizeof(float));
        std::memcpy(dv_dst, dv.data + j * s.dvp, s.dv * sizeof(float));
      }
    }
    for (int64_t i = 0; i < s.lq; ++i) {
      float* dst = dqp + ((b * s.lq + i) * s.n + head) * s.d;
      for (int64_t c = 0; c < s.d; ++c) dst[c] = dq.data[i * s.dp + c] * s.scale;
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// The symbols native.py looks up (the library is built with -fvisibility=hidden).
#define AZ_EXPORT extern "C" __attribute__((visibility("default")))
AZ_EXPORT XLA_FFI_Error* AzFlashFwd(XLA_FFI_CallFrame* call_frame);
AZ_EXPORT XLA_FFI_Error* AzFlashBwd(XLA_FFI_CallFrame* call_frame);

// Floats per vector in this build (native.vector_floats).
AZ_EXPORT int AzFlashVectorFloats() { return static_cast<int>(VL); }

// What both custom calls start with: the thread pool, q, k, v and key_valid.
static auto BindInputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()   // q
      .Arg<ffi::Buffer<ffi::F32>>()   // k
      .Arg<ffi::Buffer<ffi::F32>>()   // v
      .Arg<ffi::Buffer<ffi::U8>>();   // key_valid
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AzFlashFwd, FlashFwdImpl,
                              BindInputs()
                                  .Attr<float>("scale")
                                  .Attr<int32_t>("causal")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // out
                                  .Ret<ffi::Buffer<ffi::F32>>());  // lse

XLA_FFI_DEFINE_HANDLER_SYMBOL(AzFlashBwd, FlashBwdImpl,
                              BindInputs()
                                  .Arg<ffi::Buffer<ffi::F32>>()    // out
                                  .Arg<ffi::Buffer<ffi::F32>>()    // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()    // d_out
                                  .Attr<float>("scale")
                                  .Attr<int32_t>("causal")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // d_q
                                  .Ret<ffi::Buffer<ffi::F32>>()    // d_k
                                  .Ret<ffi::Buffer<ffi::F32>>());  // d_v
