/* Fused CPU kernels for the statistics steps of the group optimizers (loaded by optimizers/native.py).

   Why: in eager PyTorch a step that needs per-ZIG statistics streams every parameter many times (the
   momentum update, three products, their row and column sums, then the penalized update), while an SGD
   step streams it about eight times. These two kernels read each entry once per sweep and do all of
   that work while it is in registers:

     sweep 1: the momentum direction D, and the sums of x², x·D and D² per row and per column of the
              parameter (optionally the plain step itself, for a parameter no penalty reaches);
     sweep 2: the penalized trial step x ← (decay − lr·(c_row + c_col))·x − lr·D·keep, and the cross
              terms Σ x²·c of the half-space test, read from x before it is overwritten.

   A parameter is viewed as [n0, n1, b], contiguous float32: axis 0 holds row ZIGs, axis 1 column ZIGs,
   b is a trailing run no ZIG owns (a 3x3 kernel's 9 taps). Each row is streamed as one vector loop over
   its n1·b entries (a 9-tap run is too short to vectorize on its own); per-column operands are expanded
   to one value per entry, and per-column sums are kept per entry and folded into columns once at the
   end. The caller passes every per-row and per-column operand (coefficients, keep factors) as an
   array, 0 or 1 where nothing applies, so the inner loops have no branches. Sums run in float32 like
   the eager path's and are added up in double per row and per column. Rows are split over OpenMP
   threads in chunks fixed by the row count (chunks_for); column sums are kept per chunk and added in
   chunk order, so no result depends on the thread count. The library is built for the machine it runs on (-march=native; native.py keys
   its cache by the CPU). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

#define INLINE static inline __attribute__((always_inline))

/* Threads for a sweep over `entries` in `chunks` chunks of rows: one below PARALLEL_MIN entries (a
   parallel region's start and its threads' spinning cost more than they save on a small tensor),
   never more than chunks. */
#define PARALLEL_MIN ((i64)1 << 18)
static int threads_for(i64 chunks, i64 entries, int nthreads) {
    if (nthreads < 1 || entries < PARALLEL_MIN) return 1;
    return nthreads > chunks ? (int)chunks : nthreads;
}

/* A per-column operand repeated over the b entries of each column: one value per entry of a row. */
static float *per_entry(const float *per_column, i64 n1, i64 b) {
    float *out = (float *)malloc((size_t)(n1 * b) * sizeof(float));
    if (out)
        for (i64 i = 0; i < n1; ++i)
            for (i64 k = 0; k < b; ++k) out[i * b + k] = per_column[i];
    return out;
}

/* Rows are summed in chunks whose number depends on n0 only (about 64 rows each, at most 64 chunks):
   a chunk's rows are added in order by one thread, and the chunks' column sums in chunk order, so
   every sum is the same whatever the thread count. */
static i64 chunks_for(i64 n0) {
    const i64 c = n0 / 64;
    return c < 1 ? 1 : (c > 64 ? 64 : c);
}

/* Fold per-entry sums [parts][stride] (a row's n1·b entries at `offset`) into n1 column totals. */
static void fold_columns(const float *acc, i64 parts, size_t stride, size_t offset, i64 n1, i64 b, float *out) {
    for (i64 i = 0; i < n1; ++i) {
        double total = 0.0;
        for (i64 t = 0; t < parts; ++t) {
            const float *src = acc + (size_t)t * stride + offset + (size_t)(i * b);
            for (i64 k = 0; k < b; ++k) total += src[k];
        }
        out[i] = (float)total;
    }
}

/* ---------------------------------------------------------------------------------------- sweep 1 */

/* One row o. HAS_BUF: D is the momentum buffer's new value (else D = g); HAS_WD: g + wd·x;
   STEP: also x ← decay·x − lr·D·keep (kcol: one keep factor per entry of the row); COLS: accumulate
   x², x·D, D² per entry of the row into this thread's acc ([3, n1·b]). */
INLINE void sweep1_row(const int HAS_BUF, const int HAS_WD, const int STEP, const int COLS, i64 o,
                       i64 len, float *restrict x, const float *restrict g, float *restrict buf,
                       float momentum, float damp1, float wd, float decay, float lr,
                       const float *restrict krow, const float *restrict kcol, double *restrict row3,
                       float *restrict acc) {
    const i64 base = o * len;
    float *restrict axx = acc, *restrict axd = acc + len, *restrict add = acc + 2 * len;
    const float kr = krow[o];
    float sxx = 0.0f, sxd = 0.0f, sdd = 0.0f;
#pragma omp simd reduction(+ : sxx, sxd, sdd)
    for (i64 j = 0; j < len; ++j) {
        const i64 e = base + j;
        const float xv = x[e];
        const float gd = HAS_WD ? g[e] + wd * xv : g[e];
        const float dv = HAS_BUF ? momentum * buf[e] + damp1 * gd : gd;
        if (HAS_BUF) buf[e] = dv;
        const float pxx = xv * xv, pxd = xv * dv, pdd = dv * dv;
        sxx += pxx;
        sxd += pxd;
        sdd += pdd;
        if (COLS) {
            axx[j] += pxx;
            axd[j] += pxd;
            add[j] += pdd;
        }
        if (STEP) x[e] = decay * xv - lr * dv * (kr * kcol[j]);
    }
    row3[0] = sxx;
    row3[1] = sxd;
    row3[2] = sdd;
}

#define SWEEP1_CASE(B, W, S)                                                                             \
    (cols_wanted ? sweep1_row(B, W, S, 1, o, len, x, g, buf, momentum, damp1, wd, decay, lr, krow, kcol_e, \
                              row3, mine)                                                               \
                 : sweep1_row(B, W, S, 0, o, len, x, g, buf, momentum, damp1, wd, decay, lr, krow, kcol_e, \
                              row3, mine))

/* Sweep 1 over a [n0, n1, b] parameter.
   buf: the momentum buffer, updated in place to m·buf + damp1·(g + wd·x), which is D; NULL: D = g + wd·x.
   rows: [3, n0] sums of x², x·D, D² per row; cols: [3, n1] per column, or NULL when not wanted.
   step != 0: also take the plain step x ← decay·x − lr·D·krow[o]·kcol[i].
   Returns 0, or -1 when scratch memory could not be allocated (nothing was changed then). */
static int zg_sweep1(i64 n0, i64 n1, i64 b, float *restrict x, const float *restrict g, float *restrict buf,
              float momentum, float damp1, float wd, float *restrict rows, float *restrict cols, int step,
              float decay, float lr, const float *restrict krow, const float *restrict kcol, int nthreads) {
    const i64 chunks = chunks_for(n0);
    nthreads = threads_for(chunks, n0 * n1 * b, nthreads);
    const int cols_wanted = cols != NULL;
    const i64 len = n1 * b;
    const size_t per_chunk = cols_wanted ? 3 * (size_t)len : 0;
    float *tacc = (float *)calloc((size_t)chunks * per_chunk + 1, sizeof(float));
    const float *kcol_e = kcol;
    float *owned_k = NULL;
    if (step && b != 1) kcol_e = owned_k = per_entry(kcol, n1, b);
    if (!tacc || (step && b != 1 && !owned_k)) {
        free(tacc);
        free(owned_k);
        return -1;
    }
    const int has_wd = wd != 0.0f;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (i64 c = 0; c < chunks; ++c) {
        float *mine = tacc + (size_t)c * per_chunk;
        for (i64 o = n0 * c / chunks; o < n0 * (c + 1) / chunks; ++o) {
            double row3[3];
            if (buf) {
                if (has_wd) {
                    if (step) SWEEP1_CASE(1, 1, 1); else SWEEP1_CASE(1, 1, 0);
                } else {
                    if (step) SWEEP1_CASE(1, 0, 1); else SWEEP1_CASE(1, 0, 0);
                }
            } else {
                if (has_wd) {
                    if (step) SWEEP1_CASE(0, 1, 1); else SWEEP1_CASE(0, 1, 0);
                } else {
                    if (step) SWEEP1_CASE(0, 0, 1); else SWEEP1_CASE(0, 0, 0);
                }
            }
            rows[o] = (float)row3[0];
            rows[n0 + o] = (float)row3[1];
            rows[2 * n0 + o] = (float)row3[2];
        }
    }
    if (cols_wanted)
        for (int q = 0; q < 3; ++q) fold_columns(tacc, chunks, per_chunk, (size_t)q * len, n1, b, cols + q * n1);
    free(tacc);
    free(owned_k);
    return 0;
}

/* ---------------------------------------------------------------------------------------- sweep 2 */

/* One row o. HAS_D: subtract lr·D·keep; CROSS: accumulate the cross terms. ccol / kcol hold one value
   per entry of the row; xacc: this thread's per-entry sums of x²·crow[o] over rows. */
INLINE void sweep2_row(const int HAS_D, const int CROSS, i64 o, i64 len, float *restrict x,
                       const float *restrict d, const float *restrict crow, const float *restrict ccol,
                       const float *restrict krow, const float *restrict kcol, float decay, float lr,
                       float *restrict xrow, float *restrict xacc) {
    const float row_factor = decay - lr * crow[o];
    const float kr = krow[o], cr = crow[o];
    const i64 base = o * len;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (i64 j = 0; j < len; ++j) {
        const i64 e = base + j;
        const float xv = x[e];
        if (CROSS) {
            const float sq = xv * xv;
            acc += sq * ccol[j];
            xacc[j] += sq * cr;
        }
        float v = (row_factor - lr * ccol[j]) * xv;
        if (HAS_D) v -= lr * d[e] * (kr * kcol[j]);
        x[e] = v;
    }
    if (CROSS) xrow[o] = acc;
}

/* Sweep 2 over a [n0, n1, b] parameter: x ← (decay − lr·(crow[o] + ccol[i]))·x − lr·d·krow[o]·kcol[i].
   d: the direction (NULL: none). With xrow and xcol (both or neither), also the cross terms
   xrow[o] = Σ_{i,k} x²·ccol[i] and xcol[i] = Σ_{o,k} x²·crow[o] of x before the step.
   Returns 0, or -1 when scratch memory could not be allocated (nothing was changed then). */
static int zg_sweep2(i64 n0, i64 n1, i64 b, float *restrict x, const float *restrict d,
              const float *restrict crow, const float *restrict ccol, const float *restrict krow,
              const float *restrict kcol, float decay, float lr, float *restrict xrow,
              float *restrict xcol, int nthreads) {
    const i64 chunks = chunks_for(n0);
    nthreads = threads_for(chunks, n0 * n1 * b, nthreads);
    const int cross = xrow != NULL && xcol != NULL;
    const i64 len = n1 * b;
    const float *ccol_e = ccol, *kcol_e = kcol;
    float *owned_c = NULL, *owned_k = NULL, *tacc = NULL;
    if (b != 1) {
        ccol_e = owned_c = per_entry(ccol, n1, b);
        kcol_e = owned_k = per_entry(kcol, n1, b);
    }
    if (cross) tacc = (float *)calloc((size_t)chunks * (size_t)len, sizeof(float));
    if ((b != 1 && (!owned_c || !owned_k)) || (cross && !tacc)) {
        free(owned_c);
        free(owned_k);
        free(tacc);
        return -1;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (i64 c = 0; c < chunks; ++c) {
        float *mine = cross ? tacc + (size_t)c * (size_t)len : NULL;
        for (i64 o = n0 * c / chunks; o < n0 * (c + 1) / chunks; ++o) {
            if (d) {
                if (cross) sweep2_row(1, 1, o, len, x, d, crow, ccol_e, krow, kcol_e, decay, lr, xrow, mine);
                else sweep2_row(1, 0, o, len, x, d, crow, ccol_e, krow, kcol_e, decay, lr, xrow, mine);
            } else {
                if (cross) sweep2_row(0, 1, o, len, x, d, crow, ccol_e, krow, kcol_e, decay, lr, xrow, mine);
                else sweep2_row(0, 0, o, len, x, d, crow, ccol_e, krow, kcol_e, decay, lr, xrow, mine);
            }
        }
    }
    if (cross) fold_columns(tacc, chunks, (size_t)len, 0, n1, b, xcol);
    free(owned_c);
    free(owned_k);
    free(tacc);
    return 0;
}

/* ------------------------------------------------------------------------- whole-model entry points */

/* Per parameter, seven int64: n0, n1, b, row_at, col_at (where the row / column owners sit in the
   per-index vector; −1: not owned), flags, and 0. */
enum { M_N0, M_N1, M_B, M_ROW, M_COL, M_FLAGS, M_WIDTH = 7 };
enum { F_UNIFORM = 1, F_STEP = 2, F_SKIP = 4 };

/* The per-row or per-column operand of one parameter: its slice of a per-index vector, the one entry
   of a whole-tensor ZIG repeated (written into fill), or `fallback` where there is none. */
static const float *operand(const float *per_index, i64 at, i64 n, int uniform, float *fill,
                            const float *fallback) {
    if (!per_index || at < 0) return fallback;
    if (!uniform) return per_index + at;
    for (i64 i = 0; i < n; ++i) fill[i] = per_index[at];
    return fill;
}

/* Sums of one statistic over an axis, written where the axis sits in a per-index vector: one entry
   per index, or their total for a whole-tensor ZIG. */
static void put_sums(float *out, i64 at, const float *sums, i64 n, int uniform) {
    if (at < 0) return;
    if (!uniform) {
        memcpy(out + at, sums, (size_t)n * sizeof(float));
        return;
    }
    double total = 0.0;
    for (i64 i = 0; i < n; ++i) total += sums[i];
    out[at] = (float)total;
}

static i64 widest(i64 count, const i64 *meta) {
    i64 w = 1;
    for (i64 p = 0; p < count; ++p) {
        const i64 *m = meta + p * M_WIDTH;
        if (m[M_N0] > w) w = m[M_N0];
        if (m[M_N1] > w) w = m[M_N1];
    }
    return w;
}

/* How the parameters are shared out over threads. A parameter bigger than an even share of the whole
   (an LLM's embedding) is split by rows over every thread; the others are whole units of work handed
   to threads largest first, each done by one thread. Either way one parameter's sums are computed in
   one fixed order whatever the thread count, so the results do not depend on it. */
typedef struct {
    i64 size, index;
} Work;

static int larger_first(const void *a, const void *b) {
    const Work *x = (const Work *)a, *y = (const Work *)b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Fills order (count entries) with the parameters to split by rows first (their number is returned),
   then the others, largest first. */
static i64 plan_work(i64 count, const i64 *meta, int nthreads, Work *order) {
    i64 total = 0;
    for (i64 p = 0; p < count; ++p) {
        const i64 *m = meta + p * M_WIDTH;
        order[p].size = m[M_N0] * m[M_N1] * m[M_B];
        order[p].index = p;
        total += order[p].size;
    }
    qsort(order, (size_t)count, sizeof(Work), larger_first);
    i64 big = 0;
    while (big < count && nthreads > 1 && order[big].size * nthreads > total && order[big].size >= PARALLEL_MIN)
        ++big;
    return big;
}

/* The arguments of a whole-model sweep, shared by the calls for each of its parameters. */
typedef struct {
    const i64 *meta, *ptrs;
    float momentum, damp1, wd, decay, lr;
    const float *coef_index, *keep_index;
    float *out; /* sweep 1: [3, total] statistics; sweep 2: [total] cross terms */
    i64 total;
} Sweep;

typedef int (*one_fn)(const Sweep *s, i64 p, int nthreads, float *scratch, i64 w);

/* A thread's scratch: w ones, w zeros (filled once by new_scratch), then room for eight vectors of w. */
#define SCRATCH_VECTORS 10
static float *new_scratch(i64 w) {
    float *scratch = (float *)malloc((size_t)(SCRATCH_VECTORS * w) * sizeof(float));
    if (scratch)
        for (i64 i = 0; i < w; ++i) {
            scratch[i] = 1.0f;
            scratch[w + i] = 0.0f;
        }
    return scratch;
}

/* Sweep 1 of one parameter p. */
static int sweep1_one(const Sweep *s, i64 p, int nthreads, float *scratch, i64 w) {
    const float *ones = scratch;
    float *rows = scratch + 2 * w, *cols = scratch + 5 * w, *krow = scratch + 8 * w, *kcol = scratch + 9 * w;
    const i64 *m = s->meta + p * M_WIDTH;
    const i64 n0 = m[M_N0], n1 = m[M_N1], b = m[M_B], ra = m[M_ROW], ca = m[M_COL];
    const int uniform = (m[M_FLAGS] & F_UNIFORM) != 0, step = (m[M_FLAGS] & F_STEP) != 0;
    const float *kr = operand(s->keep_index, ra, n0, uniform, krow, ones);
    const float *kc = operand(s->keep_index, ca, n1, uniform, kcol, ones);
    float *x = (float *)(intptr_t)s->ptrs[3 * p], *buf = (float *)(intptr_t)s->ptrs[3 * p + 2];
    const float *g = (const float *)(intptr_t)s->ptrs[3 * p + 1];
    int rc = zg_sweep1(n0, n1, b, x, g, buf, s->momentum, s->damp1, s->wd, rows, ca >= 0 ? cols : NULL, step,
                       s->decay, s->lr, kr, kc, nthreads);
    for (int q = 0; q < 3 && rc == 0; ++q) {
        put_sums(s->out + q * s->total, ra, rows + q * n0, n0, uniform);
        put_sums(s->out + q * s->total, ca, cols + q * n1, n1, uniform);
    }
    return rc;
}

/* Sweep 2 of one parameter p (none when flagged F_SKIP). */
static int sweep2_one(const Sweep *s, i64 p, int nthreads, float *scratch, i64 w) {
    const i64 *m = s->meta + p * M_WIDTH;
    if (m[M_FLAGS] & F_SKIP) return 0;
    const float *ones = scratch, *zeros = scratch + w;
    float *crow = scratch + 2 * w, *ccol = scratch + 3 * w, *krow = scratch + 4 * w, *kcol = scratch + 5 * w;
    const i64 n0 = m[M_N0], n1 = m[M_N1], b = m[M_B], ra = m[M_ROW], ca = m[M_COL];
    const int uniform = (m[M_FLAGS] & F_UNIFORM) != 0;
    const float *cr = operand(s->coef_index, ra, n0, uniform, crow, zeros);
    const float *cc = operand(s->coef_index, ca, n1, uniform, ccol, zeros);
    const float *kr = operand(s->keep_index, ra, n0, uniform, krow, ones);
    const float *kc = operand(s->keep_index, ca, n1, uniform, kcol, ones);
    float *x = (float *)(intptr_t)s->ptrs[2 * p];
    const float *d = (const float *)(intptr_t)s->ptrs[2 * p + 1];
    const int both = s->coef_index && ra >= 0 && ca >= 0;
    return zg_sweep2(n0, n1, b, x, d, cr, cc, kr, kc, s->decay, s->lr, both ? s->out + ra : NULL,
                     both ? s->out + ca : NULL, nthreads);
}

/* Runs one() over `count` parameters as plan_work shares them out. */
static int run_all(i64 count, const Sweep *s, int nthreads, one_fn one) {
    if (nthreads < 1) nthreads = 1;
    const i64 w = widest(count, s->meta);
    Work *order = (Work *)malloc((size_t)(count > 0 ? count : 1) * sizeof(Work));
    float *scratch = new_scratch(w);
    if (!order || !scratch) {
        free(order);
        free(scratch);
        return -1;
    }
    const i64 big = plan_work(count, s->meta, nthreads, order);
    int rc = 0;
    for (i64 q = 0; q < big && rc == 0; ++q) rc = one(s, order[q].index, nthreads, scratch, w);
    free(scratch);
    if (rc == 0) {
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && count - big > 1)
        {
            float *mine = new_scratch(w);
#pragma omp for schedule(dynamic, 1)
            for (i64 q = big; q < count; ++q) {
                const int r = mine ? one(s, order[q].index, 1, mine, w) : -1;
                if (r != 0) {
#pragma omp atomic write
                    rc = r;
                }
            }
            free(mine);
        }
    }
    free(order);
    return rc;
}

/* Sweep 1 over `count` parameters (ptrs: x, g, buf per parameter; buf 0: no momentum). Statistics go
   to out, [3, total]: x², x·D and D² per owned index, in the layout's per-index order. keep_index:
   1 / 0 per owned index (NULL: nothing held); used by the plain step of parameters flagged F_STEP.
   Returns 0, or -1 when memory ran out (some parameters may have stepped). */
int zg_sweep1_all(i64 count, const i64 *meta, const i64 *ptrs, float momentum, float damp1, float wd,
                  float decay, float lr, const float *keep_index, float *out, i64 total, int nthreads) {
    const Sweep s = {meta, ptrs, momentum, damp1, wd, decay, lr, NULL, keep_index, out, total};
    return run_all(count, &s, nthreads, sweep1_one);
}

/* Sweep 2 over `count` parameters (ptrs: x, d per parameter; d 0: no direction), skipping those
   flagged F_SKIP. coef_index / keep_index: per owned index (NULL: no penalty / nothing held). The
   cross terms of parameters owned by rows and columns go to cross (per index, [total]).
   Returns 0, or -1 when memory ran out. */
int zg_sweep2_all(i64 count, const i64 *meta, const i64 *ptrs, float decay, float lr,
                  const float *coef_index, const float *keep_index, float *cross, i64 total, int nthreads) {
    const Sweep s = {meta, ptrs, 0.0f, 1.0f, 0.0f, decay, lr, coef_index, keep_index, cross, total};
    return run_all(count, &s, nthreads, sweep2_one);
}
