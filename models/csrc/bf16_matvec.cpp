// bfloat16 products of rows with a weight matrix, for decode steps on CPUs with AVX512-BF16.
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

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace {

constexpr int64_t kBlock = 32;  // outputs per block: two 16-lane accumulators per row
constexpr int kMaxRows = 8;     // rows per pass over the weight (16 accumulators at most)

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

template <int Rows>
void rows_product(
    const uint32_t* x_pairs, const uint16_t* weight, const float* bias, int64_t pairs, int64_t span_pairs,
    uint16_t* out, int64_t padded) {
  at::parallel_for(0, padded / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* block_bias = bias == nullptr ? nullptr : bias + b * kBlock;
      const uint16_t* block_weight = weight + b * pairs * 2 * kBlock;
      block_products<Rows>(x_pairs, block_weight, block_bias, pairs, span_pairs, out + b * kBlock, padded);
    }
  });
}

using RowsProduct = void (*)(const uint32_t*, const uint16_t*, const float*, int64_t, int64_t, uint16_t*, int64_t);
constexpr RowsProduct kRowsProduct[kMaxRows] = {
    rows_product<1>, rows_product<2>, rows_product<3>, rows_product<4>,
    rows_product<5>, rows_product<6>, rows_product<7>, rows_product<8>};

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
  for (int64_t r = 0; r < rows; r += kMaxRows) {
    const int64_t group = std::min<int64_t>(kMaxRows, rows - r);
    kRowsProduct[group - 1](x_pairs + r * (k / 2), weight, bias_data, k / 2, span / 2, y + r * padded, padded);
  }
  return padded == out_features ? out : out.narrow(1, 0, out_features).contiguous();
}

TORCH_LIBRARY(qwentts, m) {
  m.def("bf16_pack(Tensor weight) -> Tensor");
  m.def("bf16_product(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwentts, CPU, m) {
  m.impl("bf16_pack", &pack);
  m.impl("bf16_product", &product);
}
