/* LoRA / LoCon / LoHa / LoKr files and their deltas (lora.h; the math and the names: docs/lora.md).
 *
 * Deltas are computed in fp32 from fp32 copies of the factors and added to the fp32 copy of the weight:
 * W' = W + sum(strength x scale x delta), the products strength x scale x delta formed in double and
 * rounded once. The cost is one [out, rank] x [rank, in] product per patched layer, once per load. */
#include "nodes/models/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

/* The parts of a module's update, by the suffix of their tensor names. */
enum fr__part {
  P_DOWN,
  P_UP,
  P_MID,
  P_ALPHA, /* LoRA / LoCon (kohya, PEFT, diffusers) */
  P_W1A,
  P_W1B,
  P_W2A,
  P_W2B,
  P_T1,
  P_T2, /* LoHa */
  P_K1,
  P_K1A,
  P_K1B,
  P_K2,
  P_K2A,
  P_K2B,
  P_KT2, /* LoKr */
  P_N
};

static const struct {
  const char *suffix;
  enum fr__part part;
} fr__parts[] = {
    {".lora_down.weight", P_DOWN},
    {".lora_up.weight", P_UP},
    {".lora_mid.weight", P_MID},
    {".lora_A.weight", P_DOWN},
    {".lora_B.weight", P_UP},
    {".lora.down.weight", P_DOWN},
    {".lora.up.weight", P_UP},
    {".alpha", P_ALPHA},
    {".hada_w1_a", P_W1A},
    {".hada_w1_b", P_W1B},
    {".hada_w2_a", P_W2A},
    {".hada_w2_b", P_W2B},
    {".hada_t1", P_T1},
    {".hada_t2", P_T2},
    {".lokr_w1", P_K1},
    {".lokr_w1_a", P_K1A},
    {".lokr_w1_b", P_K1B},
    {".lokr_w2", P_K2},
    {".lokr_w2_a", P_K2A},
    {".lokr_w2_b", P_K2B},
    {".lokr_t2", P_KT2},
};

/* Name prefixes of each space (the trainers' roots for the UNet and the two text encoders). */
static const struct {
  const char *prefix;
  enum fr_lora_space space;
} fr__spaces[] = {
    {"lora_unet_", FR_LORA_UNET},        {"unet.", FR_LORA_UNET},
    {"diffusion_model.", FR_LORA_UNET},  {"lora_te2_", FR_LORA_CLIP_G},
    {"text_encoder_2.", FR_LORA_CLIP_G}, {"lora_te1_", FR_LORA_CLIP_L},
    {"lora_te_", FR_LORA_CLIP_L},        {"text_encoder.", FR_LORA_CLIP_L},
};

struct fr__mod {
  char *name; /* the module name: the key without its part suffix */
  enum fr_lora_space space;
  const struct fr_st_entry *p[P_N];
  int applied; /* tensors it was added to */
};

struct fr__lora {
  char *path;
  struct fr_safetensors *st;
  double strength;
  struct fr__mod *mods; /* sorted by name */
  int n_mods;
};

struct fr_lora_set {
  struct fr__lora *l;
  int n;
};

struct fr_lora_set *fr_lora_set_new(void) {
  return fr_calloc(1, sizeof(struct fr_lora_set));
}

static void fr__lora_clear(struct fr__lora *l) {
  for (int i = 0; i < l->n_mods; i++)
    fr_free(l->mods[i].name);
  fr_free(l->mods);
  fr_free(l->path);
  fr_st_close(l->st);
}

void fr_lora_set_free(struct fr_lora_set *s) {
  if (!s)
    return;
  for (int i = 0; i < s->n; i++)
    fr__lora_clear(&s->l[i]);
  fr_free(s->l);
  fr_free(s);
}

int fr_lora_set_count(const struct fr_lora_set *s) {
  return s ? s->n : 0;
}

static bool fr__ends(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

static bool fr__starts(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

static int fr__mod_cmp(const void *a, const void *b) {
  return strcmp(((const struct fr__mod *)a)->name, ((const struct fr__mod *)b)->name);
}

static struct fr__mod *fr__find_mod(const struct fr__lora *l, const char *name) {
  struct fr__mod key = {.name = (char *)name};
  return bsearch(&key, l->mods, (size_t)l->n_mods, sizeof key, fr__mod_cmp);
}

static enum fr_lora_space fr__space_of(const char *name) {
  for (size_t i = 0; i < sizeof fr__spaces / sizeof fr__spaces[0]; i++)
    if (fr__starts(name, fr__spaces[i].prefix))
      return fr__spaces[i].space;
  return FR_LORA_UNKNOWN;
}

enum fr_status fr_lora_set_add(struct fr_lora_set *s, const char *path, double strength, struct fr_err *err) {
  struct fr__lora *nl = fr_realloc(s->l, (size_t)(s->n + 1) * sizeof *nl);
  if (!nl)
    return fr_errf(err, FR_E_NOMEM, "out of memory opening LoRA %s", path);
  s->l = nl;
  struct fr__lora *l = &s->l[s->n];
  memset(l, 0, sizeof *l);
  l->strength = strength;
  l->path = fr_strdup(path);
  if (!l->path)
    return fr_errf(err, FR_E_NOMEM, "out of memory opening LoRA %s", path);
  s->n++; /* from here on fr_lora_set_free releases it */
  enum fr_status rc = fr_st_open(path, &l->st, err);
  if (rc)
    return fr_err_prefix(err, rc, "LoRA: ");
  l->mods = fr_calloc((size_t)(l->st->n ? l->st->n : 1), sizeof *l->mods);
  if (!l->mods)
    return fr_errf(err, FR_E_NOMEM, "out of memory opening LoRA %s", path);
  /* group the tensors by module: a linear pass into an array, then sort and merge equal names */
  int n = 0;
  for (int i = 0; i < l->st->n; i++) {
    const struct fr_st_entry *e = &l->st->entries[i];
    size_t len = strlen(e->name);
    int part = -1;
    for (size_t k = 0; k < sizeof fr__parts / sizeof fr__parts[0]; k++)
      if (fr__ends(e->name, fr__parts[k].suffix)) {
        part = (int)fr__parts[k].part;
        len -= strlen(fr__parts[k].suffix);
        break;
      }
    if (part >= 0 && e->dtype != FR_F32 && e->dtype != FR_F16 && e->dtype != FR_BF16 && e->dtype != FR_F64)
      return fr_errf(err, FR_E_FORMAT, "LoRA %s: tensor %s: dtype %s is not a float type", path, e->name,
                     fr_dtype_name(e->dtype));
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++)
      numel *= e->shape[d];
    if (part == P_ALPHA && numel != 1)
      return fr_errf(err, FR_E_SHAPE, "LoRA %s: tensor %s: alpha must be one number", path, e->name);
    struct fr__mod *m = &l->mods[n++];
    l->n_mods = n; /* so that fr_lora_set_free frees the names made so far */
    m->name = fr_malloc(len + 1);
    if (!m->name)
      return fr_errf(err, FR_E_NOMEM, "out of memory opening LoRA %s", path);
    memcpy(m->name, e->name, len);
    m->name[len] = 0;
    m->space = fr__space_of(m->name);
    if (part >= 0)
      m->p[part] = e;
  }
  l->n_mods = n;
  qsort(l->mods, (size_t)n, sizeof *l->mods, fr__mod_cmp);
  int w = 0;
  for (int i = 0; i < n; i++) {
    if (w > 0 && strcmp(l->mods[w - 1].name, l->mods[i].name) == 0) {
      for (int k = 0; k < P_N; k++)
        if (l->mods[i].p[k])
          l->mods[w - 1].p[k] = l->mods[i].p[k];
      fr_free(l->mods[i].name);
      continue;
    }
    l->mods[w++] = l->mods[i];
  }
  l->n_mods = w;
  return FR_OK;
}

/* ---- math ---- */

/* A host F32 copy of an entry; NULL when out of memory. */
static struct fr_tensor *fr__f32(const struct fr_st_entry *e) {
  struct fr_tensor *v = fr_st_view(e);
  struct fr_tensor *t = v ? fr_tensor_to_f32(v) : NULL;
  fr_tensor_free(v);
  return t;
}

/* C[m, n] = A[m, k] B[k, n] (row-major) in fp32, as ComfyUI's torch.mm of fp32 factors. aT: A is stored
 * as [k, m]. Rows of C accumulate along contiguous rows of B (k is a rank, small). */
static void fr__mm(const float *a, bool aT, const float *b, float *c, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; i++) {
    float *cr = c + i * n;
    for (int64_t j = 0; j < n; j++)
      cr[j] = 0;
    for (int64_t p = 0; p < k; p++) {
      float x = aT ? a[p * m + i] : a[i * k + p];
      const float *br = b + p * n;
      for (int64_t j = 0; j < n; j++)
        cr[j] += x * br[j];
    }
  }
}

/* A delta: [rows, cols] row-major F32, with the shape it came in for messages. */
struct fr__delta {
  float *d;
  int64_t rows, cols;
  double scale; /* alpha / rank, or 1 */
};

static int64_t fr__numel(const struct fr_st_entry *e) {
  int64_t n = 1;
  for (int i = 0; i < e->ndim; i++)
    n *= e->shape[i];
  return n;
}

/* Tucker form: out[p, r, s] = sum_i a[i, p] sum_j t[i, j, s] b[j, r], with t [R, R2, kh, kw],
 * b [R2, in], a [R, out]; the result is [out, in * kh * kw] (LyCORIS' einsum "ij kl, jr, ip -> pr kl"). */
static float *fr__tucker(const struct fr_st_entry *te, const struct fr_st_entry *be,
                         const struct fr_st_entry *ae, int64_t *rows, int64_t *cols, const char *mod,
                         const char *path, struct fr_err *err, enum fr_status *rc) {
  *rc = FR_OK;
  if (te->ndim != 4 || be->ndim != 2 || ae->ndim != 2 || te->shape[1] != be->shape[0] ||
      te->shape[0] != ae->shape[0]) {
    *rc =
        fr_errf(err, FR_E_SHAPE, "LoRA %s: module %s: tucker factors of shapes that do not chain", path, mod);
    return NULL;
  }
  int64_t R = te->shape[0], R2 = te->shape[1], S = te->shape[2] * te->shape[3], in = be->shape[1],
          out = ae->shape[1];
  struct fr_tensor *t = fr__f32(te), *b = fr__f32(be), *a = fr__f32(ae);
  float *tmp = fr_malloc((size_t)(R * in * S) * sizeof *tmp);
  float *res = fr_malloc((size_t)(out * in * S) * sizeof *res);
  float *ts = fr_malloc((size_t)(R2 * S) * sizeof *ts);
  if (!t || !b || !a || !tmp || !res || !ts) {
    fr_free(res);
    res = NULL;
    *rc = fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", mod);
    goto done;
  }
  /* tmp[i] = b^T [in, R2] x t[i] [R2, S]  ->  [in, S] */
  for (int64_t i = 0; i < R; i++) {
    memcpy(ts, (float *)t->data + i * R2 * S, (size_t)(R2 * S) * sizeof *ts);
    fr__mm(b->data, true, ts, tmp + i * in * S, in, R2, S);
  }
  /* res [out, in * S] = a^T [out, R] x tmp [R, in * S] */
  fr__mm(a->data, true, tmp, res, out, R, in * S);
  *rows = out, *cols = in * S;
done:
  fr_tensor_free(t);
  fr_tensor_free(b);
  fr_tensor_free(a);
  fr_free(tmp);
  fr_free(ts);
  return res;
}

/* x = a [m, k] b [k, n] from two entries (a's trailing dims folded into k, b's into n). */
static float *fr__prod(const struct fr_st_entry *ae, const struct fr_st_entry *be, int64_t *rows,
                       int64_t *cols, const char *mod, const char *path, struct fr_err *err,
                       enum fr_status *rc) {
  *rc = FR_OK;
  int64_t m = ae->shape[0], k = fr__numel(ae) / (m ? m : 1), kb = be->shape[0],
          n = fr__numel(be) / (kb ? kb : 1);
  if (ae->ndim < 1 || be->ndim < 1 || k != kb) {
    *rc = fr_errf(err, FR_E_SHAPE, "LoRA %s: module %s: factors of %lld and %lld inner features do not chain",
                  path, mod, (long long)k, (long long)kb);
    return NULL;
  }
  struct fr_tensor *a = fr__f32(ae), *b = fr__f32(be);
  float *res = fr_malloc((size_t)(m * n > 0 ? m * n : 1) * sizeof *res);
  if (!a || !b || !res) {
    fr_free(res);
    res = NULL;
    *rc = fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", mod);
  } else {
    fr__mm(a->data, false, b->data, res, m, k, n);
    *rows = m, *cols = n;
  }
  fr_tensor_free(a);
  fr_tensor_free(b);
  return res;
}

static double fr__alpha(const struct fr_st_entry *e, bool *has) {
  *has = e != NULL;
  if (!e)
    return 0;
  struct fr_tensor *t = fr__f32(e);
  double a = t ? ((float *)t->data)[0] : 0;
  fr_tensor_free(t);
  return a;
}

/* The delta of module m, unscaled by strength. */
static enum fr_status fr__delta(const struct fr__lora *l, const struct fr__mod *m, struct fr__delta *d,
                                struct fr_err *err) {
  memset(d, 0, sizeof *d);
  const struct fr_st_entry *const *p = m->p;
  enum fr_status rc = FR_OK;
  bool has_alpha;
  double alpha = fr__alpha(p[P_ALPHA], &has_alpha);
  d->scale = 1;
  if (p[P_UP] && p[P_DOWN]) {
    /* LoRA / LoCon: up [out, r(, 1, 1)] x down [r, in(, kh, kw)]; with lora_mid [R, r, kh, kw]
     * (LoCon's tucker form) down becomes [R, in, kh, kw] = sum_j mid[R, j] down[j, in] first. */
    const struct fr_st_entry *down = p[P_DOWN], *up = p[P_UP];
    int64_t r = down->shape[0];
    if (has_alpha && r > 0)
      d->scale = alpha / (double)r;
    if (p[P_MID]) {
      const struct fr_st_entry *mid = p[P_MID];
      int64_t in = fr__numel(down) / (r ? r : 1), R = mid->shape[0], S;
      if (mid->ndim != 4 || mid->shape[1] != r) {
        return fr_errf(err, FR_E_SHAPE, "LoRA %s: module %s: lora_mid does not chain with lora_down", l->path,
                       m->name);
      }
      S = mid->shape[2] * mid->shape[3];
      struct fr_tensor *dn = fr__f32(down), *mi = fr__f32(mid);
      float *dd = fr_malloc((size_t)(R * in * S) * sizeof *dd), *ms = fr_malloc((size_t)(r * S) * sizeof *ms);
      float *t = fr_malloc((size_t)(in * S) * sizeof *t);
      struct fr_tensor *u = fr__f32(up);
      int64_t out = up->shape[0];
      d->d = fr_malloc((size_t)(out * in * S) * sizeof *d->d);
      if (!dn || !mi || !dd || !ms || !t || !u || !d->d || fr__numel(up) != out * R) {
        rc = d->d && dn && mi && dd && ms && t && u
                 ? fr_errf(err, FR_E_SHAPE, "LoRA %s: module %s: lora_up does not chain with lora_mid",
                           l->path, m->name)
                 : fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", m->name);
      } else {
        /* dd[o] [in, S] = down^T [in, r] x mid[o] [r, S] */
        for (int64_t o = 0; o < R; o++) {
          memcpy(ms, (float *)mi->data + o * r * S, (size_t)(r * S) * sizeof *ms);
          fr__mm(dn->data, true, ms, t, in, r, S);
          memcpy(dd + o * in * S, t, (size_t)(in * S) * sizeof *t);
        }
        fr__mm(u->data, false, dd, d->d, out, R, in * S);
        d->rows = out, d->cols = in * S;
      }
      fr_tensor_free(dn);
      fr_tensor_free(mi);
      fr_tensor_free(u);
      fr_free(dd);
      fr_free(ms);
      fr_free(t);
      if (rc) {
        fr_free(d->d);
        d->d = NULL;
      }
      return rc;
    }
    d->d = fr__prod(up, down, &d->rows, &d->cols, m->name, l->path, err, &rc);
    return rc;
  }
  if (p[P_W1A] && p[P_W1B] && p[P_W2A] && p[P_W2B]) {
    /* LoHa: (w1a w1b) * (w2a w2b) elementwise, or the tucker form of each with hada_t1 / hada_t2 */
    if (has_alpha && p[P_W1B]->shape[0] > 0)
      d->scale = alpha / (double)p[P_W1B]->shape[0];
    int64_t r1 = 0, c1 = 0, r2 = 0, c2 = 0;
    float *m1 = p[P_T1] ? fr__tucker(p[P_T1], p[P_W1B], p[P_W1A], &r1, &c1, m->name, l->path, err, &rc)
                        : fr__prod(p[P_W1A], p[P_W1B], &r1, &c1, m->name, l->path, err, &rc);
    float *m2 = NULL;
    if (!rc)
      m2 = p[P_T2] ? fr__tucker(p[P_T2], p[P_W2B], p[P_W2A], &r2, &c2, m->name, l->path, err, &rc)
                   : fr__prod(p[P_W2A], p[P_W2B], &r2, &c2, m->name, l->path, err, &rc);
    if (!rc && (r1 != r2 || c1 != c2))
      rc = fr_errf(err, FR_E_SHAPE, "LoRA %s: module %s: hada_w1 and hada_w2 products differ in shape",
                   l->path, m->name);
    if (!rc) {
      for (int64_t i = 0; i < r1 * c1; i++)
        m1[i] *= m2[i];
      d->d = m1, d->rows = r1, d->cols = c1;
      m1 = NULL;
    }
    fr_free(m1);
    fr_free(m2);
    return rc;
  }
  bool k1 = p[P_K1] || (p[P_K1A] && p[P_K1B]), k2 = p[P_K2] || (p[P_K2A] && p[P_K2B]);
  if (k1 && k2) {
    /* LoKr: kron(w1, w2), each given whole or as a product (w2 also in tucker form with lokr_t2);
     * scale alpha / rank of the factored one (w2's when both are), 1 when neither is factored */
    int64_t dim = 0, a = 0, b = 0, c = 0, dd = 0, S = 1;
    float *w1 = NULL, *w2 = NULL;
    if (p[P_K1]) {
      struct fr_tensor *t = fr__f32(p[P_K1]);
      a = p[P_K1]->shape[0], b = fr__numel(p[P_K1]) / (a ? a : 1);
      w1 = t ? fr_malloc((size_t)(a * b) * sizeof *w1) : NULL;
      if (w1)
        memcpy(w1, t->data, (size_t)(a * b) * sizeof *w1);
      else
        rc = fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", m->name);
      fr_tensor_free(t);
    } else {
      dim = p[P_K1B]->shape[0];
      w1 = fr__prod(p[P_K1A], p[P_K1B], &a, &b, m->name, l->path, err, &rc);
    }
    if (!rc && p[P_K2]) {
      const struct fr_st_entry *e = p[P_K2];
      struct fr_tensor *t = fr__f32(e);
      c = e->shape[0], dd = e->ndim >= 2 ? e->shape[1] : 1, S = fr__numel(e) / (c * dd > 0 ? c * dd : 1);
      w2 = t ? fr_malloc((size_t)(c * dd * S) * sizeof *w2) : NULL;
      if (w2)
        memcpy(w2, t->data, (size_t)(c * dd * S) * sizeof *w2);
      else
        rc = fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", m->name);
      fr_tensor_free(t);
    } else if (!rc) {
      dim = p[P_K2B]->shape[0];
      int64_t cols = 0;
      if (p[P_KT2]) {
        w2 = fr__tucker(p[P_KT2], p[P_K2B], p[P_K2A], &c, &cols, m->name, l->path, err, &rc);
        S = p[P_KT2]->shape[2] * p[P_KT2]->shape[3];
      } else {
        w2 = fr__prod(p[P_K2A], p[P_K2B], &c, &cols, m->name, l->path, err, &rc);
      }
      dd = cols / S;
    }
    if (!rc && has_alpha && dim > 0)
      d->scale = alpha / (double)dim;
    if (!rc) {
      /* kron: R[i*c + k, (j*dd + l) * S + s] = w1[i, j] w2[k, l, s] */
      d->rows = a * c, d->cols = b * dd * S;
      d->d = fr_malloc((size_t)(d->rows * d->cols > 0 ? d->rows * d->cols : 1) * sizeof *d->d);
      if (!d->d)
        rc = fr_errf(err, FR_E_NOMEM, "out of memory computing LoRA module %s", m->name);
      for (int64_t i = 0; !rc && i < a; i++)
        for (int64_t j = 0; j < b; j++)
          for (int64_t k = 0; k < c; k++)
            for (int64_t q = 0; q < dd; q++)
              for (int64_t s = 0; s < S; s++)
                d->d[(i * c + k) * d->cols + (j * dd + q) * S + s] = w1[i * b + j] * w2[(k * dd + q) * S + s];
    }
    fr_free(w1);
    fr_free(w2);
    return rc;
  }
  return fr_errf(err, FR_E_INTERNAL, "LoRA %s: module %s is incomplete", l->path, m->name);
}

/* Whether module m has every part one of the supported forms needs. */
static bool fr__usable(const struct fr__mod *m) {
  const struct fr_st_entry *const *p = m->p;
  if (p[P_UP] && p[P_DOWN])
    return true;
  if (p[P_W1A] && p[P_W1B] && p[P_W2A] && p[P_W2B])
    return true;
  return (p[P_K1] || (p[P_K1A] && p[P_K1B])) && (p[P_K2] || (p[P_K2A] && p[P_K2B]));
}

/* ---- names ---- */

/* A name the trainers may use for one checkpoint tensor, and the rows of the tensor it covers. */
struct fr__alias {
  char name[320];
  int64_t row0, rows; /* rows < 0: all */
};

/* kohya's form: dots to underscores. */
static void fr__us(char *s) {
  for (; *s; s++)
    if (*s == '.')
      *s = '_';
}

static int fr__add(struct fr__alias *a, int n, int max, const char *root, const char *module, bool underscore,
                   int64_t row0, int64_t rows) {
  if (n >= max)
    return n;
  int k = snprintf(a[n].name, sizeof a[n].name, "%s%s", root, module);
  if (k < 0 || (size_t)k >= sizeof a[n].name)
    return n;
  if (underscore)
    fr__us(a[n].name + strlen(root));
  a[n].row0 = row0, a[n].rows = rows;
  return n + 1;
}

/* The text-encoder names (transformers' HF module name hf, without .weight) in the space's roots. */
static int fr__clip_aliases(struct fr__alias *a, int n, int max, enum fr_lora_space space, const char *hf,
                            int64_t row0, int64_t rows) {
  if (space == FR_LORA_CLIP_L) {
    n = fr__add(a, n, max, "lora_te_", hf, true, row0, rows);
    n = fr__add(a, n, max, "lora_te1_", hf, true, row0, rows);
    return fr__add(a, n, max, "text_encoder.", hf, false, row0, rows);
  }
  n = fr__add(a, n, max, "lora_te2_", hf, true, row0, rows);
  return fr__add(a, n, max, "text_encoder_2.", hf, false, row0, rows);
}

/* Every name of the tensor key (plus the loader's aka names) in the space. */
static int fr__aliases(enum fr_lora_space space, const char *key, const char *const *aka, int n_aka,
                       const struct fr_st_entry *e, struct fr__alias *a, int max) {
  int n = 0;
  char base[300];
  if (space == FR_LORA_UNET) {
    for (int i = 0; i < n_aka; i++) {
      if (!aka[i] || !fr__ends(aka[i], ".weight") || strlen(aka[i]) >= sizeof base)
        continue;
      snprintf(base, sizeof base, "%.*s", (int)(strlen(aka[i]) - 7), aka[i]);
      n = fr__add(a, n, max, "lora_unet_", base, true, 0, -1);
      n = fr__add(a, n, max, "unet.", base, false, 0, -1);
      n = fr__add(a, n, max, "diffusion_model.", base, false, 0, -1);
    }
    return n;
  }
  /* OpenCLIP (SDXL's G in SGM files): transformer.resblocks.N.{attn.in_proj_weight, attn.out_proj,
   * mlp.c_fc, mlp.c_proj}; the trainers name transformers' modules, whose q/k/v are row slices of the
   * fused in_proj_weight [3W, W] */
  const char *rb = strstr(key, "transformer.resblocks.");
  if (rb) {
    char *end;
    long layer = strtol(rb + 22, &end, 10);
    if (end == rb + 22 || *end != '.')
      return 0;
    const char *rest = end + 1;
    char hf[160];
    if (!strcmp(rest, "attn.in_proj_weight") && e->ndim == 2 && e->shape[0] % 3 == 0) {
      int64_t w = e->shape[0] / 3;
      static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
      for (int j = 0; j < 3; j++) {
        snprintf(hf, sizeof hf, "text_model.encoder.layers.%ld.self_attn.%s", layer, qkv[j]);
        n = fr__clip_aliases(a, n, max, space, hf, j * w, w);
      }
      return n;
    }
    static const char *const map[][2] = {
        {"attn.out_proj.weight", "self_attn.out_proj"},
        {"mlp.c_fc.weight", "mlp.fc1"},
        {"mlp.c_proj.weight", "mlp.fc2"},
    };
    for (size_t j = 0; j < sizeof map / sizeof map[0]; j++)
      if (!strcmp(rest, map[j][0])) {
        snprintf(hf, sizeof hf, "text_model.encoder.layers.%ld.%s", layer, map[j][1]);
        return fr__clip_aliases(a, n, max, space, hf, 0, -1);
      }
    return 0;
  }
  /* transformers' layout: the module name starts at text_model. (added when the file has no such level) */
  if (!fr__ends(key, ".weight"))
    return 0;
  const char *tm = strstr(key, "text_model.");
  const char *enc = strstr(key, "encoder.layers.");
  char hf[300];
  if (tm)
    snprintf(hf, sizeof hf, "%.*s", (int)(strlen(tm) - 7), tm);
  else if (enc)
    snprintf(hf, sizeof hf, "text_model.%.*s", (int)(strlen(enc) - 7), enc);
  else
    return 0;
  return fr__clip_aliases(a, n, max, space, hf, 0, -1);
}

/* ---- applying ---- */

enum fr_status fr_lora_patch(struct fr_lora_set *s, enum fr_lora_space space, const char *key,
                             const char *const *aka, int n_aka, const struct fr_st_entry *e,
                             struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  if (!s || !s->n || e->ndim < 2 || e->shape[0] <= 0)
    return FR_OK; /* LoRAs patch matrices and kernels only */
  struct fr__alias al[24];
  int na = fr__aliases(space, key, aka, n_aka, e, al, 24);
  struct fr_tensor *w = NULL;
  int64_t cols = fr__numel(e) / e->shape[0];
  for (int i = 0; i < s->n; i++) {
    struct fr__lora *l = &s->l[i];
    for (int j = 0; j < na; j++) {
      struct fr__mod *m = fr__find_mod(l, al[j].name);
      if (!m || m->space != space || !fr__usable(m))
        continue;
      m->applied++;
      if (l->strength == 0)
        continue; /* no change, bit for bit */
      struct fr__delta d;
      enum fr_status rc = fr__delta(l, m, &d, err);
      if (rc) {
        fr_tensor_free(w);
        return rc;
      }
      int64_t rows = al[j].rows < 0 ? e->shape[0] : al[j].rows;
      if (d.rows != rows || d.cols != cols) {
        char have[96];
        fr_shape_str_dims(e->ndim, e->shape, have, sizeof have);
        fr_free(d.d);
        fr_tensor_free(w);
        return fr_errf(
            err, FR_E_SHAPE,
            "LoRA %s: module %s gives a [%lld, %lld] update for tensor %s%s (%s%s): the LoRA was made "
            "for another base model (e.g. an SDXL LoRA on SD1.5)",
            l->path, m->name, (long long)d.rows, (long long)d.cols, key, al[j].rows < 0 ? "" : " rows", have,
            al[j].rows < 0 ? "" : " fused");
      }
      if (!w && !(w = fr__f32(e))) {
        fr_free(d.d);
        return fr_errf(err, FR_E_NOMEM, "out of memory applying LoRA to %s", key);
      }
      float *dst = (float *)w->data + al[j].row0 * cols;
      double f = l->strength * d.scale;
      for (int64_t k = 0; k < rows * cols; k++)
        dst[k] += (float)(f * d.d[k]);
      fr_free(d.d);
    }
  }
  *out = w;
  return FR_OK;
}

int fr_lora_modules(const struct fr_lora_set *s, enum fr_lora_space space) {
  int n = 0;
  for (int i = 0; s && i < s->n; i++)
    for (int j = 0; j < s->l[i].n_mods; j++)
      n += s->l[i].mods[j].space == space && fr__usable(&s->l[i].mods[j]);
  return n;
}

int fr_lora_applied(const struct fr_lora_set *s, enum fr_lora_space space) {
  int n = 0;
  for (int i = 0; s && i < s->n; i++)
    for (int j = 0; j < s->l[i].n_mods; j++)
      n += s->l[i].mods[j].space == space && s->l[i].mods[j].applied > 0;
  return n;
}

static const char *fr__base(const char *path) {
  const char *b = strrchr(path, '/');
  return b ? b + 1 : path;
}

enum fr_status fr_lora_check(const struct fr_lora_set *s, enum fr_lora_space space, bool unknown_too,
                             char *warn, size_t nwarn, struct fr_err *err) {
  if (nwarn)
    warn[0] = 0;
  for (int i = 0; s && i < s->n; i++) {
    const struct fr__lora *l = &s->l[i];
    int total = 0, missed = 0, listed = 0;
    char names[400] = "";
    for (int j = 0; j < l->n_mods; j++) {
      const struct fr__mod *m = &l->mods[j];
      bool mine = m->space == space || (unknown_too && m->space == FR_LORA_UNKNOWN);
      if (!mine)
        continue;
      total++;
      if (m->applied)
        continue;
      missed++;
      if (listed < 3) {
        size_t k = strlen(names);
        snprintf(names + k, sizeof names - k, "%s%s", listed ? ", " : "", m->name);
        listed++;
      }
    }
    if (!missed)
      continue;
    int in_space = 0, applied = 0;
    for (int j = 0; j < l->n_mods; j++)
      if (l->mods[j].space == space)
        in_space++, applied += l->mods[j].applied > 0;
    if (in_space > 0 && 2 * applied < in_space)
      return fr_errf(
          err, FR_E_INVALID,
          "LoRA %s: %d of its %d %s modules match nothing in the checkpoint (e.g. %s): it was made "
          "for another base model (e.g. an SDXL LoRA on SD1.5)",
          fr__base(l->path), in_space - applied, in_space,
          space == FR_LORA_UNET     ? "UNet"
          : space == FR_LORA_CLIP_L ? "CLIP-L"
                                    : "OpenCLIP-G",
          names);
    size_t k = strlen(warn);
    if (k + 1 < nwarn)
      snprintf(
          warn + k, nwarn - k,
          "%sLoRA %s: %d of %d modules matched nothing in the checkpoint and were not applied: %s%s%.0d%s",
          k ? "\n" : "", fr__base(l->path), missed, total, names, missed > listed ? " (and " : "",
          missed > listed ? missed - listed : 0, missed > listed ? " more)" : "");
  }
  return FR_OK;
}
