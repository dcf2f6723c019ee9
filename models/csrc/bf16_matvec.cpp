// bfloat16 products of rows with a weight matrix, for decode steps on CPUs with AVX2 or AVX-512.
// models/cpu_kernels.py builds it and decides where it runs; the operators are
// torch.ops.qwentts.bf16_pack and torch.ops.qwentts.bf16_product (so torch.compile sees them).
//
// At a handful of rows a decode step only streams weights, and oneDNN's kernels read them at
// 11-15 GB/s on one core of the build machine, where a plain read runs at 18-24. Here the weight
// is laid out so that one product is one contiguous read: `pack` stores it as
// [N / kBlock][K / 2][kBlock][2] (zero rows pad N), so each step of the inner loop loads the
// kBlock outputs' weights for two inputs and adds them into per-output float32 lanes with one
// VDPBF16PS per 16 outputs and row; no horizontal sums.
//
// The summation order is oneDNN's (torch 2.13 on AVX512-BF16, found by comparing results): per
// output, input pairs in order within spans, the spans' float32 sums added in order, a bias added
// last, one rounding to bfloat16. Spans are 512 inputs for one row; for more rows 512 up to 1024
// inputs and 1024 beyond. So the results are bit-identical to torch's and oneDNN's on that CPU
// (greedy codes unchanged), and as there, a row of a product of two or more rows does not depend
// on the other rows.
//
// CPUs without AVX512-BF16 run the same arithmetic in float32 FMAs (fma_block_products.inc), in
// 512-bit vectors on AVX-512 ones (Skylake-SP to Ice Lake) and 256-bit on AVX2 ones: VDPBF16PS
// adds, per lane, the odd input's product and then the even one's, each rounded to float32 (a
// product of two bfloat16 values is exact in float32), with denormals flushed; so two FMAs per
// pair under FTZ/DAZ give the same bits on every CPU. Which path runs: kernel_path() below.

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <immintrin.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cctype>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <string>

namespace {

constexpr int64_t kBlock = 32;  // outputs per block: two 16-lane accumulators per row (four 8-lane in AVX2)
constexpr int kMaxRows = 8;     // rows per pass over a block in AVX-512 (16 accumulators at most)

template <int Rows>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void block_products(
    const uint32_t* x_pairs, const uint16_t* weight, const float* bias, int64_t pairs, int64_t span_pairs,
    uint16_t* out, int64_t out_stride) {
  __m512 total[Rows][2];
  for (int r = 0; r < Rows; ++r) total[r][0] = total[r][1] = _mm512_setzero_ps();
  for (int64_t start = 0; start < pairs; start += span_pairs) {
    __m512 span[Rows][2];
    for (int r = 0; r < Rows; ++r) span[r][0] = span[r][1] = _mm512_setzero_ps();
    const int64_t stop = std::min<int64_t>(pairs, start + span_pairs);
    for (int64_t p = start; p < stop; ++p) {
      const uint16_t* w = weight + p * 2 * kBlock;
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + 32);
      for (int r = 0; r < Rows; ++r) {
        const __m512bh x = (__m512bh)_mm512_set1_epi32(x_pairs[r * pairs + p]);
        span[r][0] = _mm512_dpbf16_ps(span[r][0], w0, x);
        span[r][1] = _mm512_dpbf16_ps(span[r][1], w1, x);
      }
    }
    for (int r = 0; r < Rows; ++r) {
      total[r][0] = _mm512_add_ps(total[r][0], span[r][0]);
      total[r][1] = _mm512_add_ps(total[r][1], span[r][1]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int j = 0; j < 2; ++j) {
      __m512 sum = total[r][j];
      if (bias != nullptr) sum = _mm512_add_ps(sum, _mm512_loadu_ps(bias + j * 16));
      const __m256bh rounded = _mm512_cvtneps_pbh(sum);
      _mm256_storeu_si256((__m256i*)(out + r * out_stride + j * 16), (__m256i)rounded);
    }
  }
}

// The vector operations of the FMA path, per instruction set (fma_block_products.inc). Sums go to
// bfloat16 as VCVTNEPS2BF16 rounds them: to nearest even, NaNs kept quiet (no denormal sums arrive:
// they are flushed).
#define AVX2_LANES __attribute__((target("avx2,fma"), always_inline)) static inline
struct Avx2Lanes {
  using Floats = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kMaxRows = 2;  // 8 accumulators and the rows' inputs fill the 16 registers
  AVX2_LANES Floats zero() { return _mm256_setzero_ps(); }
  AVX2_LANES Floats load(const float* p) { return _mm256_loadu_ps(p); }
  AVX2_LANES Floats add(Floats a, Floats b) { return _mm256_add_ps(a, b); }
  AVX2_LANES Floats fmadd(Floats a, Floats b, Floats c) { return _mm256_fmadd_ps(a, b, c); }
  AVX2_LANES Floats broadcast_bits(uint32_t bits) { return _mm256_castsi256_ps(_mm256_set1_epi32((int)bits)); }
  AVX2_LANES void split_pairs(const uint16_t* w, Floats& even, Floats& odd) {
    const __m256i w_pairs = _mm256_loadu_si256((const __m256i*)w);
    even = _mm256_castsi256_ps(_mm256_slli_epi32(w_pairs, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(w_pairs, _mm256_set1_epi32((int)0xFFFF0000u)));
  }
  AVX2_LANES void store_bf16(uint16_t* out, Floats sum) {
    const __m256i bits = _mm256_castps_si256(sum);
    const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lowest_kept)), 16);
    const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(sum, sum, _CMP_UNORD_Q));
    const __m256i halves = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
    // 32-bit lanes holding 16-bit values -> eight 16-bit values in order
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(halves, halves), 0b1000);
    _mm_storeu_si128((__m128i*)out, _mm256_castsi256_si128(packed));
  }
};

#define AVX512_LANES __attribute__((target("avx512f,avx512bw,fma"), always_inline)) static inline
struct Avx512Lanes {
  using Floats = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kMaxRows = 6;  // 12 accumulators, the rows' inputs and the weight in 32 registers
  AVX512_LANES Floats zero() { return _mm512_setzero_ps(); }
  AVX512_LANES Floats load(const float* p) { return _mm512_loadu_ps(p); }
  AVX512_LANES Floats add(Floats a, Floats b) { return _mm512_add_ps(a, b); }
  AVX512_LANES Floats fmadd(Floats a, Floats b, Floats c) { return _mm512_fmadd_ps(a, b, c); }
  AVX512_LANES Floats broadcast_bits(uint32_t bits) { return _mm512_castsi512_ps(_mm512_set1_epi32((int)bits)); }
  AVX512_LANES void split_pairs(const uint16_t* w, Floats& even, Floats& odd) {
    const __m512i w_pairs = _mm512_loadu_si512(w);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(w_pairs, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(w_pairs, _mm512_set1_epi32((int)0xFFFF0000u)));
  }
  AVX512_LANES void store_bf16(uint16_t* out, Floats sum) {
    const __m512i bits = _mm512_castps_si512(sum);
    const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lowest_kept)), 16);
    const __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    const __mmask16 is_nan = _mm512_cmp_ps_mask(sum, sum, _CMP_UNORD_Q);
    const __m512i halves = _mm512_mask_blend_epi32(is_nan, rounded, quiet_nan);
    _mm256_storeu_si256((__m256i*)out, _mm512_cvtepi32_epi16(halves));
  }
};

#define FMA_TARGET "avx2,fma"
#define FMA_BLOCK_PRODUCTS block_products_avx2
#define FmaLanes Avx2Lanes
#include "fma_block_products.inc"
#undef FMA_TARGET
#undef FMA_BLOCK_PRODUCTS
#undef FmaLanes

#define FMA_TARGET "avx512f,avx512bw,fma"
#define FMA_BLOCK_PRODUCTS block_products_avx512
#define FmaLanes Avx512Lanes
#include "fma_block_products.inc"
#undef FMA_TARGET
#undef FMA_BLOCK_PRODUCTS
#undef FmaLanes

// VDPBF16PS's denormal handling (flush to zero, inputs as zero) for the FMA paths, per thread.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
};

using BlockProducts = void (*)(const uint32_t*, const uint16_t*, const float*, int64_t, int64_t, uint16_t*, int64_t);
constexpr BlockProducts kDotProducts[] = {
    block_products<1>, block_products<2>, block_products<3>, block_products<4>,
    block_products<5>, block_products<6>, block_products<7>, block_products<8>};
constexpr BlockProducts kAvx512Products[] = {
    block_products_avx512<1>, block_products_avx512<2>, block_products_avx512<3>,
    block_products_avx512<4>, block_products_avx512<5>, block_products_avx512<6>};
constexpr BlockProducts kAvx2Products[] = {block_products_avx2<1>, block_products_avx2<2>};
static_assert(std::size(kDotProducts) == kMaxRows && std::size(kAvx512Products) == Avx512Lanes::kMaxRows &&
              std::size(kAvx2Products) == Avx2Lanes::kMaxRows);

// One instruction set's block products for 1..max_rows rows.
struct Path {
  const char* name;
  const BlockProducts* by_rows;
  int max_rows;
  bool fma;  // VDPBF16PS emulated: denormals flushed by hand
};
constexpr Path kDot{"AVX512-BF16", kDotProducts, kMaxRows, false};
constexpr Path kAvx512Fma{"AVX-512", kAvx512Products, Avx512Lanes::kMaxRows, true};
constexpr Path kAvx2Fma{"AVX2", kAvx2Products, Avx2Lanes::kMaxRows, true};

// The rows times every block of the weight; the row groups run over one block while it is in cache.
void rows_product(
    const Path& path, const uint32_t* x_pairs, const uint16_t* weight, const float* bias, int64_t rows,
    int64_t pairs, int64_t span_pairs, uint16_t* out, int64_t padded) {
  at::parallel_for(0, padded / kBlock, 1, [&](int64_t begin, int64_t end) {
    std::optional<FlushDenormals> flushed;
    if (path.fma) flushed.emplace();
    for (int64_t b = begin; b < end; ++b) {
      const float* block_bias = bias == nullptr ? nullptr : bias + b * kBlock;
      const uint16_t* block_weight = weight + b * pairs * 2 * kBlock;
      for (int64_t r = 0; r < rows; r += path.max_rows) {
        const int64_t group = std::min<int64_t>(path.max_rows, rows - r);
        path.by_rows[group - 1](
            x_pairs + r * pairs, block_weight, block_bias, pairs, span_pairs, out + r * padded + b * kBlock, padded);
      }
    }
  });
}

// The widest path this CPU runs and torch's capability allows (ATEN_CPU_CAPABILITY=avx2 picks
// AVX2), lowered to QWENTTS_BF16_KERNEL_MAX_ISA (avx512 or avx2) where set: the same bits on each,
// so this only changes the speed (and lets one machine test and measure every path).
// models/cpu_kernels.py's bf16_kernel_isa() says the same from Python.
const Path& kernel_path() {
  static const Path& path = []() -> const Path& {
    if (at::get_cpu_capability() != "AVX512") return kAvx2Fma;
    const char* cap = std::getenv("QWENTTS_BF16_KERNEL_MAX_ISA");  // validated in cpu_kernels.py
    std::string max_isa = cap == nullptr ? "" : cap;
    for (char& c : max_isa) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (max_isa == "avx2") return kAvx2Fma;
    if (max_isa == "avx512" || !__builtin_cpu_supports("avx512bf16")) return kAvx512Fma;
    return kDot;
  }();
  return path;
}

}  // namespace

// weight (N, K) bfloat16 -> the blocked layout above, N padded to a multiple of kBlock.
static torch::Tensor pack(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kBFloat16, "pack: a 2-D bfloat16 weight");
  const int64_t n = weight.size(0), k = weight.size(1);
  TORCH_CHECK(k % 2 == 0, "pack: an even number of inputs");
  const int64_t padded = (n + kBlock - 1) / kBlock * kBlock;
  auto full = torch::zeros({padded, k}, weight.options());
  full.narrow(0, 0, n).copy_(weight);
  return full.view({padded / kBlock, kBlock, k / 2, 2}).permute({0, 2, 1, 3}).contiguous();
}

// x (M, K) bfloat16 times the packed weight of `out_features` outputs, plus an optional float32
// bias padded like the weight (zeros after out_features) -> (M, out_features) bfloat16, contiguous.
static torch::Tensor product(
    const torch::Tensor& x, const torch::Tensor& packed, const std::optional<torch::Tensor>& bias,
    int64_t out_features) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kBFloat16, "product: 2-D bfloat16 rows");
  const int64_t rows = x.size(0), k = x.size(1), padded = packed.size(0) * kBlock;
  TORCH_CHECK(packed.size(1) * 2 == k, "product: rows of ", k, " inputs against a weight of ", packed.size(1) * 2);
  const auto input = x.contiguous();
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(
        bias->scalar_type() == torch::kFloat && bias->is_contiguous() && bias->numel() == padded,
        "product: a contiguous float32 bias of ", padded, " values (padded like the weight)");
    bias_data = bias->data_ptr<float>();
  }
  const int64_t span = rows == 1 || k <= 1024 ? 512 : 1024;
  auto out = torch::empty({rows, padded}, x.options());
  const auto* x_pairs = reinterpret_cast<const uint32_t*>(input.data_ptr());
  const auto* weight = reinterpret_cast<const uint16_t*>(packed.data_ptr());
  auto* y = reinterpret_cast<uint16_t*>(out.data_ptr());
  rows_product(kernel_path(), x_pairs, weight, bias_data, rows, k / 2, span / 2, y, padded);
  return padded == out_features ? out : out.narrow(1, 0, out_features).contiguous();
}

static std::string instructions() { return kernel_path().name; }

TORCH_LIBRARY(qwentts, m) {
  m.def("bf16_instructions() -> str", &instructions);
  m.def("bf16_pack(Tensor weight) -> Tensor");
  m.def("bf16_product(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwentts, CPU, m) {
  m.impl("bf16_pack", &pack);
  m.impl("bf16_product", &product);
}
