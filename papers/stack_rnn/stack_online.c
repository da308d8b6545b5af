/* The paper's/code's online protocol (train_toy.cpp with StackRNN.h: -mod 1, -bptt 50) for the Stack RNN
 * core of model.py (R = 0, one-hot inputs), in double precision as the code: one SGD step after every
 * character of a training stream, in place on U, P, W.
 *
 * Step t runs the forward equations of stack_kernel.c. Then, if update[t], only step t's output error
 * (d loss / d logits = softmax - onehot(target), natural log) is injected and back-propagated through the
 * last d = min(L, steps since the last stack reset) steps, t-d+1 .. t. With -mod 1 the error moves back in
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
 * R = K + L + 1 cells of each step's previous stacks are kept; the parameter gradients of the d steps are
 * summed after the backward pass as two small matrix products (the per-step errors are kept), and the
 * on-path products run on a transposed copy of W's stack columns so that their loops are contiguous.
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

static double sigmoid(double x) {
    x = x < -PRE_CLIP ? -PRE_CLIP : (x > PRE_CLIP ? PRE_CLIP : x);
    return 1.0 / (1.0 + exp(-x));
}
static double clipv(double x, double c) { return x < -c ? -c : (x > c ? c : x); }
/* y += a x: a separate function (restrict, not inlined) so that the compiler vectorises it rather than fusing
 * two iterations of the caller's loop into one scalar loop; each y[i] still adds its terms in the same order */
static __attribute__((noinline)) void axpy(int64_t n, double a, const double *restrict x, double *restrict y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

int stack_online_f64(int64_t T, int64_t V, int64_t H, int64_t S, int64_t K, int64_t A, int64_t D, int64_t L,
                     const int64_t *inputs, const int64_t *targets, const uint8_t *resets,
                     const uint8_t *update, double lr, double clip, double *U, double *P, double *W,
                     double *stacks, double *dU, double *dP, double *dW, double *nll) {
    const int64_t C = S * A + S, O = V + C, R = D < K + L + 1 ? D : K + L + 1, R1 = R + 1;
    const int64_t SK = S * K;
    /* ring of the last L steps: input, hidden values, actions, previous stacks (top R cells and the one
     * below them, which a POP moves up: the empty value when R = D) */
    int64_t *ring_x = malloc(L * sizeof(int64_t));
    double *ring_h = malloc(L * H * sizeof(double)), *ring_a = malloc(L * S * A * sizeof(double));
    double *ring_prev = malloc(L * S * R1 * sizeof(double));
    /* per step back: the errors of the stack columns of W and of the hidden pre-activation */
    double *err_c = malloc(L * C * sizeof(double)), *err_h = malloc(L * H * sizeof(double));
    double *nxt = malloc(S * D * sizeof(double)), *out = malloc(O * sizeof(double));
    double *g = malloc(S * R1 * sizeof(double)), *gp = malloc(S * R1 * sizeof(double));
    double *WT = malloc(C * H * sizeof(double)), *d_logit = malloc(V * sizeof(double));
    double *push = malloc(S * sizeof(double));
    int ok = ring_x && ring_h && ring_a && ring_prev && err_c && err_h && nxt && out && g && gp && WT &&
             d_logit && push;
    if (ok) {
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++) WT[c * H + h] = W[h * O + V + c];
        double *stk = stacks, *other = nxt;
        int64_t since_reset = 0;
        nll[0] = nll[1] = 0;
        for (int64_t t = 0; t < T; t++) {
            const int64_t slot = t % L;
            if (resets[t]) {
                for (int64_t i = 0; i < S * D; i++) stk[i] = EMPTY;
                since_reset = 0;
            }
            since_reset++;
            /* ---- forward ---- */
            double *hid = ring_h + slot * H, *act = ring_a + slot * S * A, *prev = ring_prev + slot * S * R1;
            ring_x[slot] = inputs[t];
            for (int64_t s = 0; s < S; s++) {
                memcpy(prev + s * R1, stk + s * D, R * sizeof(double));
                prev[s * R1 + R] = R < D ? stk[s * D + R] : EMPTY;
            }
            const double *u = U + inputs[t] * H;
            for (int64_t h = 0; h < H; h++) hid[h] = u[h];
            for (int64_t s = 0; s < S; s++)
                for (int64_t k = 0; k < K; k++) {
                    const double cell = stk[s * D + k], *p = P + (s * K + k) * H;
                    for (int64_t h = 0; h < H; h++) hid[h] += cell * p[h];
                }
            for (int64_t h = 0; h < H; h++) hid[h] = sigmoid(hid[h]);
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
            /* d loss / d logits = softmax - onehot(target) */
            double top = out[0], total = 0;
            for (int64_t v = 1; v < V; v++) top = out[v] > top ? out[v] : top;
            for (int64_t v = 0; v < V; v++) total += d_logit[v] = exp(out[v] - top);
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
            memset(g, 0, S * R1 * sizeof(double)); /* cells at or beyond `reach` stay zero */
            memset(gp, 0, S * R1 * sizeof(double));
            int64_t reach = 0; /* g: error of the stacks after step tau, non-zero in cells [0, reach) */
            for (int64_t j = 0; j < d; j++) {
                const int64_t sl = (t - j) % L;
                const double *h_tau = ring_h + sl * H, *a_tau = ring_a + sl * S * A;
                const double *old_all = ring_prev + sl * S * R1;
                double *ec = err_c + j * C;
                e = err_h + j * H;
                int64_t next_reach = reach + 1 < R ? reach + 1 : R;
                if (next_reach < K) next_reach = K < R ? K : R;
                if (j > 0)
                    for (int64_t h = 0; h < H; h++) e[h] = 0;
                if (reach > 0) {
                    /* push values from the current weights, as the code recomputes them */
                    for (int64_t s = 0; s < S; s++) {
                        const double *w = WT + (S * A + s) * H;
                        double z = 0;
                        _Pragma("omp simd reduction(+ : z)")
                        for (int64_t h = 0; h < H; h++) z += w[h] * h_tau[h];
                        push[s] = sigmoid(z);
                    }
                    for (int64_t s = 0; s < S; s++) {
                        const double pv = push[s], *gs = g + s * R1, *old = old_all + s * R1, *a = a_tau + s * A;
                        double *gps = gp + s * R1;
                        /* d a_push, d a_pop (, d a_noop): cells beyond reach carry zero error */
                        double d0 = 0, d1 = 0, d2 = 0;
                        _Pragma("omp simd reduction(+ : d0, d1)")
                        for (int64_t i = 1; i < reach; i++) {
                            d0 += gs[i] * old[i - 1];
                            d1 += gs[i] * old[i + 1];
                        }
                        d0 += gs[0] * pv;
                        d1 += gs[0] * old[1];
                        if (A == 3) {
                            _Pragma("omp simd reduction(+ : d2)")
                            for (int64_t i = 0; i < reach; i++) d2 += gs[i] * old[i];
                        }
                        /* error of the previous stacks: a PUSH moved cell i-1 to i, a POP cell i+1 to i */
                        const double noop = A == 3 ? a[2] : 0;
                        gps[0] = clipv(a[0] * gs[1] + noop * gs[0], clip);
                        for (int64_t i = 1; i < next_reach; i++)
                            gps[i] = clipv(a[0] * gs[i + 1] + a[1] * gs[i - 1] + noop * gs[i], clip);
                        ec[S * A + s] = clipv(gs[0] * a[0] * pv * (1 - pv), clip); /* push pre-activation */
                        double da[3] = {clipv(d0, clip), clipv(d1, clip), clipv(d2, clip)}, dot = 0;
                        for (int64_t k = 0; k < A; k++) dot += a[k] * da[k];
                        for (int64_t k = 0; k < A; k++) ec[s * A + k] = clipv(a[k] * (da[k] - dot), clip);
                    }
                    for (int64_t c = 0; c < C; c++) {
                        const double ev = ec[c], *w = WT + c * H;
                        for (int64_t h = 0; h < H; h++) e[h] += w[h] * ev;
                    }
                } else {
                    for (int64_t c = 0; c < C; c++) ec[c] = 0;
                }
                /* hidden pre-activation error, clipped */
                for (int64_t h = 0; h < H; h++) e[h] = clipv(e[h] * h_tau[h] * (1 - h_tau[h]), clip);
                /* error of the top K cells of the previous stacks through P, then clipped */
                for (int64_t s = 0; s < S; s++)
                    for (int64_t k = 0; k < K && k < R; k++) {
                        const double *p = P + (s * K + k) * H;
                        double v = 0;
                        _Pragma("omp simd reduction(+ : v)")
                        for (int64_t h = 0; h < H; h++) v += p[h] * e[h];
                        gp[s * R1 + k] = clipv(gp[s * R1 + k] + v, clip);
                    }
                reach = next_reach;
                double *sw = g;
                g = gp;
                gp = sw;
            }
            /* ---- parameter gradients of the d steps, then the SGD step ---- */
            memset(dU, 0, V * H * sizeof(double));
            for (int64_t j = 0; j < d; j++) {
                double *du = dU + ring_x[(t - j) % L] * H;
                const double *ej = err_h + j * H;
                for (int64_t h = 0; h < H; h++) du[h] += ej[h];
            }
            for (int64_t sk = 0; sk < SK; sk++) {
                const int64_t s = sk / K, k = sk % K;
                double *dp = dP + sk * H;
                for (int64_t h = 0; h < H; h++) dp[h] = 0;
                for (int64_t j = 0; j < d; j++) {
                    const double cell = ring_prev[((t - j) % L) * S * R1 + s * R1 + k], *ej = err_h + j * H;
                    axpy(H, cell, ej, dp);
                }
            }
            for (int64_t h = 0; h < H; h++) {
                double *dw = dW + h * O;
                const double ht = hid[h];
                for (int64_t o = 0; o < V; o++) dw[o] = ht * d_logit[o];
                double *dc = dw + V;
                for (int64_t c = 0; c < C; c++) dc[c] = 0;
                for (int64_t j = 1; j < d; j++) {
                    const double hv = ring_h[((t - j) % L) * H + h], *ec = err_c + j * C;
                    axpy(C, hv, ec, dc);
                }
            }
            for (int64_t i = 0; i < V * H; i++) U[i] -= lr * dU[i];
            for (int64_t i = 0; i < SK * H; i++) P[i] -= lr * dP[i];
            for (int64_t i = 0; i < H * O; i++) W[i] -= lr * dW[i];
            for (int64_t c = 0; c < C; c++)
                for (int64_t h = 0; h < H; h++) WT[c * H + h] = W[h * O + V + c];
        }
        if (stk != stacks) memcpy(stacks, stk, S * D * sizeof(double));
    }
    free(ring_x); free(ring_h); free(ring_a); free(ring_prev); free(err_c); free(err_h); free(nxt);
    free(out); free(g); free(gp); free(WT); free(d_logit); free(push);
    return !ok;
}
