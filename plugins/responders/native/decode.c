/* One decode step of a Llama-family model for a batch of sequences, in a single call.
 *
 * servicebot's fast engine (plugins/responders/engine.py) runs prefill through torch and hands decode steps here
 * when this file compiles on the machine (plugins/responders/native/__init__.py builds it once per source hash). A decode
 * step reads every weight once and does little arithmetic on each, so on a small CPU its time is reading
 * float16 weights plus, in torch, some 25 small operator calls per layer; here the whole step is one parallel
 * region: float16 weights are widened with F16C and multiplied in float32 (the same products as fbgemm's fp16
 * path), the KV caches are the engine's own tensors, and the rotary tables are the engine's.
 *
 * Build: cc -O3 -mavx2 -mfma -mf16c -fopenmp -shared -fPIC decode.c -o decode.so -lm
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A spinning barrier for the threads of one step. libgomp's own barriers sleep when OMP_WAIT_POLICY is PASSIVE
 * (servicebot sets it so idle torch threads do not steal the CPU), and a futex wake per barrier would cost more
 * than the work between two of them. After a bounded spin it yields, so a descheduled partner is not starved. */
typedef struct {
    int count, sense;
} barrier_t;

static void barrier_wait(barrier_t *bar, int threads, int *local) {
    *local = !*local;
    if (__atomic_add_fetch(&bar->count, 1, __ATOMIC_ACQ_REL) == threads) {
        __atomic_store_n(&bar->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&bar->sense, *local, __ATOMIC_RELEASE);
        return;
    }
    for (long spins = 0; __atomic_load_n(&bar->sense, __ATOMIC_ACQUIRE) != *local; spins++) {
        if (spins < 200000)
            _mm_pause();
        else
            sched_yield();
    }
}

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#define PFROWS 4 /* a batched product asks for the row this many ahead while it multiplies one */
#define MAXB 8 /* inputs multiplied against one streamed weight row at a time */

static inline __m256 load8(const uint16_t *w) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w)); }

/* One weight row's dot products with NB inputs (ldx apart); NB is a constant at every call site. */
static inline __attribute__((always_inline)) void row_dots(const uint16_t *w, int K, const float *x, int ldx, int NB,
                                                          float *out) {
    const int K8 = K & ~7;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int k = 0; k < K8; k += 8) {
        const __m256 wv = load8(w + k);
        const float *xk = x + k;
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk), a0);
        if (NB > 1) a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + ldx), a1);
        if (NB > 2) a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 2 * (size_t)ldx), a2);
        if (NB > 3) a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 3 * (size_t)ldx), a3);
        if (NB > 4) a4 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 4 * (size_t)ldx), a4);
        if (NB > 5) a5 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 5 * (size_t)ldx), a5);
        if (NB > 6) a6 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 6 * (size_t)ldx), a6);
        if (NB > 7) a7 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + 7 * (size_t)ldx), a7);
    }
    const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int b = 0; b < NB; b++) {
        float v = hsum(acc[b]);
        for (int k = K8; k < K; k++) v += h2f(w[k]) * x[(size_t)b * ldx + k];
        out[b] = v;
    }
}

/* Rows [0, N) of y[b] (+)= W x[b] for b < B, W float16 [N, K]; the rows are shared out among the threads. Must be
 * called by every thread of the enclosing parallel region (it is an orphaned `omp for`), then a barrier. */
static void gemv16(const uint16_t *W, int N, int K, const float *x, int ldx, float *y, int ldy, int B, int add) {
    const int K8 = K & ~7;
    if (B == 1) { /* eight rows at a time: eight independent sums keep both multiply-add units busy */
        const int blocks = (N + 7) / 8;
#pragma omp for schedule(static) nowait
        for (int blk = 0; blk < blocks; blk++) {
            const int n0 = blk * 8, rows = N - n0 < 8 ? N - n0 : 8;
            const uint16_t *w = W + (size_t)n0 * K;
            if (rows == 8) {
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
                for (int k = 0; k < K8; k += 8) {
                    const __m256 xv = _mm256_loadu_ps(x + k);
                    if ((k & 31) == 0) /* the next block's rows: one cache line per row per 32 weights */
                        for (int r = 0; r < 8; r++) _mm_prefetch((const char *)(w + (size_t)(8 + r) * K + k), _MM_HINT_T0);
                    a0 = _mm256_fmadd_ps(load8(w + k), xv, a0);
                    a1 = _mm256_fmadd_ps(load8(w + (size_t)K + k), xv, a1);
                    a2 = _mm256_fmadd_ps(load8(w + 2 * (size_t)K + k), xv, a2);
                    a3 = _mm256_fmadd_ps(load8(w + 3 * (size_t)K + k), xv, a3);
                    a4 = _mm256_fmadd_ps(load8(w + 4 * (size_t)K + k), xv, a4);
                    a5 = _mm256_fmadd_ps(load8(w + 5 * (size_t)K + k), xv, a5);
                    a6 = _mm256_fmadd_ps(load8(w + 6 * (size_t)K + k), xv, a6);
                    a7 = _mm256_fmadd_ps(load8(w + 7 * (size_t)K + k), xv, a7);
                }
                const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
                for (int r = 0; r < 8; r++) {
                    float s = hsum(acc[r]);
                    for (int k = K8; k < K; k++) s += h2f(w[(size_t)r * K + k]) * x[k];
                    y[n0 + r] = add ? y[n0 + r] + s : s;
                }
            } else {
                for (int r = 0; r < rows; r++) {
                    float s;
                    row_dots(w + (size_t)r * K, K, x, ldx, 1, &s);
                    y[n0 + r] = add ? y[n0 + r] + s : s;
                }
            }
        }
        return;
    }
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; n++) { /* each row is read once and multiplied against every input */
        const uint16_t *w = W + (size_t)n * K;
        if (n + PFROWS < N) /* ask for a later row now, so memory keeps streaming while this one is multiplied */
            for (int k = 0; k < K; k += 32) _mm_prefetch((const char *)(w + (size_t)PFROWS * K + k), _MM_HINT_T0);
        for (int b0 = 0; b0 < B; b0 += MAXB) {
            const int nb = B - b0 < MAXB ? B - b0 : MAXB;
            float s[MAXB];
            switch (nb) { /* a constant count per case keeps the sums in registers */
            case 8: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 8, s); break;
            case 7: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 7, s); break;
            case 6: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 6, s); break;
            case 5: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 5, s); break;
            case 4: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 4, s); break;
            case 3: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 3, s); break;
            case 2: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 2, s); break;
            default: row_dots(w, K, x + (size_t)b0 * ldx, ldx, 1, s); break;
            }
            for (int b = 0; b < nb; b++) {
                float *out = y + (size_t)(b0 + b) * ldy + n;
                *out = add ? *out + s[b] : s[b];
            }
        }
    }
}

/* out = x / sqrt(mean(x^2) + eps) * w, as torch's rms_norm computes it in float32. */
static void rms_norm(const float *x, const float *w, int n, float eps, float *out) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* Rotary embedding in place on one head (transformers' rotate_half convention). */
static void rope(float *v, const float *cs, const float *sn, int hd) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i + half] + a * sn[i + half];
    }
}

/* The KV cache holds float32 or float16 (kv16) numbers; float16 halves the bytes a step reads from it. */
static inline float kv_at(const void *row, int i, int kv16) {
    return kv16 ? h2f(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

static inline __m256 kv_load8(const void *row, int i, int kv16) {
    return kv16 ? load8((const uint16_t *)row + i) : _mm256_loadu_ps((const float *)row + i);
}

/* a . row, row a cached key (float32 or float16). */
static inline __attribute__((always_inline)) float dot_kv(const float *a, const void *row, int n, int kv16) {
    const int n8 = n & ~7;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), kv_load8(row, i, kv16), acc);
    float s = hsum(acc);
    for (int i = n8; i < n; i++) s += a[i] * kv_at(row, i, kv16);
    return s;
}

/* out += p row, row a cached value (float32 or float16). */
static inline __attribute__((always_inline)) void axpy_kv(float p, const void *row, float *out, int n, int kv16) {
    const int n8 = n & ~7;
    const __m256 pv = _mm256_set1_ps(p);
    for (int i = 0; i < n8; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, kv_load8(row, i, kv16), _mm256_loadu_ps(out + i)));
    for (int i = n8; i < n; i++) out[i] += p * kv_at(row, i, kv16);
}

/* Store n float32 numbers into a cache row (rounded to nearest even for float16, as torch converts). */
static inline void kv_store(void *row, const float *src, int n, int kv16) {
    if (!kv16) {
        memcpy(row, src, sizeof(float) * n);
        return;
    }
    uint16_t *dst = (uint16_t *)row;
    const int n8 = n & ~7;
    for (int i = 0; i < n8; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (int i = n8; i < n; i++) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

/* exp(x) for eight lanes: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor polynomial to r^7 (relative error
 * about 2e-7, like expf), times 2^n built in the exponent bits. Lanes below -87 give 0, lanes above 88 exp(88). */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); /* ln2 in two parts, for an exact r */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

/* row[0..n) = softmax(row[0..n)) in place. */
static void softmax(float *row, int n) {
    const int n8 = n & ~7;
    float top = -INFINITY, total = 0.0f;
    for (int t = 0; t < n; t++) top = row[t] > top ? row[t] : top;
    const __m256 topv = _mm256_set1_ps(top);
    __m256 sum = _mm256_setzero_ps();
    for (int t = 0; t < n8; t += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + t), topv));
        _mm256_storeu_ps(row + t, e);
        sum = _mm256_add_ps(sum, e);
    }
    total = hsum(sum);
    for (int t = n8; t < n; t++) total += (row[t] = expf(row[t] - top));
    const __m256 inv = _mm256_set1_ps(1.0f / total);
    for (int t = 0; t < n8; t += 8) _mm256_storeu_ps(row + t, _mm256_mul_ps(_mm256_loadu_ps(row + t), inv));
    for (int t = n8; t < n; t++) row[t] /= total;
}

/* Attention of `group` query heads (q, group x hd) over the first n cached keys and values of their shared head
 * (kc, vc: rows of hd numbers, float16 when kv16). s: group score rows, ld apart; out: group x hd. Inlined with a
 * constant kv16 at each call, so each cache format gets its own loop. */
static inline __attribute__((always_inline)) void attend(const float *q, const char *kc, const char *vc, int n, int group,
                                                        int hd, float scale, float *s, int ld, float *out,
                                                        const int kv16) {
    const size_t row = (size_t)hd * (kv16 ? sizeof(uint16_t) : sizeof(float));
    for (int t = 0; t < n; t++) { /* each cached key is read once for the whole group */
        const void *k = kc + (size_t)t * row;
        for (int j = 0; j < group; j++) s[(size_t)j * ld + t] = dot_kv(q + j * hd, k, hd, kv16) * scale;
    }
    for (int j = 0; j < group; j++) softmax(s + (size_t)j * ld, n);
    memset(out, 0, sizeof(float) * group * hd);
    for (int t = 0; t < n; t++) { /* and each cached value once */
        const void *v = vc + (size_t)t * row;
        for (int j = 0; j < group; j++) axpy_kv(s[(size_t)j * ld + t], v, out + j * hd, hd, kv16);
    }
}

/* dims: layers, hidden, intermediate, heads, kv_heads, head_dim, vocab.
 * weights: per layer qkv [(heads + 2 kv_heads) head_dim, hidden] f16, o [hidden, heads head_dim] f16,
 *   gate_up [2 intermediate, hidden] f16, down [hidden, intermediate] f16, norm1 [hidden] f32, norm2 [hidden] f32;
 *   then the final norm [hidden] f32 and the output projection [vocab, hidden] f16.
 * x: [batch, hidden] embeddings of the new tokens (overwritten). pos: each sequence's position for its token.
 * caches: per sequence, per layer, keys then values, each [kv_heads, capacity, head_dim], float16 when kv16 is set,
 *   float32 otherwise; caps: capacities.
 * cos, sin: rotary tables with a row per position [*, head_dim]. logits: [batch, vocab] out.
 * Returns 0, or -1 when scratch memory cannot be had. */
int sb_decode(const int64_t *dims, float eps, const int64_t *weights, int batch, float *x, const int64_t *pos,
              const int64_t *caches, const int64_t *caps, int kv16, const float *cos_t, const float *sin_t,
              float *logits, int threads) {
    const int L = (int)dims[0], H = (int)dims[1], I = (int)dims[2], NH = (int)dims[3], NKV = (int)dims[4],
              HD = (int)dims[5], V = (int)dims[6];
    const int QKV = (NH + 2 * NKV) * HD, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HD);
    const size_t esize = kv16 ? sizeof(uint16_t) : sizeof(float); /* bytes per cached number */
    int64_t longest = 0;
    for (int b = 0; b < batch; b++) longest = pos[b] + 1 > longest ? pos[b] + 1 : longest;
    float *h = malloc(sizeof(float) * (size_t)batch * H);
    float *qkv = malloc(sizeof(float) * (size_t)batch * QKV);
    float *att = malloc(sizeof(float) * (size_t)batch * NH * HD);
    float *gu = malloc(sizeof(float) * (size_t)batch * 2 * I);
    float *act = malloc(sizeof(float) * (size_t)batch * I);
    float *scores = malloc(sizeof(float) * (size_t)batch * NH * longest);
    if (!h || !qkv || !att || !gu || !act || !scores) {
        free(h), free(qkv), free(att), free(gu), free(act), free(scores);
        return -1;
    }
    barrier_t bar = {0, 0};
#pragma omp parallel num_threads(threads)
    {
        const int team = omp_get_num_threads();
        int local = 0;
#define SYNC() barrier_wait(&bar, team, &local)
        for (int l = 0; l < L; l++) {
            const int64_t *lw = weights + 6 * l;
#pragma omp for schedule(static) nowait
            for (int b = 0; b < batch; b++)
                rms_norm(x + (size_t)b * H, (const float *)lw[4], H, eps, h + (size_t)b * H);
            SYNC();
            gemv16((const uint16_t *)lw[0], QKV, H, h, H, qkv, QKV, batch, 0);
            SYNC();
#pragma omp for schedule(static) nowait
            for (int b = 0; b < batch; b++) {
                float *row = qkv + (size_t)b * QKV;
                const float *cs = cos_t + (size_t)pos[b] * HD, *sn = sin_t + (size_t)pos[b] * HD;
                for (int j = 0; j < NH + NKV; j++) rope(row + j * HD, cs, sn, HD);
                char *kc = (char *)caches[((size_t)b * L + l) * 2], *vc = (char *)caches[((size_t)b * L + l) * 2 + 1];
                for (int j = 0; j < NKV; j++) {
                    const size_t at = ((size_t)j * caps[b] + pos[b]) * HD * esize;
                    kv_store(kc + at, row + (NH + j) * HD, HD, kv16);
                    kv_store(vc + at, row + (NH + NKV + j) * HD, HD, kv16);
                }
            }
            SYNC();
#pragma omp for schedule(static) nowait
            for (int bg = 0; bg < batch * NKV; bg++) { /* a key/value head and the query heads that share it */
                const int b = bg / NKV, g = bg % NKV;
                const size_t at = ((size_t)b * L + l) * 2, off = (size_t)g * caps[b] * HD * esize;
                const float *q = qkv + (size_t)b * QKV + (size_t)g * group * HD; /* its `group` query heads */
                float *s = scores + (size_t)(b * NH + g * group) * longest;      /* one row of n per query head */
                float *out = att + (size_t)b * NH * HD + (size_t)g * group * HD;
                const char *kc = (const char *)caches[at] + off, *vc = (const char *)caches[at + 1] + off;
                if (kv16)
                    attend(q, kc, vc, (int)pos[b] + 1, group, HD, scale, s, longest, out, 1);
                else
                    attend(q, kc, vc, (int)pos[b] + 1, group, HD, scale, s, longest, out, 0);
            }
            SYNC();
            gemv16((const uint16_t *)lw[1], H, NH * HD, att, NH * HD, x, H, batch, 1);
            SYNC();
#pragma omp for schedule(static) nowait
            for (int b = 0; b < batch; b++)
                rms_norm(x + (size_t)b * H, (const float *)lw[5], H, eps, h + (size_t)b * H);
            SYNC();
            gemv16((const uint16_t *)lw[2], 2 * I, H, h, H, gu, 2 * I, batch, 0);
            SYNC();
#pragma omp for schedule(static) nowait
            for (int b = 0; b < batch; b++) { /* SwiGLU: silu(gate) * up, g / (1 + exp(-g)) * u */
                const float *g = gu + (size_t)b * 2 * I, *u = g + I;
                float *a = act + (size_t)b * I;
                const int I8 = I & ~7;
                const __m256 one = _mm256_set1_ps(1.0f);
                for (int i = 0; i < I8; i += 8) {
                    const __m256 gv = _mm256_loadu_ps(g + i);
                    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
                    _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
                }
                for (int i = I8; i < I; i++) a[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            }
            SYNC();
            gemv16((const uint16_t *)lw[3], H, I, act, I, x, H, batch, 1);
            SYNC();
        }
#pragma omp for schedule(static) nowait
        for (int b = 0; b < batch; b++)
            rms_norm(x + (size_t)b * H, (const float *)weights[6 * L], H, eps, h + (size_t)b * H);
        SYNC();
        gemv16((const uint16_t *)weights[6 * L + 1], V, H, h, H, logits, V, batch, 0);
#undef SYNC
    }
    free(h), free(qkv), free(att), free(gu), free(act), free(scores);
    return 0;
}
