/* Next-token sampling: greedy, or temperature + nucleus (top-p) with a seeded generator so a
 * given seed always gives the same text. */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdlib.h>

struct rf_sampler {
    float temp, top_p;
    uint64_t state;
    int vocab;
    float *prob;
    struct cand { float p; int id; } *order;
};

rf_status rf_sampler_create(float temp, float top_p, uint64_t seed, int vocab, rf_sampler **out, rf_err *err)
{
    *out = NULL;
    if (!(temp >= 0) || !(top_p > 0 && top_p <= 1) || vocab <= 0)
        return rf_err_set(err, RF_ERR_INVALID, "sampler: need temperature >= 0, top-p in (0, 1] (got %g, %g)",
                          (double)temp, (double)top_p);
    rf_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->prob = malloc((size_t)vocab * sizeof(float));
        s->order = malloc((size_t)vocab * sizeof *s->order);
    }
    if (!s || !s->prob || !s->order) {
        rf_sampler_free(s);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory for a sampler");
    }
    s->temp = temp;
    s->top_p = top_p;
    s->state = seed;
    s->vocab = vocab;
    *out = s;
    return RF_OK;
}

void rf_sampler_free(rf_sampler *s)
{
    if (!s) return;
    free(s->prob);
    free(s->order);
    free(s);
}

/* splitmix64: tiny, good enough for sampling, identical on every platform. */
static double next_uniform(rf_sampler *s)
{
    uint64_t z = (s->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_prob_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

int rf_sampler_sample(rf_sampler *s, const float *logits)
{
    int n = s->vocab, best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temp == 0) return best;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = (float)exp((double)(logits[i] - logits[best]) / s->temp);
        sum += s->prob[i];
    }
    for (int i = 0; i < n; i++) s->prob[i] = (float)(s->prob[i] / sum);
    int keep = n;
    for (int i = 0; i < n; i++) s->order[i] = (struct cand){s->prob[i], i};
    if (s->top_p < 1) {
        qsort(s->order, (size_t)n, sizeof *s->order, by_prob_desc);
        double c = 0;
        for (keep = 0; keep < n;) {
            c += s->order[keep++].p;
            if (c >= s->top_p) break;
        }
        sum = c;
    } else {
        sum = 1;
    }
    double r = next_uniform(s) * sum, c = 0;
    for (int i = 0; i < keep; i++) {
        c += s->order[i].p;
        if (r < c) return s->order[i].id;
    }
    /* r at the very top after rounding: the last id that can be drawn at all (a masked id, logit
     * -inf, has p = 0 and must never come out) */
    for (int i = keep - 1; i > 0; i--)
        if (s->order[i].p > 0) return s->order[i].id;
    return s->order[0].id;
}
