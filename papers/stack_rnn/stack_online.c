/* The paper's/code's online protocol (train_toy.cpp with StackRNN.h: -mod 1, -bptt 50) for the Stack RNN
 * core of model.py (R = 0, one-hot inputs), in double precision as the code: one SGD step after every
 * character of a training stream, in place on U, P, W.
 *
 * Step t runs the forward equations of stack_kernel.c. Then, if update[t], only step t's output error
 * (d loss / d logits = softmax - onehot(target), natural log) is injected and back-propagated through the
 * last d = min(L, updates since the last stack reset) steps, t-d+1 .. t (StackRNN.h's _count counts
 * backward() calls: every step in train_toy.cpp, only the steps after '=' in train_add.cpp). With -mod 1 the error moves back in
 * time only through the stacks: at every earlier step the hidden error starts at zero and collects what the
 * push values and actions of that step send it. Error signals (not parameter gradients) are clipped
 * element-wise to [-clip, clip] where the code clips them:
 *   - the hidden error from the output, before the stack and action terms are added;
 *   - the push pre-activation error (d push value * a_push * sigmoid');
 *   - the action error, before and after the softmax backward;
 *   - the error of the previous stacks, after the stack-to-stack terms and again after the P^T term;
 *   - the hidden pre-activation error, after sigmoid'.
 * Like the code, the backward pass uses each step's stored hidden values, actions and previous stacks, but
 * recomputes each push value from the current weights (StackRNN.h does not store it), and takes
 * sigmoid' = h (1 - h) whether or not the ±50 pre-activation clip was active. The last step back (t-d+1)
 * gets its P gradient from the stacks it read (the empty constant right after a reset): the unroll is
 * exactly d steps, so with fixed weights and no clipping the gradient is that of autograd through it.
 *
 * Speed: an error entering the top K cells reaches one cell deeper per step back, so only the top
 * R = K + L + 1 cells of each step's previous stacks are kept, and each step back runs over the cells the
 * error has reached. The parameter gradients of the d steps are summed after the backward pass as two small
 * matrix products (the per-step errors are kept), the products on the path run on padded copies of W and P
 * laid out along their vectors, and the stacks' scalar tails run after all their cell loops. The sums are
 * grouped by vector lanes and partial sums rather than in source order: results differ from a one-at-a-time
 * loop by rounding only, and are the same on every run.
 *
 * Layouts (row-major): U [V,H]; P [S*K,H]; W [H,O] with O = V + S*A + S (logits | action scores per stack |
 * push pre-activations); inputs/targets [T] int64; resets (empty the stacks before step t) and update [T]
 * uint8; stacks [S*D] in/out. dU, dP, dW receive the gradient of the last updated step. nll[0] receives
 * the sum over updated steps of -ln p(target), nll[1] their number. Returns 0, or 1 if out of memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY (-1.0)
#define PRE_CLIP 50.0
/* The backward pass runs on vectors of LANES doubles (the GCC/Clang vector extension), one vector register:
 * 4 with AVX, AVX2 or AVX-512 (8 is no faster on the AVX-512 EPYC this was measured on, and 4 gives every
 * AVX machine the same results), else 2 (SSE2, NEON); vectors wider than the registers are split through
 * memory, several times slower. Sums are grouped by lanes in a fixed way, so results depend on LANES but
 * neither on the compiler's choices nor on where the arrays lie. The arrays these loops read are padded with
 * zeros to whole vectors, so they have no remainder loops. */
#if defined(__AVX__)
#define LANES 4
#else
#define LANES 2
#endif
/* rows of a gradient product summed together, their sums held in registers */
#define BLOCK 4

typedef double vec __attribute__((vector_size(LANES * sizeof(double))));
typedef int64_t lane_mask __attribute__((vector_size(LANES * sizeof(int64_t))));

static vec load(const double *p) { /* any alignment */
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
static void store(double *p, vec v) { memcpy(p, &v, sizeof v); }
static vec splat(double x) { return x - (vec){0}; } /* x - 0 keeps the sign of a zero (x + 0 would not) */
static vec pick(lane_mask m, vec yes, vec no) { return (vec)((m & (lane_mask)yes) | (~m & (lane_mask)no)); }
static double lane_sum(vec v) {
    double s[LANES];
    memcpy(s, &v, sizeof s);
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) s[l] += s[l + width];
    return s[0];
}
static int64_t padded(int64_t n, int64_t block) { return (n + block - 1) / block * block; }

static double sigmoid(double x) {
    x = x < -PRE_CLIP ? -PRE_CLIP : (x > PRE_CLIP ? PRE_CLIP : x);
    return 1.0 / (1.0 + exp(-x));
}
static double clipv(double x, double c) { return x < -c ? -c : (x > c ? c : x); }
static vec clip_lanes(vec x, double c) { /* clipv on every lane */
    const vec hi = splat(c), lo = -hi;
    x = pick((lane_mask)(x < lo), lo, x);
    return pick((lane_mask)(x > hi), hi, x);
}

/* out[r][c] = the sum over j = 0 .. n-1, in that order, of a_j[r] b_j[c], where a_j = a + j a_step and
 * b_j = b + j b_step, for r < rows rounded up to BLOCK and c < cols rounded up to LANES (out's rows:
 * out_stride). */
static void sum_outer_products(int64_t n, int64_t rows, int64_t cols, const double *a, int64_t a_step,
                               const double *b, int64_t b_step, double *restrict out, int64_t out_stride) {
    for (int64_t r0 = 0; r0 < rows; r0 += BLOCK)
        for (int64_t c0 = 0; c0 < cols; c0 += LANES) {
            vec acc[BLOCK];
            for (int r = 0; r < BLOCK; r++) acc[r] = splat(0);
            for (int64_t j = 0; j < n; j++) {
                const double *aj = a + j * a_step + r0;
                const vec bj = load(b + j * b_step + c0);
                for (int r = 0; r < BLOCK; r++) acc[r] += splat(aj[r]) * bj;
            }
            for (int r = 0; r < BLOCK; r++) store(out + (r0 + r) * out_stride + c0, acc[r]);
        }
}

/* y[c] = the sum over i < n of x[i] m[i][c], for c < cols rounded up to LANES (m's rows: m_stride). The sum
 * is taken as four interleaved partial sums (i = p, p + 4, ..), added as (s0 + s1) + (s2 + s3): four
 * independent chains of additions rather than one of n. */
static void vector_times_matrix(int64_t n, int64_t cols, const double *x, const double *m, int64_t m_stride,
                                double *restrict y) {
    for (int64_t c0 = 0; c0 < cols; c0 += LANES) {
        vec part[4];
        for (int p = 0; p < 4; p++) part[p] = splat(0);
        int64_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int p = 0; p < 4; p++) part[p] += splat(x[i + p]) * load(m + (i + p) * m_stride + c0);
        for (int p = 0; i < n; i++, p++) part[p] += splat(x[i]) * load(m + i * m_stride + c0);
        store(y + c0, (part[0] + part[1]) + (part[2] + part[3]));
    }
}

int stack_online_f64(int64_t T, int64_t V, int64_t H, int64_t S, int64_t K, int64_t A, int64_t D, int64_t L,
                     const int64_t *inputs, const int64_t *targets, const uint8_t *resets,
                     const uint8_t *update, double lr, double clip, double *U, double *P, double *W,
                     double *stacks, double *dU, double *dP, double *dW, double *nll) {
    const int64_t C = S * A + S, O = V + C, R = D < K + L + 1 ? D : K + L + 1, SK = S * K;
    /* padded row lengths: hidden-sized rows, the stack columns of W, the rows of P, the stacks */
    const int64_t HP = padded(H, LANES), CP = padded(C, BLOCK), SKP = padded(SK, LANES);
    const int64_t SP = padded(S, LANES);
    /* a stack row holds cell i at [1 + i] and zeros around: the reads of cell i-1 and i+1 of the backward
     * pass need no special case at the top, and cells from R on are zero */
    const int64_t RS = padded(R, LANES) + LANES;
    /* What the backward pass needs of the last L steps. Rings of L rows indexed by t % L: the input, the
     * actions, the previous stacks (top R cells and the one below them, which a POP moves up: the empty
     * value when R = D). The hidden values and the top K cells of the previous stacks (what P read) are
     * written twice, at rows t % L and t % L + L, so that steps t, t-1, .., t-L+1 are consecutive rows
     * (descending) for the gradient products. */
    int64_t *seen_x = malloc(L * sizeof(int64_t));
    double *seen_a = malloc(L * S * A * sizeof(double)), *seen_prev = calloc(L * S * RS, sizeof(double));
    double *seen_h = calloc(2 * L * HP, sizeof(double)), *seen_top = calloc(2 * L * SKP, sizeof(double));
    /* per step back j: the errors of the stack columns of W and of the hidden pre-activation */
    double *err_c = calloc(L * CP, sizeof(double)), *err_h = calloc(L * HP, sizeof(double));
    /* g: the error of the stacks after step tau; gp: before it (the previous stacks) */
    double *g = calloc(S * RS, sizeof(double)), *gp = calloc(S * RS, sizeof(double));
    /* padded copies of the weights in the layouts the backward pass reads along: W's stack columns
     * transposed [C][HP], W's push columns [H][SP], P transposed [H][SKP] */
    double *WT = calloc(C * HP, sizeof(double)), *W_push = calloc(H * SP, sizeof(double));
    double *PT = calloc(H * SKP, sizeof(double));
    /* the gradient of P [SK][HP] and of W's stack columns [C][HP] (transposed), as the products leave them */
    double *grad_p = malloc(padded(SK, BLOCK) * HP * sizeof(double));
    double *grad_wt = malloc(CP * HP * sizeof(double));
    double *nxt = malloc(S * D * sizeof(double)), *out = malloc(O * sizeof(double));
    double *d_logit = malloc(V * sizeof(double)), *push = malloc(SP * sizeof(double));
    double *top_err = malloc(SKP * sizeof(double)), *action_sums = malloc(S * 3 * LANES * sizeof(double));
    int ok = seen_x && seen_a && seen_prev && seen_h && seen_top && err_c && err_h && g && gp && WT &&
             W_push && PT && grad_p && grad_wt && nxt && out && d_logit && push && top_err &&
             action_sums;
    if (ok) {
        double *stk = stacks, *other = nxt;
        int64_t since_reset = 0, slot = 0;
        nll[0] = nll[1] = 0;
        for (int64_t t = 0; t < T; t++, slot = slot + 1 < L ? slot + 1 : 0) {
            if (t == 0 || update[t - 1]) /* the weights changed: refresh the copies */
                for (int64_t h = 0; h < H; h++) {
                    for (int64_t c = 0; c < C; c++) WT[c * HP + h] = W[h * O + V + c];
                    for (int64_t s = 0; s < S; s++) W_push[h * SP + s] = W[h * O + V + S * A + s];
                    for (int64_t sk = 0; sk < SK; sk++) PT[h * SKP + sk] = P[sk * H + h];
                }
            if (resets[t]) {
                for (int64_t i = 0; i < S * D; i++) stk[i] = EMPTY;
                since_reset = 0;
            }
            /* ---- forward ---- */
            double *hid = seen_h + slot * HP, *act = seen_a + slot * S * A, *prev = seen_prev + slot * S * RS;
            double *top_cells = seen_top + slot * SKP;
            seen_x[slot] = inputs[t];
            for (int64_t s = 0; s < S; s++) {
                memcpy(prev + s * RS + 1, stk + s * D, R * sizeof(double));
                prev[s * RS + 1 + R] = R < D ? stk[s * D + R] : EMPTY;
                memcpy(top_cells + s * K, stk + s * D, K * sizeof(double));
            }
            memcpy(top_cells + L * SKP, top_cells, SK * sizeof(double));
            const double *u = U + inputs[t] * H;
            for (int64_t h = 0; h < H; h++) hid[h] = u[h];
            for (int64_t s = 0; s < S; s++)
                for (int64_t k = 0; k < K; k++) {
                    const double cell = stk[s * D + k], *p = P + (s * K + k) * H;
                    for (int64_t h = 0; h < H; h++) hid[h] += cell * p[h];
                }
            for (int64_t h = 0; h < H; h++) hid[h] = sigmoid(hid[h]);
            memcpy(hid + L * HP, hid, H * sizeof(double));
            for (int64_t o = 0; o < O; o++) out[o] = 0;
            for (int64_t h = 0; h < H; h++) {
                const double hv = hid[h], *w = W + h * O;
                for (int64_t o = 0; o < O; o++) out[o] += hv * w[o];
            }
            for (int64_t s = 0; s < S; s++) {
                const double *score = out + V + s * A;
                double *a = act + s * A, top = score[0], total = 0;
                for (int64_t k = 1; k < A; k++) top = score[k] > top ? score[k] : top;
                for (int64_t k = 0; k < A; k++) total += a[k] = exp(score[k] - top);
                for (int64_t k = 0; k < A; k++) a[k] /= total;
                const double pv = sigmoid(out[V + S * A + s]), *old = stk + s * D;
                double *new = other + s * D;
                const double p0 = a[0], p1 = a[1];
                new[0] = p0 * pv + p1 * (D > 1 ? old[1] : EMPTY);
                for (int64_t i = 1; i < D - 1; i++) new[i] = p0 * old[i - 1] + p1 * old[i + 1];
                if (D > 1) new[D - 1] = p0 * old[D - 2] + p1 * EMPTY;
                if (A == 3)
                    for (int64_t i = 0; i < D; i++) new[i] += a[2] * old[i];
            }
            double *swap = stk;
            stk = other;
            other = swap;
            if (!update[t]) continue;
            since_reset++; /* StackRNN.h's _count: backward() calls since the reset, not steps */
            /* d loss / d logits = softmax - onehot(target) */
            double top_logit = out[0], total = 0;
            for (int64_t v = 1; v < V; v++) top_logit = out[v] > top_logit ? out[v] : top_logit;
            for (int64_t v = 0; v < V; v++) total += d_logit[v] = exp(out[v] - top_logit);
            for (int64_t v = 0; v < V; v++) d_logit[v] /= total;
            nll[0] -= log(d_logit[targets[t]]);
            nll[1] += 1;
            d_logit[targets[t]] -= 1;
            /* ---- backward through the last d steps ---- */
            const int64_t d = since_reset < L ? since_reset : L;
            double *e = err_h; /* j = 0: the hidden error from the output, clipped */
            for (int64_t h = 0; h < H; h++) {
                const double *w = W + h * O;
                double v = 0;
                for (int64_t o = 0; o < V; o++) v += w[o] * d_logit[o];
                e[h] = clipv(v, clip);
            }
            memset(g, 0, S * RS * sizeof(double));
            memset(gp, 0, S * RS * sizeof(double));
            int64_t reach = 0; /* g is non-zero in cells [0, reach) only */
            for (int64_t j = 0; j < d; j++) {
                const int64_t sl = slot >= j ? slot - j : slot - j + L;
                const double *h_tau = seen_h + sl * HP, *a_tau = seen_a + sl * S * A;
                double *prev_tau = seen_prev + sl * S * RS, *ec = err_c + j * CP;
                e = err_h + j * HP;
                int64_t next_reach = reach + 1 < R ? reach + 1 : R;
                if (next_reach < K) next_reach = K < R ? K : R;
                if (reach > 0) {
                    /* push values from the current weights, as the code recomputes them */
                    vector_times_matrix(H, S, h_tau, W_push, SP, push);
                    for (int64_t s = 0; s < S; s++) push[s] = sigmoid(push[s]);
                    /* first the cell loops of all stacks, then their action errors: the short scalar tails of
                     * the stacks are then independent of each other and overlap */
                    for (int64_t s = 0; s < S; s++) {
                        const double *gs = g + s * RS + 1, *a = a_tau + s * A;
                        const double *old = prev_tau + s * RS + 1;
                        double *gps = gp + s * RS + 1;
                        /* d a_push (but for cell 0's term, added below), d a_pop (, d a_noop), and the error
                         * of the previous stacks: a PUSH moved cell i-1 to i, a POP cell i+1 to i; cells at
                         * and beyond reach carry zero error */
                        const vec a_push = splat(a[0]), a_pop = splat(a[1]);
                        const vec a_noop = splat(A == 3 ? a[2] : 0);
                        vec sum_push = splat(0), sum_pop = splat(0), sum_noop = splat(0);
                        for (int64_t i = 0; i < next_reach; i += LANES) {
                            const vec err = load(gs + i);
                            sum_push += err * load(old + i - 1);
                            sum_pop += err * load(old + i + 1);
                            vec moved = a_push * load(gs + i + 1) + a_pop * load(gs + i - 1);
                            if (A == 3) {
                                sum_noop += err * load(old + i);
                                moved += a_noop * err;
                            }
                            store(gps + i, clip_lanes(moved, clip));
                        }
                        gps[R] = 0; /* below the kept cells (a block may have spilled into it) */
                        store(action_sums + (s * 3 + 0) * LANES, sum_push);
                        store(action_sums + (s * 3 + 1) * LANES, sum_pop);
                        store(action_sums + (s * 3 + 2) * LANES, sum_noop);
                    }
                    for (int64_t s = 0; s < S; s++) {
                        const double pv = push[s], *a = a_tau + s * A, err_top = g[s * RS + 1];
                        const double *sums = action_sums + s * 3 * LANES;
                        ec[S * A + s] = clipv(err_top * a[0] * pv * (1 - pv), clip); /* push pre-activation */
                        /* a PUSH wrote the push value on top */
                        const double d_push = clipv(lane_sum(load(sums)) + err_top * pv, clip);
                        const double d_pop = clipv(lane_sum(load(sums + LANES)), clip);
                        const double d_noop = A == 3 ? clipv(lane_sum(load(sums + 2 * LANES)), clip) : 0;
                        /* the softmax backward, then clipped */
                        const double dot = a[0] * d_push + a[1] * d_pop + (A == 3 ? a[2] * d_noop : 0);
                        ec[s * A] = clipv(a[0] * (d_push - dot), clip);
                        ec[s * A + 1] = clipv(a[1] * (d_pop - dot), clip);
                        if (A == 3) ec[s * A + 2] = clipv(a[2] * (d_noop - dot), clip);
                    }
                    /* the hidden error they send through W's stack columns, then sigmoid' and the clip */
                    vector_times_matrix(C, H, ec, WT, HP, e);
                    for (int64_t h0 = 0; h0 < HP; h0 += LANES) {
                        const vec hv = load(h_tau + h0);
                        store(e + h0, clip_lanes(load(e + h0) * hv * (splat(1) - hv), clip));
                    }
                } else {
                    for (int64_t h = 0; h < H; h++) e[h] = clipv(e[h] * h_tau[h] * (1 - h_tau[h]), clip);
                }
                /* error of the top K cells of the previous stacks through P, then clipped */
                vector_times_matrix(H, SK, e, PT, SKP, top_err);
                for (int64_t s = 0; s < S; s++)
                    for (int64_t k = 0; k < K && k < R; k++)
                        gp[s * RS + 1 + k] = clipv(gp[s * RS + 1 + k] + top_err[s * K + k], clip);
                reach = next_reach;
                double *sw = g;
                g = gp;
                gp = sw;
            }
            /* ---- parameter gradients of the d steps (each a sum over the steps in the order j = 0, 1, ..),
             * then the SGD step ---- */
            memset(dU, 0, V * H * sizeof(double));
            for (int64_t j = 0; j < d; j++) {
                double *du = dU + seen_x[slot >= j ? slot - j : slot - j + L] * H;
                const double *ej = err_h + j * HP;
                for (int64_t h = 0; h < H; h++) du[h] += ej[h];
            }
            /* steps t, t-1, .. are the descending rows from slot + L of the twice-written rings */
            sum_outer_products(d, SK, H, seen_top + (slot + L) * SKP, -SKP, err_h, HP, grad_p, HP);
            sum_outer_products(d - 1, C, H, err_c + CP, CP, seen_h + (slot + L - 1) * HP, -HP, grad_wt, HP);
            for (int64_t sk = 0; sk < SK; sk++)
                for (int64_t h = 0; h < H; h++) dP[sk * H + h] = grad_p[sk * HP + h];
            for (int64_t h = 0; h < H; h++) {
                double *dw = dW + h * O;
                for (int64_t o = 0; o < V; o++) dw[o] = hid[h] * d_logit[o];
                for (int64_t c = 0; c < C; c++) dw[V + c] = grad_wt[c * HP + h];
            }
            for (int64_t i = 0; i < V * H; i++) U[i] -= lr * dU[i];
            for (int64_t i = 0; i < SK * H; i++) P[i] -= lr * dP[i];
            for (int64_t i = 0; i < H * O; i++) W[i] -= lr * dW[i];
        }
        if (stk != stacks) memcpy(stacks, stk, S * D * sizeof(double));
    }
    free(seen_x); free(seen_a); free(seen_prev); free(seen_h); free(seen_top); free(err_c); free(err_h);
    free(g); free(gp); free(WT); free(W_push); free(PT); free(grad_p); free(grad_wt); free(nxt); free(out);
    free(d_logit); free(push); free(top_err); free(action_sums);
    return !ok;
}
