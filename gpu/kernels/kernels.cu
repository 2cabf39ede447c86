// Kernels of the GPU engine (package gpu). Every one mirrors an element
// loop of the CPU engine (package nn) operation for operation, so that the
// exact step gives the CPU's bits: each float64 operation is a separately
// rounded IEEE operation (the PTX is generated without contraction into
// FMAs; gpu/ptx_test.go checks that no fma is in it), maxima are order-free,
// and integer sums are int64. host.go holds the same kernels in Go for the
// tests without a GPU.
//
// Regenerate kernels.ptx with scripts/gen-ptx.sh (nvcc or clang).

#if defined(__NVCC__)
#define BITS_OF(x) __double_as_longlong(x)
#define DOUBLE_OF(b) __longlong_as_double(b)
#define TID_X threadIdx.x
#define TID_Y threadIdx.y
#define NTID_X blockDim.x
#define NTID_Y blockDim.y
#define CTAID_X blockIdx.x
#define CTAID_Y blockIdx.y
#define NCTAID_X gridDim.x
#define SHARED __shared__
#define FABS(x) fabs(x)
#define SQRT(x) sqrt(x)
#define F32BITS(x) __float_as_uint(x)
#define ATOMIC_MIN(p, v) atomicMin((p), (v))
#define ATOMIC_MAX64(p, v) atomicMax((p), (v))
#define ATOMIC_ADD64(p, v) atomicAdd((unsigned long long*)(p), (unsigned long long)(v))
#else // clang -x cuda -nocudainc: no CUDA headers, only the builtins
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define SHARED __attribute__((shared))
#define BITS_OF(x) __builtin_bit_cast(long long, (x))
#define DOUBLE_OF(b) __builtin_bit_cast(double, (long long)(b))
#define TID_X __nvvm_read_ptx_sreg_tid_x()
#define TID_Y __nvvm_read_ptx_sreg_tid_y()
#define NTID_X __nvvm_read_ptx_sreg_ntid_x()
#define NTID_Y __nvvm_read_ptx_sreg_ntid_y()
#define CTAID_X __nvvm_read_ptx_sreg_ctaid_x()
#define CTAID_Y __nvvm_read_ptx_sreg_ctaid_y()
#define NCTAID_X __nvvm_read_ptx_sreg_nctaid_x()
#define FABS(x) __builtin_fabs(x)
#define __syncthreads() __nvvm_bar_sync(0)
#define SQRT(x) __builtin_sqrt(x)
#define F32BITS(x) __builtin_bit_cast(unsigned, (x))
#define ATOMIC_MIN(p, v) __nvvm_atom_min_gen_i((p), (v))
#define ATOMIC_MAX64(p, v) __nvvm_atom_max_gen_ll((p), (v))
#define ATOMIC_ADD64(p, v) __nvvm_atom_add_gen_ll((p), (v))
#endif

#define GSTRIDE_LOOP(i, n) \
	for (long long i = (long long)CTAID_X * NTID_X + TID_X; i < (long long)(n); i += (long long)NCTAID_X * NTID_X)

// rint rounds to nearest, ties to even, for |v| < 2^51 (nn.rint).
__device__ static inline double rint_magic(double v) {
	const double magic = 6755399441055744.0; // 1.5 * 2^52
	return (v + magic) - magic; // no fast-math: never folded to v
}

// pow2 is math.Ldexp(1, e): exact, subnormal below 2^-1022, 0 below
// 2^-1074, +Inf above 2^1023.
__device__ static inline double pow2(int e) {
	if (e > 1023) return DOUBLE_OF(0x7ff0000000000000LL);
	if (e >= -1022) return DOUBLE_OF((long long)(e + 1023) << 52);
	if (e >= -1074) return DOUBLE_OF(1LL << (e + 1074));
	return 0.0;
}

// gridexp is nn.GridExp: e with m / 2^e < 2^b, from math.Frexp's exponent
// (0 for zero, NaN and Inf).
__device__ static inline int gridexp(double m, int b) {
	if (m == 0.0) return 0;
	long long bits = BITS_OF(m);
	int be = (int)((bits >> 52) & 0x7ff);
	if (be == 0x7ff) return -b;
	if (be == 0) { // subnormal: scale into the normal range first
		bits = BITS_OF(m * 4503599627370496.0); // 2^52, exact
		be = (int)((bits >> 52) & 0x7ff) - 52;
	}
	return be - 1022 - b;
}

// Two maxima of magnitudes. sticky: a NaN wins (the CPU loop's
// "a > mx || a != a"); plain: NaN is ignored (its "a > mx").
__device__ static inline double max_sticky(double a, double b) {
	if (a != a) return a;
	if (b != b) return b;
	return b > a ? b : a;
}
__device__ static inline double max_plain(double a, double b) { return b > a ? b : a; }

#define BLOCK 256

// Block-wide reductions of one value per thread (blockDim.x == BLOCK).
__device__ static inline double block_max(double v, bool sticky) {
	SHARED double red[BLOCK];
	red[TID_X] = v;
	__syncthreads();
	for (unsigned s = BLOCK / 2; s > 0; s >>= 1) {
		if (TID_X < s) red[TID_X] = sticky ? max_sticky(red[TID_X], red[TID_X + s]) : max_plain(red[TID_X], red[TID_X + s]);
		__syncthreads();
	}
	double r = red[0];
	__syncthreads();
	return r;
}

// widen_rows: dst[i,j] = double(x[rows[i],j]) * xinv[j] (nn widenScaled).
extern "C" __global__ void widen_rows(double* dst, const float* x, const int* rows, const double* xinv, int m, int d) {
	GSTRIDE_LOOP(t, (long long)m * d) {
		long long i = t / d, j = t % d;
		dst[t] = (double)x[(long long)rows[i] * d + j] * xinv[j];
	}
}

// gather_rows: dst[i,:] = x[rows[i],:] (fast mode).
extern "C" __global__ void gather_rows(float* dst, const float* x, const int* rows, int m, int d) {
	GSTRIDE_LOOP(t, (long long)m * d) {
		long long i = t / d, j = t % d;
		dst[t] = x[(long long)rows[i] * d + j];
	}
}

// quant_wrows: one block per weight row k (nn Engine.quantWeights): the
// row's largest |w| (times cs[j] on layer 0), its grid exponent with wb
// bits, and the row on that grid.
extern "C" __global__ void quant_wrows(double* q, int* exps, const float* w, const double* cs, int out, int in, int wb) {
	for (int k = CTAID_X; k < out; k += NCTAID_X) {
		const float* wr = w + (long long)k * in;
		double mx = 0.0;
		for (int j = TID_X; j < in; j += BLOCK) {
			double a = FABS((double)wr[j]);
			if (cs) a = a * cs[j];
			mx = max_sticky(mx, a);
		}
		mx = block_max(mx, true);
		int ex = gridexp(mx, wb);
		if (TID_X == 0) exps[k] = ex;
		double inv = pow2(-ex);
		double* qr = q + (long long)k * in;
		for (int j = TID_X; j < in; j += BLOCK) {
			double v = (double)wr[j];
			if (cs) v = v * cs[j];
			qr[j] = rint_magic(v * inv);
		}
	}
}

// fwd_exact: the forward epilogue of an exact layer: z = z*2^rexp[i]*2^wexp[k]
// + bias[k] (rexp NULL: a factor 1), and anext = LeakyReLU(z) unless NULL.
extern "C" __global__ void fwd_exact(double* z, double* anext, const int* rexp, const int* wexp, const float* bias, double slope, int m, int out) {
	GSTRIDE_LOOP(t, (long long)m * out) {
		long long i = t / out, k = t % out;
		double rs = rexp ? pow2(rexp[i]) : 1.0;
		double v = z[t] * rs * pow2(wexp[k]) + (double)bias[k];
		z[t] = v;
		if (anext) anext[t] = v > 0 ? v : slope * v;
	}
}

// quant_rows: one block per row (nn quantizeRows): the row's largest |v|
// (NaN ignored), its exponent with b bits, and the row on that grid.
extern "C" __global__ void quant_rows(double* q, int* exps, const double* v, int rows, int cols, int b) {
	for (int i = CTAID_X; i < rows; i += NCTAID_X) {
		const double* vr = v + (long long)i * cols;
		double mx = 0.0;
		for (int j = TID_X; j < cols; j += BLOCK) mx = max_plain(mx, FABS(vr[j]));
		mx = block_max(mx, false);
		int e = gridexp(mx, b);
		if (TID_X == 0) exps[i] = e;
		double inv = pow2(-e);
		double* qr = q + (long long)i * cols;
		for (int j = TID_X; j < cols; j += BLOCK) qr[j] = rint_magic(vr[j] * inv);
	}
}

// col_grid: cs[j] = 2^GridExp(max_k |w[k,j]|, wb), NaN ignored (the
// column grids of W in nn Engine.Maxima).
extern "C" __global__ void col_grid(double* cs, const float* w, int out, int in, int wb) {
	GSTRIDE_LOOP(j, in) {
		double mx = 0.0;
		for (int k = 0; k < out; k++) mx = max_plain(mx, FABS((double)w[(long long)k * in + j]));
		cs[j] = pow2(gridexp(mx, wb));
	}
}

// quant_wcols: q[k,j] = rint(double(w[k,j]) / cs[j]).
extern "C" __global__ void quant_wcols(double* q, const float* w, const double* cs, int out, int in) {
	GSTRIDE_LOOP(t, (long long)out * in) {
		q[t] = rint_magic((double)w[t] / cs[t % in]);
	}
}

// bwd_exact: da[i,j] *= 2^rexp[i] * cs[j] * LeakyReLU'(zp[i,j]).
extern "C" __global__ void bwd_exact(double* da, const int* rexp, const double* cs, const double* zp, double slope, int m, int in) {
	GSTRIDE_LOOP(t, (long long)m * in) {
		long long i = t / in, j = t % in;
		double lg = zp[t] > 0 ? 1.0 : slope;
		da[t] = da[t] * (pow2(rexp[i]) * cs[j] * lg);
	}
}

// col_maxabs: dst[j] = max(dst[j], max_i |v[i,j]|), a NaN wins (nn
// colMaxAbs, with dst zeroed first). Block (32, 8): 32 columns, 8 row
// lanes; blockIdx.y takes 256 rows. Blocks combine with a 64-bit atomic
// max on the bits: non-negative doubles order as their bit patterns, and
// a NaN's (0x7ff8...) is above every number's, so the result is the same
// maximum in any order.
extern "C" __global__ void col_maxabs(double* dst, const double* v, int rows, int cols) {
	SHARED double red[8][33];
	int j = CTAID_X * 32 + TID_X;
	int i0 = CTAID_Y * 256, i1 = i0 + 256 < rows ? i0 + 256 : rows;
	double mx = 0.0;
	if (j < cols)
		for (int i = i0 + TID_Y; i < i1; i += 8) mx = max_sticky(mx, FABS(v[(long long)i * cols + j]));
	red[TID_Y][TID_X] = mx;
	__syncthreads();
	if (TID_Y == 0 && j < cols) {
		for (int y = 1; y < 8; y++) mx = max_sticky(mx, red[y][TID_X]);
		if (mx != mx) mx = DOUBLE_OF(0x7ff8000000000000LL); // one NaN for all
		ATOMIC_MAX64((long long*)&dst[j], BITS_OF(mx));
	}
}

// quant_cols: q[i,j] = rint(v[i,j] * 2^-exps[j]) (nn quantizeCols).
extern "C" __global__ void quant_cols(double* q, const double* v, const int* exps, int rows, int cols) {
	GSTRIDE_LOOP(t, (long long)rows * cols) {
		q[t] = rint_magic(v[t] * pow2(-exps[t % cols]));
	}
}

// to_int64: dst[i] = int64(src[i]), truncating (the exact GEMM's integers).
extern "C" __global__ void to_int64(long long* dst, const double* src, int n) {
	GSTRIDE_LOOP(t, n) { dst[t] = (long long)src[t]; }
}

// col_sum_i64: dst[k] += sum_i int64(q[i,k]) (dst zeroed first); int64
// sums (wrapping, as Go's) are exact in any order. Block (32, 8);
// blockIdx.y takes 256 rows and adds its sums atomically.
extern "C" __global__ void col_sum_i64(long long* dst, const double* q, int rows, int cols) {
	SHARED long long red[8][33];
	int k = CTAID_X * 32 + TID_X;
	int i0 = CTAID_Y * 256, i1 = i0 + 256 < rows ? i0 + 256 : rows;
	long long s = 0;
	if (k < cols)
		for (int i = i0 + TID_Y; i < i1; i += 8) s += (long long)q[(long long)i * cols + k];
	red[TID_Y][TID_X] = s;
	__syncthreads();
	if (TID_Y == 0 && k < cols) {
		for (int y = 1; y < 8; y++) s += red[y][TID_X];
		ATOMIC_ADD64(&dst[k], s);
	}
}

// zero64: p[0..n) = 0 (8-byte words), before the atomic reductions.
extern "C" __global__ void zero64(long long* p, int n) {
	GSTRIDE_LOOP(t, n) { p[t] = 0; }
}

// fwd_fast: z += bias[k]; anext = LeakyReLU(z) unless NULL (float32).
extern "C" __global__ void fwd_fast(float* z, float* anext, const float* bias, float slope, int m, int out) {
	GSTRIDE_LOOP(t, (long long)m * out) {
		float v = z[t] + bias[t % out];
		z[t] = v;
		if (anext) anext[t] = v > 0 ? v : slope * v;
	}
}

// bwd_fast: da *= slope where the pre-activation was not positive.
extern "C" __global__ void bwd_fast(float* da, const float* zp, float slope, int n) {
	GSTRIDE_LOOP(t, n) {
		if (zp[t] <= 0) da[t] = da[t] * slope;
	}
}

// col_sum_f32: part[blockIdx.y, k] = sum of v[i,k] over blockIdx.y's 256
// rows (fast mode's bias gradient, first pass). Block (32, 8).
extern "C" __global__ void col_sum_f32(float* part, const float* v, int rows, int cols) {
	SHARED float red[8][33];
	int k = CTAID_X * 32 + TID_X;
	int i0 = CTAID_Y * 256, i1 = i0 + 256 < rows ? i0 + 256 : rows;
	float s = 0;
	if (k < cols)
		for (int i = i0 + TID_Y; i < i1; i += 8) s += v[(long long)i * cols + k];
	red[TID_Y][TID_X] = s;
	__syncthreads();
	if (TID_Y == 0 && k < cols) {
		for (int y = 1; y < 8; y++) s += red[y][TID_X];
		part[(long long)CTAID_Y * cols + k] = s;
	}
}

// col_sum_f32_fin: dst[k] = the chunks' sums of column k, added in chunk
// order (the same bits on every run).
extern "C" __global__ void col_sum_f32_fin(float* dst, const float* part, int chunks, int cols) {
	GSTRIDE_LOOP(k, cols) {
		float s = 0;
		for (int c = 0; c < chunks; c++) s += part[(long long)c * cols + k];
		dst[k] = s;
	}
}

// grad_exact: g[k,j] = float32(double(sum[k,j]) * 2^dzexp[k] * 2^aexp[j] *
// scale), the three products in that order (nn narrowScaled): a weight
// gradient off its grids.
extern "C" __global__ void grad_exact(float* g, const long long* sum, const int* dzexp, const int* aexp, double scale, int out, int in) {
	GSTRIDE_LOOP(t, (long long)out * in) {
		long long k = t / in, j = t % in;
		g[t] = (float)((double)sum[t] * pow2(dzexp[k]) * pow2(aexp[j]) * scale);
	}
}

// grad_bias: g[k] = float32(double(sum[k]) * 2^dzexp[k] * scale).
extern "C" __global__ void grad_bias(float* g, const long long* sum, const int* dzexp, double scale, int out) {
	GSTRIDE_LOOP(k, out) { g[k] = (float)((double)sum[k] * pow2(dzexp[k]) * scale); }
}

// scale_f32: g = src * s, and *bad = the least index of a NaN or Inf in
// src (fast mode's gradient; *bad starts at INT_MAX).
extern "C" __global__ void scale_f32(float* g, const float* src, float s, int* bad, int n) {
	GSTRIDE_LOOP(t, n) {
		float v = src[t];
		if ((F32BITS(v) & 0x7f800000u) == 0x7f800000u) ATOMIC_MIN(bad, (int)t);
		g[t] = v * s;
	}
}

// adam: one torch.optim.Adam step (L2 weight decay in the gradient), each
// float32 operation rounded on its own in nn adamScalar's order; c holds
// its constants: step size, 1/sqrt(bias correction 2), beta1, beta2,
// weight decay, eps.
extern "C" __global__ void adam(float* p, const float* g, float* ms, float* vs, float stepSize, float invSqrtBC2, float b1, float b2, float wd, float eps, int n) {
	GSTRIDE_LOOP(i, n) {
		float gi = g[i] + wd * p[i];
		float m = ms[i] + (1.0f - b1) * (gi - ms[i]);
		float v = b2 * vs[i] + ((1.0f - b2) * gi) * gi;
		ms[i] = m;
		vs[i] = v;
		float denom = (float)SQRT((double)v) * invSqrtBC2 + eps;
		p[i] = p[i] - (stepSize * m) / denom;
	}
}
