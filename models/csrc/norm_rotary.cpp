// RMSNorm and rotate-half RoPE as one operator each, for decode steps on CPU (x86-64, AVX2 or
// AVX-512): torch.ops.qwentts.rms_norm and torch.ops.qwentts.rotary. models/layers.py uses them
// where models/cpu_kernels.py loaded this library.
//
// At a handful of rows a decoder layer's norms and RoPE are ~30 tiny kernels (casts, pow, sum,
// div, add, rsqrt, mul; neg, cat, mul, add), each costing more to dispatch than to compute; here
// each is one call. The results are bit-identical to models/layers.py's composite forms, which
// are the released models' (so greedy codes do not change):
// - every elementwise step rounds as torch does: float32 products and sums, each bfloat16 result
//   rounded to nearest even where torch rounds it, and no fused multiply-adds (the library is
//   compiled with -ffp-contract=off);
// - the sum of squares is added in torch 2.13's order for a contiguous float32 row (its cascade
//   sum, read from ATen/native/cpu/SumKernel.cpp and confirmed on random rows): 8-lane vector
//   accumulators (8 also where torch runs its AVX-512 kernels), the vectors dealt round-robin to
//   4 of them, each summing 16 vectors a level and then adding the level into the next; the 4
//   added in order; then the elements past the last whole vector and the 8 lanes, one by one.

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int kLanes = 8;   // float32 lanes of torch's sum vectors
constexpr int kSplit = 4;   // accumulators the vectors are dealt to
constexpr int kLevels = 4;  // cascade levels

// The loops below are written for the compiler to vectorise (AVX2: this library is only loaded
// where torch runs AVX2 or AVX-512 kernels); each lane keeps torch's order of operations.
#define ROW_LOOP __attribute__((target("avx2")))

// Element formats: storage type, load to float32, round a float32 result as torch stores it.
struct Float32 {
  using Storage = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};

struct BFloat16 {
  using Storage = uint16_t;
  static float load(uint16_t bits) {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  // To nearest even, as c10::BFloat16 and torch's vectorised conversions round (NaN stays NaN).
  static uint16_t store(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    const uint16_t rounded = static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    return v != v ? uint16_t{0x7FC0} : rounded;
  }
};

// float32 `v` rounded to the format and back: what the next torch op reads.
template <typename Format>
float rounded(float v) {
  return Format::load(Format::store(v));
}

int64_t ceil_log2(int64_t n) { return n <= 2 ? 1 : 64 - __builtin_clzll(static_cast<uint64_t>(n - 1)); }

// sum(x[i] * x[i]) in float32, in torch's order for x.float().pow(2).sum(-1) (header comment).
template <typename Format>
ROW_LOOP float sum_of_squares(const typename Format::Storage* x, int64_t size) {
  using Lanes = std::array<float, kLanes>;
  const int64_t vectors = size / kLanes, groups = vectors / kSplit;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(groups) / kLevels);
  const int64_t level_step = int64_t{1} << level_power;
  Lanes acc[kLevels][kSplit] = {};
  auto add_vector = [&](Lanes& into, int64_t v) {
    for (int l = 0; l < kLanes; ++l) {
      const float value = Format::load(x[v * kLanes + l]);
      into[l] += value * value;
    }
  };
  auto add_lanes = [](Lanes& into, const Lanes& from) {
    for (int l = 0; l < kLanes; ++l) into[l] += from[l];
  };
  int64_t g = 0;
  while (g + level_step <= groups) {
    for (int64_t j = 0; j < level_step; ++j, ++g) {
      for (int k = 0; k < kSplit; ++k) add_vector(acc[0][k], g * kSplit + k);
    }
    for (int level = 1; level < kLevels; ++level) {  // carry the full level up, as far as it fills
      for (int k = 0; k < kSplit; ++k) {
        add_lanes(acc[level][k], acc[level - 1][k]);
        acc[level - 1][k].fill(0.0f);
      }
      if ((g & ((level_step - 1) << (level * level_power))) != 0) break;
    }
  }
  for (; g < groups; ++g) {
    for (int k = 0; k < kSplit; ++k) add_vector(acc[0][k], g * kSplit + k);
  }
  for (int level = 1; level < kLevels; ++level) {
    for (int k = 0; k < kSplit; ++k) add_lanes(acc[0][k], acc[level][k]);
  }
  Lanes total = acc[0][0];
  for (int64_t v = groups * kSplit; v < vectors; ++v) add_vector(total, v);
  for (int k = 1; k < kSplit; ++k) add_lanes(total, acc[0][k]);
  float sum = 0.0f;
  for (int64_t i = vectors * kLanes; i < size; ++i) {
    const float value = Format::load(x[i]);
    sum += value * value;
  }
  for (int l = 0; l < kLanes; ++l) sum += total[l];
  return sum;
}

// weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(dtype), one row of `size`.
template <typename Format, typename T = typename Format::Storage>
ROW_LOOP void norm_row(const T* x, const T* weight, float eps, int64_t size, T* out) {
  const float mean = sum_of_squares<Format>(x, size) / static_cast<float>(size);
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < size; ++i) {
    out[i] = Format::store(Format::load(weight[i]) * rounded<Format>(Format::load(x[i]) * scale));
  }
}

// x * cos + rotate_half(x) * sin for one head of `size`, rotate_half(x) = cat(-x[half:], x[:half]).
template <typename Format, typename T = typename Format::Storage>
ROW_LOOP void rotate_head(const T* x, const T* cos, const T* sin, int64_t size, T* out) {
  const int64_t half = size / 2;
  auto rotate = [&](int64_t i, float rotated) {
    const float first = rounded<Format>(Format::load(x[i]) * Format::load(cos[i]));
    out[i] = Format::store(first + rounded<Format>(rotated * Format::load(sin[i])));
  };
  for (int64_t i = 0; i < half; ++i) rotate(i, -Format::load(x[i + half]));
  for (int64_t i = half; i < size; ++i) rotate(i, Format::load(x[i - half]));
}

void check_dtype(const torch::Tensor& t, const torch::Tensor& like, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the input's dtype");
}

// f(Float32{}) or f(BFloat16{}) for x's dtype.
template <typename F>
void by_dtype(const torch::Tensor& x, const char* op, F&& f) {
  if (x.scalar_type() == torch::kFloat) {
    f(Float32{});
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kBFloat16, op, ": float32 or bfloat16 input, got ", x.scalar_type());
    f(BFloat16{});
  }
}

template <typename Format>
const typename Format::Storage* data(const torch::Tensor& t) {
  return static_cast<const typename Format::Storage*>(t.data_ptr());
}

}  // namespace

// x (..., size) and weight (..., size) matching x's trailing dimensions (one weight row per norm,
// or one per head), float32 or bfloat16 -> the normalised x, contiguous, x's dtype.
static torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_dtype(weight, x, "rms_norm", "weight");
  TORCH_CHECK(
      weight.dim() >= 1 && weight.dim() <= x.dim() && x.sizes().slice(x.dim() - weight.dim()) == weight.sizes(),
      "rms_norm: weight of shape ", weight.sizes(), " does not match the last dimensions of x ", x.sizes());
  const auto input = x.contiguous();
  const auto w = weight.contiguous();
  auto out = torch::empty_like(input);
  const int64_t size = x.size(-1), rows = x.numel() / std::max<int64_t>(size, 1);
  const int64_t weight_rows = w.numel() / std::max<int64_t>(size, 1);
  by_dtype(x, "rms_norm", [&](auto format) {
    using Format = decltype(format);
    const auto* in = data<Format>(input);
    const auto* weights = data<Format>(w);
    auto* y = static_cast<typename Format::Storage*>(out.data_ptr());
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        norm_row<Format>(
            in + r * size, weights + (r % weight_rows) * size, static_cast<float>(eps), size, y + r * size);
      }
    });
  });
  return out;
}

// x (tokens, heads, size), cos and sin (tokens, size) -> x rotated, contiguous, x's dtype.
static torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  check_dtype(cos, x, "rotary", "cos");
  check_dtype(sin, x, "rotary", "sin");
  TORCH_CHECK(x.dim() == 3 && x.size(2) % 2 == 0, "rotary: x is (tokens, heads, an even head size), got ", x.sizes());
  const int64_t tokens = x.size(0), heads = x.size(1), size = x.size(2);
  for (const auto* table : {&cos, &sin}) {
    TORCH_CHECK(
        table->dim() == 2 && table->size(0) == tokens && table->size(1) == size,
        "rotary: cos and sin are (tokens, head size) = (", tokens, ", ", size, "), got ", table->sizes());
  }
  const auto input = x.contiguous();
  const auto c = cos.contiguous(), s = sin.contiguous();
  auto out = torch::empty_like(input);
  by_dtype(x, "rotary", [&](auto format) {
    using Format = decltype(format);
    const auto *in = data<Format>(input), *cos_rows = data<Format>(c), *sin_rows = data<Format>(s);
    auto* y = static_cast<typename Format::Storage*>(out.data_ptr());
    at::parallel_for(0, tokens * heads, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t token = r / heads;
        rotate_head<Format>(in + r * size, cos_rows + token * size, sin_rows + token * size, size, y + r * size);
      }
    });
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(qwentts, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rotary(Tensor x, Tensor cos, Tensor sin) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwentts, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("rotary", &rotary);
}
