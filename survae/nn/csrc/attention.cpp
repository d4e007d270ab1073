// Multi-head self-attention for small heads on the CPU: scores, softmax over the keys, the
// weighted values and the whole backward pass, one (cloud, head) at a time in the L1 cache.
//
// Used by survae.nn.fused_attention (speed.fused_attention). Layouts: qkv [B, N, 3*H*D] as
// the input projection writes it (q, k, v of head h at columns h*D, H*D + h*D, 2*H*D + h*D),
// out [B, N, H*D] (the layout the output projection reads), lse [B, H, N] (the log-sum-exp of
// each query's scores, saved so that the backward pass recomputes the weights instead of
// storing them), keep [B, H, N(key), N(query)] (optional dropout mask on the weights).
// Within one (cloud, head) the keys are rows j and the queries columns i, padded to P, a
// multiple of the vector length, so that every inner loop runs over whole vectors.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

typedef float vfloat __attribute__((vector_size(64)));
typedef double vdouble __attribute__((vector_size(64)));
typedef int32_t vint32 __attribute__((vector_size(64)));
typedef unsigned char vbyte16 __attribute__((vector_size(16)));
typedef unsigned char vbyte8 __attribute__((vector_size(8)));

template <typename T> struct Vec;
template <> struct Vec<float> {
  using V = vfloat;
  static constexpr int L = 16;
  static V mask(const bool* k) {  // 16 bools -> 0/1 floats
    vbyte16 b;
    std::memcpy(&b, k, 16);
    return __builtin_convertvector(b, V);
  }
  // e^x = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 (ln 2 in two parts), e^r by the
  // Cephes expf polynomial: about 1e-7 relative error. Only x <= 0 occurs (scores minus their
  // maximum or log-sum-exp); below -87, where float32 subnormals start, it returns e^-87.
  static V exp(V x) {
    const V lo = V{} - 87.0f;
    x = x < lo ? lo : x;
    V t = x * 1.44269504088896341f;
    const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: rounds to the nearest integer
    const V n = (t + magic) - magic;
    const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vint32 e = __builtin_convertvector(n, vint32) << 23;
    return (V)((vint32)p + e);
  }
};
template <> struct Vec<double> {
  using V = vdouble;
  static constexpr int L = 8;
  static V mask(const bool* k) {
    vbyte8 b;
    std::memcpy(&b, k, 8);
    return __builtin_convertvector(b, V);
  }
  static V exp(V x) {
    for (int i = 0; i < L; ++i) x[i] = std::exp(x[i]);
    return x;
  }
};

template <typename T> inline typename Vec<T>::V load(const T* p) {
  typename Vec<T>::V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> inline void store(T* p, typename Vec<T>::V v) { std::memcpy(p, &v, sizeof(v)); }
template <typename T> inline T hsum(typename Vec<T>::V v) {
  T s = 0;
  for (int i = 0; i < Vec<T>::L; ++i) s += v[i];
  return s;
}

// A "column matrix" Y[c][i] holds D rows of P (a head's inputs transposed, zero-padded).

// A[j][:] = sum_c x[j, c] Y[c][:]
template <typename T, int D>
inline void outer(const T* x, int64_t ldx, const T* Y, int N, int P, T* A) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  for (int iv = 0; iv < P; iv += L) {
    V y[D];
    for (int c = 0; c < D; ++c) y[c] = load<T>(Y + c * P + iv);
    for (int j = 0; j < N; ++j) {
      const T* xj = x + j * ldx;
      V a = y[0] * xj[0];
      for (int c = 1; c < D; ++c) a += y[c] * xj[c];
      store<T>(A + j * P + iv, a);
    }
  }
}
// out[c][:] = sum_j x[j, c] A[j][:]
template <typename T, int D>
inline void accumulate(const T* x, int64_t ldx, const T* A, int N, int P, T* out) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  for (int iv = 0; iv < P; iv += L) {
    V acc[D];
    for (int c = 0; c < D; ++c) acc[c] = V{};
    for (int j = 0; j < N; ++j) {
      const V a = load<T>(A + j * P + iv);
      const T* xj = x + j * ldx;
      for (int c = 0; c < D; ++c) acc[c] += a * xj[c];
    }
    for (int c = 0; c < D; ++c) store<T>(out + c * P + iv, acc[c]);
  }
}
// R[j, c] = sum_i A[j][i] Y[c][i]
template <typename T, int D>
inline void reduce(const T* A, const T* Y, int N, int P, T* R, int64_t ldr) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  for (int j = 0; j < N; ++j) {
    V acc[D];
    for (int c = 0; c < D; ++c) acc[c] = V{};
    for (int iv = 0; iv < P; iv += L) {
      const V a = load<T>(A + j * P + iv);
      for (int c = 0; c < D; ++c) acc[c] += a * load<T>(Y + c * P + iv);
    }
    for (int c = 0; c < D; ++c) R[j * ldr + c] = hsum<T>(acc[c]);
  }
}

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
// R[j, c] for D = 8 in float: the eight 16-lane accumulators summed by a shuffle tree
// (pairs of half-vectors added level by level) instead of eight scalar horizontal sums.
template <>
inline void reduce<float, 8>(const float* A, const float* Y, int N, int P, float* R, int64_t ldr) {
  using V = vfloat;
  for (int j = 0; j < N; ++j) {
    V a[8];
    for (int c = 0; c < 8; ++c) a[c] = V{};
    for (int iv = 0; iv < P; iv += 16) {
      const V x = load<float>(A + j * P + iv);
      for (int c = 0; c < 8; ++c) a[c] += x * load<float>(Y + c * P + iv);
    }
    V u[4];
    for (int p = 0; p < 4; ++p)
      u[p] = __builtin_shufflevector(a[2 * p], a[2 * p + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18,
                                     19, 20, 21, 22, 23) +
             __builtin_shufflevector(a[2 * p], a[2 * p + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25,
                                     26, 27, 28, 29, 30, 31);
    V w[2];
    for (int p = 0; p < 2; ++p)
      w[p] = __builtin_shufflevector(u[2 * p], u[2 * p + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                     19, 24, 25, 26, 27) +
             __builtin_shufflevector(u[2 * p], u[2 * p + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21,
                                     22, 23, 28, 29, 30, 31);
    const V y = __builtin_shufflevector(w[0], w[1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24,
                                        25, 28, 29) +
                __builtin_shufflevector(w[0], w[1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23,
                                        26, 27, 30, 31);
    for (int c = 0; c < 8; ++c) R[j * ldr + c] = y[2 * c] + y[2 * c + 1];
  }
}
#endif

// W = softmax over keys of the scores k_j . qt_i (qt holds the scaled queries); lse gets each
// query's log-sum-exp, which the backward pass uses to recompute W.
template <typename T, int D>
void softmax_weights(const T* k, int64_t ld, const T* qt, int N, int P, T* W, T* lse) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  outer<T, D>(k, ld, qt, N, P, W);
  for (int iv = 0; iv < P; iv += L) {
    V m = load<T>(W + iv);
    for (int j = 1; j < N; ++j) {
      const V w = load<T>(W + j * P + iv);
      m = w > m ? w : m;
    }
    V l = V{};
    for (int j = 0; j < N; ++j) {
      const V e = Vec<T>::exp(load<T>(W + j * P + iv) - m);
      store<T>(W + j * P + iv, e);
      l += e;
    }
    const V inv = T(1) / l;
    for (int j = 0; j < N; ++j) store<T>(W + j * P + iv, load<T>(W + j * P + iv) * inv);
    for (int i = 0; i < L; ++i) lse[iv + i] = m[i] + std::log(l[i]);
  }
}

// The same W from the saved log-sum-exp: exp(k_j . qt_i - lse_i).
template <typename T, int D>
void recomputed_weights(const T* k, int64_t ld, const T* qt, int N, int P, const T* lse, T* W) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  outer<T, D>(k, ld, qt, N, P, W);
  for (int iv = 0; iv < P; iv += L) {
    const V s = load<T>(lse + iv);
    for (int j = 0; j < N; ++j) store<T>(W + j * P + iv, Vec<T>::exp(load<T>(W + j * P + iv) - s));
  }
}

// Wd = W * keep * scale (keep is N x N, rows of N)
template <typename T>
void drop(const T* W, const bool* keep, T scale, int N, int P, T* Wd) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  for (int j = 0; j < N; ++j) {
    const bool* kj = keep + j * N;
    int iv = 0;
    for (; iv + L <= N; iv += L)
      store<T>(Wd + j * P + iv, load<T>(W + j * P + iv) * Vec<T>::mask(kj + iv) * scale);
    for (int i = iv; i < P; ++i) Wd[j * P + i] = (i < N && kj[i]) ? W[j * P + i] * scale : T(0);
  }
}

template <typename T, int D>
void transpose_in(const T* x, int64_t ld, int N, int P, T scale, T* Y) {
  std::fill(Y, Y + D * P, T(0));
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) Y[c * P + i] = x[i * ld + c] * scale;
}
template <typename T, int D>
void transpose_out(const T* Y, int N, int P, T scale, T* x, int64_t ld) {
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) x[i * ld + c] = Y[c * P + i] * scale;
}

template <typename T, int D>
void forward_impl(const T* x, int64_t B, int64_t N_, int64_t H, const bool* keep, T ks, T* out,
                  T* lse) {
  constexpr int L = Vec<T>::L;
  const int N = static_cast<int>(N_), P = (N + L - 1) / L * L;
  const int64_t ld = 3 * H * D, ldo = H * D;
  const T scale = T(1) / std::sqrt(T(D));
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(2 * N * P + 2 * D * P + P);
    T *W = buf.data(), *Wd = W + N * P, *qt = Wd + N * P, *acc = qt + D * P, *ls = acc + D * P;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* q = x + b * N * ld + h * D;
      const T* k = q + H * D;
      const T* v = k + H * D;
      transpose_in<T, D>(q, ld, N, P, scale, qt);
      softmax_weights<T, D>(k, ld, qt, N, P, W, ls);
      std::memcpy(lse + bh * N, ls, N * sizeof(T));
      const T* Wv = W;
      if (keep) {
        drop<T>(W, keep + bh * N * N, ks, N, P, Wd);
        Wv = Wd;
      }
      accumulate<T, D>(v, ld, Wv, N, P, acc);
      transpose_out<T, D>(acc, N, P, T(1), out + b * N * ldo + h * D, ldo);
    }
  });
}

template <typename T, int D>
void backward_impl(const T* x, int64_t B, int64_t N_, int64_t H, const bool* keep, T ks,
                   const T* lse, const T* g, T* dx) {
  using V = typename Vec<T>::V;
  constexpr int L = Vec<T>::L;
  const int N = static_cast<int>(N_), P = (N + L - 1) / L * L;
  const int64_t ld = 3 * H * D, ldo = H * D;
  const T scale = T(1) / std::sqrt(T(D));
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(3 * N * P + 3 * D * P + 2 * P);
    T *W = buf.data(), *dW = W + N * P, *Wd = dW + N * P, *qt = Wd + N * P, *gt = qt + D * P;
    T *dqt = gt + D * P, *ls = dqt + D * P, *delta = ls + P;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* q = x + b * N * ld + h * D;
      const T* k = q + H * D;
      const T* v = k + H * D;
      T* dq = dx + b * N * ld + h * D;
      T* dk = dq + H * D;
      T* dv = dk + H * D;
      std::fill(ls, ls + P, T(0));
      std::memcpy(ls, lse + bh * N, N * sizeof(T));
      transpose_in<T, D>(q, ld, N, P, scale, qt);
      recomputed_weights<T, D>(k, ld, qt, N, P, ls, W);
      transpose_in<T, D>(g + b * N * ldo + h * D, ldo, N, P, T(1), gt);
      outer<T, D>(v, ld, gt, N, P, dW);  // gradient of the (dropped-out) weights
      const T* Wv = W;
      if (keep) {
        drop<T>(dW, keep + bh * N * N, ks, N, P, dW);
        drop<T>(W, keep + bh * N * N, ks, N, P, Wd);
        Wv = Wd;
      }
      reduce<T, D>(Wv, gt, N, P, dv, ld);
      for (int iv = 0; iv < P; iv += L) {
        V d = V{};
        for (int j = 0; j < N; ++j) d += load<T>(W + j * P + iv) * load<T>(dW + j * P + iv);
        for (int j = 0; j < N; ++j) {
          const V w = load<T>(W + j * P + iv);
          store<T>(dW + j * P + iv, w * (load<T>(dW + j * P + iv) - d));
        }
      }
      reduce<T, D>(dW, qt, N, P, dk, ld);
      accumulate<T, D>(k, ld, dW, N, P, dqt);
      transpose_out<T, D>(dqt, N, P, scale, dq, ld);
    }
  });
}

// Calls f with the head size as a compile-time constant (std::integral_constant<int, D>).
template <typename F>
void with_head_size(int64_t D, F&& f) {
  switch (D) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: TORCH_CHECK(false, "attention: head size ", D, " not in {4, 8, 16}");
  }
}

template <typename T>
void run_forward(const at::Tensor& qkv, int64_t H, const bool* keep, double ks, at::Tensor& out,
                 at::Tensor& lse) {
  const int64_t B = qkv.size(0), N = qkv.size(1);
  with_head_size(qkv.size(2) / (3 * H), [&](auto d) {
    forward_impl<T, decltype(d)::value>(qkv.data_ptr<T>(), B, N, H, keep, T(ks),
                                        out.data_ptr<T>(), lse.data_ptr<T>());
  });
}
template <typename T>
void run_backward(const at::Tensor& qkv, int64_t H, const bool* keep, double ks,
                  const at::Tensor& lse, const at::Tensor& g, at::Tensor& dqkv) {
  const int64_t B = qkv.size(0), N = qkv.size(1);
  with_head_size(qkv.size(2) / (3 * H), [&](auto d) {
    backward_impl<T, decltype(d)::value>(qkv.data_ptr<T>(), B, N, H, keep, T(ks),
                                         lse.data_ptr<T>(), g.data_ptr<T>(), dqkv.data_ptr<T>());
  });
}

void check_inputs(const at::Tensor& qkv, int64_t heads, const at::Tensor& keep) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.is_contiguous() && qkv.device().is_cpu(),
              "fused attention: qkv must be a contiguous CPU tensor [B, N, 3*d], got ",
              qkv.sizes());
  TORCH_CHECK(heads > 0 && qkv.size(2) % (3 * heads) == 0, "fused attention: 3*d = ",
              qkv.size(2), " is not a multiple of 3 * heads = ", 3 * heads);
  if (keep.defined()) {
    const int64_t B = qkv.size(0), N = qkv.size(1);
    TORCH_CHECK(keep.scalar_type() == at::kBool && keep.device().is_cpu(),
                "fused attention: the dropout mask must be a CPU bool tensor");
    TORCH_CHECK(keep.sizes() == at::IntArrayRef({B, heads, N, N}),
                "fused attention: the dropout mask must be [B, heads, N, N] = [", B, ", ", heads,
                ", ", N, ", ", N, "], got ", keep.sizes());
  }
}

}  // namespace

std::vector<at::Tensor> attention_forward(const at::Tensor& qkv, int64_t heads,
                                          const c10::optional<at::Tensor>& keep, double keep_scale) {
  at::Tensor kt = keep.has_value() ? keep->contiguous() : at::Tensor();
  check_inputs(qkv, heads, kt);
  const int64_t B = qkv.size(0), N = qkv.size(1);
  at::Tensor out = at::empty({B, N, qkv.size(2) / 3}, qkv.options());
  at::Tensor lse = at::empty({B, heads, N}, qkv.options());
  const bool* kp = kt.defined() ? kt.data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attention_forward",
                             [&] { run_forward<scalar_t>(qkv, heads, kp, keep_scale, out, lse); });
  return {out, lse};
}

at::Tensor attention_backward(const at::Tensor& qkv, int64_t heads,
                              const c10::optional<at::Tensor>& keep, double keep_scale,
                              const at::Tensor& lse, const at::Tensor& grad) {
  at::Tensor kt = keep.has_value() ? keep->contiguous() : at::Tensor();
  check_inputs(qkv, heads, kt);
  const int64_t B = qkv.size(0), N = qkv.size(1);
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({B, heads, N}) && lse.is_contiguous() &&
                  lse.scalar_type() == qkv.scalar_type(),
              "fused attention: lse must be a contiguous [B, heads, N] tensor of qkv's dtype");
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({B, N, qkv.size(2) / 3}) &&
                  grad.scalar_type() == qkv.scalar_type(),
              "fused attention: the gradient must be [B, N, d] of qkv's dtype, got ",
              grad.sizes());
  at::Tensor g = grad.contiguous();
  at::Tensor dqkv = at::empty_like(qkv);
  const bool* kp = kt.defined() ? kt.data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attention_backward", [&] {
    run_backward<scalar_t>(qkv, heads, kp, keep_scale, lse, g, dqkv);
  });
  return dqkv;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_forward", &attention_forward,
        "fused self-attention forward: (qkv, heads, keep, keep_scale) -> (out, lse)");
  m.def("attention_backward", &attention_backward,
        "fused self-attention backward: (qkv, heads, keep, keep_scale, lse, grad) -> dqkv");
}
